"""Byzantine attacks: hand-computed vectors, purity, and the registry."""

from __future__ import annotations

import pytest
import torch

from training.attacks import (
    ATTACKS,
    AttackError,
    alie,
    alie_z,
    apply_update_attack,
    attack_rows,
    flip_answers,
    gaussian_noise,
    get_attack,
    ipm,
    scaling,
    sign_flip,
)
from training.data import Example


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


OWN = torch.tensor([[1.0, -2.0, 3.0]])
BENIGN = torch.tensor([[1.0, 0.0, 2.0], [3.0, 2.0, 2.0]])


def test_sign_flip_negates_and_scales() -> None:
    out = sign_flip(OWN, BENIGN, generator=_gen(), strength=2.0)

    assert out.tolist() == [[-2.0, 4.0, -6.0]]


def test_scaling_multiplies() -> None:
    out = scaling(OWN, BENIGN, generator=_gen(), strength=10.0)

    assert out.tolist() == [[10.0, -20.0, 30.0]]


def test_ipm_sends_negative_scaled_benign_mean_from_every_attacker() -> None:
    own = torch.zeros(2, 3)

    out = ipm(own, BENIGN, generator=_gen(), strength=0.5)

    # benign mean = [2, 1, 2]
    assert out.tolist() == [[-1.0, -0.5, -1.0], [-1.0, -0.5, -1.0]]


def test_alie_sends_mean_minus_z_std() -> None:
    out = alie(OWN, BENIGN, generator=_gen(), strength=1.5)

    # mean = [2, 1, 2]; population std = [1, 1, 0]
    assert out.tolist() == [[0.5, -0.5, 2.0]]


def test_alie_z_matches_the_paper_formula() -> None:
    # n=10, f=2: s = floor(6) - 2 = 4, z = Phi^-1(6/10) ~= 0.2533
    assert alie_z(10, 2) == pytest.approx(0.2533, abs=1e-4)
    # n=50, f=12 (the paper's CIFAR setting): s = 26 - 12 = 14, Phi^-1(36/50) ~= 0.5828
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    with pytest.raises(AttackError, match="0 < f < n"):
        alie_z(3, 3)


def test_gaussian_noise_is_seeded_and_scaled_to_the_benign_spread() -> None:
    benign = torch.randn(8, 1000, generator=torch.Generator().manual_seed(1)) * 0.01
    own = torch.zeros(2, 1000)

    a = gaussian_noise(own, benign, generator=torch.Generator().manual_seed(5), strength=1.0)
    b = gaussian_noise(own, benign, generator=torch.Generator().manual_seed(5), strength=1.0)

    assert torch.equal(a, b)
    assert a.shape == (2, 1000)
    assert 0.005 < float(a.std()) < 0.02


@pytest.mark.parametrize("name", [n for n, a in ATTACKS.items() if a.level == "update"])
def test_update_attacks_do_not_mutate_inputs_and_keep_shape(name: str) -> None:
    own = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    benign = torch.randn(7, 16, generator=torch.Generator().manual_seed(3))
    own0, benign0 = own.clone(), benign.clone()

    out = apply_update_attack(name, own, benign, seed=4)

    assert out.shape == own.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(own, own0) and torch.equal(benign, benign0)
    assert not torch.equal(out, own)


def test_data_attack_leaves_updates_unchanged() -> None:
    own = torch.ones(1, 4)

    out = apply_update_attack("label_flip", own, torch.zeros(2, 4), seed=0)

    assert torch.equal(out, own) and out is not own


def test_flip_answers_gives_every_prompt_another_answer() -> None:
    examples = [Example(prompt=f"q{i}", response=f"a{i}") for i in range(9)]

    flipped = flip_answers(examples, seed=7)

    assert [e.prompt for e in flipped] == [e.prompt for e in examples]
    assert sorted(e.response for e in flipped) == sorted(e.response for e in examples)
    assert all(e.response != f"a{i}" for i, e in enumerate(flipped))
    assert flip_answers(examples, seed=7) == flipped


def test_flip_answers_with_a_single_answer_reverses_it() -> None:
    examples = [Example(prompt="q", response="yes"), Example(prompt="r", response="yes")]

    assert [e.response for e in flip_answers(examples, seed=0)] == ["sey", "sey"]


def test_unknown_attack_and_bad_shapes_raise_clear_errors() -> None:
    with pytest.raises(AttackError, match="unknown attack 'nope'; known: alie"):
        get_attack("nope")
    with pytest.raises(AttackError, match=r"`benign` must be a \[k, 3\] matrix"):
        sign_flip(OWN, torch.zeros(2, 4), generator=_gen())
    with pytest.raises(AttackError, match="at least 2 benign"):
        alie(OWN, torch.zeros(1, 3), generator=_gen())


def test_attack_rows_rewrites_only_the_attackers_rows_against_the_honest_ones() -> None:
    sent = torch.tensor([[1.0, 2.0], [10.0, 10.0], [3.0, 4.0]])

    attack_rows(sent, [0, 2], [1], "ipm", seed=0, strength=0.5)

    # -0.5 * mean of the honest rows [[1, 2], [3, 4]]; the honest rows stay as they were
    assert torch.equal(sent, torch.tensor([[1.0, 2.0], [-1.0, -1.5], [3.0, 4.0]]))


def test_attack_rows_without_an_honest_row_attacks_against_the_attackers_own() -> None:
    sent = torch.tensor([[2.0, 4.0]])

    attack_rows(sent, [], [0], "ipm", seed=0, strength=0.5)

    assert torch.equal(sent, torch.tensor([[-1.0, -2.0]]))


def test_attack_rows_leaves_the_matrix_alone_for_a_data_attack_or_no_attacker() -> None:
    sent = torch.tensor([[1.0, 2.0], [3.0, 4.0]])

    attack_rows(sent, [0], [1], "label_flip", seed=0)
    attack_rows(sent, [0, 1], [], "sign_flip", seed=0)

    assert torch.equal(sent, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
