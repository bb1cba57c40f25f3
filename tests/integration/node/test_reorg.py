"""Three ``fedchain node`` processes acting on confirmed state while anvil reorganises the chain under them.

The nodes run with ``[chain] confirmations = 4`` (1 s blocks, tiny model, two rounds). Right after node 0
logs its round-0 commit, the test reorganises the chain (``anvil_reorg``) from the commit's block on, and
does it again right after node 0 logs its round-0 vote: both transactions (and any other in those blocks)
leave the chain. Checked on chain and in the logs: node 0 notices each drop and sends again, every member
ends with exactly one commit per round and at most one vote, round 0's update set holds all three
commits, both rounds finalise, and every node finalised each round once, on the chain's hash.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import connect
from ledger.client import RunsClient
from ledger.types import RoundId, RunId
from node.devnet.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = [f"synthetic:{skill}:40" for skill in ("arithmetic", "reverse", "capitals")]
CONFIRMATIONS = 4
ROUNDS = 2


def _spec(folder: Path) -> Path:
    text = SPEC.read_text()
    for old, new in (("join_blocks = 45", "join_blocks = 90"), ("submit_blocks = 20", "submit_blocks = 120")):
        if old not in text:
            raise ValueError(f"node/specs/tiny.toml changed: no {old!r}")
        text = text.replace(old, new, 1)
    path = folder / "reorg.toml"
    path.write_text(text)
    return path


def _confirm(cluster: LocalCluster, depth: int) -> None:
    for member in cluster.members:
        config = member.home / "config.toml"
        text, n = re.subn(r"(?m)^confirmations = 0$", f"confirmations = {depth}", config.read_text())
        if n != 1:
            raise ValueError(f"{config}: no `confirmations = 0` line")
        config.write_text(text)


def _first(cluster: LocalCluster, event: str) -> tuple[int, str] | None:
    """The first node (and its transaction) that logged round 0's ``event`` with a mined transaction."""
    for i in range(cluster.size):
        for e in cluster.events(i, event):
            if e["round"] == 0 and len(e.get("tx", "")) == 64:
                return i, str(e["tx"])
    return None


def _reorg_after(cluster: LocalCluster, w3: Any, event: str) -> tuple[int, int]:
    """Wait for a node's round-0 ``event``, then reorganise the chain from its transaction's block on.

    Returns the node and the depth of the reorganisation.
    """
    cluster.wait_until(lambda: _first(cluster, event) is not None, 300, f"a round-0 {event}")
    found = _first(cluster, event)
    assert found is not None
    node, tx = found
    block = int(w3.eth.get_transaction_receipt("0x" + tx)["blockNumber"])
    depth = int(w3.eth.block_number) - block + 1
    w3.provider.make_request("anvil_reorg", [depth, []])
    return node, depth


@pytest.fixture(scope="module")
def reorganised(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, int, list[tuple[int, int]]]]:
    from node.devnet.anvil import AnvilConfig
    from node.devnet.harness import Devnet

    with Devnet(tmp_path_factory.mktemp("devnet"), AnvilConfig(block_time=1.0), ipfs=True) as devnet:
        folder = tmp_path_factory.mktemp("nodes")
        cluster = LocalCluster(folder, devnet, len(DATA))
        cluster.init()
        _confirm(cluster, CONFIRMATIONS)
        run_id = cluster.create_run(_spec(folder))
        w3 = connect(devnet.rpc_url)
        try:
            cluster.start(run_id, DATA)
            reorgs = [_reorg_after(cluster, w3, "round.submitted")]
            reorgs.append(_reorg_after(cluster, w3, "round.voted"))
            cluster.wait_until(
                lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)),
                300,
                "every node's run.done",
            )
            yield cluster, run_id, reorgs
        finally:
            cluster.stop()


Reorgs = tuple[LocalCluster, int, list[tuple[int, int]]]


def test_reorgs_stayed_within_the_confirmation_depth(reorganised: Reorgs) -> None:
    _, _, reorgs = reorganised

    assert all(1 <= depth <= CONFIRMATIONS for _, depth in reorgs), reorgs


def test_a_dropped_commit_and_vote_are_sent_again(reorganised: Reorgs) -> None:
    cluster, _, [(submitter, _), (voter, _)] = reorganised

    dropped = [(e["round"], e["what"]) for e in cluster.events(submitter, "round.tx_dropped")]
    assert (0, "submit") in dropped
    submitted = [e for e in cluster.events(submitter, "round.submitted") if e["round"] == 0]
    assert len(submitted) == 2  # the same transaction signed again (same nonce and fields: same hash)
    dropped = [(e["round"], e["what"]) for e in cluster.events(voter, "round.tx_dropped")]
    assert (0, "vote") in dropped
    events = cluster.events(voter)
    at = next(k for k, e in enumerate(events) if e.get("event") == "round.tx_dropped" and e["what"] == "vote")
    again = [
        e for e in events[at:] if e.get("round") == 0 and e.get("event") in ("round.voted", "round.vote_late")
    ]
    assert again, "the dropped vote was neither sent again nor found settled by the others"


def test_nothing_is_lost_or_doubled_on_chain(reorganised: Reorgs) -> None:
    cluster, run_id, _ = reorganised
    client = RunsClient(connect(cluster.devnet.rpc_url), cluster.devnet.runs_address)
    members = sorted(m.address.lower() for m in cluster.members)

    for r in range(ROUNDS):
        subs = sorted(s.member.lower() for s in client.submissions(RunId(run_id), RoundId(r)))
        votes = [v.member.lower() for v in client.votes(RunId(run_id), RoundId(r))]
        assert subs == members, f"round {r}: commits {subs}"
        assert len(votes) == len(set(votes)), f"round {r}: a member voted twice"
        result = client.round_result(RunId(run_id), RoundId(r))
        assert result is not None, f"round {r} not finalised"
        for i in range(cluster.size):
            finals = [e["sha"] for e in cluster.events(i, "round.finalized") if e["round"] == r]
            assert finals == [result.merged_sha256.hex()], f"node{i} round {r}: {finals}"
