"""A node's local training follows the run spec's ``[train] lr_schedule`` by the chain's round number."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.protocol.model import ModelRuntime, load_local_data
from node.runspec import RunSpec

SPEC = """
[run]
rounds = 2
[model]
name_or_path = "tiny-llama"
[train]
optimizer = "sgd"
lr = 0.05
lr_schedule = "cosine"
min_lr = 0.01
local_steps = 1
batch_size = 4
max_len = 48
"""


@pytest.mark.usefixtures("torch_one_thread")
def test_the_runtime_trains_each_round_at_the_specs_cosine_rate(tmp_path: Path) -> None:
    # Plain SGD, one step from the same state with the same seed: the update is -lr * (clipped) gradient,
    # so round 1's update is round 0's scaled by the rate ratio (0.03 / 0.05 from 0.05 to 0.01 over 2).
    path = tmp_path / "run.toml"
    path.write_text(SPEC)
    spec = RunSpec.from_toml(path)
    runtime = ModelRuntime(spec, threads=0)
    data = load_local_data("synthetic:reverse:16", held_out_fraction=0.25, max_examples=0, seed=0, task="sft")
    initial = runtime.initial_state()

    first = runtime.train(initial, data.train, seed=3, round=0).delta
    second = runtime.train(initial, data.train, seed=3, round=1).delta
    unscheduled = runtime.train(initial, data.train, seed=3).delta

    assert [spec.train_config(seed=3, round=r).lr for r in (0, 1, 5)] == [0.05, 0.03, 0.03]
    assert float(second.norm() / first.norm()) == pytest.approx(0.6, rel=1e-3)
    assert bool((unscheduled == first).all())
