"""Five ``fedchain node`` processes on anvil (1 s blocks) + an IPFS daemon: robustness of a real run.

One devnet and one run per module (tiny model, three rounds, ``trimmed_mean`` trimming one update per
side): node 4 is Byzantine (``--byzantine scaling:10``), node 3 is killed with SIGKILL right after it
committed its round-1 update and restarted with the same command. Every node stores in the IPFS daemon, so
the test reads every artifact from there. Checked: every round finalises on chain, every node ends on the
chain's merged hash, the restarted node neither trained, committed nor voted twice (its log and the
contract's events), and the robust merge stays close to the honest-only merge recomputed with
``training.merge`` while a plain mean would not.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ledger.chain import connect
from ledger.client import RunsClient
from ledger.types import RoundId, RoundStatus, RunId
from node.devnet.cluster import LocalCluster
from p2p.storage.base import Cid

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = [f"synthetic:{skill}:40" for skill in ("arithmetic", "reverse", "capitals", "arithmetic", "reverse")]
ROUNDS = 3
KILLED, BYZANTINE = 3, 4


def _spec(folder: Path) -> Path:
    text = SPEC.read_text()
    for old, new in (
        ("rounds = 2", f"rounds = {ROUNDS}"),
        ('aggregator = "mean"', 'aggregator = "trimmed_mean"'),
        ("[aggregator_params]", "[aggregator_params]\ntrim_ratio = 0.2"),
        # the join window covers the join transactions (a node joins before it imports torch); round 0's
        # deadline (join + submit, 80 blocks) is the same, and voting opens as soon as all five committed
        ("join_blocks = 45", "join_blocks = 30"),
        ("submit_blocks = 20", "submit_blocks = 50"),
    ):
        if old not in text:
            raise ValueError(f"node/specs/tiny.toml changed: no {old!r}")
        text = text.replace(old, new, 1)
    path = folder / "robust.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def finished(
    devnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalCluster, int, Path]]:
    folder = tmp_path_factory.mktemp("nodes")
    cluster = LocalCluster(folder, devnet, len(DATA), store="ipfs")
    cluster.init()
    spec = _spec(folder)
    run_id = cluster.create_run(spec)
    try:
        cluster.start(run_id, DATA, extra={BYZANTINE: ["--byzantine", "scaling:10"]})
        _kill_after_round_1_commit_and_restart(cluster, run_id)
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)),
            300,
            "every node's run.done",
        )
        yield cluster, run_id, spec
    finally:
        cluster.stop()


def _kill_after_round_1_commit_and_restart(cluster: LocalCluster, run_id: int) -> None:
    cluster.wait_until(
        lambda: any(e["round"] == 1 for e in cluster.events(KILLED, "round.submitted")),
        240,
        f"node{KILLED}'s round-1 commit",
    )
    victim = cluster.processes[KILLED]
    if victim.pid is None:
        raise RuntimeError("node process has no pid")
    os.kill(victim.pid, signal.SIGKILL)
    victim.stop(timeout=5.0)  # reaps it
    member = cluster.members[KILLED]
    _wait_until_bindable(member.host, member.port, 10.0)  # its restart listens on the same libp2p port
    cluster.start(run_id, DATA, indices=[KILLED])


def _wait_until_bindable(host: str, port: int, timeout: float) -> None:
    """Poll until ``host:port`` can be bound, for at most ``timeout`` seconds.

    The probe is the restarted node's own check (``p2p.host.ensure_port_free``), which refuses a port that
    the killed process's listener still holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    pytest.fail(f"{host}:{port} still in use {timeout:g} s after the node was killed: {exc}")
        time.sleep(0.02)


def _client(cluster: LocalCluster) -> RunsClient:
    return RunsClient(connect(cluster.devnet.rpc_url), cluster.devnet.runs_address)


def test_every_round_finalises_and_every_node_ends_on_the_chains_hash(
    finished: tuple[LocalCluster, int, Path],
) -> None:
    cluster, run_id, _ = finished
    client = _client(cluster)

    finals = {}
    for r in range(ROUNDS):
        result = client.round_result(RunId(run_id), RoundId(r))
        assert result is not None, f"round {r} not finalised"
        finals[r] = result.merged_sha256.hex()

    for i in range(cluster.size):
        adopted = {e["round"]: e["sha"] for e in cluster.events(i, "round.finalized")}
        assert adopted == finals, f"node{i}"
    honest_votes = {(e["round"], e["sha"]) for i in range(cluster.size) if i != BYZANTINE
                    for e in cluster.events(i, "round.voted")}  # fmt: skip
    assert honest_votes <= set(finals.items())


def test_a_node_killed_mid_round_resumes_without_training_committing_or_voting_twice(
    finished: tuple[LocalCluster, int, Path],
) -> None:
    cluster, run_id, _ = finished
    client = _client(cluster)
    address = cluster.members[KILLED].address.lower()

    assert len(cluster.events(KILLED, "node.started")) == 2
    trained = [e["round"] for e in cluster.events(KILLED, "round.trained")]
    assert sorted(trained) == sorted(set(trained)) and 1 in trained
    for r in range(ROUNDS):
        subs = [s for s in client.submissions(RunId(run_id), RoundId(r)) if s.member.lower() == address]
        votes = [v for v in client.votes(RunId(run_id), RoundId(r)) if v.member.lower() == address]
        assert len(subs) <= 1 and len(votes) <= 1, f"round {r}: {len(subs)} commits, {len(votes)} votes"
    committed = [e for e in cluster.events(KILLED, "round.submitted") if e["round"] == 1]
    chain = [s for s in client.submissions(RunId(run_id), RoundId(1)) if s.member.lower() == address]
    assert [s.sha256.hex() for s in chain] == [committed[0]["sha"]]
    assert cluster.events(KILLED, "run.done")


def test_a_scaling_attacker_neither_stops_the_run_nor_drags_the_robust_merge(
    finished: tuple[LocalCluster, int, Path],
) -> None:
    from node.protocol.model import ModelRuntime
    from node.runspec import RunSpec
    from p2p.storage.ipfs import IpfsStore
    from training.merge import UpdateInput, decode_state, merge

    cluster, run_id, spec_path = finished
    client = _client(cluster)
    byzantine = cluster.members[BYZANTINE].address.lower()
    attacks = cluster.events(BYZANTINE, "round.byzantine")
    assert attacks and all(e["norm"] > 5 * e["honest_norm"] for e in attacks)

    spec = RunSpec.from_toml(spec_path)
    runtime = ModelRuntime(spec)
    base = runtime.initial_state()
    store = IpfsStore(cluster.devnet.ipfs_api, timeout=30.0)
    try:
        subs = client.submissions(RunId(run_id), RoundId(0))
        updates = [UpdateInput(s.member, store.get(Cid(s.cid)), int(s.num_samples)) for s in subs]
        result = client.round_result(RunId(run_id), RoundId(0))
        assert result is not None
        final = decode_state(store.get(Cid(result.merged_cid)), flat_spec=runtime.flat_spec)
    finally:
        store.close()
    assert byzantine in {s.member.lower() for s in subs} and len(subs) >= 4
    honest_spec = dataclasses.replace(spec.merge_spec(), aggregator="mean", aggregator_params={})
    eligible = client.round_info(RunId(run_id), RoundId(0)).eligible
    honest = merge(
        base,
        [u for u in updates if u.key.lower() != byzantine],
        honest_spec,
        run=str(run_id),
        round=0,
        eligible=eligible,
    )
    naive = merge(base, updates, honest_spec, run=str(run_id), round=0, eligible=eligible)
    assert naive.included and honest.included

    robust_gap = float(torch.linalg.vector_norm(final.params - honest.state.params))
    naive_gap = float(torch.linalg.vector_norm(naive.state.params - honest.state.params))
    assert robust_gap < 0.25 * naive_gap, (robust_gap, naive_gap)
    assert client.round_info(RunId(run_id), RoundId(0)).status == RoundStatus.FINALIZED
