"""Tests for the round loop's event-driven wait (runner.wait_for_news) on an in-process py-evm chain.

The loop waits for whichever comes first: a gossip announcement (``ctx.loop.wake``), a new block that changes
the open round, or ``poll_interval_s``. Blocks are mined by a helper thread on the real py-evm chain; the
bounds asserted are behaviour (which event ended the wait), with wide margins against a loaded machine.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from node.config import ChainConfig, NodeConfig, NodeConfigError
from node.protocol.context import LoopState
from node.protocol.runner import wait_for_news


@pytest.fixture
def ctx() -> Any:
    from ledger.chain import connect, dev_accounts
    from ledger.client import RunsClient
    from ledger.deploy import deploy

    w3 = connect("py-evm")
    accounts = dev_accounts("py-evm", 1)
    client = RunsClient(w3, deploy(w3, accounts[0]).runs)
    config = NodeConfig(chain=ChainConfig(poll_interval_s=3.0, head_poll_s=0.02))
    return SimpleNamespace(client=client, config=config, w3=w3, loop=LoopState())


def _later(delay: float, action: Any) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_gossip_announcement_ends_the_wait_before_the_poll_interval(ctx: Any) -> None:
    _later(0.1, ctx.loop.wake.set)
    waited = wait_for_news(ctx, lambda c, head: False)
    assert waited < 2.0  # well before the 3 s fallback


def test_a_new_block_that_changes_the_round_ends_the_wait_with_the_new_head(ctx: Any) -> None:
    from ledger.chain import mine

    heads: list[int] = []

    def changed(c: Any, head: int) -> bool:
        heads.append(head)
        return bool(head > start)

    start = ctx.client.block_number()
    _later(0.1, lambda: mine(ctx.w3, 1))
    waited = wait_for_news(ctx, changed)
    assert waited < 2.0
    assert heads[-1] == start + 1


def test_blocks_that_change_nothing_do_not_end_the_wait(ctx: Any) -> None:
    from ledger.chain import mine

    ctx.config = NodeConfig(chain=ChainConfig(poll_interval_s=0.6, head_poll_s=0.02))
    seen: list[int] = []

    def changed(c: Any, head: int) -> bool:
        seen.append(head)
        return False

    _later(0.1, lambda: mine(ctx.w3, 1))
    waited = wait_for_news(ctx, changed)
    assert waited >= 0.6  # only the fallback ended it
    assert len(seen) == len(set(seen)) == 2  # the round was read once per head, not once per poll


def test_a_member_that_owes_nothing_waits_up_to_the_idle_bound(ctx: Any) -> None:
    ctx.config = NodeConfig(chain=ChainConfig(poll_interval_s=0.2, idle_poll_s=0.8, head_poll_s=0.02))
    ctx.loop.watch.idle = True
    assert wait_for_news(ctx, lambda c, head: False) >= 0.8
    ctx.loop.watch.idle = False
    assert wait_for_news(ctx, lambda c, head: False) < 0.7


def test_heads_are_polled_less_often_once_the_block_interval_is_known(ctx: Any) -> None:
    from ledger.chain import mine

    ctx.config = NodeConfig(chain=ChainConfig(poll_interval_s=2.5, head_poll_s=0.05))
    head, now = ctx.client.block_number(), time.monotonic()
    clock = ctx.loop.watch.head_clock(0.05)
    for back, t in ((2, now - 1.0), (1, now - 0.5), (0, now)):  # blocks every 0.5 s, the last one just now
        clock.seen(head - back, t)
    polls: list[int] = []
    read = ctx.client.block_number
    ctx.client.block_number = lambda: polls.append(1) or read()

    def mine_every_half_second() -> None:
        for _ in range(5):
            time.sleep(0.5)
            mine(ctx.w3, 1)

    threading.Thread(target=mine_every_half_second, daemon=True).start()
    wait_for_news(ctx, lambda c, head: False)
    assert clock.interval is not None and 0.3 < clock.interval < 1.0
    assert len(polls) < 30  # a flat 0.05 s polls 50 times in 2.5 s; about 3-4 per block here


def test_stop_ends_the_wait(ctx: Any) -> None:
    _later(0.1, ctx.loop.stop.set)
    assert wait_for_news(ctx, lambda c, head: False) < 2.0


def test_idle_poll_must_not_be_below_the_poll_interval() -> None:
    with pytest.raises(NodeConfigError, match="`idle_poll_s` must be in \\[poll_interval_s, 600\\], got 0.5"):
        ChainConfig(poll_interval_s=1.0, idle_poll_s=0.5)


@pytest.mark.parametrize("value", [0.0, 0.005, 61.0])
def test_head_poll_must_be_in_range(value: float) -> None:
    with pytest.raises(NodeConfigError, match="`head_poll_s` must be in \\[0.01, 60\\], got"):
        ChainConfig(head_poll_s=value)
