"""The local learning rate over rounds: the reference's cosine formula, TrainConfig's keys, a simulation."""

from __future__ import annotations

import math

import pytest

from training.config import TrainConfig
from training.errors import ConfigError
from training.schedule import cosine_learning_rate, round_lr
from training.simconfig import SimulationConfig, config_from_dict
from training.simulate import Session, prepare, run_local_baseline, run_simulation


def _reference(current_round: int, total_rounds: int, initial_lr: float, min_lr: float) -> float:
    # OpenFedLLM utils/utils.py, written out again here from its published formula
    return min_lr + 0.5 * (initial_lr - min_lr) * (1 + math.cos(math.pi * current_round / total_rounds))


@pytest.mark.parametrize(("total", "lr", "floor"), [(1, 2e-5, 1e-6), (3, 1e-3, 1e-6), (200, 5e-5, 1e-6)])
def test_every_round_of_the_cosine_schedule_is_the_reference_formula(
    total: int, lr: float, floor: float
) -> None:
    cfg = TrainConfig(lr=lr, lr_schedule="cosine", min_lr=floor)

    rates = [cfg.for_round(r, total).lr for r in range(total)]

    assert rates == [_reference(r, total, lr, floor) for r in range(total)]
    assert rates[0] == lr
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert cosine_learning_rate(total, total, lr, floor) == pytest.approx(floor)


def test_three_rounds_by_hand() -> None:
    # cos(0) = 1, cos(pi/3) = 1/2, cos(2 pi/3) = -1/2
    cfg = TrainConfig(lr=1e-3, lr_schedule="cosine", min_lr=1e-4)

    rates = [cfg.for_round(r, 3).lr for r in range(3)]

    assert rates == pytest.approx([1e-3, 1e-4 + 0.75 * 9e-4, 1e-4 + 0.25 * 9e-4], rel=1e-12)


def test_constant_is_the_default_and_trains_every_round_at_lr() -> None:
    cfg = TrainConfig(lr=0.02)

    assert cfg.lr_schedule == "constant" and cfg.min_lr == 1e-6
    assert all(cfg.for_round(r, 5) is cfg for r in range(8))
    assert round_lr("constant", 0.02, 1e-6, 4, 5) == 0.02


def test_rounds_past_the_schedule_keep_its_last_rate_and_for_round_is_idempotent() -> None:
    cfg = TrainConfig(lr=1e-3, lr_schedule="cosine")
    last = cfg.for_round(2, 3)

    assert cfg.for_round(3, 3).lr == cfg.for_round(7, 3).lr == last.lr  # a failed early round shifts numbers
    assert last.lr_schedule == "constant" and last.for_round(0, 3) == last


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr_schedule": "linear"}, "`lr_schedule` must be one of constant, cosine, got 'linear'"),
        ({"min_lr": -1e-6}, "`min_lr` must be >= 0"),
        ({"lr": 1e-4, "lr_schedule": "cosine", "min_lr": 1e-3}, "`min_lr` must be <= `lr`"),
    ],
)
def test_bad_schedules_name_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


def test_round_lr_refuses_a_negative_round_or_no_rounds() -> None:
    with pytest.raises(ValueError, match="current_round"):
        round_lr("cosine", 1e-3, 0.0, -1, 3)
    with pytest.raises(ValueError, match="total_rounds"):
        round_lr("cosine", 1e-3, 0.0, 0, 0)


DOC: dict[str, dict[str, object]] = {
    "simulation": {"clients": 2, "rounds": 2, "seed": 0, "threads": 1},
    "data": {"source": "synthetic", "examples_per_client": 16, "max_eval_examples": 4, "exact_match": False},
    "model": {"name_or_path": "tiny-llama"},
    "train": {"lr": 0.05, "local_steps": 1, "batch_size": 4, "max_len": 48},
}


def _config(**train: object) -> SimulationConfig:
    return config_from_dict({**DOC, "train": {**DOC["train"], **train}})


@pytest.fixture(scope="module")
def session() -> Session:
    return prepare(_config())


def test_a_simulation_with_cosine_trains_each_round_at_the_decayed_rate(session: Session) -> None:
    # Plain SGD, one local step, FedAvg: each update is -lr * (clipped) gradient. Round 1 is the same under
    # both schedules (cosine starts at lr), so round 2 starts from the same adapter with the same seed and
    # data: its update norm scales with that round's rate, 0.6x under cosine from 0.05 to 0.01.
    constant = _config(optimizer="sgd")
    cosine = _config(optimizer="sgd", lr_schedule="cosine", min_lr=0.01)

    plain = run_simulation(constant, session=session)
    decayed = run_simulation(cosine, session=session)

    assert [r.lr for r in plain.rounds[1:]] == [0.05, 0.05]
    assert [r.lr for r in decayed.rounds[1:]] == [_reference(0, 2, 0.05, 0.01), _reference(1, 2, 0.05, 0.01)]
    assert decayed.rounds[1].update_norm == pytest.approx(plain.rounds[1].update_norm, rel=1e-6)
    ratio = decayed.rounds[2].update_norm / plain.rounds[2].update_norm  # type: ignore[operator]
    assert ratio == pytest.approx(0.03 / 0.05, rel=1e-3)


def test_the_local_only_baseline_with_cosine_trains_round_by_round(session: Session) -> None:
    plain = run_local_baseline(_config(local_steps=2), session=session)
    decayed = run_local_baseline(_config(local_steps=2, lr_schedule="cosine"), session=session)

    assert set(decayed.per_client_union_loss) == set(plain.per_client_union_loss)
    assert decayed.per_client_union_loss != plain.per_client_union_loss
