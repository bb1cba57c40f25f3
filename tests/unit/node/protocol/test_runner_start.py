"""A node started right after ``createRun`` on a chain it reads ``confirmations`` deep waits for the run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ledger.chain import mine
from ledger.client import RunsClient
from ledger.types import RunId
from node.console.eventlog import EventLog
from node.errors import NodeError
from node.protocol.runner import _retry, _unconfirmed_run
from tests.fixtures.chain import ChainEnv


def _log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path / "node.jsonl", console="none")


def test_an_unconfirmed_run_is_waited_for_and_then_read(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    env = pyevm_chain
    deep = RunsClient(env.w3, env.runs_address, confirmations=10)
    mine(env.w3, 10)  # the registry itself is confirmed
    run = env.new_run(members=1, join=False)
    assert deep.run_count() < run <= deep.run_count(latest=True)  # created, not yet 10 blocks deep
    tries: list[int] = []

    def read() -> object:
        tries.append(deep.block_number())
        if len(tries) > 1:
            mine(env.w3, 10)  # the chain moves on while the node waits
        return deep.run_info(run)

    stop = threading.Event()
    info = _retry(_log(tmp_path), stop, read, "join", _unconfirmed_run(deep, run))

    assert info.spec_cid == env.client(1).run_info(run).spec_cid
    assert len(tries) >= 2


def test_a_run_missing_at_the_head_too_ends_the_node(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    env = pyevm_chain
    deep = RunsClient(env.w3, env.runs_address, confirmations=3)
    mine(env.w3, 3)  # the registry itself is confirmed
    missing = RunId(deep.run_count(latest=True) + 1)

    pending = _unconfirmed_run(deep, missing)

    with pytest.raises(NodeError, match="run does not exist on this registry"):
        _retry(_log(tmp_path), threading.Event(), lambda: deep.run_info(missing), "join", pending)
