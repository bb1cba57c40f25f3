"""A members-only run on a real devnet: anvil (1 s blocks), an IPFS daemon, two ``fedchain node`` processes.

The run spec says ``artifacts = "members"`` with ``encrypt_merged`` and one named auditor, and has
client-level DP on (``[privacy]``: every member clips and noises its update before sealing it). The run must
finalise; an update read back raw from the IPFS daemon by its on-chain CID is an envelope whose sha256 is the
one on chain and that a non-member key cannot open; ``fedchain audit --view-key`` (a member's keystore, and
the auditor's hex key file) recomputes the round, and without a key the audit says what it could not check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.devnet.cluster import LocalCluster, fedchain
from p2p.envelope import MissingWrapError, is_envelope, open_envelope, parse, public_key_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = ["synthetic:arithmetic:24", "synthetic:reverse:24"]
AUDITOR_KEY = hashlib.sha256(b"fedchain test auditor").digest()
STRANGER_KEY = hashlib.sha256(b"fedchain test stranger").digest()


@pytest.fixture(scope="module")
def finished(
    devnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, LocalCluster, int, Path]]:
    folder = tmp_path_factory.mktemp("confidential")
    spec = TINY.read_text().replace("rounds = 2", "rounds = 1")
    spec = spec.replace(
        "[run]\n",
        '[run]\nartifacts = "members"\nencrypt_merged = true\n'
        f'auditors = ["{public_key_of(AUDITOR_KEY).hex()}"]\n',
        1,
    )
    spec += "\n[privacy]\nclip_norm = 1.0\nnoise_multiplier = 0.5\ndelta = 1e-5\n"  # and client-level DP
    (folder / "members.toml").write_text(spec)
    (folder / "auditor.key").write_text(AUDITOR_KEY.hex())
    cluster = LocalCluster(folder / "nodes", devnet, len(DATA))
    cluster.init()
    run_id = cluster.create_run(folder / "members.toml")
    try:
        cluster.start(run_id, DATA)
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)), 300, "run.done"
        )
        yield devnet, cluster, run_id, folder
    finally:
        cluster.stop()


def _finalised_round(client: Any, run: int) -> int:
    current, _ = client.current_round(run)
    done = [r for r in range(int(current.round) + 1) if client.round_result(run, r) is not None]
    assert len(done) == 1, f"finalised rounds: {done}"
    return done[0]


def _finalised_row(report: dict[str, Any]) -> dict[str, Any]:
    rows = [row for row in report["rounds"] if row["status"] == "finalized"]
    assert len(rows) == 1, report["rounds"]
    return rows[0]


def _audit(devnet: Any, run: int, *extra: str) -> tuple[int, dict[str, Any]]:
    done = fedchain(
        "audit",
        "--rpc-url",
        devnet.rpc_url,
        "--registry",
        devnet.runs_address,
        "--ipfs-api",
        devnet.ipfs_api,
        "--run",
        str(run),
        "--json",
        *extra,
    )
    assert done.stdout, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)["runs"][0]


def test_updates_in_ipfs_are_ciphertext_only_members_and_auditors_open(
    finished: tuple[Any, LocalCluster, int, Path],
) -> None:
    from ledger.chain import connect
    from ledger.client import RunsClient
    from p2p.storage.ipfs import IpfsStore

    devnet, cluster, run_id, _ = finished
    client = RunsClient(connect(devnet.rpc_url), devnet.runs_address)
    rnd = _finalised_round(client, run_id)  # round 0 may fail on a busy machine: nodes start late
    result = client.round_result(run_id, rnd)
    assert result is not None and result.votes == 2  # one CID for both: the merged envelope is deterministic
    subs = client.submissions(run_id, rnd)
    assert len(subs) == 2
    ipfs = IpfsStore(devnet.ipfs_api, timeout=30.0)
    try:
        for sub in subs:
            raw = bytes(ipfs.get(sub.cid))
            assert is_envelope(raw) and hashlib.sha256(raw).digest() == sub.sha256
            assert public_key_of(AUDITOR_KEY) in parse(raw).readers
            with pytest.raises(MissingWrapError):
                open_envelope(raw, STRANGER_KEY)
            plain = open_envelope(raw, AUDITOR_KEY)
            assert plain[8:9] == b"{"  # safetensors: an 8-byte header length, then its JSON header
        assert is_envelope(bytes(ipfs.get(result.merged_cid)))
    finally:
        ipfs.close()


def test_audit_with_a_view_key_recomputes_the_round_and_without_says_what_it_skipped(
    finished: tuple[Any, LocalCluster, int, Path],
) -> None:
    devnet, cluster, run_id, folder = finished

    code, member_view = _audit(devnet, run_id, "--view-key", str(cluster.members[1].home / "key.json"))
    assert code == 0, member_view["mismatch_lines"]
    row = _finalised_row(member_view)
    assert member_view["complete"] and row["recomputed_sha256"] == row["merged_sha256"] is not None

    code, auditor_view = _audit(devnet, run_id, "--view-key", str(folder / "auditor.key"))
    assert code == 0 and auditor_view["complete"], auditor_view["mismatch_lines"]

    code, keyless = _audit(devnet, run_id)
    assert code == 0 and not keyless["complete"]
    row = _finalised_row(keyless)
    assert row["recomputed_sha256"] is None
    assert len(row["included"]) == 2  # votes and the included set are still checked
    assert any("not recomputed" in line for line in keyless["unchecked"])


def test_export_opens_the_encrypted_merged_model_with_the_nodes_key(
    finished: tuple[Any, LocalCluster, int, Path], tmp_path: Path
) -> None:
    _, cluster, run_id, _ = finished
    out = tmp_path / "adapter"

    done = fedchain(
        "export", "--run", str(run_id), "--out", str(out), "--home", str(cluster.members[0].home), "--json"
    )

    assert done.returncode == 0, done.stderr
    assert (out / "adapter_model.safetensors").is_file()


def test_every_update_was_clipped_and_noised_before_it_was_sealed(
    finished: tuple[Any, LocalCluster, int, Path],
) -> None:
    _, cluster, _, _ = finished
    for i in range(cluster.size):
        spent = cluster.events(i, "privacy.spent")
        submitted = {e["round"] for e in cluster.events(i, "round.submitted")}
        assert submitted and submitted <= {e["round"] for e in spent}, (submitted, spent)
        assert all(0 < e["epsilon"] < float("inf") and e["delta"] == 1e-5 for e in spent), spent
