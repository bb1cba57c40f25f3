"""Nonce management under concurrency, on py-evm and on a real anvil."""

from __future__ import annotations

import hashlib
import threading

from ledger.types import RunConfig
from tests.fixtures.chain import ChainEnv


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
