"""The model lineage rule and the replay window, on hand-built run histories (no chain needed)."""

from __future__ import annotations

from eth_utils.address import to_checksum_address

from ledger.types import (
    Admission,
    RequestId,
    RequestStatus,
    RoundId,
    RoundInfo,
    RoundResult,
    RoundStatus,
    RunId,
    RunInfo,
    UnlearningRequest,
)
from node.protocol.history import (
    RequestRecord,
    RoundRecord,
    RunHistory,
    base_of_round,
    exclusions,
    replay_window,
)

RUN = RunId(1)
A, B = "0x" + "aa" * 20, "0x" + "bb" * 20


def _round(
    r: int, start: int, closed: int | None, status: RoundStatus = RoundStatus.FINALIZED
) -> RoundRecord:
    info = RoundInfo(
        RUN,
        RoundId(r),
        start,
        start + 5,
        start + 10,
        3,
        3,
        2,
        3,
        status,
        closed or 0,
        bytes([r + 1]) * 32,
        b"\x00" * 32,
        False,
    )
    result = None
    if status == RoundStatus.FINALIZED and closed is not None:
        result = RoundResult(RUN, RoundId(r), bytes([r + 1]) * 32, f"cid-{r}", b"\x00" * 32, 2, 3, closed)
    return RoundRecord(info, (), (), result, ())


def _request(rid: int, subject: str, first: int, filed: int, fulfilled: int | None) -> RequestRecord:
    req = UnlearningRequest(
        RequestId(rid),
        RUN,
        subject,
        subject,
        RoundId(first),
        RequestStatus.FULFILLED if fulfilled else RequestStatus.PENDING,
        3,
        2,
        2,
        filed,
        fulfilled or 0,
        b"\x00" * 32,
        bytes([0xF0 + rid]) * 32 if fulfilled else b"\x00" * 32,
    )
    return RequestRecord(req, (), f"ucid-{rid}" if fulfilled else None)


def _history(rounds: list[RoundRecord], requests: list[RequestRecord]) -> RunHistory:
    info = RunInfo(
        RUN, b"\x01" * 32, "spec", A, A, 6666, 5, 5, 1, Admission.OPEN, RoundId(len(rounds) - 1), 3, 1
    )
    return RunHistory(info, tuple(rounds), tuple(requests))


# rounds 0..3 open at blocks 10, 20, 30, 40 and close when the next opens; round 4 open at 50
ROUNDS = [
    _round(0, 10, 20),
    _round(1, 20, 30),
    _round(2, 30, 40),
    _round(3, 40, 50),
    _round(4, 50, None, RoundStatus.OPEN),
]


def test_rounds_start_from_the_previous_finalised_round_or_the_initial_state() -> None:
    rounds = [ROUNDS[0], _round(1, 20, 30, RoundStatus.FAILED), *ROUNDS[2:]]
    history = _history(rounds, [])

    assert base_of_round(history, 0).kind == "initial"
    assert (base_of_round(history, 1).kind, base_of_round(history, 1).source) == ("round", 0)
    assert base_of_round(history, 2).source == 0  # round 1 failed: restart from M(0)
    assert base_of_round(history, 4).cid == "cid-3"


def test_a_fulfilled_request_supersedes_the_round_open_at_fulfilment() -> None:
    history = _history(ROUNDS, [_request(1, B, 1, filed=33, fulfilled=37)])  # filed and fulfilled in round 2

    assert base_of_round(history, 2).kind == "round"  # round 2 opened before the fulfilment
    ref = base_of_round(history, 3)  # round 2's M(2) descends from the forgotten model
    assert (ref.kind, ref.source, ref.cid) == ("unlearning", 1, "ucid-1")
    assert (base_of_round(history, 4).kind, base_of_round(history, 4).source) == ("round", 3)


def test_a_pending_request_changes_no_base_and_replays_rounds_closed_before_it() -> None:
    history = _history(ROUNDS, [_request(1, B, 1, filed=40, fulfilled=None)])

    assert base_of_round(history, 4).kind == "round"
    assert replay_window(history, 1) == (1, [1])  # round 2 closed in the request's block: not before it


def test_a_replay_also_leaves_out_earlier_subjects() -> None:
    history = _history(ROUNDS, [_request(1, A, 2, 25, 28), _request(2, B, 1, 45, None)])

    assert exclusions(history, 2) == {to_checksum_address(A): 2, to_checksum_address(B): 1}
    assert exclusions(history, 1) == {to_checksum_address(A): 2}
