"""A pre-training member keeps its inner AdamW state in its node home: written after each round's training,
read back by a restarted runtime for the next round, the two latest rounds kept, and a corrupt or foreign
file logged and replaced by a fresh optimiser instead of stopping the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from node.protocol.inner_state import load_inner_state, save_inner_state, state_path
from node.protocol.model import ModelRuntime, load_local_data, record_start
from node.runspec import RunSpec

SPEC = Path(__file__).resolve().parents[4] / "node" / "specs" / "demo-pretrain-tiny.toml"
RUN = 3


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.seen.append((event, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


@pytest.fixture(scope="module")
def spec() -> RunSpec:
    return record_start(RunSpec.from_toml(SPEC))


@pytest.fixture(scope="module")
def blocks() -> torch.Tensor:
    data = load_local_data(
        "chatterbot:computers", held_out_fraction=0.2, max_examples=0, seed=0, task="pretrain",
        model="tiny-llama", block_size=64,
    )  # fmt: skip
    train: torch.Tensor = data.train
    return train


def test_a_restarted_runtime_resumes_the_state_its_last_round_wrote(
    spec: RunSpec, blocks: torch.Tensor, tmp_path: Path, torch_one_thread: None
) -> None:
    events = Events()
    runtime = ModelRuntime(spec)
    state = runtime.initial_state()
    assert load_inner_state(tmp_path, RUN, 0, runtime.flat_spec, events) is None  # nothing yet: fresh

    first = runtime.train(state, blocks, seed=1, round=0)
    save_inner_state(tmp_path, RUN, 0, first.inner_state, runtime.flat_spec, events)
    restarted = ModelRuntime(spec)  # a new process: only the file carries the state
    resumed = load_inner_state(tmp_path, RUN, 1, restarted.flat_spec, events)
    second = restarted.train(state, blocks, seed=2, round=1, inner_state=resumed)
    fresh = restarted.train(state, blocks, seed=2, round=1)

    steps = spec.train.local_steps
    assert first.inner_state is not None and first.inner_state.step == steps
    assert resumed is not None and torch.equal(resumed.exp_avg_sq, first.inner_state.exp_avg_sq)
    assert second.inner_state is not None and second.inner_state.step == 2 * steps
    assert not torch.equal(second.delta, fresh.delta)  # the kept moments change the round's update
    assert events.seen[-1] == (
        "round.inner_state_resumed",
        {"run": RUN, "round": 1, "trained_round": 0, "step": steps},
    )


def test_the_two_latest_rounds_are_kept_and_a_retrained_round_resumes_its_predecessor(
    spec: RunSpec, tmp_path: Path
) -> None:
    from training.inner_state import InnerState

    events = Events()
    layout = ModelRuntime(spec).flat_spec
    for rnd in range(3):
        value = torch.full((layout.numel,), float(rnd))
        save_inner_state(tmp_path, RUN, rnd, InnerState(rnd + 1, value, value.clone()), layout, events)

    again = load_inner_state(tmp_path, RUN, 2, layout, events)  # round 2 trained again after a restart
    latest = load_inner_state(tmp_path, RUN, 3, layout, events)

    assert not state_path(tmp_path, 0).exists() and state_path(tmp_path, 1).exists()
    assert again is not None and again.step == 2 and float(again.exp_avg[0]) == 1.0
    assert latest is not None and latest.step == 3


def test_a_corrupt_or_foreign_file_is_logged_and_training_starts_fresh(
    spec: RunSpec, blocks: torch.Tensor, tmp_path: Path, torch_one_thread: None
) -> None:
    from training.inner_state import InnerState

    events = Events()
    runtime = ModelRuntime(spec)
    layout = runtime.flat_spec
    state_path(tmp_path, 0).parent.mkdir(parents=True)
    state_path(tmp_path, 0).write_bytes(b"{not a safetensors file")
    corrupt = load_inner_state(tmp_path, RUN, 1, layout, events)
    value = torch.zeros(layout.numel)
    # another run's file
    save_inner_state(tmp_path, RUN + 1, 1, InnerState(8, value, value.clone()), layout, events)
    foreign = load_inner_state(tmp_path, RUN, 2, layout, events)
    result = runtime.train(runtime.initial_state(), blocks, seed=1, round=2, inner_state=foreign)

    ignored = [fields for name, fields in events.seen if name == "round.inner_state_ignored"]
    assert corrupt is None and foreign is None
    assert "round-000000.safetensors: not a safetensors file" in ignored[0]["why"]
    assert "header `run` is 4, expected 3" in ignored[1]["why"] and ignored[1]["round"] == 2
    assert result.inner_state is not None and result.inner_state.step == spec.train.local_steps
