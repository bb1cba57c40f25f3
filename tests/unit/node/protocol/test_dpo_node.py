"""DPO runs on the node side: the run spec accepts them, data sources give preference pairs, the runtime
trains with DPO and scores held-out DPO loss and reward accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from node.protocol.model import DataSourceError, ModelRuntime, load_local_data
from node.runspec import RunSpec, RunSpecError
from training.data import PreferencePair

SPECS = Path(__file__).resolve().parents[4] / "node" / "specs"


def test_the_shipped_dpo_spec_is_a_dpo_run_that_round_trips() -> None:
    spec = RunSpec.from_toml(SPECS / "demo-dpo-tiny.toml")

    assert spec.train.task == "dpo" and spec.train.dpo_beta == 0.5
    assert spec.train_config(seed=3).task == "dpo"
    assert RunSpec.from_bytes(spec.canonical_bytes()) == spec


def test_a_spec_naming_an_unknown_task_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[train]\ntask = "ppo"\n')

    with pytest.raises(RunSpecError, match=r"\[train\].*`task` must be one of sft, dpo, pretrain, got 'ppo'"):
        RunSpec.from_toml(path)


def test_dpo_sources_give_preference_pairs() -> None:
    data = load_local_data(
        "synthetic:antonyms:20", held_out_fraction=0.25, max_examples=0, seed=5, task="dpo"
    )

    assert data.task == "dpo" and len(data.train) == 15 and len(data.held_out) == 5
    assert all(isinstance(p, PreferencePair) and p.chosen != p.rejected for p in data.train + data.held_out)


def test_a_preference_jsonl_source_and_its_bad_record(tmp_path: Path) -> None:
    good = tmp_path / "prefs.jsonl"
    good.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(4))
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
        + "\n"
        + '{"prompt": "q", "rejected": "b"}\n'
    )

    data = load_local_data(str(good), held_out_fraction=0.25, max_examples=0, seed=0, task="dpo")

    assert [p.prompt for p in data.train + data.held_out] and len(data.held_out) == 1
    with pytest.raises(DataSourceError, match=r"bad\.jsonl:2: field `chosen` is missing"):
        load_local_data(str(bad), held_out_fraction=0.25, max_examples=0, seed=0, task="dpo")
    with pytest.raises(DataSourceError, match="chatterbot has no preference pairs"):
        load_local_data("chatterbot:ai", held_out_fraction=0.2, max_examples=0, seed=0, task="dpo")
    with pytest.raises(DataSourceError, match="`task` must be 'sft', 'dpo' or 'pretrain'"):
        load_local_data("synthetic:reverse", held_out_fraction=0.2, max_examples=0, seed=0, task="ppo")


@pytest.mark.usefixtures("torch_one_thread")
def test_the_runtime_trains_with_dpo_and_scores_dpo_loss_and_reward_accuracy() -> None:
    spec = RunSpec.from_toml(SPECS / "demo-dpo-tiny.toml")
    runtime = ModelRuntime(spec, threads=0)
    data = load_local_data(
        "synthetic:antonyms:40", held_out_fraction=0.25, max_examples=0, seed=1, task="dpo"
    )
    initial = runtime.initial_state()
    runtime.load(initial)
    before: Any = runtime.scores(data.held_out)

    result = runtime.train(initial, data.train, seed=1)
    after: Any = runtime.scores(data.held_out)

    assert before["loss"] == pytest.approx(math.log(2), abs=1e-6) and before["reward_accuracy"] == 0.0
    assert after["loss"] < before["loss"] and after["reward_accuracy"] > 0.5
    assert runtime.evaluate(data.held_out) == after["loss"]
    assert result.steps == spec.train.local_steps and result.delta.abs().sum() > 0
    assert runtime.scores([]) is None
