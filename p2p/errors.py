"""Exceptions of the p2p layer: every error raised by ``p2p`` derives from :class:`P2PError`."""


class P2PError(Exception):
    """Root of all p2p-layer errors."""


class StorageError(P2PError):
    """A content-addressed store failed, or returned bytes that do not match their CID."""
