"""Client-level DP in the in-process simulation: the ``[privacy]`` table, noised updates, the accounting."""

from __future__ import annotations

import math
from typing import Any

import pytest

from training.errors import ConfigError
from training.privacy import PrivacyConfig, epsilon_spent
from training.simconfig import config_from_dict
from training.simulate import prepare, run_simulation

BASE: dict[str, dict[str, Any]] = {
    "simulation": {"clients": 3, "rounds": 2, "clients_per_round": 2, "seed": 1, "threads": 1},
    "data": {"source": "synthetic", "examples_per_client": 12, "max_eval_examples": 4, "exact_match": False},
    "model": {"name_or_path": "tiny-llama"},
    "train": {"lr": 0.02, "local_steps": 2, "batch_size": 4, "max_len": 32},
    "privacy": {"clip_norm": 0.01, "noise_multiplier": 1.5, "delta": 1e-6},
}


def _doc(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    doc = {name: dict(table) for name, table in BASE.items()}
    for name, table in sections.items():
        doc.setdefault(name, {}).update(table)
    return doc


@pytest.mark.slow
def test_simulated_clients_send_noised_updates_and_the_spend_counts_sampled_rounds() -> None:
    from training.sampling import sample_clients

    cfg = config_from_dict(_doc())
    assert cfg.privacy == PrivacyConfig(clip_norm=0.01, noise_multiplier=1.5, delta=1e-6)

    result = run_simulation(cfg, session=prepare(cfg))

    dim = sum(p.numel() for p in prepare(cfg).initial.values())
    releases = [0, 0, 0]
    for rnd in (1, 2):
        for i in sample_clients(3, 2, 1, rnd):
            releases[i] += 1
    assert result.rounds[0].epsilon is None
    assert result.final.epsilon == round(epsilon_spent(cfg.privacy, max(releases)), 4)  # type: ignore[arg-type]
    # what was sent is clip + noise: its norm is the noise's, ~ noise_multiplier * clip_norm * sqrt(d)
    expected = 1.5 * 0.01 * math.sqrt(dim)
    assert result.final.update_norm == pytest.approx(expected, rel=0.1)
    assert result.to_dict()["rounds"][-1]["epsilon"] == result.final.epsilon


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"simulation": {"algorithm": "scaffold"}},
            r"\[privacy\] cannot be used with `algorithm = 'scaffold'`",
        ),
        ({"simulation": {"max_update_norm": 0.02}}, r"\[privacy\] `max_update_norm` 0.02 is below"),
        ({"privacy": {"noise_multiplier": 0.0}}, r"\[privacy\] `noise_multiplier` must be > 0"),
        ({"privacy": {"sigma": 1.0}}, r"\[privacy\] unknown key\(s\) sigma"),
        ({"privacy": {"epsilon_budget": 5.0}}, r"\[privacy\] `epsilon_budget` is not applied"),
    ],
)
def test_bad_privacy_settings_name_the_field(sections: dict[str, dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_doc(**sections))


@pytest.mark.slow
def test_a_norm_bound_below_noised_updates_of_the_models_dimension_is_refused_before_training() -> None:
    cfg = config_from_dict(_doc(simulation={"max_update_norm": 0.2}))  # passes the d = 1 check

    with pytest.raises(ConfigError, match=r"`max_update_norm` 0.2 is below the norm of a privatised update"):
        run_simulation(cfg, session=prepare(cfg))
