"""Backends: connect to a JSON-RPC URL (anvil, any EVM node) or to in-process py-evm; devnet helpers.

``connect("py-evm")`` gives a fresh in-process chain (web3's ``EthereumTesterProvider``) whose funded dev
accounts are :func:`dev_accounts` with ``backend="py-evm"``; any ``http(s)://`` URL uses ``HTTPProvider``.
"""

from __future__ import annotations

from typing import Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import EthereumTesterProvider, Web3
from web3.providers.rpc import HTTPProvider
from web3.types import RPCEndpoint

from ledger.errors import LedgerConfigError
from ledger.rpc import CALLS

PY_EVM = "py-evm"
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

PY_EVM_ACCOUNTS = 10
"""Accounts eth-tester funds (the keys 1..10)."""

Backend = Literal["py-evm", "anvil"]


class CountingHTTPProvider(HTTPProvider):
    """web3's ``HTTPProvider`` that records each request in :data:`ledger.rpc.CALLS` (method, body bytes)."""

    def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        raw = super()._make_request(method, request_data)
        CALLS.record(str(method), len(request_data), len(raw))
        return raw


def connect(url: str, timeout: float = 30.0) -> Web3:
    """Return a web3 instance for ``url``: ``"py-evm"`` (in-process) or an ``http(s)://`` JSON-RPC URL.

    Raises
    ------
    LedgerConfigError
        If the URL has another scheme.
    """
    if url == PY_EVM:
        return Web3(EthereumTesterProvider())
    if url.startswith(("http://", "https://")):
        # web3's request validation asks eth_chainId twice per call; an endpoint's chain id never changes,
        # so caching it (and nothing else) turns every view call into one HTTP request instead of three.
        provider = CountingHTTPProvider(
            url,
            request_kwargs={"timeout": timeout},
            cache_allowed_requests=True,
            cacheable_requests={RPCEndpoint("eth_chainId")},
        )
        return Web3(provider)
    raise LedgerConfigError(f"`rpc_url` must be 'py-evm' or an http(s):// URL, got {url!r}")


def dev_accounts(backend: Backend, count: int = 10) -> list[LocalAccount]:
    """Return the funded development accounts of a backend (never use these keys outside a devnet).

    anvil funds the first ``--accounts`` accounts of the well-known ``test … junk`` mnemonic (any number:
    start it with as many as needed); eth-tester funds the keys 1, 2, …, 10.

    Raises
    ------
    LedgerConfigError
        If ``count`` is below 1, or above 10 on py-evm.
    """
    if count < 1:
        raise LedgerConfigError(f"`count` must be >= 1, got {count}")
    if backend == PY_EVM:
        if count > PY_EVM_ACCOUNTS:
            raise LedgerConfigError(f"`count` must be <= {PY_EVM_ACCOUNTS} on py-evm, got {count}")
        return [Account.from_key(i.to_bytes(32, "big")) for i in range(1, count + 1)]
    Account.enable_unaudited_hdwallet_features()
    return [Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)]


def is_py_evm(w3: Web3) -> bool:
    """Whether ``w3`` runs on the in-process py-evm backend."""
    return isinstance(w3.provider, EthereumTesterProvider)


def mine(w3: Web3, blocks: int = 1) -> int:
    """Mine ``blocks`` empty blocks on a devnet (anvil or py-evm) and return the new head number."""
    if blocks < 0:
        raise LedgerConfigError(f"`blocks` must be >= 0, got {blocks}")
    if blocks:
        if is_py_evm(w3):
            w3.provider.ethereum_tester.mine_blocks(blocks)  # type: ignore[attr-defined]
        else:
            w3.provider.make_request("anvil_mine", [hex(blocks)])  # type: ignore[arg-type]
    return int(w3.eth.block_number)
