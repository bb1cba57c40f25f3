"""Tests for the round loop's event-driven wait (runner.wait_for_news) on an in-process py-evm chain.

The loop waits for whichever comes first: a gossip announcement (``ctx.wake``), a new block that changes
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
    return SimpleNamespace(
        client=client, config=config, stop=threading.Event(), wake=threading.Event(), w3=w3
    )


def _later(delay: float, action: Any) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_gossip_announcement_ends_the_wait_before_the_poll_interval(ctx: Any) -> None:
    _later(0.1, ctx.wake.set)
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


def test_stop_ends_the_wait(ctx: Any) -> None:
    _later(0.1, ctx.stop.set)
    assert wait_for_news(ctx, lambda c, head: False) < 2.0


@pytest.mark.parametrize("value", [0.0, 0.005, 61.0])
def test_head_poll_must_be_in_range(value: float) -> None:
    with pytest.raises(NodeConfigError, match="`head_poll_s` must be in \\[0.01, 60\\], got"):
        ChainConfig(head_poll_s=value)
