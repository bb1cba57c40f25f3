"""Property tests of the quorum rule on the real contract (py-evm), against a plain Python model."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.types import RoundId, RoundStatus, quorum_of
from tests.fixtures.chain import ChainEnv

R0 = RoundId(0)
RESULTS = {"A": hashlib.sha256(b"A").digest(), "B": hashlib.sha256(b"B").digest()}
SET_HASH = b"\x11" * 32


@settings(
    max_examples=100,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(eligible=st.integers(0, 2**32 - 1), bps=st.integers(1, 10_000))
def test_quorum_of_matches_ceil_rule(pyevm_chain: ChainEnv, eligible: int, bps: int) -> None:
    on_chain = pyevm_chain.client(0).quorum_of(eligible, bps)
    assert on_chain == quorum_of(eligible, bps)
    assert on_chain >= 1
    assert on_chain * 10_000 >= eligible * bps  # reaching it means at least bps of the eligible voted
    assert on_chain == 1 or (on_chain - 1) * 10_000 < eligible * bps  # and one vote fewer does not


@pytest.mark.slow
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    members=st.integers(1, 5),
    bps=st.integers(1, 10_000),
    ballots=st.lists(st.sampled_from(["A", "B", None]), min_size=5, max_size=5),
)
def test_round_finalises_iff_equal_votes_reach_quorum(
    pyevm_chain: ChainEnv, members: int, bps: int, ballots: list[str | None]
) -> None:
    chain = pyevm_chain
    run = chain.new_run(members=members, quorum_bps=bps, min_updates=0, submit_blocks=2, vote_blocks=50)
    info = chain.client(0).round_info(run, R0)
    chain.mine_to(info.submit_end)  # nobody submits (min_updates = 0): voting opens after the window
    needed = quorum_of(members, bps)
    tally = {"A": 0, "B": 0}
    winner = None
    for member, ballot in zip(range(1, members + 1), ballots, strict=False):
        if ballot is None:
            continue
        if winner is not None:
            # after quorum a vote is a late vote: recorded as LateVoteCast, the outcome unchanged
            chain.client(member).vote(run, R0, RESULTS[ballot], ballot, SET_HASH)
            assert chain.client(0).round_info(run, R0).status == RoundStatus.FINALIZED
            continue
        chain.client(member).vote(run, R0, RESULTS[ballot], ballot, SET_HASH)
        tally[ballot] += 1
        if tally[ballot] >= needed:
            winner = ballot

    final = chain.client(0).round_info(run, R0)
    assert final.quorum == needed
    if winner is None:
        assert final.status == RoundStatus.OPEN
    else:
        assert (final.status, final.merged_sha256) == (RoundStatus.FINALIZED, RESULTS[winner])
