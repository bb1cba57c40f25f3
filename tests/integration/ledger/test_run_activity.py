"""A run's activity logs (``RunsClient.run_activity``) on py-evm and a real anvil, and the request counter.

One ``eth_getLogs`` per call returns exactly the run's joins, openings, commits and closings in the range,
none of another run, none of the events left out (votes, contributions), and nothing past the confirmed
block; ``ledger.rpc.CALLS`` counts each request by method.
"""

from __future__ import annotations

import pytest

from ledger.activity import RunActivity, activity_filter, decode_activity
from ledger.chain import mine
from ledger.client import RunsClient
from ledger.errors import LedgerError
from ledger.rpc import CALLS
from ledger.types import RoundId
from tests.fixtures.chain import ChainEnv

SHA = b"\x01" * 32


def test_activity_names_each_event_of_the_run_and_its_round(chain: ChainEnv) -> None:
    env = chain
    first = env.head() + 1
    run = env.new_run(members=2)
    other = env.new_run(members=1)  # another run's logs never show up
    env.client(1).submit_update(run, RoundId(0), SHA, "bafyone", 3)
    env.client(2).submit_update(run, RoundId(0), b"\x02" * 32, "bafytwo", 4)
    env.client(1).submit_update(other, RoundId(0), SHA, "bafyother", 3)

    last, seen = env.client(0).run_activity(run, first, env.head())

    assert last == env.head()
    assert [(a.event, a.round) for a in seen] == [
        ("RoundOpened", 0),  # createRun opens round 0 (at its start block)
        ("MemberJoined", None),
        ("MemberJoined", None),
        ("UpdateSubmitted", 0),
        ("UpdateSubmitted", 0),
    ]
    assert all(first <= a.block_number <= last for a in seen)
    assert seen == sorted(seen, key=lambda a: a.block_number)


def test_a_finalising_vote_shows_as_the_round_finalised_and_the_next_opened(chain: ChainEnv) -> None:
    env = chain
    run = env.new_run(members=1, submit_blocks=3, vote_blocks=5, quorum_bps=10_000)
    env.client(1).submit_update(run, RoundId(0), SHA, "bafyone", 3)
    start = env.head() + 1

    env.client(1).vote(run, RoundId(0), b"\x03" * 32, "bafymerged", b"\x04" * 32)
    _, seen = env.client(0).run_activity(run, start, env.head())

    assert [(a.event, a.round) for a in seen] == [("RoundFinalized", 0), ("RoundOpened", 1)]  # no MergeVoted


def test_activity_stops_at_the_confirmed_block(chain: ChainEnv) -> None:
    env = chain
    run = env.new_run(members=1)
    start = env.head() + 1
    deep = RunsClient(env.w3, env.runs_address, confirmations=2)
    tx = env.client(1).submit_update(run, RoundId(0), SHA, "bafyone", 3)

    last, seen = deep.run_activity(run, start, env.head())
    assert (last, seen) == (start - 1, [])  # the commit's block is not 2 deep yet: nothing to read
    mine(env.w3, 2)
    last, seen = deep.run_activity(run, last + 1, env.head())
    assert last == tx.block_number
    assert seen == [RunActivity("UpdateSubmitted", tx.block_number, 0)]


def test_nothing_is_asked_before_the_first_block_is_confirmed(chain: ChainEnv) -> None:
    env = chain
    run = env.new_run(members=1)
    deep = RunsClient(env.w3, env.runs_address, confirmations=5)
    before = CALLS.snapshot()

    assert deep.run_activity(run, env.head() - 1, env.head()) == (env.head() - 2, [])
    assert "eth_getLogs" not in CALLS.since(before)


def test_each_request_is_counted_by_method(chain: ChainEnv) -> None:
    env = chain
    run = env.new_run(members=1)
    client = env.client(0)
    before = CALLS.snapshot()

    client.run_activity(run, 0, client.block_number())
    client.round_info(run, RoundId(0))
    calls = CALLS.since(before)

    if env.backend == "py-evm":  # in-process: no JSON-RPC request at all
        assert calls == {}
        return
    assert {m: c.calls for m, c in calls.items()} == {"eth_blockNumber": 1, "eth_getLogs": 1, "eth_call": 1}
    assert all(c.sent > 0 and c.received > 0 for c in calls.values())


def test_filter_and_decoding_refuse_what_is_not_run_activity() -> None:
    params = activity_filter("0x" + "11" * 20, 7, 5, 9)
    topic0 = params["topics"][0][0]
    good = {"topics": [topic0, "0x" + "00" * 31 + "07", "0x" + "00" * 31 + "02"], "blockNumber": "0x6"}

    assert params["topics"][1] == "0x" + "00" * 31 + "07"
    assert decode_activity([good], 7)[0].block_number == 6
    with pytest.raises(LedgerError, match="block range 9..5"):
        activity_filter("0x" + "11" * 20, 7, 9, 5)
    with pytest.raises(LedgerError, match="not an activity event of run 8"):
        decode_activity([good], 8)
    with pytest.raises(LedgerError, match="cannot decode a log"):
        decode_activity([{"topics": ["0x" + "ab" * 32, good["topics"][1]], "blockNumber": "0x6"}], 7)
