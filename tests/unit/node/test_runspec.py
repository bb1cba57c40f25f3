"""Tests for node.runspec: TOML parsing, canonical bytes and strict decoding."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from node.runspec import RunSpec, RunSpecError
from training.merge import ARITHMETIC, LEGACY_ARITHMETIC

SPECS = Path(__file__).resolve().parents[3] / "node" / "specs"


@pytest.mark.parametrize("name", ["tiny.toml", "smollm2.toml"])
def test_shipped_specs_round_trip_through_canonical_bytes(name: str) -> None:
    spec = RunSpec.from_toml(SPECS / name)

    data = spec.canonical_bytes()
    back = RunSpec.from_bytes(data)

    assert back == spec
    assert back.canonical_bytes() == data
    assert back.sha256() == spec.sha256()


def test_canonical_bytes_do_not_depend_on_toml_layout(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text('[run]\nrounds = 2\naggregator = "median"\n[aggregator_params]\nf = 1\n[train]\nlr = 0.01\n')
    b.write_text('[train]\nlr = 0.01\n[aggregator_params]\nf = 1\n[run]\naggregator = "median"\nrounds = 2\n')

    assert RunSpec.from_toml(a).canonical_bytes() == RunSpec.from_toml(b).canonical_bytes()


def test_merge_spec_follows_the_algorithm() -> None:
    spec = RunSpec(algorithm="scaffold", aggregator="trimmed_mean", aggregator_params={"trim_ratio": 0.2})

    merge = spec.merge_spec()

    assert merge.scaffold is True
    assert merge.server_optimizer == "fedavg"
    assert dict(merge.aggregator_params) == {"trim_ratio": 0.2}
    assert spec.train_config(seed=5).client_algorithm == "scaffold"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[run]\nrounds = 0\n", "rounds"),
        ('[run]\nalgorithm = "sgd"\n', "algorithm"),
        ('[run]\naggregator = "nope"\n', "aggregator"),
        ("[chain]\nquorum_bps = 0\n", r"\[chain\].*quorum_bps"),
        ("[chain]\ncommittee_size = -1\n", r"\[chain\].*committee_size"),
        ('[chain]\ncommittee_size = "3"\n', r"\[chain\].*committee_size"),
        ("[chain]\ncommittee_size = 3\nsubmit_blocks = 200\nvote_blocks = 56\n", r"committee run.*<= 255"),
        ("[train]\nlr = -1.0\n", r"\[train\].*lr"),
        ("[run]\ncolour = 1\n", "unknown key"),
        ("[runn]\n", "unknown table"),
        ("[run\n", "invalid TOML"),
    ],
)
def test_bad_specs_name_the_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml)

    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_toml(path)


def test_from_bytes_rejects_other_formats_and_junk() -> None:
    good = json.loads(RunSpec().canonical_bytes())
    good["format"] = "something-else/1"

    with pytest.raises(RunSpecError, match="format"):
        RunSpec.from_bytes(json.dumps(good).encode())
    with pytest.raises(RunSpecError, match="not JSON"):
        RunSpec.from_bytes(b"\xff\x00")
    with pytest.raises(RunSpecError, match="cap"):
        RunSpec.from_bytes(b" " * (1 << 17))


@pytest.mark.parametrize("section", ["model", "chain", "adapter", "train", "server", "aggregator_params"])
@pytest.mark.parametrize("value", [[1, 2], "text", 3])
def test_from_bytes_rejects_a_section_that_is_not_an_object(section: str, value: object) -> None:
    doc = json.loads(RunSpec().canonical_bytes())
    doc[section] = value

    with pytest.raises(RunSpecError, match=rf"\[{section}\] must be a table"):
        RunSpec.from_bytes(json.dumps(doc).encode())


def test_from_toml_rejects_a_run_key_that_is_not_a_table(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('run = "fast"\n')

    with pytest.raises(RunSpecError, match=r"\[run\] must be a table, got str"):
        RunSpec.from_toml(path)


def test_spec_carries_this_version_of_the_consensus_arithmetic() -> None:
    doc = json.loads(RunSpec().canonical_bytes())

    assert doc["arithmetic"] == ARITHMETIC
    assert RunSpec.from_bytes(RunSpec().canonical_bytes()).arithmetic == ARITHMETIC


@pytest.mark.parametrize("written", [None, LEGACY_ARITHMETIC, "fedchain-arith/2", "fedchain-arith/99"])
def test_spec_for_other_arithmetic_is_refused_with_both_versions_named(written: str | None) -> None:
    """A spec written before the key existed is version 1: a node on version 2 must not join it."""
    doc = json.loads(RunSpec().canonical_bytes())
    if written is None:
        del doc["arithmetic"]
    else:
        doc["arithmetic"] = written

    with pytest.raises(RunSpecError, match=rf"arithmetic '{written or LEGACY_ARITHMETIC}'.*'{ARITHMETIC}'"):
        RunSpec.from_bytes(json.dumps(doc).encode())


def test_toml_spec_may_name_the_arithmetic_but_only_this_one(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f'[run]\narithmetic = "{ARITHMETIC}"\n')
    assert RunSpec.from_toml(path).arithmetic == ARITHMETIC

    path.write_text(f'[run]\narithmetic = "{LEGACY_ARITHMETIC}"\n')
    with pytest.raises(RunSpecError, match="join with the fedchain version the run was created with"):
        RunSpec.from_toml(path)


def test_convention_defaults_to_the_reference_and_reaches_merge_and_training(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[run]\nalgorithm = "scaffold"\nconvention = "reddi"\n')

    spec = RunSpec.from_toml(path)

    assert RunSpec().convention == "openfedllm" and RunSpec().train_config(seed=1).convention == "openfedllm"
    assert spec.merge_spec().convention == "reddi"
    assert spec.train_config(seed=1).convention == "reddi"
    assert RunSpec.from_bytes(spec.canonical_bytes()) == spec
    assert json.loads(spec.canonical_bytes())["convention"] == "reddi"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[run]\nconvention = "fedml"\n',
            r"\[run\] `convention` must be one of openfedllm, reddi, got 'fedml'",
        ),
        (
            '[train]\nconvention = "reddi"\n',
            r"\[train\] `convention` is 'reddi' but the run's is 'openfedllm'",
        ),
    ],
)
def test_bad_convention_is_refused_naming_the_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml)

    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_toml(path)


def test_committee_size_reaches_the_spec_and_ordinary_specs_keep_their_bytes(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[chain]\ncommittee_size = 3\n")
    spec = RunSpec.from_toml(path)
    assert spec.chain.committee_size == 3
    assert RunSpec.from_bytes(spec.canonical_bytes()) == spec
    assert b"committee_size" not in RunSpec().canonical_bytes()


def test_a_cosine_spec_validates_round_trips_and_decays_the_members_lr(tmp_path: Path) -> None:
    path = tmp_path / "cosine.toml"
    path.write_text('[run]\nrounds = 4\n[train]\nlr = 5e-5\nlr_schedule = "cosine"\nmin_lr = 1e-6\n')

    spec = RunSpec.from_toml(path)
    back = RunSpec.from_bytes(spec.canonical_bytes())

    assert back == spec and back.train.lr_schedule == "cosine"
    assert json.loads(spec.canonical_bytes())["train"]["lr_schedule"] == "cosine"
    rates = [spec.train_config(seed=1, round=r).lr for r in range(4)]
    assert rates == [1e-6 + 0.5 * (5e-5 - 1e-6) * (1 + math.cos(math.pi * r / 4)) for r in range(4)]
    assert spec.train_config(seed=1).lr == 5e-5


def test_a_constant_lr_spec_keeps_its_canonical_bytes_free_of_the_schedule_keys() -> None:
    train = json.loads(RunSpec().canonical_bytes())["train"]

    assert "lr_schedule" not in train and "min_lr" not in train
    assert RunSpec().train_config(seed=1, round=2).lr == RunSpec().train.lr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[train]\nlr_schedule = "step"\n', r"\[train\] `lr_schedule` must be one of constant, cosine"),
        (
            '[train]\nlr = 1e-5\nlr_schedule = "cosine"\nmin_lr = 1e-4\n',
            r"\[train\] `min_lr` must be <= `lr`",
        ),
    ],
)
def test_bad_lr_schedules_name_the_train_table(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)

    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_toml(path)
