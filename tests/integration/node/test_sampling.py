"""Client sampling on a real devnet: four ``fedchain node`` processes, ``clients_per_round = 2``.

anvil (1 s blocks) + an IPFS daemon that every node uses as its store; tiny model, two rounds, quorum of all
four members (so every member's vote must land). In the first round with a commit the test itself commits,
with the dev key of a member that was not selected, a copy of a selected member's valid update. Checked:
only the selected members' nodes commit, every member votes in every round, both rounds finalise with
exactly the selected members' updates in the included set (the unselected commit is left out by every
node), and ``fedchain audit`` passes with each round's selection recomputed from the chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import connect, dev_accounts
from ledger.client import RunsClient
from ledger.types import RoundId, RunId, included_set_hash
from node.devnet.cluster import LocalCluster
from node.protocol.sampling import Selection, read_selection

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = [f"synthetic:{skill}:40" for skill in ("arithmetic", "reverse", "capitals", "arithmetic")]
K, ROUNDS = 2, 2


def _spec(folder: Path) -> Path:
    text = SPEC.read_text()
    for old, new in (
        ("seed = 7 ", f"clients_per_round = {K}\nseed = 7 "),
        ("quorum_bps = 6666", "quorum_bps = 10000"),
        ("join_blocks = 45", "join_blocks = 60"),
    ):
        if old not in text:
            raise ValueError(f"node/specs/tiny.toml changed: no {old!r}")
        text = text.replace(old, new, 1)
    path = folder / "sampled.toml"
    path.write_text(text)
    return path


def _selection(client: RunsClient, run: RunId, r: int) -> Selection | None:
    info = client.round_info(run, RoundId(r))
    return read_selection(client, run, info, K)


def _commit_as_unselected(cluster: LocalCluster, client: RunsClient, run: RunId) -> tuple[int, str]:
    """In the first round with a commit, commit a copy of it with an unselected member's key.

    Returns that round and the unselected member. (Round 0 fails when the nodes start slower than
    ``join_blocks + submit_blocks``; the first round with a commit is then a later one.)
    """
    found: dict[str, Any] = {}

    def committed() -> bool:
        r = int(client.run_info(run).current_round)
        subs = client.submissions(run, RoundId(r))
        if subs:
            found.update(round=r, sub=subs[0])
        return bool(subs)

    cluster.wait_until(committed, 500, "a selected member's commit")
    r, copied = int(found["round"]), found["sub"]
    sel = _selection(client, run, r)
    assert sel is not None
    rogue = next(m.address for m in cluster.members if not sel.includes(m.address))
    keys = dev_accounts("anvil", cluster.size + 1)[1:]  # member i pays with dev account i + 1
    index = {m.address.lower(): m.index for m in cluster.members}
    signer = RunsClient(client.w3, client.address, keys[index[rogue.lower()]])
    signer.submit_update(run, RoundId(r), copied.sha256, copied.cid, copied.num_samples)
    return r, rogue


@pytest.fixture(scope="module")
def finished(
    devnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalCluster, int, int, str]]:
    folder = tmp_path_factory.mktemp("nodes")
    cluster = LocalCluster(folder, devnet, len(DATA), store="ipfs")
    cluster.init()
    run_id = cluster.create_run(_spec(folder))
    client = RunsClient(connect(devnet.rpc_url), devnet.runs_address)
    try:
        cluster.start(run_id, DATA)
        rogue_round, rogue = _commit_as_unselected(cluster, client, RunId(run_id))
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)),
            600,
            "every node's run.done",
        )
        yield cluster, run_id, rogue_round, rogue
    finally:
        cluster.stop()
        for member in cluster.members:  # shown when a test fails: where each node stood
            events = [e for e in cluster.events(member.index) if e.get("event") != "round.train_step"]
            print(
                f"node{member.index}:", [(e.get("event"), e.get("round"), e.get("why")) for e in events[-8:]]
            )


def test_only_selected_members_commit_and_only_their_updates_are_merged(
    finished: tuple[LocalCluster, int, int, str],
) -> None:
    cluster, run_id, rogue_round, rogue = finished
    client = RunsClient(connect(cluster.devnet.rpc_url), cluster.devnet.runs_address)
    run = RunId(run_id)
    names = {m.address.lower(): m.index for m in cluster.members}
    finalized = []

    info = client.run_info(run)
    assert info.completed, "the cluster stops when the run is complete on chain"
    for r in range(int(info.current_round) + 1):  # a completed run's current round is its last
        result = client.round_result(run, RoundId(r))
        if result is None:  # failed: too few commits (nodes not ready yet); its successor restarts it
            assert r < rogue_round, f"round {r} failed after commits started"
            continue
        finalized.append(r)
        sel = _selection(client, run, r)
        assert sel is not None and len(sel.selected) == K and len(sel.candidates) == cluster.size
        node_commits = {
            m.address
            for m in cluster.members
            for e in cluster.events(m.index, "round.submitted")
            if e["round"] == r
        }
        assert node_commits == set(sel.selected), f"round {r}: nodes that committed"
        subs = client.submissions(run, RoundId(r))
        on_chain = {s.member for s in subs}
        assert on_chain == set(sel.selected) | ({rogue} if r == rogue_round else set()), f"round {r}"
        chosen = [(s.member, s.sha256) for s in subs if sel.includes(s.member)]
        assert result.included_set_hash == included_set_hash(chosen), f"round {r}: included set"
        assert result.votes == cluster.size  # quorum of all four: every member merged and voted
        voters = {v.member for v in client.votes(run, RoundId(r))}
        assert voters == {m.address for m in cluster.members}
    assert len(finalized) == ROUNDS and rogue_round in finalized
    excluded = cluster.events(names[rogue.lower()], "round.update_excluded")
    assert [(e["round"], e["member"]) for e in excluded] == [(rogue_round, rogue)]


def test_audit_recomputes_the_selection_and_passes(
    finished: tuple[LocalCluster, int, int, str],
) -> None:
    cluster, run_id, _, rogue = finished
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
    assert all(row["selected"] is not None and len(row["selected"]) == K for row in rows)
    assert all(row["included"] == row["selected"] for row in rows)
    assert any(f"{rogue} was left out: not selected" in note for note in report["notes"])
