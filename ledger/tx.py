"""Sending transactions: local signing, per-sender nonces, gas estimation, retries, receipts, reverts.

One :class:`TxSender` per account signs with eth-account and sends raw transactions, so the same code runs
against anvil, any JSON-RPC node and py-evm. Nonces are tracked locally under one lock per
(chain, sender) shared by every sender object in the process, so concurrent sends from many threads get
consecutive nonces; a nonce another process took ("nonce too low", or "replacement transaction
underpriced" while its transaction is pending) resyncs from the chain, and so does a chain whose pending
nonce fell below the tracked one (a reorganisation dropped transactions of the account: signing above it
would leave the next one queued forever; a receipt awaited behind such a gap is signed again). Transient
RPC failures (connection errors, timeouts) are retried with exponential backoff; reverts never are: they
are decoded into the typed exceptions of :mod:`ledger.reverts`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import requests
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed as EthTesterTransactionFailed
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import EthereumTesterProvider, Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    ProviderConnectionError,
    TimeExhausted,
    TransactionNotFound,
    Web3RPCError,
)

from ledger.errors import ContractRevertError, LedgerConfigError, LedgerError, RpcError, TransactionError
from ledger.reverts import decode_revert, revert_data_of
from ledger.types import TxResult

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
)
Sendable = ContractFunction | ContractConstructor
NONCE_ATTEMPTS = 4
"""Signing attempts when the nonce turns out to be taken by another sender of the same account."""
_NONCE_TAKEN = re.compile(r"nonce too low|replacement transaction underpriced|nonce already used")
GAP_CHECK_S = 1.0
"""Seconds between checks, while a receipt is awaited, that the chain has not dropped an earlier nonce."""


class _NonceGapError(Exception):
    """A sent transaction's nonce lies above the chain's pending nonce of its account (see ``send``)."""


_REVERTS: tuple[type[BaseException], ...] = (
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    EthTesterTransactionFailed,
)


@dataclass(frozen=True)
class RetryPolicy:
    """How transient RPC failures are retried."""

    attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 3.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise LedgerConfigError(f"`attempts` must be >= 1, got {self.attempts}")
        if self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise LedgerConfigError(
                f"`initial_delay` must be in [0, max_delay], got {self.initial_delay} (max {self.max_delay})"
            )


def with_retry(call: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """Run ``call``, retrying transient RPC failures; reverts and other errors pass through at once.

    Raises
    ------
    RpcError
        When every attempt failed with a transient error.
    """
    delay = policy.initial_delay
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except _TRANSIENT as exc:
            if attempt == policy.attempts:
                raise RpcError(f"{what}: RPC failed after {attempt} attempts: {exc}") from exc
            log.warning("%s: transient RPC failure (%s), retry %d in %.1f s", what, exc, attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2, policy.max_delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _name(fn: Sendable) -> str:
    return str(getattr(fn, "fn_name", "constructor"))


class _NonceTracker:
    """The next nonce of one sender on one chain, guarded by a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.next: int | None = None


_TRACKERS: dict[tuple[int, str, str], _NonceTracker] = {}
_TRACKERS_LOCK = threading.Lock()


def _tracker(w3: Web3, chain_id: int, address: str) -> _NonceTracker:
    # An RPC endpoint is one chain; an in-process py-evm provider is its own chain even with the same id.
    endpoint = getattr(w3.provider, "endpoint_uri", None) or f"in-process:{id(w3.provider)}"
    with _TRACKERS_LOCK:
        return _TRACKERS.setdefault((chain_id, str(endpoint), address), _NonceTracker())


def call_view(fn: ContractFunction, policy: RetryPolicy = RetryPolicy(), block: int | str = "latest") -> Any:
    """Call a view function at ``block`` with retries; a revert becomes its typed ``ContractRevertError``."""
    try:
        return with_retry(lambda: fn.call(block_identifier=cast(Any, block)), policy, _name(fn))
    except _REVERTS as exc:
        raise decode_revert(revert_data_of(exc)) from exc


class TxSender:
    """Signs and sends transactions for one account.

    Parameters
    ----------
    w3
        A connected web3 instance.
    account
        The signing account (from :mod:`ledger.keys`); its key never leaves this object.
    retry
        Retry policy for transient RPC failures.
    receipt_timeout
        Seconds to wait for a receipt before :class:`TransactionError`.
    gas_margin
        Multiplier applied to the gas estimate.
    receipt_poll_s, receipt_poll_max_s
        Receipt polling starts every ``receipt_poll_s`` seconds and slows down (x1.5 per poll) to every
        ``receipt_poll_max_s``: a devnet with sub-second blocks answers within one fast poll, while a
        12 s-block network is asked about once a second, not twenty times.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        retry: RetryPolicy = RetryPolicy(),
        receipt_timeout: float = 120.0,
        gas_margin: float = 1.25,
        receipt_poll_s: float = 0.05,
        receipt_poll_max_s: float = 1.0,
    ) -> None:
        if gas_margin < 1.0:
            raise LedgerConfigError(f"`gas_margin` must be >= 1.0, got {gas_margin}")
        if not 0 < receipt_poll_s <= receipt_poll_max_s:
            raise LedgerConfigError(
                f"`receipt_poll_s` must be in (0, {receipt_poll_max_s}] (receipt_poll_max_s), "
                f"got {receipt_poll_s}"
            )
        self.receipt_poll_s = receipt_poll_s
        self.receipt_poll_max_s = receipt_poll_max_s
        self.w3 = w3
        self.account = account
        self.address: ChecksumAddress = account.address
        self.retry = retry
        self.receipt_timeout = receipt_timeout
        self.gas_margin = gas_margin
        self.chain_id: int = with_retry(lambda: int(w3.eth.chain_id), retry, "eth_chainId")
        self._nonces = _tracker(w3, self.chain_id, self.address)
        # Estimate against the block the transaction will land in (block.number matters for windows);
        # py-evm already estimates in a pending block and does not accept the tag.
        self._estimate_block: Literal["pending", "latest"] = (
            "latest" if isinstance(w3.provider, EthereumTesterProvider) else "pending"
        )

    def __repr__(self) -> str:  # never show the key
        return f"TxSender({self.address}, chain {self.chain_id})"

    def estimate_gas(self, fn: Sendable) -> int:
        """Estimate gas for ``fn`` from this account; a revert raises its typed exception."""
        try:
            gas = with_retry(
                lambda: fn.estimate_gas({"from": self.address}, block_identifier=self._estimate_block),
                self.retry,
                _name(fn),
            )
        except _REVERTS as exc:
            raise decode_revert(revert_data_of(exc)) from exc
        except Web3RPCError as exc:
            raise self._rpc_revert(exc, _name(fn)) from exc
        return int(gas)

    def send(self, fn: Sendable, *, gas: int | None = None) -> TxResult:
        """Send a contract call, wait for its receipt and return it.

        Raises
        ------
        ContractRevertError
            (a typed subclass) if the call reverts at estimation or when mined.
        TransactionError
            If the transaction is not mined within ``receipt_timeout``.
        RpcError
            If the endpoint keeps failing.
        """
        gas_limit = gas if gas is not None else int(self.estimate_gas(fn) * self.gas_margin)
        for attempt in (1, 2):
            tx_hash, nonce = self._sign_and_send(fn, gas_limit)
            try:
                receipt = self.wait_for_receipt(tx_hash, nonce=nonce)
                break
            except _NonceGapError as exc:
                # The chain forgot earlier transactions of this account (a reorganisation dropped them), so
                # this one waits behind a nonce nothing will fill: sign it again on the chain's nonce.
                self.resync_nonce()
                if attempt == 2:
                    raise TransactionError(f"{_name(fn)}: {exc}") from exc
                log.info("%s: %s; signing again", self.address, exc)
            except TimeExhausted as exc:
                self.resync_nonce()  # the nonce may be one the chain never reaches (see _NonceGapError)
                raise TransactionError(
                    f"{_name(fn)}: tx 0x{tx_hash.hex()} not mined in {self.receipt_timeout} s"
                ) from exc
        if receipt["status"] != 1:
            raise self._mined_revert(fn, int(receipt["blockNumber"]))
        log.debug("%s mined in block %d, gas %d", _name(fn), receipt["blockNumber"], receipt["gasUsed"])
        return TxResult(
            bytes(receipt["transactionHash"]), int(receipt["blockNumber"]), int(receipt["gasUsed"])
        )

    def resync_nonce(self) -> None:
        """Forget the tracked nonce: the next transaction asks the chain (after a reorganisation, say)."""
        with self._nonces.lock:
            self._nonces.next = None

    def wait_for_receipt(self, tx_hash: bytes, *, nonce: int | None = None) -> Any:
        """Poll for a transaction's receipt (fast at first, then slower); return it once mined.

        With the transaction's ``nonce``, about once a second it also checks that the chain's pending nonce
        of this account has reached it: one below it means the chain dropped an earlier transaction of
        this account (a reorganisation) and this one can never be mined.

        Raises
        ------
        TimeExhausted
            If it is not mined within ``receipt_timeout`` seconds.
        """
        deadline = time.monotonic() + self.receipt_timeout
        delay = self.receipt_poll_s
        next_gap_check = time.monotonic() + GAP_CHECK_S
        while True:
            try:
                return with_retry(
                    lambda: self.w3.eth.get_transaction_receipt(HexBytes(tx_hash)),
                    self.retry,
                    "eth_getTransactionReceipt",
                )
            except TransactionNotFound:
                pass
            if nonce is not None and time.monotonic() >= next_gap_check:
                next_gap_check = time.monotonic() + GAP_CHECK_S
                pending = with_retry(
                    lambda: int(self.w3.eth.get_transaction_count(self.address, "pending")),
                    self.retry,
                    "eth_getTransactionCount",
                )
                if pending < nonce:
                    raise _NonceGapError(
                        f"tx 0x{tx_hash.hex()} has nonce {nonce} but the chain's pending nonce is {pending}"
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeExhausted(f"transaction 0x{tx_hash.hex()} not mined in {self.receipt_timeout} s")
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, self.receipt_poll_max_s)

    def _sign_and_send(self, fn: Sendable, gas_limit: int) -> tuple[bytes, int]:
        with self._nonces.lock:
            for attempt in range(NONCE_ATTEMPTS):
                # Asked every time: every earlier send of this process happened under this lock, so the
                # pending count includes them all; one below the tracked nonce means the chain dropped
                # transactions of this account (a reorganisation), and signing above it would leave this
                # one queued behind a nonce nothing fills.
                pending = with_retry(
                    lambda: int(self.w3.eth.get_transaction_count(self.address, "pending")),
                    self.retry,
                    "eth_getTransactionCount",
                )
                if self._nonces.next is not None and pending < self._nonces.next:
                    log.info("%s: chain's pending nonce %d < tracked %d (dropped transactions), using it",
                             self.address, pending, self._nonces.next)  # fmt: skip
                    self._nonces.next = pending
                if self._nonces.next is None:
                    self._nonces.next = pending
                nonce = self._nonces.next
                tx = with_retry(
                    lambda n=nonce: fn.build_transaction(  # type: ignore[misc]
                        {"from": self.address, "nonce": n, "gas": gas_limit, "chainId": self.chain_id}
                    ),
                    self.retry,
                    _name(fn),
                )
                signed = self.account.sign_transaction(cast(dict[str, Any], tx))
                raw = signed.raw_transaction
                try:
                    tx_hash = with_retry(
                        lambda raw=raw: self.w3.eth.send_raw_transaction(raw),  # type: ignore[misc]
                        self.retry,
                        "eth_sendRawTransaction",
                    )
                except (Web3RPCError, ValueError) as exc:
                    text = str(exc).lower()
                    if "already known" in text:
                        tx_hash = signed.hash
                    elif _NONCE_TAKEN.search(text) and attempt + 1 < NONCE_ATTEMPTS:
                        # Another process signing for this account (a CLI call beside a running node) took
                        # the nonce: mined ("nonce too low") or still pending ("replacement transaction
                        # underpriced"). The pending count includes it, so resync and sign again.
                        log.info("%s: nonce %d taken (%s), resyncing", self.address, nonce, text[:120])
                        self._nonces.next = None
                        continue
                    else:
                        self._nonces.next = None
                        raise TransactionError(f"{_name(fn)}: sending failed: {exc}") from exc
                self._nonces.next = nonce + 1
                return bytes(tx_hash), nonce
        raise TransactionError(f"{_name(fn)}: nonce kept being taken by other transactions of this account")

    def _mined_revert(self, fn: Sendable, block: int) -> ContractRevertError:
        """Replay a mined, failed call to recover its revert reason (state as of the block before)."""
        if not isinstance(fn, ContractFunction):
            return ContractRevertError("", {}, f"{_name(fn)}: transaction reverted in block {block}")
        try:
            fn.call({"from": self.address}, block_identifier=max(block - 1, 0))
        except _REVERTS as exc:
            return decode_revert(revert_data_of(exc))
        except Exception as exc:  # the replay itself failed; report what we know
            log.debug("replay of failed %s: %s", _name(fn), exc)
        return ContractRevertError("", {}, f"{_name(fn)}: transaction reverted in block {block}")

    @staticmethod
    def _rpc_revert(exc: Web3RPCError, what: str) -> LedgerError:
        data = revert_data_of(exc)
        if data is not None and "revert" in str(exc).lower():
            return decode_revert(data)
        return TransactionError(f"{what}: {exc}")
