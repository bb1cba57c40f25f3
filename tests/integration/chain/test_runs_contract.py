"""The ``Runs`` contract through the ledger client on py-evm and a real anvil: every success and revert."""

from __future__ import annotations

import hashlib

import pytest

from ledger.reverts import (
    AlreadyMemberError,
    AlreadySubmittedError,
    AlreadyVotedError,
    ContributionsError,
    InvalidFromRoundError,
    InvalidRunParamsError,
    MemberBannedError,
    NotAllowedError,
    NotEligibleError,
    NotGovernanceError,
    NotMemberError,
    NotSubjectOrGovernanceError,
    RequestNotPendingError,
    RoundNotFinalizedError,
    RoundNotOpenError,
    RoundStillOpenError,
    SubmitWindowClosedError,
    SubmitWindowNotOpenError,
    TooFewUpdatesError,
    UnknownRequestError,
    UnknownRunError,
    VoteWindowClosedError,
    VoteWindowNotOpenError,
)
from ledger.types import Admission, Phase, RequestStatus, RoundId, RoundStatus, included_set_hash
from tests.fixtures.chain import SPEC_SHA, ChainEnv

R0 = RoundId(0)
R1 = RoundId(1)
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def submit_all(chain: ChainEnv, run: int, round: RoundId, members: range) -> list[tuple[str, bytes]]:
    included = []
    for i in members:
        digest = sha(f"{run}/{round}/{i}")
        chain.client(i).submit_update(run, round, digest, CID, 100 + i)
        included.append((chain.address(i), digest))
    return included


def test_create_run_records_parameters_and_emits_event(chain: ChainEnv) -> None:
    run = chain.new_run(members=0, join=False, quorum_bps=5_001, min_updates=2, admission=Admission.ALLOWLIST)

    info = chain.client(1).run_info(run)
    assert (info.run_id, info.spec_sha256, info.spec_cid) == (1, SPEC_SHA, "bafyspec")
    assert (info.quorum_bps, info.min_updates, info.admission) == (5_001, 2, Admission.ALLOWLIST)
    assert info.creator == info.governance == chain.address(0)
    assert (info.current_round, info.member_count) == (0, 0)
    assert chain.client(1).run_count() == 1
    logs = chain.client(0).contract.events.RunCreated.get_logs(from_block=0)
    assert [e["args"]["runId"] for e in logs] == [run]


def test_create_run_RevertWhen_ParamsInvalid(chain: ChainEnv) -> None:
    fn = chain.client(0).contract.functions.createRun
    head = chain.head()
    bad = [
        (SPEC_SHA, "c", chain.address(0), 0, 5, 5, 1, head + 5, 0, 0, 0),  # quorum 0
        (SPEC_SHA, "c", chain.address(0), 10_001, 5, 5, 1, head + 5, 0, 0, 0),  # quorum > 100 %
        (SPEC_SHA, "c", chain.address(0), 5_000, 0, 5, 1, head + 5, 0, 0, 0),  # empty submit window
        (SPEC_SHA, "c", chain.address(0), 5_000, 5, 5, 1, 0, 0, 0, 0),  # start in the past
        (b"\0" * 32, "c", chain.address(0), 5_000, 5, 5, 1, head + 5, 0, 0, 0),  # zero spec hash
        (SPEC_SHA, "c", chain.address(0), 5_000, 200, 56, 1, head + 5, 0, 3, 0),  # committee window > 255
    ]
    for params in bad:
        with pytest.raises(InvalidRunParamsError) as info:
            chain.client(0)._tx().send(fn(params))
        assert info.value.error.startswith("Runs")


def test_join_and_member_views(chain: ChainEnv) -> None:
    run = chain.new_run(members=2)

    assert chain.client(0).members(run) == [chain.address(1), chain.address(2)]
    member = chain.client(0).member_info(run, chain.address(2))
    assert (member.is_member, member.index, member.banned) == (True, 1, False)
    assert not chain.client(0).member_info(run, chain.address(5)).is_member
    with pytest.raises(AlreadyMemberError):
        chain.client(1).join(run)
    with pytest.raises(UnknownRunError) as info:
        chain.client(1).join(run + 7)
    assert info.value.error_args["runId"] == run + 7


def test_allowlist_admission(chain: ChainEnv) -> None:
    run = chain.new_run(members=0, join=False, admission=Admission.ALLOWLIST)

    with pytest.raises(NotAllowedError):
        chain.client(1).join(run)
    with pytest.raises(NotGovernanceError):
        chain.client(1).set_allowed(run, [chain.address(1)])
    chain.client(0).set_allowed(run, [chain.address(1)])
    chain.client(1).join(run)
    assert chain.client(0).is_allowed(run, chain.address(1))
    assert not chain.client(0).is_allowed(run, chain.address(2))


def test_submit_update_records_commit(chain: ChainEnv) -> None:
    run = chain.new_run(members=3)

    result = chain.client(2).submit_update(run, R0, sha("u"), CID, 1234)

    subs = chain.client(0).submissions(run, R0)
    assert [(s.member, s.sha256, s.cid, s.num_samples) for s in subs] == [
        (chain.address(2), sha("u"), CID, 1234)
    ]
    assert subs[0].block_number == result.block_number
    assert chain.client(0).round_info(run, R0).submissions == 1
    assert chain.client(0).member_info(run, chain.address(2)).last_submitted_round == 0


def test_submit_RevertWhen_NotMember_Double_Early_Late_WrongRound(chain: ChainEnv) -> None:
    run = chain.new_run(members=2, join=False)
    chain.client(1).join(run)
    with pytest.raises(SubmitWindowNotOpenError):
        chain.client(1).submit_update(run, R0, sha("early"), CID, 1)
    info = chain.client(0).round_info(run, R0)
    chain.mine_to(info.start_block)

    with pytest.raises(NotMemberError):
        chain.client(5).submit_update(run, R0, sha("x"), CID, 1)
    chain.client(2).join(run)  # joined after round 0 started: eligible from round 1
    with pytest.raises(NotEligibleError):
        chain.client(2).submit_update(run, R0, sha("x"), CID, 1)
    chain.client(1).submit_update(run, R0, sha("a"), CID, 1)
    with pytest.raises(AlreadySubmittedError):
        chain.client(1).submit_update(run, R0, sha("b"), CID, 1)
    with pytest.raises(RoundNotOpenError):
        chain.client(1).submit_update(run, R1, sha("b"), CID, 1)
    with pytest.raises(InvalidRunParamsError):
        chain.client(1).submit_update(run, R0, b"\0" * 32, CID, 1)
    assert chain.client(0).round_info(run, R0).eligible == 1


def test_submit_RevertWhen_Late(chain: ChainEnv) -> None:
    run = chain.new_run(members=2)
    info = chain.client(0).round_info(run, R0)
    chain.mine_to(info.submit_end)

    with pytest.raises(SubmitWindowClosedError) as err:
        chain.client(1).submit_update(run, R0, sha("late"), CID, 1)
    assert err.value.error_args["closedAt"] == info.submit_end


def test_vote_quorum_exactly_reached_and_one_short(chain: ChainEnv) -> None:
    run = chain.new_run(members=4, quorum_bps=7_500)  # quorum = ceil(0.75 * 4) = 3
    assert chain.client(0).current_round(run)[1] == Phase.SUBMIT
    included = submit_all(chain, run, R0, range(1, 5))
    assert chain.client(0).current_round(run)[1] == Phase.VOTE  # everyone submitted: voting opens early
    set_hash = included_set_hash(included)
    merged = sha("merged")

    chain.client(1).vote(run, R0, merged, "bafym", set_hash)
    chain.client(2).vote(run, R0, sha("other"), "bafyo", set_hash)  # a different result does not count
    chain.client(3).vote(run, R0, merged, "bafym", set_hash)
    one_short = chain.client(0).round_info(run, R0)
    assert (one_short.status, one_short.quorum) == (RoundStatus.OPEN, 3)
    assert chain.client(0).votes_for(run, R0, merged, "bafym", set_hash) == 2
    assert chain.client(0).round_result(run, R0) is None

    final = chain.client(4).vote(run, R0, merged, "bafym", set_hash)

    info = chain.client(0).round_info(run, R0)
    assert (info.status, info.closed_block, info.merged_sha256) == (
        RoundStatus.FINALIZED,
        final.block_number,
        merged,
    )
    result = chain.client(0).round_result(run, R0)
    assert result is not None
    assert (result.merged_cid, result.votes, result.eligible, result.included_set_hash) == (
        "bafym",
        3,
        4,
        set_hash,
    )
    assert chain.client(0).run_info(run).current_round == 1
    next_round = chain.client(0).round_info(run, R1)
    assert (next_round.start_block, next_round.eligible) == (final.block_number, 4)
    assert [v.member for v in chain.client(0).votes(run, R0)] == [chain.address(i) for i in (1, 2, 3, 4)]
    with pytest.raises(AlreadyVotedError):  # a late vote is taken once per member, and 2 voted already
        chain.client(2).vote(run, R0, merged, "bafym", set_hash)


def test_vote_gas_limit_covers_the_deciding_vote(chain: ChainEnv) -> None:
    """A vote estimated while it would not decide may still land as the deciding one (another member's
    vote mined first in the same block), so every vote's gas limit must cover finalisation."""
    run = chain.new_run(members=3, quorum_bps=6_666)  # quorum = 2
    set_hash = included_set_hash(submit_all(chain, run, R0, range(1, 4)))
    merged = sha("merged")

    first = chain.client(1).vote(run, R0, merged, "bafym", set_hash)  # not deciding
    deciding = chain.client(2).vote(run, R0, merged, "bafym", set_hash)

    assert chain.client(0).round_info(run, R0).status == RoundStatus.FINALIZED
    assert deciding.gas_used > first.gas_used
    assert chain.w3.eth.get_transaction(first.tx_hash)["gas"] >= deciding.gas_used


def test_vote_RevertWhen_EarlyDoubleLateTooFewOrNotMember(chain: ChainEnv) -> None:
    run = chain.new_run(members=3, min_updates=2)
    included = submit_all(chain, run, R0, range(1, 2))
    set_hash = included_set_hash(included)
    with pytest.raises(VoteWindowNotOpenError):  # not everyone submitted yet and the window is open
        chain.client(1).vote(run, R0, sha("m"), "c", set_hash)
    info = chain.client(0).round_info(run, R0)
    chain.mine_to(info.submit_end)
    with pytest.raises(TooFewUpdatesError):
        chain.client(1).vote(run, R0, sha("m"), "c", set_hash)

    run2 = chain.new_run(members=3)
    included = submit_all(chain, run2, R0, range(1, 4))
    set_hash = included_set_hash(included)
    chain.client(1).vote(run2, R0, sha("m"), "c", set_hash)
    with pytest.raises(AlreadyVotedError):
        chain.client(1).vote(run2, R0, sha("m"), "c", set_hash)
    with pytest.raises(NotMemberError):
        chain.client(6).vote(run2, R0, sha("m"), "c", set_hash)
    chain.mine_to(chain.client(0).round_info(run2, R0).vote_end)
    with pytest.raises(VoteWindowClosedError):
        chain.client(2).vote(run2, R0, sha("m"), "c", set_hash)


def test_close_failed_round(chain: ChainEnv) -> None:
    run = chain.new_run(members=3)
    submit_all(chain, run, R0, range(1, 3))
    with pytest.raises(RoundStillOpenError):
        chain.client(5).close_failed(run, R0)
    info, phase = chain.client(0).current_round(run)
    assert phase == Phase.SUBMIT
    chain.mine_to(info.submit_end)
    assert chain.client(0).current_round(run)[1] == Phase.VOTE
    chain.mine_to(info.vote_end)
    assert chain.client(0).current_round(run)[1] == Phase.EXPIRED

    closed = chain.client(5).close_failed(run, R0)  # anyone may close it

    failed = chain.client(0).round_info(run, R0)
    assert (failed.status, failed.closed_block) == (RoundStatus.FAILED, closed.block_number)
    assert chain.client(0).run_info(run).current_round == 1
    assert chain.client(0).round_info(run, R1).start_block == closed.block_number
    chain.client(1).submit_update(run, R1, sha("next"), CID, 1)  # round 1 is open at once


def test_close_failed_after_submit_window_when_too_few_updates(chain: ChainEnv) -> None:
    run = chain.new_run(members=3, min_updates=3)
    submit_all(chain, run, R0, range(1, 3))
    chain.mine_to(chain.client(0).round_info(run, R0).submit_end)

    chain.client(1).close_failed(run, R0)

    assert chain.client(0).round_info(run, R0).status == RoundStatus.FAILED


def test_record_contributions(chain: ChainEnv) -> None:
    run = chain.new_run(members=3)
    included = submit_all(chain, run, R0, range(1, 4))
    accepted = included[:2]  # member 3's update was excluded by the aggregation
    set_hash = included_set_hash(accepted)
    with pytest.raises(RoundNotFinalizedError):
        chain.client(0).record_contributions(run, R0, accepted)
    for i in (1, 2):
        chain.client(i).vote(run, R0, sha("m"), "c", set_hash)
    with pytest.raises(ContributionsError) as err:
        chain.client(0).record_contributions(run, R0, included)
    assert err.value.error == "RunsIncludedSetMismatch"

    chain.client(0).record_contributions(run, R0, accepted)

    counts = [chain.client(0).member_info(run, chain.address(i)).accepted_contributions for i in (1, 2, 3)]
    assert counts == [1, 1, 0]
    assert chain.client(0).round_info(run, R0).contributions_recorded
    with pytest.raises(ContributionsError):
        chain.client(0).record_contributions(run, R0, accepted)


def test_record_contributions_RevertWhen_Unsorted(chain: ChainEnv) -> None:
    run = chain.new_run(members=2)
    included = submit_all(chain, run, R0, range(1, 3))
    pairs = sorted(included, key=lambda p: int(p[0], 16), reverse=True)
    from eth_abi import encode
    from eth_utils import keccak

    bad_hash = keccak(encode(["address[]", "bytes32[]"], [[m for m, _ in pairs], [h for _, h in pairs]]))
    for i in (1, 2):
        chain.client(i).vote(run, R0, sha("m"), "c", bad_hash)
    fn = chain.client(0).contract.functions.recordContributions(
        run, 0, [m for m, _ in pairs], [h for _, h in pairs]
    )
    with pytest.raises(ContributionsError) as err:
        chain.client(0)._tx().send(fn)
    assert err.value.error == "RunsIncludedSetMalformed"


def test_unlearning_request_and_fulfilment(chain: ChainEnv) -> None:
    run = chain.new_run(members=4)
    submit_all(chain, run, R0, range(1, 3))
    with pytest.raises(NotSubjectOrGovernanceError):  # unlearning by a non-subject
        chain.client(2).request_unlearning(run, chain.address(1), R0, sha("why"))
    with pytest.raises(InvalidFromRoundError):
        chain.client(1).request_unlearning(run, chain.address(1), RoundId(5), sha("why"))

    request = chain.client(1).request_unlearning(run, chain.address(1), R0, sha("why"))

    req = chain.client(0).unlearning_request(request)
    assert (req.subject, req.requester, req.status, req.eligible, req.quorum) == (
        chain.address(1),
        chain.address(1),
        RequestStatus.PENDING,
        3,
        2,
    )
    assert chain.client(0).member_info(run, chain.address(1)).banned
    with pytest.raises(MemberBannedError):  # the subject cannot submit afterwards
        chain.client(1).submit_update(run, R0, sha("again"), CID, 1)
    with pytest.raises(MemberBannedError):
        chain.client(1).vote_unlearning(request, sha("model"), "c")
    chain.client(2).vote_unlearning(request, sha("model"), "c")
    with pytest.raises(AlreadyVotedError):
        chain.client(2).vote_unlearning(request, sha("model"), "c")
    assert chain.client(0).unlearning_request(request).status == RequestStatus.PENDING
    assert chain.client(0).request_count() == 1
    done = chain.client(3).vote_unlearning(request, sha("model"), "c")
    req = chain.client(0).unlearning_request(request)
    assert (req.status, req.result_sha256, req.fulfilled_block) == (
        RequestStatus.FULFILLED,
        sha("model"),
        done.block_number,
    )
    with pytest.raises(RequestNotPendingError):
        chain.client(4).vote_unlearning(request, sha("model"), "c")
    with pytest.raises(UnknownRequestError):
        chain.client(0).unlearning_request(request + 1)


def test_unlearning_by_governance_for_a_subject(chain: ChainEnv) -> None:
    run = chain.new_run(members=2)

    request = chain.client(0).request_unlearning(run, chain.address(2), R0, sha("gdpr"))

    req = chain.client(0).unlearning_request(request)
    assert (req.subject, req.requester) == (chain.address(2), chain.address(0))
    with pytest.raises(MemberBannedError):
        chain.client(0).request_unlearning(run, chain.address(2), R0, sha("again"))
    with pytest.raises(NotMemberError):
        chain.client(0).request_unlearning(run, chain.address(7), R0, sha("x"))
    assert chain.client(0).run_info(run).banned_count == 1
