"""Nonce management under concurrency, on py-evm and on a real anvil."""

from __future__ import annotations

import hashlib
import threading

import pytest
from web3.types import RPCEndpoint

from ledger.chain import connect
from ledger.deploy import deploy
from ledger.types import RunConfig
from tests.fixtures.chain import AnvilChain, ChainEnv


def test_concurrent_sends_from_one_account_get_consecutive_nonces(chain: ChainEnv) -> None:
    """Many threads share one sender; every transaction is mined and no nonce is reused or skipped."""
    client = chain.client(0)
    start_nonce = chain.w3.eth.get_transaction_count(chain.address(0))
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            client.create_run(RunConfig(spec_sha256=hashlib.sha256(bytes([i])).digest(), spec_cid=f"c{i}"))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    assert errors == []
    assert client.run_count() == 6
    assert chain.w3.eth.get_transaction_count(chain.address(0)) == start_nonce + 6


@pytest.mark.integration
def test_a_nonce_another_process_holds_pending_is_skipped(anvil: AnvilChain) -> None:
    """A CLI call beside a running node: its nonce is already in the mempool from the other process."""
    w3 = connect(anvil.rpc_url)
    env = ChainEnv("anvil", w3, anvil.accounts, deploy(w3, anvil.accounts[0]).runs)
    account = anvil.accounts[6]
    client = env.client(6)
    w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"), [1])  # transactions now wait in the pool
    try:
        taken = w3.eth.get_transaction_count(account.address, "pending")
        foreign = account.sign_transaction(
            {
                "to": anvil.accounts[7].address,
                "value": 1,
                "gas": 21_000,
                "nonce": taken,
                "chainId": anvil.chain_id,
                "maxFeePerGas": 10 * w3.eth.gas_price + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
        )
        w3.eth.send_raw_transaction(foreign.raw_transaction)  # "the other process", still pending
        client._tx()._nonces.next = taken  # this process's view, from before the other one sent

        run = client.create_run(RunConfig(spec_sha256=hashlib.sha256(b"x").digest(), spec_cid="cx"))

        assert client.run_info(run).creator == account.address
        assert w3.eth.get_transaction_count(account.address) == taken + 2  # both mined, nonce not reused
    finally:
        w3.provider.make_request(RPCEndpoint("evm_setIntervalMining"), [0])
        w3.provider.make_request(RPCEndpoint("evm_setAutomine"), [True])
