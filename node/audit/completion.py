"""Audit check of a run's completion (``run-completed``): the chain's ``Completed`` against its rounds.

A run with ``rounds`` > 0 completes when its ``rounds``-th round finalises (docs/contract.md). From the
history alone the audit checks that ``runInfo.finalizedRounds`` counts the finalised rounds; that the run is
``Completed`` exactly when ``rounds`` of them finalised; and, once it is, that its ``RunCompleted`` event
names ``rounds``, the round whose finalisation was the ``rounds``-th (the last round: none was opened after
it) and that round's finalised state hash. An open-ended run (``rounds = 0``) must stay active.
"""

from __future__ import annotations

from node.audit.records import Mismatch, RunAudit
from node.protocol.history import RunHistory


def check_completion(history: RunHistory, report: RunAudit) -> None:
    """Fill ``report.status`` and ``report.completion`` and add a ``run-completed`` mismatch per finding."""
    info, done = history.info, history.completion
    report.status = info.status.name.lower()
    if done is not None:
        report.completion = {
            "rounds": done.rounds,
            "last_round": int(done.last_round),
            "final_merged_sha256": done.final_merged_sha256.hex(),
            "block": done.block_number,
        }
    finalized = [rec for rec in history.rounds if rec.result is not None]

    def mismatch(expected: str, found: str, detail: str) -> None:
        report.mismatches.append(Mismatch("run-completed", None, expected, found, detail))

    if info.finalized_rounds != len(finalized):
        mismatch(f"{len(finalized)} finalised rounds", str(info.finalized_rounds), "runInfo.finalizedRounds")
    due = info.rounds > 0 and len(finalized) >= info.rounds
    if due != info.completed:
        expected = "completed" if due else "active"
        mismatch(
            expected, report.status, f"{len(finalized)} of {info.rounds} rounds finalised (0: open-ended)"
        )
    if not info.completed:
        if done is not None:
            mismatch(
                "no RunCompleted event", f"RunCompleted in block {done.block_number}", "the run is active"
            )
        return
    if done is None:
        mismatch("a RunCompleted event", "none", "runInfo says Completed")
        return
    last = finalized[info.rounds - 1] if len(finalized) >= info.rounds else None
    if last is None or last.result is None:
        return  # reported above
    want = (info.rounds, int(last.round), last.result.merged_sha256.hex())
    got = (done.rounds, int(done.last_round), done.final_merged_sha256.hex())
    if got != want:
        mismatch(
            f"rounds {want[0]}, last round {want[1]}, state {want[2][:16]}…",
            f"rounds {got[0]}, last round {got[1]}, state {got[2][:16]}…",
            "RunCompleted against the finalised rounds",
        )
    if int(history.rounds[-1].round) != int(last.round):
        mismatch(
            f"no round after round {last.round}",
            f"round {history.rounds[-1].round}",
            "a round opened after the last one",
        )
