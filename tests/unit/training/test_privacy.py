"""Client-level DP: clipping, CSPRNG noise (scale, freshness), the accountant against Opacus, the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.privacy import (
    PrivacyConfig,
    PrivacyError,
    _chacha20_normals,
    budget_refusal,
    check_norm_bound,
    clip_update,
    epsilon_spent,
    gaussian_noise,
    noise_for_epsilon,
    noised_norm_bound,
    privatize,
)

# ---- clipping -------------------------------------------------------------------------------------------


def test_clip_scales_a_large_update_to_exactly_clip_norm() -> None:
    update = torch.randn(10_000, generator=torch.Generator().manual_seed(1)) * 5.0
    before = update.clone()

    clipped, norm = clip_update(update, 0.5)

    assert norm == pytest.approx(float(before.double().norm()))
    assert float(clipped.norm()) == pytest.approx(0.5, rel=1e-12)
    assert torch.equal(update, before)  # input untouched
    # the direction is kept
    cos = float(clipped @ before.double()) / (0.5 * norm)
    assert cos == pytest.approx(1.0, rel=1e-12)


def test_clip_leaves_a_small_update_unchanged() -> None:
    update = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float32)

    clipped, norm = clip_update(update, 1.0)

    assert torch.equal(clipped, update.double())
    assert norm < 1.0


def test_clip_refuses_non_finite_updates() -> None:
    with pytest.raises(PrivacyError, match="non-finite"):
        clip_update(torch.tensor([1.0, float("nan")]), 1.0)


def test_privatized_update_is_float32_of_the_input_shape_and_reports_the_clip() -> None:
    update = torch.full((3, 4), 10.0)

    out = privatize(update, PrivacyConfig(clip_norm=1.0, noise_multiplier=1e-3))

    assert out.delta.dtype == torch.float32 and out.delta.shape == (3, 4)
    assert out.clipped and out.norm == pytest.approx(float(update.norm()))
    # clipped part is 1/sqrt(12) per coordinate; noise std 1e-3
    assert torch.allclose(out.delta, torch.full((3, 4), 1 / math.sqrt(12)), atol=1e-2)


# ---- noise ----------------------------------------------------------------------------------------------


def test_noise_has_the_configured_scale() -> None:
    config = PrivacyConfig(clip_norm=0.25, noise_multiplier=2.0)  # std 0.5
    n = 200_000

    noise = privatize(torch.zeros(n), config).delta.double()

    # sample std's relative error is ~1/sqrt(2n) = 0.0016: 1% is over 6 standard errors
    assert float(noise.std()) == pytest.approx(0.5, rel=0.01)
    assert abs(float(noise.mean())) < 6 * 0.5 / math.sqrt(n)


def test_box_muller_over_the_chacha20_stream_is_standard_normal() -> None:
    from scipy import stats

    normals = _chacha20_normals(bytes(range(32)), 100_001)  # a fixed key: deterministic, so not flaky

    assert normals.shape == (100_001,)
    assert stats.kstest(normals, "norm").pvalue > 0.01
    # the two halves of Box-Muller (cos and sin) are each standard normal and uncorrelated
    half = 50_001
    assert abs(float(np.corrcoef(normals[:50_000], normals[half : half + 50_000])[0, 1])) < 0.02


def test_same_seed_gives_different_noise_and_leaves_the_seeded_generators_alone() -> None:
    config = PrivacyConfig(clip_norm=1.0, noise_multiplier=1.0)
    update = torch.zeros(1_000)

    torch.manual_seed(0)
    np.random.seed(0)
    first = privatize(update, config).delta
    after_first = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    second = privatize(update, config).delta
    after_second = torch.rand(3), np.random.rand(3)

    assert not torch.equal(first, second)
    assert float((first - second).abs().max()) > 0.5
    # the noise consumed nothing from torch's or numpy's seeded generators: it does not come from them
    assert torch.equal(after_first[0], after_second[0])
    assert np.array_equal(after_first[1], after_second[1])


def test_gaussian_noise_refuses_bad_arguments() -> None:
    with pytest.raises(PrivacyError):
        gaussian_noise(-1, 1.0)
    with pytest.raises(PrivacyError, match="32 bytes"):
        _chacha20_normals(b"short", 4)


# ---- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"clip_norm": float("inf")}, "clip_norm"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": "1"}, "noise_multiplier"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"epsilon_budget": 0.0}, "epsilon_budget"),
        ({"epsilon_budget": float("nan")}, "epsilon_budget"),
        ({"epsilon_budget": True}, "epsilon_budget"),
    ],
)
def test_config_names_the_bad_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(PrivacyError, match=f"`{field}`"):
        PrivacyConfig(**kwargs)  # type: ignore[arg-type]


# ---- accountant -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "delta", "releases"), [(1.0, 1e-5, 1), (2.5, 1e-6, 4), (8.0, 1e-5, 30)])
def test_epsilon_matches_opacus_composing_the_rounds_itself(
    sigma: float, delta: float, releases: int
) -> None:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    for _ in range(releases):  # one step per released update, replace adjacency: sensitivity 2 * clip_norm
        accountant.step(noise_multiplier=sigma / 2, sample_rate=1.0)

    ours = epsilon_spent(PrivacyConfig(noise_multiplier=sigma, delta=delta), releases)

    assert ours == pytest.approx(accountant.get_epsilon(delta=delta), rel=1e-12)


@pytest.mark.parametrize(("sigma", "releases"), [(1.0, 1), (3.0, 5), (10.0, 20)])
def test_epsilon_is_a_valid_bound_for_the_exact_gaussian_mechanism(sigma: float, releases: int) -> None:
    from scipy.stats import norm

    delta = 1e-5
    eps = epsilon_spent(PrivacyConfig(clip_norm=0.7, noise_multiplier=sigma, delta=delta), releases)
    # k Gaussian releases of sensitivity 2C and std sigma*C are one mu-GDP mechanism, mu = 2 sqrt(k) / sigma;
    # its exact delta at eps (Balle & Wang 2018) must not exceed the delta the accountant claims
    mu = 2 * math.sqrt(releases) / sigma
    exact_delta = norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)

    assert exact_delta <= delta
    assert exact_delta > delta / 100  # and it is not wildly loose


def test_epsilon_grows_with_releases_and_is_zero_before_any() -> None:
    config = PrivacyConfig(noise_multiplier=4.0)

    spent = [epsilon_spent(config, k) for k in range(5)]

    assert spent[0] == 0.0
    assert spent == sorted(spent) and len(set(spent)) == 5


def test_noise_for_epsilon_hits_the_target() -> None:
    for target in (8.0, 2.0):
        config = noise_for_epsilon(target, 3, delta=1e-5, clip_norm=0.3)
        assert config.clip_norm == 0.3
        assert epsilon_spent(config, 3) == pytest.approx(target, rel=0.02)
        assert epsilon_spent(config, 3) <= target


# ---- budget ---------------------------------------------------------------------------------------------


def test_budget_allowing_one_release_refuses_the_second() -> None:
    one = epsilon_spent(PrivacyConfig(noise_multiplier=3.0), 1)
    config = PrivacyConfig(noise_multiplier=3.0, epsilon_budget=one * 1.01)

    assert budget_refusal(config, 0) is None
    why = budget_refusal(config, 1)

    assert why is not None and "privacy budget" in why and f"{one:.3f}" in why


def test_no_budget_never_refuses_and_a_members_own_budget_is_stricter() -> None:
    config = PrivacyConfig(noise_multiplier=3.0)
    one = epsilon_spent(config, 1)

    assert budget_refusal(config, 1000) is None
    assert budget_refusal(config, 1, budget=one * 1.01) is not None
    loose = PrivacyConfig(noise_multiplier=3.0, epsilon_budget=1e6)
    assert budget_refusal(loose, 0, budget=one / 2) is not None


# ---- norm bound -----------------------------------------------------------------------------------------


def test_norm_bound_check_refuses_a_max_norm_that_rejects_honest_updates() -> None:
    config = PrivacyConfig(clip_norm=1.0, noise_multiplier=0.5)
    dim = 10_000
    need = noised_norm_bound(config, dim)

    with pytest.raises(PrivacyError, match="`max_norm`"):
        check_norm_bound(config, need * 0.9, dim)
    check_norm_bound(config, need, dim)
    check_norm_bound(config, None, dim)
    # and the bound holds for real privatised updates of a large update
    for _ in range(5):
        assert float(privatize(torch.full((dim,), 3.0), config).delta.norm()) < need
