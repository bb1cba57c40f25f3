"""Exceptions of the chain layer: every error raised by ``ledger`` derives from :class:`LedgerError`.

Contract reverts are decoded from their custom-error selector into the typed subclasses of
:class:`ContractRevertError` in :mod:`ledger.reverts`.
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    """Root of all chain-layer errors."""


class LedgerConfigError(LedgerError, ValueError):
    """A configuration value of the chain layer is invalid (the message names the field and value)."""


class RpcError(LedgerError, ConnectionError):
    """The JSON-RPC endpoint failed, also after the retries for transient failures."""


class TransactionError(LedgerError):
    """A transaction could not be sent, was not mined in time, or failed without a decodable reason."""


class KeystoreError(LedgerError, ValueError):
    """A keystore file or its passphrase is missing or wrong."""


class IndexerError(LedgerError):
    """The event indexer's database or configuration is unusable."""


class SignatureError(LedgerError, ValueError):
    """A signature is malformed (length, ``v``, ``r``/``s`` range, high ``s``) or recovers no key."""


class ContractRevertError(LedgerError):
    """A contract call reverted; subclasses map one custom error each (see :mod:`ledger.reverts`).

    Attributes
    ----------
    error
        The Solidity error name (``"RunsNotMember"``), or ``"Error"``/``"Panic"``/``""`` when not custom.
    args
        The decoded error arguments by name.
    """

    def __init__(self, error: str, args: dict[str, Any] | None = None, message: str | None = None) -> None:
        self.error = error
        self.error_args: dict[str, Any] = dict(args or {})
        detail = ", ".join(f"{k}={_show(v)}" for k, v in self.error_args.items())
        super().__init__(message or f"contract reverted with {error}({detail})")


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)
