from __future__ import annotations

import pytest

from ledger.errors import LedgerConfigError, RpcError
from ledger.reverts import NotMemberError
from ledger.tx import RetryPolicy, with_retry
from ledger.types import RoundId
from tests.fixtures.chain import ChainEnv

FAST = RetryPolicy(attempts=3, initial_delay=0.0, max_delay=0.0)


def test_transient_failures_are_retried_then_reported() -> None:
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection refused")
        return 42

    assert with_retry(flaky, FAST, "flaky") == 42
    assert len(calls) == 3
    with pytest.raises(RpcError, match="after 3 attempts"):
        with_retry(lambda: (_ for _ in ()).throw(TimeoutError("slow")), FAST, "dead")


def test_non_transient_errors_are_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("revert")

    with pytest.raises(ValueError):
        with_retry(broken, FAST, "broken")
    assert len(calls) == 1


def test_retry_policy_validation() -> None:
    with pytest.raises(LedgerConfigError, match="`attempts`"):
        RetryPolicy(attempts=0)


def test_reverts_surface_as_typed_errors_without_retry(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=1)
    with pytest.raises(NotMemberError) as err:
        pyevm_chain.client(4).submit_update(run, RoundId(0), b"\x01" * 32, "c", 1)
    assert err.value.error_args["account"].lower() == pyevm_chain.address(4).lower()


def test_receipt_polling_must_start_faster_than_it_ends(chain: ChainEnv) -> None:
    from web3.exceptions import TimeExhausted

    from ledger.tx import TxSender

    with pytest.raises(LedgerConfigError, match="`receipt_poll_s` must be in \\(0, 1.0\\]"):
        TxSender(chain.w3, chain.accounts[1], receipt_poll_s=2.0)
    sender = TxSender(chain.w3, chain.accounts[1], receipt_poll_s=0.01, receipt_poll_max_s=0.05)
    with pytest.raises(TimeExhausted, match="not mined in"):  # an unknown hash never gets a receipt
        sender.receipt_timeout = 0.2
        sender.wait_for_receipt(b"\x01" * 32)
