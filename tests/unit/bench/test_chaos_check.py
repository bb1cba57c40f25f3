"""Tests for the fault campaign's invariant checks (bench/chaos_check.py) and its seeded schedule.

Each test builds one run's chain history from the real ``ledger.types`` / ``node.protocol.history``
records and each node's real ``state.db`` (``NodeState``) and event log, then breaks one invariant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from bench.chaos import KINDS, schedule
from bench.chaos_check import NodeView, check_run, integrity
from ledger.types import (
    Admission,
    MergeVote,
    RoundId,
    RoundInfo,
    RoundResult,
    RoundStatus,
    RunId,
    RunInfo,
    Submission,
    included_set_hash,
)
from node.protocol.history import RoundRecord, RunHistory
from node.protocol.state import NodeState

MEMBERS = ["0x" + f"{i + 1:040x}" for i in range(3)]
UPDATES = {m: f"update of {m}".encode() for m in MEMBERS}
MERGED = hashlib.sha256(b"merged").digest()


def _history(*, finalized: bool = True, votes_per_member: int = 1, start_block: int = 100) -> RunHistory:
    subs = tuple(
        Submission(RunId(1), RoundId(0), m, hashlib.sha256(UPDATES[m]).digest(), f"cid-{m}", 10, 101)
        for m in MEMBERS
    )
    included = included_set_hash([(s.member, s.sha256) for s in subs])
    votes = tuple(
        MergeVote(RunId(1), RoundId(0), m, MERGED, "cid-merged", included, 1, 110)
        for m in MEMBERS
        for _ in range(votes_per_member)
    )
    result = (
        RoundResult(RunId(1), RoundId(0), MERGED, "cid-merged", included, 2, 3, 111) if finalized else None
    )
    status = RoundStatus.FINALIZED if finalized else RoundStatus.FAILED
    end = start_block + 40
    info = RoundInfo(RunId(1), RoundId(0), start_block, start_block + 20, end, 0, 3, 2, 3, status, 111,
                     MERGED, included, False)  # fmt: skip
    run = RunInfo(RunId(1), b"\0" * 32, "cid-spec", MEMBERS[0], MEMBERS[0], 6666, 20, 20, 1, Admission.OPEN,
                  RoundId(0), 3, 0, rounds=1)  # fmt: skip
    return RunHistory(run, (RoundRecord(info, subs, votes, result, ()),), ())


def _nodes(tmp_path: Path, *, adopted: str = MERGED.hex()) -> list[NodeView]:
    views = []
    for i, member in enumerate(MEMBERS):
        home = tmp_path / f"node{i}"
        state = NodeState(home / "state.db")
        sha = hashlib.sha256(UPDATES[member]).hexdigest()
        state.update_round(1, 0, update_sha=sha, final_sha=adopted, status="finalized")
        state.adopt(1, 0, adopted, "cid-merged", "finalized")
        state.close()
        events = [
            {"event": "node.joined", "run": 1},
            {"event": "round.submitted", "run": 1, "round": 0, "sha": sha},
            {"event": "round.finalized", "run": 1, "round": 0, "sha": adopted},
        ]
        (home / "node.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        views.append(NodeView(i, member, home / "state.db", home / "node.jsonl"))
    return views


def _fetch(cid: str) -> bytes:
    return UPDATES[cid.removeprefix("cid-")]


def test_a_clean_run_has_no_violations_and_checks_liveness(tmp_path: Path) -> None:
    out = check_run(_history(), _nodes(tmp_path), _fetch, rounds=1, faults_end_block=90)

    assert out.violations == []
    assert (out.rounds_finalized, out.rounds, out.liveness_checked) == (1, 1, True)


def test_a_node_that_adopted_another_hash_breaks_finality(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path)
    state = NodeState(nodes[1].state_path)
    state.adopt(1, 0, "ff" * 32, "cid-other", "diverged")
    state.close()

    out = check_run(_history(), nodes, _fetch, rounds=1, faults_end_block=90)

    assert out.violations == [f"finality: round 0: node1 adopted {'ff' * 32}, chain {MERGED.hex()}"]


def test_an_update_missing_from_ipfs_breaks_availability(tmp_path: Path) -> None:
    def fetch(cid: str) -> bytes:
        if cid == f"cid-{MEMBERS[2]}":
            raise OSError("block not found")
        return _fetch(cid)

    out = check_run(_history(), _nodes(tmp_path), fetch, rounds=1, faults_end_block=90)

    lost = MEMBERS[2]
    assert out.violations == [
        f"availability: round 0: update cid-{lost} of {lost} not fetchable: block not found"
    ]


def test_a_second_vote_and_a_logged_commit_the_chain_lacks_are_double_actions(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path)
    with nodes[0].log_path.open("a") as f:
        f.write(json.dumps({"event": "round.submitted", "run": 1, "round": 0, "sha": "ab" * 32}) + "\n")

    out = check_run(_history(votes_per_member=2), nodes, _fetch, rounds=1, faults_end_block=90)

    assert "double submit: round 0: node0 logged a commit the chain does not hold" in out.violations
    assert all(f"double vote: round 0: {m} did it 2 times" in out.violations for m in MEMBERS)


def test_the_first_round_after_the_faults_must_finalise(tmp_path: Path) -> None:
    out = check_run(_history(finalized=False), _nodes(tmp_path), _fetch, rounds=1, faults_end_block=100)

    assert out.liveness_checked and out.rounds_finalized == 0
    assert [v for v in out.violations if v.startswith("liveness")] == [
        "liveness: round 0, the first after the faults (block 100), did not finalise within its windows "
        "(blocks 100-140)"
    ]


def test_no_round_after_the_faults_leaves_liveness_unchecked(tmp_path: Path) -> None:
    out = check_run(_history(), _nodes(tmp_path), _fetch, rounds=1, faults_end_block=101)

    assert not out.liveness_checked and out.violations == []


def test_a_corrupt_state_db_fails_the_integrity_check(tmp_path: Path) -> None:
    nodes = _nodes(tmp_path)
    data = bytearray(nodes[2].state_path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the header's tail and the schema page
    nodes[2].state_path.write_bytes(bytes(data))

    assert integrity(nodes[0].state_path) is None
    problem = integrity(nodes[2].state_path)
    assert problem is not None and str(nodes[2].state_path) in problem
    out = check_run(_history(), nodes, _fetch, rounds=1, faults_end_block=90)
    assert [v for v in out.violations if v.startswith("integrity: node2")]


def test_the_schedule_is_a_function_of_the_seed() -> None:
    first = schedule(5, 3, KINDS, 3)

    assert first == schedule(5, 3, KINDS, 3)
    assert any(schedule(s, 3, KINDS, 3) != first for s in range(6, 12))
    assert 1 <= len(first) <= 3 and len({f.kind for f in first}) == len(first)
    assert all(f.node == 2 for s in range(50) for f in schedule(s, 3, KINDS, 3) if f.kind == "disk_full")


def test_a_skipped_kind_is_never_drawn() -> None:
    kinds = tuple(k for k in KINDS if k != "partition")

    assert all(f.kind != "partition" for s in range(50) for f in schedule(s, 3, kinds, 3))
    assert schedule(1, 3, (), 3) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_drawn_for_some_seed(kind: str) -> None:
    assert any(f.kind == kind for s in range(100) for f in schedule(s, 3, KINDS, 3))


def test_a_kill_or_pause_reaches_only_a_node_process_that_still_runs() -> None:
    import signal
    import subprocess
    import sys

    from bench.chaos import _signalled

    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _signalled(running, signal.SIGSTOP)
        assert _signalled(running, signal.SIGCONT)
    finally:
        running.kill()
        running.wait(timeout=10)
    # the node exited (e.g. once its run was complete): the perturbation is not applied, nothing raises
    assert running.returncode is not None and not _signalled(running, signal.SIGSTOP)
    assert not _signalled(None, signal.SIGKILL)


class _RacingCluster:
    """A node that logs ``run.done`` between the campaign's read of its log and its check of the process."""

    def __init__(self, logged_after_reads: int) -> None:
        self.reads = 0
        self.after = logged_after_reads
        self.processes = {0: self}

    def events(self, i: int, name: str) -> list[dict[str, object]]:
        self.reads += 1
        return [{"event": name, "run": 7}] if self.reads > self.after else []

    def is_running(self) -> bool:
        return False

    def stop(self, timeout: float) -> int:
        return 0

    def tail(self, n: int) -> str:
        return ""


def test_a_node_that_logged_run_done_as_it_exited_is_not_reported() -> None:
    import argparse

    from bench.chaos import Campaign

    args = argparse.Namespace(nodes=1, join_s=1, rounds=1, submit_s=1, vote_s=1)
    campaign = object.__new__(Campaign)
    campaign.args, campaign.cluster = args, _RacingCluster(logged_after_reads=1)
    campaign._fatal = lambda i: None  # type: ignore[method-assign]
    assert campaign._wait_done(7) == []

    campaign.cluster = _RacingCluster(logged_after_reads=99)  # it never logged run.done: reported
    assert [p.split(" before")[0] for p in campaign._wait_done(7)] == ["node0 exited (code 0)"]


class _CompletedRestart:
    """A node restarted after its run completed: ready, ``run.done``, exit 0 before the readiness poll."""

    def __init__(self, returncode: int, logged: bool) -> None:
        self.returncode, self.logged = returncode, logged
        self.processes: dict[int, object] = {}

    def start(self, run_id: int, data: list[str], *, indices: list[int]) -> None:
        from node.devnet.services import ServiceError

        self.processes[indices[0]] = self
        raise ServiceError(f"node{indices[0]} exited with code {self.returncode} before it was ready")

    def events(self, i: int, name: str) -> list[dict[str, object]]:
        return [{"event": name, "run": 7}] if self.logged else []


def test_a_restart_that_finds_the_run_complete_is_noted_and_a_failed_one_raised() -> None:
    from bench.chaos import Campaign, Fault
    from node.devnet.services import ServiceError

    fault = Fault("kill", 0, 1.0, 2.0)
    campaign = object.__new__(Campaign)
    campaign.cluster = _CompletedRestart(0, logged=True)
    notes: list[str] = []
    campaign._restart(fault, 7, ["data"], notes)
    assert notes and "exited 0" in notes[0]
    for returncode, logged in ((1, True), (0, False)):
        campaign.cluster = _CompletedRestart(returncode, logged)
        with pytest.raises(ServiceError):
            campaign._restart(fault, 7, ["data"], [])
