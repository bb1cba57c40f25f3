"""node.audit.votes on hand-built round records: each check passes on a valid round and names each fault.

The contract refuses every faulty vote these records hold, so such records can only come from a registry
that is not the committed contract; they are built by hand here. The checks on real chains run in
tests/unit/node/audit/test_audit.py and tests/integration/node/test_audit.py.
"""

from __future__ import annotations

import pytest

from ledger.types import LateVote, MemberInfo, MergeVote, RoundId, RoundInfo, RoundResult, RoundStatus, RunId
from node.audit.votes import check_votes, quorum_of
from node.protocol.history import RoundRecord

SHA, CID, SET = b"\x11" * 32, "bafkreisame", b"\x22" * 32
ADDRS = [f"0x{i:040X}".replace("0X", "0x") for i in range(1, 7)]
MEMBERS = {a: MemberInfo(True, i, 10, False, 0, 0, None) for i, a in enumerate(ADDRS[:5])}
STRANGER = MemberInfo(False, 0, 0, False, 0, 0, None)


def _member_of(address: str) -> MemberInfo:
    return MEMBERS.get(address, STRANGER)


def _vote(i: int, block: int = 120, sha: bytes = SHA, votes: int = 1) -> MergeVote:
    return MergeVote(RunId(1), RoundId(2), ADDRS[i], sha, CID, SET, votes, block)


def _late(i: int, block: int = 126, sha: bytes = SHA, agrees: bool = True) -> LateVote:
    return LateVote(RunId(1), RoundId(2), ADDRS[i], sha, CID, SET, agrees, block)


def _record(
    votes: list[MergeVote],
    snapshot: int = 4,
    eligible: int = 4,
    result_votes: int | None = 3,
    late: tuple[LateVote, ...] = (),
) -> RoundRecord:
    info = RoundInfo(
        RunId(1),
        RoundId(2),
        100,
        110,
        130,
        snapshot,
        eligible,
        3,
        4,
        RoundStatus.FINALIZED,
        125,
        SHA,
        SET,
        False,
    )
    result = None
    if result_votes is not None:
        result = RoundResult(RunId(1), RoundId(2), SHA, CID, SET, result_votes, eligible, 125)
    return RoundRecord(info, (), tuple(votes), result, (), late)


@pytest.mark.parametrize(
    ("eligible", "bps", "want"), [(4, 6_666, 3), (3, 6_666, 2), (1, 10_000, 1), (0, 6_666, 1), (10, 5_000, 5)]
)
def test_quorum_is_the_contracts_rounded_up_share(eligible: int, bps: int, want: int) -> None:
    assert quorum_of(eligible, bps) == want


def test_a_valid_round_passes_every_check() -> None:
    rec = _record([_vote(0), _vote(1, votes=2), _vote(3, sha=b"\x33" * 32), _vote(2, votes=3)])

    checks, findings = check_votes(rec, 6_666, _member_of, {})

    assert findings == []
    assert checks == {
        "voters-eligible": True,
        "one-vote-each": True,
        "eligible-count": True,
        "quorum": True,
        "late-votes": True,
    }


def test_strangers_late_joiners_and_banned_voters_are_named() -> None:
    votes = [_vote(0), _vote(1), _vote(2), _vote(4), _vote(5)]  # 4 joined after the snapshot, 5 a stranger
    rec = _record(votes, snapshot=4, eligible=3)

    checks, findings = check_votes(rec, 6_666, _member_of, {ADDRS[2]: 99, ADDRS[1]: 115})

    named = {f.found: f.detail for f in findings if f.check == "voters-eligible"}
    assert set(named) == {ADDRS[1], ADDRS[2], ADDRS[4], ADDRS[5]}
    assert "banned" in named[ADDRS[1]] and "memberSnapshot" in named[ADDRS[4]]
    assert "not a member" in named[ADDRS[5]]
    assert not checks["voters-eligible"]
    assert checks["eligible-count"]  # the ban in block 99 preceded the round's start: 4 - 1 eligible


def test_a_double_vote_and_a_short_quorum_are_named() -> None:
    rec = _record([_vote(0), _vote(0, votes=2)], result_votes=2)

    checks, findings = check_votes(rec, 6_666, _member_of, {})

    assert {f.check for f in findings} == {"one-vote-each", "quorum"}
    assert not checks["one-vote-each"] and not checks["quorum"]


def test_an_eligible_count_that_ignores_a_ban_is_named() -> None:
    rec = _record([_vote(0), _vote(1), _vote(2)], snapshot=4, eligible=4)

    checks, findings = check_votes(rec, 6_666, _member_of, {ADDRS[3]: 50})

    assert [f.check for f in findings] == ["eligible-count"] and not checks["eligible-count"]


def test_an_open_round_has_no_quorum_check() -> None:
    checks, findings = check_votes(_record([_vote(0)], result_votes=None), 6_666, _member_of, {})

    assert findings == [] and "quorum" not in checks


def test_a_late_dissent_passes_and_each_faulty_late_vote_is_named() -> None:
    votes = [_vote(0), _vote(1, votes=2), _vote(2, votes=3)]  # finalised in block 125; late window to 145
    dissent = _late(3, sha=b"\x33" * 32, agrees=False)

    checks, findings = check_votes(_record(votes, late=(dissent,)), 6_666, _member_of, {})
    assert findings == [] and checks["late-votes"]

    faulty = (
        _late(0),  # voted on time already
        _late(3, block=145),  # past max(voteEnd, closedBlock + voteBlocks)
        _late(3, sha=b"\x33" * 32, agrees=True),  # flagged as agreeing with another model
        _late(4),  # joined after the snapshot
    )
    for late in faulty:
        checks, findings = check_votes(_record(votes, late=(late,)), 6_666, _member_of, {})
        assert [f.check for f in findings] == ["late-votes"], late
        assert not checks["late-votes"]
    checks, findings = check_votes(_record(votes, late=(dissent, dissent)), 6_666, _member_of, {})
    assert [f.detail for f in findings if "voted in the round already" in f.detail], findings
