"""`fedchain audit` against real anvil and a real IPFS daemon, on rounds driven from the test process.

Members' updates are seeded random deltas over the real tiny-model adapter layout of a real run spec;
everything else is the product path: artifacts in the IPFS daemon, commits, votes, contributions and an
unlearning request on the ``Runs`` contract, merges with ``training.merge``. The audit passes on the
honest history (rounds, an unlearning request and the round that starts from its result), then fails,
naming the round, once a colluding quorum finalises a forged model and once a vote points at an artifact
that is not the voted model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.types import RequestStatus, RoundId, included_set_hash
from node.protocol.history import read_history
from node.unlearning.replay import replay_unlearning
from tests.fixtures.chain import AnvilChain
from tests.fixtures.fedrun import ToyRun, toy_run_on_devnet
from training.merge import ModelState, encode_state, state_hash

pytestmark = pytest.mark.integration


@pytest.fixture
def run_on_devnet(anvil: AnvilChain, ipfs_daemon: str) -> Iterator[tuple[ToyRun, str]]:
    with toy_run_on_devnet(anvil.rpc_url, anvil.accounts, ipfs_daemon, "audit-integration", rounds=8) as run:
        yield run


def _audit(anvil: AnvilChain, registry: str, ipfs: str, run: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    cmd = [
        str(Path(sys.executable).parent / "fedchain"),
        "audit",
        "--rpc-url",
        anvil.rpc_url,
        "--registry",
        registry,
        "--ipfs-api",
        ipfs,
        "--run",
        str(run),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def test_audit_passes_on_the_honest_history_and_names_each_tampering(
    run_on_devnet: tuple[ToyRun, str], anvil: AnvilChain, ipfs_daemon: str
) -> None:
    toy, registry = run_on_devnet
    toy.round(0, [1, 2, 3])
    toy.round(1, [1, 2, 3], record=False)
    subject = toy.clients[3].account_address
    request = toy.clients[0].request_unlearning(toy.run, subject, RoundId(1), b"\x05" * 32)
    result = replay_unlearning(read_history(toy.clients[0], toy.run), request, toy.store, toy.setup())
    cid = str(toy.store.put(encode_state(result.state)))
    for i in (1, 2):
        toy.clients[i].vote_unlearning(request, bytes.fromhex(result.sha256), cid)
    assert toy.clients[0].unlearning_request(request).status == RequestStatus.FULFILLED
    toy.round(2, [1, 2])
    toy.round(3, [1, 2])

    code, report = _audit(anvil, registry, ipfs_daemon, toy.run)

    assert code == 0, report["runs"][0]["mismatch_lines"]
    run = report["runs"][0]
    assert [r["recomputed_sha256"] for r in run["rounds"][:4]] == [toy.merged[r] for r in range(4)]
    assert run["rounds"][3]["base"] == f"unlearning request {request}"
    assert run["requests"][0]["recomputed_sha256"] == result.sha256
    members = {m["member"]: m for m in run["members"]}
    assert members[subject]["banned"] and members[subject]["included_rounds"] == [0, 1]

    for i in (1, 2):  # a colluding quorum finalises round 4 with a forged model
        toy.submit(toy.clients[i], 4, seed=40 + i)
    honest4, pairs = toy.honest_merge(4)
    forged = ModelState(honest4.params + 0.5, honest4.server_state, honest4.control, honest4.spec)
    for i in (1, 2):
        toy.vote(toy.clients[i], 4, forged, pairs)

    for i in (1, 2):  # round 5: the right hash, but the CID names another model's bytes
        toy.submit(toy.clients[i], 5, seed=50 + i)
    honest, pairs = toy.honest_merge(5)
    for i in (1, 2):
        toy.clients[i].vote(
            toy.run, RoundId(5), bytes.fromhex(state_hash(honest)), cid, included_set_hash(pairs)
        )

    code, report = _audit(anvil, registry, ipfs_daemon, toy.run)

    assert code == 3
    whats = {(m["what"], m["round"]) for m in report["runs"][0]["mismatches"]}
    assert {("merged-artifact", 5), ("merged-cid", 5), ("merged-sha256", 4)} <= whats
    assert ("merged-sha256", 5) not in whats
    lines = report["runs"][0]["mismatch_lines"]
    assert any(
        line.startswith("merged-sha256 (round 4)") and state_hash(honest4) in line for line in lines
    ), lines
