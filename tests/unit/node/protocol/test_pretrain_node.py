"""Pre-training runs on the node side: the run spec accepts them and refuses other tasks' fields, text
sources give token blocks, the runtime builds the model from its config, trains every parameter, scores
held-out blocks, and records its starting point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from node.protocol.model import DataSourceError, ModelRuntime, load_local_data, record_start
from node.runspec import RunSpec, RunSpecError
from training.merge import UpdateInput, merge, state_hash

SPECS = Path(__file__).resolve().parents[4] / "node" / "specs"
SPEC = SPECS / "demo-pretrain-tiny.toml"


def _spec(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(SPEC.read_text() + extra)
    return path


def test_the_shipped_pretrain_spec_round_trips_without_an_adapter() -> None:
    spec = RunSpec.from_toml(SPEC)

    doc = json.loads(spec.canonical_bytes())

    assert spec.train.task == "pretrain" and spec.algorithm == "diloco"
    assert "adapter" not in doc and doc["server"] == {"beta1": 0.9, "server_lr": 0.7}
    assert RunSpec.from_bytes(spec.canonical_bytes()) == spec


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("\n[adapter]\nr = 4\n", r"\[adapter\] `r` does not apply to \[train\] task = 'pretrain'"),
        ("dpo_beta = 0.5\n", r"\[train\] `dpo_beta` does not apply to task = 'pretrain'"),
    ],
)
def test_fields_of_other_tasks_are_refused_naming_them(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_toml(_spec(tmp_path, extra))


def test_an_unknown_model_config_and_scaffold_are_refused(tmp_path: Path) -> None:
    text = SPEC.read_text()
    unknown = tmp_path / "unknown.toml"
    unknown.write_text(text.replace('name_or_path = "tiny-llama"', 'name_or_path = "smollm2"'))
    scaffold = tmp_path / "scaffold.toml"
    scaffold.write_text(text.replace('algorithm = "diloco"', 'algorithm = "scaffold"'))

    with pytest.raises(RunSpecError, match=r"\[model\] `name_or_path` 'smollm2' is not a pre-training model"):
        RunSpec.from_toml(unknown)
    with pytest.raises(RunSpecError, match=r"`algorithm` 'scaffold' does not apply to \[train\] task"):
        RunSpec.from_toml(scaffold)


def test_text_sources_give_blocks_and_bad_shards_name_the_file(tmp_path: Path) -> None:
    empty, latin = tmp_path / "empty.txt", tmp_path / "latin.txt"
    empty.write_text("")
    latin.write_bytes(b"abc\xe9")

    data = load_local_data(
        "chatterbot:ai", held_out_fraction=0.25, max_examples=0, seed=0, task="pretrain",
        model="tiny-llama", block_size=32,
    )  # fmt: skip

    assert data.task == "pretrain" and data.train.shape[1] == 32 and data.held_out.shape[1] == 32
    assert len(data.held_out) == round((len(data.train) + len(data.held_out)) * 0.25)
    bad = ((empty, "empty.txt: text file is empty"), (latin, "latin.txt: not UTF-8 text: byte offset 3"))
    for path, message in bad:
        with pytest.raises(DataSourceError, match=message):
            load_local_data(str(path), held_out_fraction=0.0, max_examples=0, seed=0, task="pretrain",
                            model="tiny-llama", block_size=32)  # fmt: skip


def test_runtime_trains_every_parameter_and_the_merge_applies_the_outer_step(torch_one_thread: None) -> None:
    spec = record_start(RunSpec.from_toml(SPEC))
    runtime = ModelRuntime(spec)
    data = load_local_data(
        "chatterbot:computers", held_out_fraction=0.2, max_examples=0, seed=0, task="pretrain",
        model="tiny-llama", block_size=64,
    )  # fmt: skip
    state = runtime.initial_state()
    before = runtime.scores(data.held_out)

    result = runtime.train(state, data.train, seed=3, round=0)
    blob = runtime.encode_update(result, run="r", round=0)
    merged = merge(state, [], spec.merge_spec(), run="r", round=0, eligible=1)  # nothing accepted: unchanged
    update = UpdateInput("0xa", blob, len(data.train))
    outcome = merge(state, [update], spec.merge_spec(), run="r", round=0, eligible=1)
    runtime.load(outcome.state)
    after = runtime.scores(data.held_out)

    assert runtime.check_recorded() and spec.initial_sha256 == state_hash(state)
    assert runtime.flat_spec.numel == 210_240 and result.steps == spec.train.local_steps
    assert merged.state is state and set(outcome.state.server_state) == {"m"}
    # DiLoCo's first outer step from m = 0: x + 0.7 * (1 + 0.9) * delta
    want = (state.params.double() + result.delta.double() * 0.7 * 1.9).float()
    assert torch.allclose(outcome.state.params, want, atol=1e-6)
    assert before is not None and after is not None and after["loss"] < before["loss"]
