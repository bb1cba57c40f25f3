"""`fedchain audit` vote checks and the `unavailable` verdict against real anvil and a real IPFS daemon.

Rounds are driven from the test process (tests/fixtures/fedrun.toy_run_on_devnet): three members, a ban by
an unlearning request between rounds, then one included update is unpinned and garbage-collected from the
daemon. The audit reports every vote check passed on every finalised round, names the missing update as
`unavailable` (exit 4, text and JSON) and does not call the finalised merge wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.types import RoundId
from node.audit.votes import VOTE_CHECKS
from node.protocol.history import read_history
from p2p.storage import Cid
from tests.fixtures.chain import AnvilChain
from tests.fixtures.fedrun import ToyRun, toy_run_on_devnet

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def run_on_devnet(anvil: AnvilChain, ipfs_daemon: str) -> Iterator[tuple[ToyRun, str]]:
    with toy_run_on_devnet(anvil.rpc_url, anvil.accounts, ipfs_daemon, "audit-checks", rounds=4) as run:
        yield run


def _audit(
    anvil: AnvilChain, registry: str, ipfs: str, run: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = [str(Path(sys.executable).parent / "fedchain"), "audit", "--rpc-url", anvil.rpc_url]
    cmd += ["--registry", registry, "--ipfs-api", ipfs, "--run", str(run), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_audit_checks_votes_and_reports_an_unavailable_update(
    run_on_devnet: tuple[ToyRun, str], anvil: AnvilChain, ipfs_daemon: str
) -> None:
    toy, registry = run_on_devnet
    toy.round(0, [1, 2, 3])  # members 1 and 2 reach the quorum
    dissent, pairs = toy.honest_merge(0, skip=[toy.clients[1].account_address])
    toy.vote(toy.clients[3], 0, dissent, pairs)  # member 3 votes another merge after it: a late vote
    toy.clients[0].request_unlearning(toy.run, toy.clients[3].account_address, RoundId(0), b"\x07" * 32)
    toy.round(1, [1, 2])  # member 3 is banned: two of two eligible votes
    toy.round(2, [1, 2])

    gone = read_history(toy.clients[0], toy.run).round(1).submissions[0]
    toy.store.unpin(Cid(gone.cid))
    toy.store.gc()

    proc = _audit(anvil, registry, ipfs_daemon, toy.run, "--json")

    out = json.loads(proc.stdout)
    assert proc.returncode == 4, (out["registry"], out["runs"][0]["mismatch_lines"], proc.stderr[-2000:])
    run = out["runs"][0]
    assert out["ok"] and not run["complete"]
    assert [(u["round"], u["member"], u["cid"]) for u in run["unavailable"]] == [(1, gone.member, gone.cid)]
    whats = {m["what"] for m in run["mismatches"]}
    assert not whats & {"merged-sha256", "included-set", "update"}, run["mismatch_lines"]
    assert run["rounds"][2]["recomputed_sha256"] == toy.merged[2]
    finalised = [row for row in run["rounds"] if row["status"] == "finalized"]
    assert [row["round"] for row in finalised] == [0, 1, 2]
    assert all(row["vote_checks"] == dict.fromkeys(VOTE_CHECKS, True) for row in finalised), finalised
    late = [(v["voter"], v["agrees"]) for v in run["rounds"][0]["late_votes"]]
    assert late == [(toy.clients[3].account_address, False)]
    assert (run["status"], run["completion"]) == ("active", None)  # open-ended: never completes
    assert not whats & set(VOTE_CHECKS), run["mismatch_lines"]

    text = _audit(anvil, registry, ipfs_daemon, toy.run)
    assert text.returncode == 4, text.stdout[-3000:]
    assert f"UNAVAILABLE round 1: update of {gone.member} at {gone.cid}" in text.stdout
    assert "votes ok; 1 late (1 dissenting)" in text.stdout
