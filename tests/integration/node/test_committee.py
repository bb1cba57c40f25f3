"""Committee rounds on a real devnet: six ``fedchain node`` processes, ``committee_size = 3``.

anvil (1 s blocks) + an IPFS daemon; each node keeps its own store and fetches from peers, IPFS last; tiny
model, two rounds, quorum two thirds of the committee (2 of 3). Checked: both rounds finalise with one
``finalizeCommitteeRound`` each, signed by at least a quorum of that round's committee; every member ends on
the chain's hash; a member outside a round's committee fetches no update and merges nothing in that round
(it only commits and then adopts the result by CID; one member also spot-checks two included updates per
round, after adopting); ``fedchain audit`` passes the run, rebuilding every
round from its ``CommitteeFinalized`` event and manifest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import connect
from ledger.client import RunsClient
from ledger.committee import bitmap_indices, committee_seed, quorum, select_committee
from ledger.types import RoundId, RunId
from node.devnet.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
SKILLS = ("arithmetic", "reverse", "capitals")
SIZE, K, ROUNDS = 6, 3, 2
SPOT, SPOT_CHECKS = 5, 2  # node 5 fetches 2 included updates of each round it adopts, after adopting
DATA = [f"synthetic:{SKILLS[i % 3]}:40" for i in range(SIZE)]


def _spec(folder: Path) -> Path:
    text = SPEC.read_text()
    for old, new in (
        # the join window covers the join transactions (a node joins before it imports torch); round 0's
        # deadline (join + submit, 180 blocks) is the same, and voting opens as soon as all six committed
        ("join_blocks = 45", f"join_blocks = 40\ncommittee_size = {K}"),
        ("submit_blocks = 20", "submit_blocks = 140"),
        ("vote_blocks = 20", "vote_blocks = 60"),
    ):
        if old not in text:
            raise ValueError(f"node/specs/tiny.toml changed: no {old!r}")
        text = text.replace(old, new, 1)
    path = folder / "committee.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def finished(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, int]]:
    folder = tmp_path_factory.mktemp("nodes")
    cluster = LocalCluster(folder, devnet, SIZE)
    cluster.init()
    config = cluster.members[SPOT].home / "config.toml"  # one member spot-checks the committee
    text = config.read_text()
    assert "spot_checks = 0" in text
    config.write_text(text.replace("spot_checks = 0", f"spot_checks = {SPOT_CHECKS}"))
    run_id = cluster.create_run(_spec(folder))
    try:
        cluster.start(run_id, DATA)
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(SIZE)), 900, "every node's run.done"
        )
        yield cluster, run_id
    finally:
        cluster.stop()
        for member in cluster.members:  # shown when a test fails: where each node stood
            events = [e for e in cluster.events(member.index) if e.get("event") != "round.train_step"]
            print(
                f"node{member.index}:",
                [(e.get("event"), e.get("round"), e.get("why")) for e in events[-12:]],
            )


def _client(cluster: LocalCluster) -> RunsClient:
    return RunsClient(connect(cluster.devnet.rpc_url), cluster.devnet.runs_address)


def test_committee_rounds_finalise_and_only_the_committee_fetches_updates(
    finished: tuple[LocalCluster, int],
) -> None:
    cluster, run_id = finished
    client = _client(cluster)
    run = RunId(run_id)
    assert client.run_info(run).committee_size == K
    finalized = []
    info = client.run_info(run)
    assert info.completed, "the cluster stops when the run is complete on chain"
    for r in range(int(info.current_round) + 1):  # a completed run's current round is its last
        result = client.round_result(run, RoundId(r))
        if result is None:  # failed: the nodes were not ready in time; its successor restarts it
            continue
        finalized.append(r)
        event = client.committee_finalized(run, RoundId(r))
        assert event is not None, f"round {r}: no CommitteeFinalized"
        info = client.round_info(run, RoundId(r))
        block_hash = client.block_hash(info.start_block)
        assert block_hash is not None
        committee = set(select_committee(committee_seed(block_hash, run, r), info.member_snapshot, K))
        drawn = {i: [e for e in cluster.events(i, "committee.drawn") if e["round"] == r] for i in range(SIZE)}
        assert all([set(e["committee"]) for e in drawn[i]] == [committee] for i in range(SIZE)), f"round {r}"
        ours = {i for i in range(SIZE) if drawn[i][0]["ours"]}  # node numbers (not member indices)
        assert len(committee) == K and len(ours) == K, f"round {r}: committee {committee}, nodes {ours}"
        assert len(event.signers) >= quorum(K, info.member_snapshot, client.run_info(run).quorum_bps)
        assert set(event.signers) <= committee, f"round {r}: signers {event.signers}"
        assert len(bitmap_indices(event.included_bitmap)) >= 1
        for i in range(SIZE):
            final = [e for e in cluster.events(i, "round.finalized") if e["round"] == r]
            assert [e["sha"] for e in final] == [result.merged_sha256.hex()], f"node{i} round {r}"
            fetched = [e for e in cluster.events(i, "round.fetched") if e["round"] == r]
            merged = [e for e in cluster.events(i, "round.merged") if e["round"] == r]
            log = cluster.events(i)
            adopted = [n for n, e in enumerate(log) if e.get("event") == "round.adopted" and e["round"] == r]
            before = log[: adopted[0]] if adopted else log  # spot checks fetch updates after adopting
            update_fetches = [e for e in before if e.get("kind") == "update" and e.get("round") == r]
            own = drawn[i][0]["index"]
            sent = [e for e in cluster.events(i, "committee.sent") if e["round"] == r]
            # commits, proposals and votes go to the committee directly, each member known by its peer id
            assert all(e["unknown"] == [] for e in sent), f"node{i} round {r}: {sent}"
            assert all(set(e["accepted"]) <= committee - {own} for e in sent), f"node{i} round {r}: {sent}"
            if [e for e in cluster.events(i, "committee.committed") if e["round"] == r] and committee - {own}:
                assert [e for e in sent if e["type"] == "commit" and e["accepted"]], f"node{i} round {r}"
            if i not in ours:
                assert {e["type"] for e in sent} <= {"commit"}, f"node{i} round {r}: {sent}"
            if i in ours:
                assert merged, f"node{i} (committee) did not merge round {r}"
            else:
                assert not fetched and not merged and not update_fetches, f"node{i} fetched updates in {r}"
                assert not [e for e in cluster.events(i, "committee.voted") if e["round"] == r]
                assert adopted, f"node{i} did not adopt round {r}"
                checked = [e for e in cluster.events(i, "round.spot_checked") if e["round"] == r]
                if i == SPOT:
                    included = len(bitmap_indices(event.included_bitmap))
                    assert [e["updates"] for e in checked] == [min(SPOT_CHECKS, included)], f"round {r}"
                else:
                    assert not checked
                assert not [e for e in cluster.events(i, "round.spot_check_failed") if e["round"] == r]
    assert len(finalized) == ROUNDS


def test_audit_rebuilds_the_committee_rounds_and_passes(finished: tuple[LocalCluster, int]) -> None:
    cluster, run_id = finished
    cmd = [
        str(Path(sys.executable).parent / "fedchain"),
        "audit",
        "--rpc-url",
        cluster.devnet.rpc_url,
        "--registry",
        cluster.devnet.runs_address,
        "--ipfs-api",
        str(cluster.devnet.ipfs_api),
        "--run",
        str(run_id),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.stdout, proc.stderr[-3000:]
    (report,) = json.loads(proc.stdout)["runs"]
    assert proc.returncode == 0, report.get("mismatch_lines")
    rows = [row for row in report["rounds"] if row["status"] == "finalized"]
    assert len(rows) == ROUNDS
    assert all(row["included"] and row["recomputed_sha256"] == row["merged_sha256"] for row in rows)
