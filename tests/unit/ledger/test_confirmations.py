"""Confirmed reads: a client with ``confirmations = c`` sees views and logs only ``c`` blocks deep."""

from __future__ import annotations

import pytest

from ledger.chain import mine
from ledger.client import RunsClient
from ledger.errors import LedgerConfigError
from ledger.types import RoundId
from tests.fixtures.chain import ChainEnv


def test_views_and_logs_lag_the_head_by_the_confirmations(pyevm_chain: ChainEnv) -> None:
    env = pyevm_chain
    run = env.new_run(members=2)
    deep = RunsClient(env.w3, env.runs_address, env.accounts[1], confirmations=3)
    latest = env.client(1)

    tx = deep.submit_update(run, RoundId(0), b"\x01" * 32, "bafyupdate", 5)  # transactions: latest state

    assert latest.member_info(run, env.address(1)).last_submitted_round == 0
    assert deep.member_info(run, env.address(1)).last_submitted_round is None
    assert deep.round_info(run, RoundId(0)).submissions == 0
    assert deep.submissions(run, RoundId(0)) == []
    assert deep.confirmed_block() == deep.block_number() - 3 == tx.block_number - 3
    mine(env.w3, 2)
    assert deep.round_info(run, RoundId(0)).submissions == 0  # two blocks deep: not yet
    mine(env.w3, 1)
    assert deep.round_info(run, RoundId(0)).submissions == 1
    assert [s.member for s in deep.submissions(run, RoundId(0))] == [env.address(1)]
    assert deep.member_info(run, env.address(1)).last_submitted_round == 0


def test_logs_from_a_block_deeper_than_the_confirmed_one_are_empty(pyevm_chain: ChainEnv) -> None:
    env = pyevm_chain
    deep = RunsClient(env.w3, env.runs_address, confirmations=5)

    assert deep.logs("RunCreated", {}, from_block=deep.block_number()) == []


def test_transaction_state_tells_mined_from_unknown(pyevm_chain: ChainEnv) -> None:
    env = pyevm_chain
    run = env.new_run(members=1, join=False)
    tx = env.client(1).join(run)

    assert env.client(1).transaction_state(tx.tx_hash) == "mined"
    assert env.client(1).transaction_state(b"\x42" * 32) == "dropped"


def test_negative_confirmations_are_refused(pyevm_chain: ChainEnv) -> None:
    with pytest.raises(LedgerConfigError, match="`confirmations` must be >= 0, got -1"):
        RunsClient(pyevm_chain.w3, pyevm_chain.runs_address, confirmations=-1)


def test_run_count_at_the_head_sees_a_run_the_confirmed_block_does_not(pyevm_chain: ChainEnv) -> None:
    env = pyevm_chain
    deep = RunsClient(env.w3, env.runs_address, confirmations=4)
    mine(env.w3, 4)  # the registry itself is confirmed
    before = deep.run_count(latest=True)

    env.new_run(members=1, join=False)

    assert deep.run_count(latest=True) == before + 1
    assert deep.run_count() < before + 1
    mine(env.w3, 4)
    assert deep.run_count() == before + 1
