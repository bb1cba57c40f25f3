"""The run's starting point on record: base model file digest and round 0's state hash, checked by nodes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest

from node.audit.auditor import _check_initial
from node.audit.records import RunAudit
from node.protocol.model import ModelRuntime, record_start
from node.runspec import RunSpec, RunSpecError
from tests.fixtures.fedrun import toy_setup, toy_spec_bytes
from training.merge import state_hash
from training.models import model_digest, model_folder


def test_model_digest_is_the_documented_sha256sum_recipe_and_names_the_files(tmp_path: Path) -> None:
    folder = model_folder("tiny-llama")
    names = sorted(p.name for p in folder.iterdir() if p.name == "config.json" or p.suffix == ".safetensors")
    lines = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n" for n in names)

    assert model_digest("tiny-llama") == hashlib.sha256(lines.encode()).hexdigest()

    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    (copy / "tokenizer.json").write_text("{}")  # not part of the digest
    assert model_digest(str(copy)) == model_digest("tiny-llama")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert model_digest(str(copy)) != model_digest("tiny-llama")


@pytest.mark.slow
def test_run_create_records_the_start_and_nodes_refuse_another_one(caplog: pytest.LogCaptureFixture) -> None:
    spec = record_start(RunSpec(seed=3))
    stored = json.loads(spec.canonical_bytes())
    runtime = ModelRuntime(spec)

    assert stored["base_model_sha256"] == model_digest("tiny-llama")
    assert stored["initial_sha256"] == state_hash(runtime.initial_state())
    assert stored["adapter_sha256"] == runtime.adapter_sha256() != stored["initial_sha256"]
    assert RunSpec.from_bytes(spec.canonical_bytes()) == spec
    assert runtime.check_recorded()

    wrong_model = dataclasses.replace(spec, base_model_sha256="ab" * 32)
    with pytest.raises(RunSpecError, match=f"{model_digest('tiny-llama')}.*{'ab' * 32}"):
        ModelRuntime(wrong_model).check_recorded()
    # Another seed: the trained B starts at zero either way (same round-0 state), the frozen A differs.
    other_seed = dataclasses.replace(spec, seed=4)
    assert ModelRuntime(other_seed).recorded_start()["initial_sha256"] == spec.initial_sha256
    with pytest.raises(RunSpecError, match=f"adapter_sha256 = {spec.adapter_sha256}"):
        ModelRuntime(other_seed).check_recorded()
    with pytest.raises(RunSpecError, match="`adapter_sha256` is"):
        record_start(dataclasses.replace(other_seed, base_model_sha256=None))
    wrong_state = dataclasses.replace(spec, initial_sha256="cd" * 32)
    with pytest.raises(RunSpecError, match=f"initial_sha256 = {'cd' * 32}"):
        ModelRuntime(wrong_state).check_recorded()

    legacy = RunSpec(seed=3)  # a spec written before the keys: accepted, with a warning
    assert "initial_sha256" not in json.loads(legacy.canonical_bytes())
    with caplog.at_level(logging.WARNING, logger="node.protocol.model"):
        assert not ModelRuntime(legacy).check_recorded()
    assert "not checked" in caplog.text


def test_bad_recorded_hashes_are_named() -> None:
    with pytest.raises(RunSpecError, match="`initial_sha256` must be 64 lower-case hex digits"):
        RunSpec(initial_sha256="ABC")


def test_the_audit_checks_round_0_against_the_recorded_hash() -> None:
    setup = toy_setup(toy_spec_bytes(), run=1)
    right = state_hash(setup.initial)
    for recorded, expect in ((right, []), ("00" * 32, ["initial-state"])):
        body = {**json.loads(toy_spec_bytes()), "initial_sha256": recorded}
        report = RunAudit(1, "cid")

        _check_initial(json.dumps(body).encode(), setup, report)

        assert [m.what for m in report.mismatches] == expect
    report = RunAudit(1, "cid")
    _check_initial(toy_spec_bytes(), setup, report)
    assert report.ok and "records no initial_sha256" in report.notes[0]
