"""Late votes and run completion through ``RunsClient`` on a real anvil: the typed records of
``LateVoteCast`` and ``RunCompleted``, ``run_info``'s status, and each refusal as its typed error."""

from __future__ import annotations

import hashlib

import pytest

from ledger.chain import connect
from ledger.deploy import deploy
from ledger.reverts import AlreadyVotedError, LaterRoundVotedError, RunCompletedError, VoteWindowClosedError
from ledger.types import RoundId, RoundStatus, RunId, RunStatus, included_set_hash
from tests.fixtures.chain import AnvilChain, ChainEnv

pytestmark = pytest.mark.integration

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
MERGED = hashlib.sha256(b"merged").digest()
OTHER = hashlib.sha256(b"another merge").digest()


@pytest.fixture
def env(anvil: AnvilChain) -> ChainEnv:
    """A fresh ``Runs`` deployment on the session's anvil."""
    w3 = connect(anvil.rpc_url)
    return ChainEnv("anvil", w3, anvil.accounts, deploy(w3, anvil.accounts[0]).runs)


def _submit_all(env: ChainEnv, run: RunId, round: RoundId, members: int) -> bytes:
    pairs = []
    for i in range(1, members + 1):
        sha = hashlib.sha256(f"update {run} {round} {i}".encode()).digest()
        env.client(i).submit_update(run, round, sha, CID, 10)
        pairs.append((env.address(i), sha))
    return included_set_hash(pairs)


def test_a_late_vote_is_an_event_and_changes_nothing(env: ChainEnv) -> None:
    run = env.new_run(members=3)
    r0 = RoundId(0)
    set_hash = _submit_all(env, run, r0, 3)
    env.client(1).vote(run, r0, MERGED, CID, set_hash)
    deciding = env.client(2).vote(run, r0, MERGED, CID, set_hash)  # 2 of 3: finalised
    assert env.client(0).late_vote_in(deciding) is None
    before = env.client(0).round_info(run, r0)
    assert before.status == RoundStatus.FINALIZED

    tx = env.client(3).vote(run, r0, OTHER, CID, set_hash)  # the dissent reaches the chain
    mined = env.client(0).late_vote_in(tx)
    assert mined is not None and (mined.voter, mined.agrees, mined.round) == (env.address(3), False, 0)

    late = env.client(0).late_votes(run, r0)
    assert [(v.voter, v.merged_sha256, v.agrees) for v in late] == [(env.address(3), OTHER, False)]
    assert late[0].included_set_hash == set_hash and late[0].merged_cid == CID
    after = env.client(0).round_info(run, r0)
    assert (after.status, after.merged_sha256, after.closed_block) == (
        RoundStatus.FINALIZED,
        MERGED,
        before.closed_block,
    )
    assert len(env.client(0).votes(run, r0)) == 2  # MergeVoted: the quorum's votes only
    with pytest.raises(AlreadyVotedError) as err:
        env.client(3).vote(run, r0, MERGED, CID, set_hash)
    assert err.value.error == "RunsAlreadyVoted"
    assert err.value.error_args["account"].lower() == env.address(3).lower()


def test_a_late_vote_is_refused_after_voting_a_later_round_and_after_its_window(env: ChainEnv) -> None:
    run = env.new_run(members=3)
    set_hash = _submit_all(env, run, RoundId(0), 3)
    env.client(1).vote(run, RoundId(0), MERGED, CID, set_hash)
    env.client(2).vote(run, RoundId(0), MERGED, CID, set_hash)
    next_set = _submit_all(env, run, RoundId(1), 3)
    env.client(3).vote(run, RoundId(1), MERGED, CID, next_set)
    with pytest.raises(LaterRoundVotedError) as err:
        env.client(3).vote(run, RoundId(0), OTHER, CID, set_hash)
    assert err.value.error_args["votedRound"] == 1

    env.mine_to(env.client(0).round_info(run, RoundId(0)).late_vote_end)
    with pytest.raises(VoteWindowClosedError):
        env.client(2).vote(run, RoundId(0), OTHER, CID, set_hash)  # the window is checked first


def test_the_last_round_completes_the_run(env: ChainEnv) -> None:
    client = env.client(0)
    run = env.new_run(members=3, rounds=1)
    assert client.run_info(run).rounds == 1 and client.run_info(run).status == RunStatus.ACTIVE
    assert client.run_completion(run) is None
    set_hash = _submit_all(env, run, RoundId(0), 3)
    env.client(1).vote(run, RoundId(0), MERGED, CID, set_hash)
    env.client(2).vote(run, RoundId(0), MERGED, CID, set_hash)

    info = client.run_info(run)
    assert (info.status, info.completed, info.finalized_rounds, info.current_round) == (
        RunStatus.COMPLETED,
        True,
        1,
        0,
    )
    done = client.run_completion(run)
    assert done is not None
    assert (done.rounds, done.last_round, done.final_merged_sha256) == (1, 0, MERGED)
    with pytest.raises(RunCompletedError) as err:
        env.client(1).submit_update(run, RoundId(1), MERGED, CID, 1)
    assert (err.value.error_args["rounds"], err.value.error_args["lastRound"]) == (1, 0)
    with pytest.raises(RunCompletedError):
        client.close_failed(run, RoundId(0))
    env.client(3).vote(run, RoundId(0), MERGED, CID, set_hash)  # a late vote on the last round still lands
    assert [v.agrees for v in client.late_votes(run, RoundId(0))] == [True]
