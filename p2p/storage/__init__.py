"""Content-addressed storage: one :class:`~p2p.storage.base.Store` interface, two backends.

Both backends name content with the same CIDs (CIDv1 base32, 256 KiB raw leaves, balanced dag-pb
UnixFS tree of at most 174 links per node: Kubo's ``--cid-version=1`` defaults), and every ``get``
re-hashes what it returns.

Modules
-------
base
    The ``Store`` and ``FileStore`` protocols and the ``Cid`` type.
cid
    ``compute_cid``, ``CidBuilder``, ``parse_cid``, ``normalize_cid``, ``verify``: the CID scheme.
errors
    The storage error classes (all subclasses of ``p2p.errors.StorageError``).
local
    ``LocalStore``: the embedded store, one file per CID on disk, pins, gc.
ipfs
    ``IpfsStore``: the same interface over an IPFS daemon's HTTP RPC via ``ipfshttpclient``.
atomic
    ``atomic_write``: temporary file + fsync + rename.
"""

from __future__ import annotations

import os
from pathlib import Path

from p2p.storage.base import Cid, FileStore, Store
from p2p.storage.cid import compute_cid, normalize_cid, verify
from p2p.storage.errors import (
    CidMismatchError,
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCidError,
    InvalidStoreSpecError,
    StoreUnavailableError,
)
from p2p.storage.local import LocalStore

__all__ = [
    "Cid",
    "CidMismatchError",
    "ContentNotFoundError",
    "ContentTooLargeError",
    "FileStore",
    "InvalidCidError",
    "InvalidStoreSpecError",
    "LocalStore",
    "Store",
    "StoreUnavailableError",
    "compute_cid",
    "normalize_cid",
    "open_store",
    "verify",
]

_MULTIADDR_PREFIXES = ("/ip4/", "/ip6/", "/dns/", "/dns4/", "/dns6/")


def open_store(spec: str | os.PathLike[str], *, timeout: float = 60.0) -> FileStore:
    """Open a store from a one-string description.

    Parameters
    ----------
    spec
        ``ipfs:<multiaddr>`` (or a bare ``/ip4/…/tcp/…`` multiaddr) for an IPFS daemon's API, e.g.
        ``ipfs:/ip4/127.0.0.1/tcp/5001/http``; ``local:<dir>`` or a directory path for the embedded
        store (created if missing).
    timeout
        Seconds per RPC call (IPFS backend only).

    Raises
    ------
    InvalidStoreSpecError
        If ``spec`` is empty or ``ipfs:`` is not followed by a multiaddr (also a ``ValueError``).
    """
    text = os.fspath(spec)
    if not text.strip():
        raise InvalidStoreSpecError(
            "store spec must be `ipfs:<multiaddr>` or a directory, got an empty string"
        )
    if text.startswith("ipfs:") or text.startswith(_MULTIADDR_PREFIXES):
        addr = text.removeprefix("ipfs:")
        if not addr.startswith(_MULTIADDR_PREFIXES):
            raise InvalidStoreSpecError(
                f"store spec `ipfs:` needs a multiaddr like /ip4/127.0.0.1/tcp/5001/http, got {text!r}"
            )
        from p2p.storage.ipfs import IpfsStore  # imports requests; only when asked for

        return IpfsStore(addr, timeout=timeout)
    return LocalStore(Path(text.removeprefix("local:")).expanduser())
