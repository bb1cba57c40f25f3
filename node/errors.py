"""Exceptions of the node layer: every error raised by ``node`` modules derives from ``NodeError``."""


class NodeError(Exception):
    """Root of the node layer's errors."""


class ArtifactUnavailableError(NodeError, LookupError):
    """No source (own store, peers, IPFS) delivered an artifact whose bytes match its CID and sha256."""


class RunMismatchError(NodeError, ValueError):
    """What the chain says about a run does not match what this node has (spec hash, model layout)."""
