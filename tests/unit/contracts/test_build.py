"""The committed artifacts are exactly what the pinned solcjs builds from the sources (reproducible build)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from eth_utils import keccak

from contracts import ARTIFACT_DIR, load_artifact
from contracts.build import SOLC_VERSION, build, find_solcjs

REPO = Path(__file__).resolve().parents[3]


def _compiler_available() -> bool:
    try:
        find_solcjs(REPO)
    except Exception:
        return False
    return shutil.which("node") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _compiler_available(), reason="node_modules/solc or node missing (run `make setup`)")
def test_recompiling_reproduces_committed_artifacts_byte_for_byte(tmp_path: Path) -> None:
    written = build(tmp_path, REPO)

    assert sorted(p.name for p in written) == sorted(p.name for p in ARTIFACT_DIR.glob("*.json"))
    for path in written:
        assert path.read_bytes() == (ARTIFACT_DIR / path.name).read_bytes(), (
            f"{path.name} differs from the commit"
        )


def test_metadata_pins_compiler_and_source_hashes() -> None:
    standard_input = json.loads((ARTIFACT_DIR / "standard-input.json").read_text())
    for name in ("Runs", "EventFloor"):
        metadata = json.loads(load_artifact(name).metadata)

        assert metadata["compiler"]["version"].startswith(SOLC_VERSION)
        assert metadata["settings"]["evmVersion"] == standard_input["settings"]["evmVersion"]
        for source, entry in metadata["sources"].items():
            content = standard_input["sources"][source]["content"]
            assert entry["keccak256"] == "0x" + keccak(text=content).hex(), source


def test_runtime_code_fits_the_contract_size_limit() -> None:
    runtime = bytes.fromhex(load_artifact("Runs").deployed_bytecode[2:])

    assert 0 < len(runtime) <= 24_576


def test_abi_exposes_every_event_an_explorer_filters_on() -> None:
    events = {e["name"]: e for e in load_artifact("Runs").abi if e["type"] == "event"}

    for name in (
        "RunCreated",
        "MemberJoined",
        "UpdateSubmitted",
        "MergeVoted",
        "RoundFinalized",
        "RoundFailed",
        "UnlearningRequested",
        "UnlearningFulfilled",
        "ContributionAccepted",
    ):
        assert name in events
    indexed = {i["name"] for i in events["UpdateSubmitted"]["inputs"] if i["indexed"]}
    assert indexed == {"runId", "round", "member"}
    assert load_artifact("Runs").abi is load_artifact("Runs").abi  # loaded once
    with pytest.raises(FileNotFoundError):
        load_artifact("Nope")
