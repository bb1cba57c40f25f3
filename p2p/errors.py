"""Exceptions of the p2p layer: every error raised by ``p2p`` derives from :class:`P2PError`."""


class P2PError(Exception):
    """Root of all p2p-layer errors."""


class StorageError(P2PError):
    """A content-addressed store failed, or returned bytes that do not match their CID."""


class IdentityError(P2PError, ValueError):
    """A private key, public key or peer id is malformed, or is not a secp256k1 identity."""


class MessageError(P2PError, ValueError):
    """A gossip message is oversized, malformed, of an unknown version/type, or fails a schema check."""


class BlobProtocolError(P2PError, ValueError):
    """A blob-exchange frame is malformed, announces a size over the cap, or the stream ended early."""


class BlobVerificationError(P2PError):
    """Bytes received for a CID do not hash to that CID (the provider served corrupt content)."""


class FetchError(P2PError):
    """No provider delivered a verified copy of the requested content within the time allowed."""


class HostError(P2PError, RuntimeError):
    """The p2p node is not running, failed to start, or a call into it timed out."""


class EnvelopeError(P2PError, ValueError):
    """A confidential-artifact envelope is malformed, not for this reader, or fails authentication."""
