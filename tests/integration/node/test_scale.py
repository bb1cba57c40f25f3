"""Sixteen ``fedchain node`` processes (more than the ten accounts a default devnet funds) finalise a run.

The node tests' shared devnet (1 s blocks, 20 funded accounts, an IPFS daemon), the tiny model with one
local step, two rounds, each node with its own embedded store. The join window only has to cover the join
transactions (a node joins before it imports torch); the submit window is long, but voting opens as soon as
all 16 have committed, so a slow start delays a round rather than failing it. Checked on chain: both rounds
finalise with all 16 commits, and every node ends on the chain's merged hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import connect
from ledger.client import RunsClient
from ledger.types import RoundId, RunId
from node.devnet.cluster import LocalCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

SIZE = 16
ROUNDS = 2
SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
SKILLS = ("arithmetic", "reverse", "capitals")


def _spec(folder: Path) -> Path:
    text = SPEC.read_text()
    for old, new in (
        ("local_steps = 4", "local_steps = 1"),
        ("join_blocks = 45", f"join_blocks = {60 + 2 * SIZE}"),
        ("submit_blocks = 20", "submit_blocks = 300"),  # an upper bound: voting opens once all committed
        ("vote_blocks = 20", "vote_blocks = 120"),
    ):
        if old not in text:
            raise ValueError(f"node/specs/tiny.toml changed: no {old!r}")
        text = text.replace(old, new, 1)
    path = folder / "scale.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def finished(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, int]]:
    folder = tmp_path_factory.mktemp("nodes")
    cluster = LocalCluster(folder, devnet, SIZE)
    cluster.init()
    run_id = cluster.create_run(_spec(folder))
    try:
        cluster.start(run_id, [f"synthetic:{SKILLS[i % len(SKILLS)]}:20" for i in range(SIZE)])
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(SIZE)), 900, "every node's run.done"
        )
        yield cluster, run_id
    finally:
        cluster.stop()


def test_sixteen_members_finalise_every_round_on_one_hash(finished: tuple[LocalCluster, int]) -> None:
    cluster, run_id = finished
    client = RunsClient(connect(cluster.devnet.rpc_url), cluster.devnet.runs_address)
    members = sorted(m.address.lower() for m in cluster.members)

    assert len(set(members)) == SIZE
    for r in range(ROUNDS):
        result = client.round_result(RunId(run_id), RoundId(r))
        assert result is not None, f"round {r} not finalised"
        subs = sorted(s.member.lower() for s in client.submissions(RunId(run_id), RoundId(r)))
        assert subs == members, f"round {r}: {len(subs)} commits"
        assert result.votes >= client.round_info(RunId(run_id), RoundId(r)).quorum
        for i in range(SIZE):
            finals = [e["sha"] for e in cluster.events(i, "round.finalized") if e["round"] == r]
            assert finals == [result.merged_sha256.hex()], f"node{i} round {r}"
