"""Unlearning end to end: four ``fedchain node`` processes, a request filed with the CLI mid-run.

anvil (1 s blocks) + the IPFS daemon + four members on the tiny model. After round 1 is final, the run's
governance files ``fedchain unlearn request`` for member 3 from round 1. The other members' loops replay,
vote and fulfil it on chain, unpin the subject's updates, and go on from the unlearned model; the run
goes on, ``fedchain unlearn status`` shows the request fulfilled, and ``fedchain audit`` recomputes every
round and the request and passes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from node.devnet.cluster import LocalCluster, fedchain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = ["synthetic:arithmetic:40", "synthetic:reverse:40", "synthetic:capitals:40", "synthetic:antonyms:40"]
ROUNDS = 12  # more than the test waits for: it stops the nodes once a round after the unlearning is final


def _from_unlearned_final(cluster: LocalCluster, i: int) -> bool:
    """Whether member ``i`` saw a round that started from the unlearned model finalise."""
    adopted = [e["round"] for e in cluster.events(i, "unlearning.adopted")]
    return bool(adopted) and any(e["round"] >= min(adopted) for e in cluster.events(i, "round.finalized"))


def test_a_request_filed_mid_run_is_fulfilled_and_the_audit_passes(devnet: Any, tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    text = SPEC.read_text()
    text = re.sub(r"(?m)^rounds = \d+", f"rounds = {ROUNDS}", text)
    text = re.sub(r"(?m)^vote_blocks = \d+", "vote_blocks = 15", text)
    spec.write_text(text)
    cluster = LocalCluster(tmp_path / "nodes", devnet, len(DATA), store="ipfs")  # the auditor reads IPFS
    cluster.init()
    run_id = cluster.create_run(spec)
    honest = [0, 1, 2]
    subject = cluster.members[3]
    try:
        cluster.start(run_id, DATA)
        cluster.wait_until(
            lambda: any(e["round"] >= 1 for e in cluster.events(0, "round.finalized")), 300, "round 1 final"
        )

        home = str(cluster.members[0].home)  # the run's creator: its governance
        args = ["--run", str(run_id), "--subject", subject.address, "--from-round", "1", "--reason", "test"]
        done = fedchain("unlearn", "request", "--home", home, *args, "--json")

        assert done.returncode == 0, done.stderr
        request = json.loads(done.stdout)["request"]
        cluster.wait_until(
            lambda: all(cluster.events(i, "unlearning.fulfilled") for i in honest), 300, "fulfilment"
        )
        cluster.wait_until(
            lambda: all(_from_unlearned_final(cluster, i) for i in honest), 400, "a later round"
        )
    finally:
        cluster.stop()

    chain = ["--rpc-url", devnet.rpc_url, "--registry", devnet.runs_address]
    status = fedchain("unlearn", "status", *chain, "--run", str(run_id), "--json")
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)["requests"]
    assert (row["request"], row["status"], row["subject"]) == (request, "fulfilled", subject.address)
    voted = {e["sha"] for i in honest for e in cluster.events(i, "unlearning.voted")}
    assert voted == {row["result_sha256"]}
    assert all(cluster.events(i, "unlearning.adopted") for i in honest)

    audit = fedchain("audit", "--rpc-url", devnet.rpc_url, "--registry", devnet.runs_address,
                     "--ipfs-api", devnet.ipfs_api, "--run", str(run_id), "--json", timeout=300)  # fmt: skip

    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-3000:]
    [report] = json.loads(audit.stdout)["runs"]
    assert report["requests"][0]["recomputed_sha256"] == row["result_sha256"]
    [first] = [r["round"] for r in report["rounds"] if r["base"] == f"unlearning request {request}"]
    later = [r for r in report["rounds"] if r["status"] == "finalized" and r["round"] >= first]
    assert later and all(subject.address not in r["included"] for r in later)
