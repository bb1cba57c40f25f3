"""What the waiting loop reads from the chain (``node.protocol.watch.changed_since_step``), on py-evm.

A new head with no log of the run and no window boundary is answered from the activity logs alone (no
``eth_call``); a commit, a finalisation, a boundary, a shorter chain or a seat in the open committee ends
the wait.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ledger.chain import mine
from ledger.rpc import CALLS
from ledger.types import RoundId
from node.protocol.context import LoopState
from node.protocol.round import _watch_key
from node.protocol.watch import ChainWatch, changed_since_step
from tests.fixtures.chain import ChainEnv


def _waiting(env: ChainEnv, run: int) -> Any:
    """A member that just stepped in round 0 (its watch key and the round it read)."""
    client = env.client(0)
    info = client.round_info(run, RoundId(0))
    head = client.block_number()
    ctx = SimpleNamespace(client=client, run_id=run, loop=LoopState())
    ctx.loop.watched = _watch_key(0, info, head)
    ctx.loop.watch.stepped(info, head)
    return ctx


def _changed(ctx: Any) -> bool:
    head = ctx.client.block_number()
    return changed_since_step(ctx, head, lambda info, at: _watch_key(ctx.loop.current_round, info, at))


def test_a_quiet_block_is_answered_by_one_empty_log_read(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=2, submit_blocks=10)
    ctx = _waiting(pyevm_chain, run)
    mine(pyevm_chain.w3, 1)

    assert _changed(ctx) is False
    assert ctx.loop.watch.scanned == pyevm_chain.head()


def test_a_commit_of_another_member_ends_the_wait(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=2, submit_blocks=10)
    ctx = _waiting(pyevm_chain, run)
    pyevm_chain.client(2).submit_update(run, RoundId(0), b"\x01" * 32, "bafyone", 3)

    assert _changed(ctx) is True
    assert _changed(ctx) is False  # looked at once: the next head starts after it


def test_the_end_of_the_submit_window_ends_the_wait(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=2, submit_blocks=4)
    ctx = _waiting(pyevm_chain, run)
    end = ctx.loop.watch.info.submit_end

    pyevm_chain.mine_to(end - 1)
    assert _changed(ctx) is False
    mine(pyevm_chain.w3, 1)  # a transaction sent now lands in submit_end: the vote phase
    assert _changed(ctx) is True


def test_a_joined_member_asks_for_the_member_list(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=1, join=False)
    ctx = _waiting(pyevm_chain, run)
    ctx.loop.watch.members_due = False
    pyevm_chain.client(3).join(run)

    assert _changed(ctx) is True
    assert ctx.loop.watch.members_due is True


def test_a_shorter_chain_or_a_committee_seat_ends_the_wait_without_a_read(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=1)
    ctx = _waiting(pyevm_chain, run)
    ctx.loop.watch.head = pyevm_chain.head() + 5  # seen before a reorganisation
    assert _changed(ctx) is True
    ctx.loop.committee = SimpleNamespace(round=0, in_committee=True)
    mine(pyevm_chain.w3, 1)
    assert _changed(ctx) is True
    ctx.loop.committee = SimpleNamespace(round=0, in_committee=False)
    assert _changed(ctx) is False


def test_each_round_logs_the_requests_made_since_the_last(pyevm_chain: ChainEnv) -> None:
    watch = ChainWatch()
    CALLS.record("eth_blockNumber", 60, 40)
    CALLS.record("eth_blockNumber", 60, 40)

    assert watch.rpc_since_mark() == {"eth_blockNumber": [2, 120, 80]}
    assert watch.rpc_since_mark() == {}
