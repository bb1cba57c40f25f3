"""A reorganisation on a real anvil (``anvil_reorg``) drops a mined transaction: the client notices, and
the next send from the same account recovers its nonce instead of waiting behind a gap forever."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.chain import connect, dev_accounts
from ledger.client import RunsClient
from ledger.types import RunConfig
from node.devnet.anvil import AnvilConfig
from node.devnet.harness import Devnet, DevnetState

pytestmark = pytest.mark.integration


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetState]:
    with Devnet(tmp_path, AnvilConfig(accounts=3), ipfs=False) as state:  # own chain: the reorg is ours
        yield state


def test_a_reorged_join_is_dropped_and_sent_again_on_the_chains_nonce(devnet: DevnetState) -> None:
    w3 = connect(devnet.rpc_url)
    accounts = dev_accounts("anvil", 3)
    gov = RunsClient(w3, devnet.runs_address, accounts[0])
    member = RunsClient(w3, devnet.runs_address, accounts[1])
    run = gov.create_run(RunConfig(spec_sha256=b"\xaa" * 32, spec_cid="bafyspec"), join_blocks=20)
    first = member.join(run)
    assert member.member_info(run, accounts[1].address).is_member

    w3.provider.make_request("anvil_reorg", [1, []])  # type: ignore[arg-type]  # drop the join's block

    assert member.transaction_state(first.tx_hash) == "dropped"
    assert not member.member_info(run, accounts[1].address).is_member
    started = time.monotonic()
    again = member.join(run)  # the tracked nonce is one the chain forgot: signed again on the chain's
    assert time.monotonic() - started < 10
    assert member.transaction_state(again.tx_hash) == "mined"
    assert member.members(run) == [accounts[1].address]
    assert w3.eth.get_transaction_count(accounts[1].address) == 1
