"""The content-addressed store interface shared by the embedded store and the IPFS backend."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from pathlib import Path
from typing import NewType, Protocol, runtime_checkable

Cid = NewType("Cid", str)
"""A CIDv1 string (base32, ``bafy…`` / ``bafk…``) naming UnixFS content, as Kubo computes it with
``--cid-version=1`` (raw leaves, 256 KiB chunks, balanced DAG)."""


@runtime_checkable
class Store(Protocol):
    """A content-addressed blob store. Every backend returns the same CID for the same bytes."""

    def put(self, data: bytes) -> Cid:
        """Store ``data`` and return its CID (idempotent)."""
        ...

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:
        """Return the bytes named by ``cid``, verified against it.

        Raises ``StorageError`` if absent, larger than ``max_size``, or not matching the CID.
        """
        ...

    def has(self, cid: Cid) -> bool:
        """Whether the content is available locally (without fetching it from elsewhere)."""
        ...

    def pin(self, cid: Cid) -> None:
        """Keep the content until :meth:`unpin`; garbage collection never removes pinned content."""
        ...

    def unpin(self, cid: Cid) -> None:
        """Allow the content to be garbage-collected."""
        ...

    def list(self) -> Iterator[Cid]:
        """Iterate over the CIDs of pinned content."""
        ...


@runtime_checkable
class FileStore(Store, Protocol):
    """A :class:`Store` that can also move content to and from files without holding it in memory."""

    def put_file(self, path: Path) -> Cid:
        """Store the content of the file at ``path`` and return its CID."""
        ...

    def get_file(self, cid: Cid, dest: Path, max_size: int | None = None) -> int:
        """Write the verified content named by ``cid`` to ``dest`` (atomically); return its size."""
        ...

    def gc(self) -> builtins.list[Cid]:
        """Delete unpinned content; return the CIDs removed."""
        ...
