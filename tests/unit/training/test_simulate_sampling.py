"""Client sampling in simulation: training.sampling.sample_clients, the config key, a sampled run."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from training.errors import ConfigError
from training.sampling import SIM_SAMPLING, sample_clients
from training.simconfig import config_from_dict
from training.simulate import load_clients, run_simulation

BASE: dict[str, dict[str, object]] = {
    "simulation": {"clients": 3, "rounds": 2, "seed": 0, "threads": 1, "clients_per_round": 2},
    "data": {"source": "synthetic", "examples_per_client": 16, "max_eval_examples": 4, "exact_match": False},
    "model": {"name_or_path": "tiny-llama"},
    "train": {"lr": 0.02, "local_steps": 2, "batch_size": 8, "max_len": 48},
}


def test_sample_is_the_k_smallest_tickets() -> None:
    base = hashlib.sha256(SIM_SAMPLING.encode() + (5).to_bytes(8, "big") + (2).to_bytes(8, "big")).digest()
    tickets = {i: hashlib.sha256(base + i.to_bytes(8, "big")).digest() for i in range(6)}

    assert sample_clients(6, 3, 5, 2) == tuple(sorted(sorted(tickets, key=tickets.__getitem__)[:3]))
    assert sample_clients(6, 3, 5, 2) == sample_clients(6, 3, 5, 2)
    assert sample_clients(6, None, 5, 2) == tuple(range(6))
    assert sample_clients(6, 6, 5, 2) == tuple(range(6))


def test_sample_is_roughly_uniform_over_rounds() -> None:
    counts: Counter[int] = Counter()
    for rnd in range(2000):
        counts.update(sample_clients(5, 2, 0, rnd))

    assert all(abs(counts[i] - 800) < 110 for i in range(5)), counts  # p = 0.4, sd ~22


@pytest.mark.parametrize("k", [0, -1, 4, True])
def test_sample_refuses_k_outside_one_to_n(k: int) -> None:
    with pytest.raises(ConfigError, match="clients_per_round"):
        sample_clients(3, k, 0, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be an integer >= 1"),
        (-2, "must be an integer >= 1"),
        (4, "above the federation.s `clients` = 3"),
    ],
)
def test_config_names_a_bad_clients_per_round(value: int, message: str) -> None:
    doc = {name: dict(table) for name, table in BASE.items()}
    doc["simulation"]["clients_per_round"] = value

    with pytest.raises(ConfigError, match=rf"\[simulation\] `clients_per_round`.*{message}"):
        config_from_dict(doc)


def test_a_sampled_simulation_trains_and_merges_only_the_sampled_clients() -> None:
    cfg = config_from_dict(BASE)

    names = [c.name for c in load_clients(cfg)]

    result = run_simulation(cfg)

    for row in result.rounds[1:]:
        assert row.sampled == tuple(names[i] for i in sample_clients(3, 2, 0, row.round))
        assert row.accepted == 2
    assert result.rounds[0].sampled == ()
