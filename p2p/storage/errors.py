"""Errors of the storage package; all derive from :class:`p2p.errors.StorageError`."""

from __future__ import annotations

from p2p.errors import StorageError


class InvalidCidError(StorageError, ValueError):
    """A string is not a CID that fedchain can read (bad multibase, version, codec or multihash)."""


class CidMismatchError(StorageError):
    """Bytes do not hash to the CID they were fetched or stored under (corrupt or substituted content)."""


class ContentNotFoundError(StorageError, LookupError):
    """The store does not hold the content named by a CID."""


class ContentTooLargeError(StorageError, ValueError):
    """The content is larger than the caller's ``max_size``; it was not downloaded or read."""


class StoreUnavailableError(StorageError, ConnectionError):
    """The backend cannot be reached or did not answer in time (IPFS daemon down, timeout)."""


class InvalidStoreSpecError(StorageError, ValueError):
    """A store description or daemon address is malformed (configuration error, not an outage)."""
