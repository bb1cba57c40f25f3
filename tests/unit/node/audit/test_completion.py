"""node.audit.completion on hand-built histories: a completed run passes, each inconsistency is named."""

from __future__ import annotations

from dataclasses import replace

from ledger.types import (
    Admission,
    RoundId,
    RoundInfo,
    RoundResult,
    RoundStatus,
    RunCompletion,
    RunId,
    RunInfo,
    RunStatus,
)
from node.audit.completion import check_completion
from node.audit.records import RunAudit
from node.protocol.history import RoundRecord, RunHistory

SHA = [bytes([i + 1]) * 32 for i in range(4)]


def _round(r: int, finalized: bool) -> RoundRecord:
    status = RoundStatus.FINALIZED if finalized else RoundStatus.FAILED
    info = RoundInfo(
        RunId(1),
        RoundId(r),
        100 * r,
        100 * r + 10,
        100 * r + 20,
        3,
        3,
        2,
        3,
        status,
        100 * r + 15,
        SHA[r] if finalized else b"\0" * 32,
        b"\0" * 32,
        False,
    )
    result = (
        RoundResult(RunId(1), RoundId(r), SHA[r], "bafy", b"\0" * 32, 2, 3, 100 * r + 15)
        if finalized
        else None
    )
    return RoundRecord(info, (), (), result, ())


def _history(statuses: list[bool], rounds: int, status: RunStatus, done: RunCompletion | None) -> RunHistory:
    recs = tuple(_round(r, f) for r, f in enumerate(statuses))
    info = RunInfo(
        RunId(1),
        b"\0" * 32,
        "bafyspec",
        "0x" + "0" * 40,
        "0x" + "0" * 40,
        6_666,
        10,
        10,
        1,
        Admission.OPEN,
        RoundId(len(statuses) - 1),
        3,
        0,
        0,
        rounds,
        sum(statuses),
        status,
    )
    return RunHistory(info, recs, (), done)


def _audit(history: RunHistory) -> RunAudit:
    report = RunAudit(1, "bafyspec")
    check_completion(history, report)
    return report


def test_a_run_completed_after_a_failed_retry_passes() -> None:
    done = RunCompletion(RunId(1), 2, RoundId(2), SHA[2], 215)
    report = _audit(_history([True, False, True], 2, RunStatus.COMPLETED, done))

    assert report.mismatches == []
    assert report.status == "completed"
    assert report.completion == {
        "rounds": 2,
        "last_round": 2,
        "final_merged_sha256": SHA[2].hex(),
        "block": 215,
    }


def test_an_open_ended_or_unfinished_run_stays_active() -> None:
    assert _audit(_history([True, True, False], 0, RunStatus.ACTIVE, None)).mismatches == []
    assert _audit(_history([True, False], 2, RunStatus.ACTIVE, None)).mismatches == []


def test_each_inconsistency_is_named() -> None:
    done = RunCompletion(RunId(1), 2, RoundId(2), SHA[2], 215)
    cases = [
        _history([True, False, True], 2, RunStatus.ACTIVE, None),  # due but not completed
        _history([True, False], 2, RunStatus.COMPLETED, done),  # completed too early
        _history([True, False, True], 2, RunStatus.COMPLETED, None),  # no RunCompleted event
        _history([True, False, True], 2, RunStatus.COMPLETED, replace(done, final_merged_sha256=SHA[0])),
        _history([True, False, True, False], 2, RunStatus.COMPLETED, done),  # a round after the last
        _history([True, True, False], 0, RunStatus.ACTIVE, done),  # an event on an active run
    ]
    for history in cases:
        whats = {m.what for m in _audit(history).mismatches}
        assert whats == {"run-completed"}, history
    counted = _history([True, True], 3, RunStatus.ACTIVE, None)
    wrong = replace(counted, info=replace(counted.info, finalized_rounds=1))
    assert [m.expected for m in _audit(wrong).mismatches] == ["2 finalised rounds"]
