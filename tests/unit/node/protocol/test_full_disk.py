"""A full disk stops neither the round loop nor the event log (found by bench/chaos.py's ``disk_full``).

Both failures are real: the state database is a real SQLite file grown to its page limit (``PRAGMA
max_page_count``), which answers every write that needs a new page with ``database or disk is full`` as a
full file system does; the event log writes to ``/dev/full``, which fails every write with ``ENOSPC``.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from node.config import ChainConfig, NodeConfig
from node.console.eventlog import EventLog
from node.exitcodes import EXIT_INTERRUPTED
from node.protocol.context import LoopState, Step
from node.protocol.runner import _loop
from node.protocol.state import NodeState


def _full(path: Path) -> NodeState:
    """A node state whose database cannot take another row (any table, any size)."""
    state = NodeState(path)
    pages = state._db.execute("PRAGMA page_count").fetchone()[0]
    state._db.execute(f"PRAGMA max_page_count = {pages}")
    n = 0
    for size in (4096, 256, 16, 1):  # fill the free space of every page of the meta table
        while True:
            try:
                state.set(f"filler{n}", "x" * size)
                n += 1
            except sqlite3.OperationalError:
                break
    while True:  # and of the rounds table
        try:
            state.update_round(99, n)
            n += 1
        except sqlite3.OperationalError:
            break
    return state


def test_the_round_loop_keeps_retrying_while_the_state_database_is_full(tmp_path: Path) -> None:
    state = _full(tmp_path / "state.db")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        state.add_timing(1, 0, "wait", 1.0)  # the precondition: the loop's own bookkeeping write fails
    calls: list[int] = []

    def step(ctx: Any) -> Step:
        calls.append(1)
        if len(calls) == 2:
            ctx.loop.stop.set()
            return Step.WAITED
        raise sqlite3.OperationalError("database or disk is full")  # what the step's own writes raise

    ctx = SimpleNamespace(
        loop=LoopState(),
        run_id=1,
        client=SimpleNamespace(members=lambda run: []),
        state=state,
        log=EventLog(tmp_path / "node.jsonl", console="none"),
        config=NodeConfig(chain=ChainConfig(poll_interval_s=0.05)),
    )

    try:
        code = _loop(ctx, step, lambda c: None)
    finally:
        ctx.log.close()
        state.close()

    assert code == EXIT_INTERRUPTED and len(calls) == 2  # retried after the failure, stopped on request
    errors = [line for line in (tmp_path / "node.jsonl").read_text().splitlines() if '"error"' in line]
    assert len(errors) == 1 and "database or disk is full" in errors[0]


def test_an_event_that_cannot_be_written_is_dropped_and_counted_not_raised() -> None:
    with open("/dev/full", "ab", buffering=0) as probe, pytest.raises(OSError) as refused:
        probe.write(b"x")
    assert refused.value.errno == errno.ENOSPC  # the precondition: this file refuses every write
    log = EventLog(Path("/dev/full"), console="none")

    first = log.event("round.waiting", run=1, round=0)
    log.event("round.waiting", run=1, round=0)

    log.close()

    assert first["event"] == "round.waiting"
    assert log.dropped == 2
