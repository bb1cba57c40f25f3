"""Exceptions of the chain layer: every error raised by ``ledger`` derives from :class:`LedgerError`."""


class LedgerError(Exception):
    """Root of all chain-layer errors."""
