"""The embedded content-addressed store: one file per CID on local disk.

Layout under ``root``::

    blobs/<cid>   the content, named by its CID (see :mod:`p2p.storage.cid`)
    pins/<cid>    an empty marker per pinned CID (atomic create/unlink, safe across processes)
    tmp/          partial writes, renamed into ``blobs/`` once complete

Every write goes to ``tmp/`` first and is renamed into place, so a crash never leaves a partial blob
under a CID. Every read re-hashes the bytes, so on-disk corruption surfaces as
:class:`~p2p.storage.errors.CidMismatchError` instead of bad data.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from p2p.storage.atomic import atomic_write
from p2p.storage.base import Cid
from p2p.storage.cid import CHUNK_SIZE, CidBuilder, compute_cid, compute_file_cid, normalize_cid
from p2p.storage.errors import CidMismatchError, ContentNotFoundError, ContentTooLargeError

log = logging.getLogger(__name__)

_STALE_TMP_S = 3600.0


class LocalStore:
    """A content-addressed store in a directory; computes the same CIDs as an IPFS daemon.

    Parameters
    ----------
    root
        Directory of the store; created if missing.

    Examples
    --------
    >>> import tempfile
    >>> store = LocalStore(Path(tempfile.mkdtemp()))
    >>> cid = store.put(b"hello")
    >>> store.get(cid)
    b'hello'
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._pins = self.root / "pins"
        self._tmp = self.root / "tmp"
        for folder in (self._blobs, self._pins, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _blob(self, cid: str) -> Path:
        return self._blobs / normalize_cid(cid)

    def blob_path(self, cid: Cid) -> Path:
        """Where the content named by ``cid`` is kept (not checked; :meth:`verified_path` hashes it)."""
        return self._blob(cid)

    @property
    def tmp_dir(self) -> Path:
        """The store's folder for partial writes (same file system as the blobs: a rename moves a file in)."""
        return self._tmp

    def put(self, data: bytes) -> Cid:
        """Store ``data`` and return its CID (idempotent; the content is not pinned)."""
        cid = compute_cid(data)
        path = self._blobs / cid
        if not (path.exists() and path.stat().st_size == len(data)):
            with atomic_write(path, self._tmp) as f:
                f.write(data)
        return cid

    def put_file(self, path: Path, *, move: bool = False) -> Cid:
        """Store a file's content, streaming it through a temporary file; return its CID.

        With ``move`` the file itself becomes the blob (hashed in place, then renamed into ``blobs/``: no
        copy; it must be on the store's file system, e.g. in :attr:`tmp_dir`); it is gone afterwards.
        """
        if move:
            cid = compute_file_cid(Path(path))
            os.replace(path, self._blobs / cid)
            return cid
        builder = CidBuilder()
        fd, tmp_name = tempfile.mkstemp(prefix=".put-", dir=self._tmp)
        try:
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK_SIZE):
                    builder.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            cid = builder.finish()  # the name is known only once all bytes have been seen
            os.replace(tmp_name, self._blobs / cid)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return cid

    def _checked_size(self, cid: Cid, max_size: int | None) -> tuple[Path, int]:
        path = self._blob(cid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ContentNotFoundError(f"{cid} is not in the local store {self.root}") from None
        if max_size is not None and size > max_size:
            raise ContentTooLargeError(f"{cid} is {size} bytes, more than max_size={max_size}")
        return path, size

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:
        """Return the content named by ``cid``, checked against it.

        Raises
        ------
        InvalidCidError
            ``cid`` is not a CID.
        ContentNotFoundError
            The store does not hold it.
        ContentTooLargeError
            It is larger than ``max_size`` (checked before reading).
        CidMismatchError
            The bytes on disk do not hash to ``cid`` (corruption); they are not returned.
        """
        path, _ = self._checked_size(cid, max_size)
        data = path.read_bytes()
        if max_size is not None and len(data) > max_size:  # grew between stat and read
            raise ContentTooLargeError(f"{cid} is {len(data)} bytes, more than max_size={max_size}")
        actual = compute_cid(data)
        if actual != normalize_cid(cid):
            log.error("local store %s: blob %s is corrupt (hashes to %s)", self.root, cid, actual)
            raise CidMismatchError(
                f"stored content for {cid} is corrupt: {len(data)} bytes hash to {actual}; "
                f"delete {path} and fetch it again"
            )
        return data

    def verified_path(self, cid: Cid, max_size: int | None = None) -> Path:
        """Return the file holding the content named by ``cid``, once its bytes were hashed against it.

        The content is read in pieces of 256 KiB (never held whole). The file is the store's own: read it,
        never write it; it stays until the CID is unpinned and garbage-collected.

        Raises
        ------
        ContentNotFoundError, ContentTooLargeError, CidMismatchError
            As :meth:`get` (the size is checked before anything is read).
        """
        path, _ = self._checked_size(cid, max_size)
        actual = compute_file_cid(path)
        if actual != normalize_cid(cid):
            log.error("local store %s: blob %s is corrupt (hashes to %s)", self.root, cid, actual)
            raise CidMismatchError(
                f"stored content for {cid} is corrupt: it hashes to {actual}; "
                f"delete {path} and fetch it again"
            )
        return path

    def get_file(self, cid: Cid, dest: Path, max_size: int | None = None) -> int:
        """Copy the verified content named by ``cid`` to ``dest`` (atomically); return its size."""
        path, _ = self._checked_size(cid, max_size)
        builder = CidBuilder()
        with open(path, "rb") as src, atomic_write(Path(dest)) as dst:
            while chunk := src.read(CHUNK_SIZE):
                builder.update(chunk)
                if max_size is not None and builder.size > max_size:
                    raise ContentTooLargeError(f"{cid} is more than max_size={max_size} bytes")
                dst.write(chunk)
            actual = builder.finish()
            if actual != normalize_cid(cid):
                log.error("local store %s: blob %s is corrupt (hashes to %s)", self.root, cid, actual)
                raise CidMismatchError(f"stored content for {cid} is corrupt: it hashes to {actual}")
        return builder.size

    def has(self, cid: Cid) -> bool:
        """Whether the store holds content under ``cid`` (not re-hashed; :meth:`get` does that)."""
        return self._blob(cid).is_file()

    def pin(self, cid: Cid) -> None:
        """Protect held content from :meth:`gc`.

        Raises
        ------
        ContentNotFoundError
            The store does not hold ``cid`` (the embedded store cannot fetch it from elsewhere).
        """
        canonical = normalize_cid(cid)
        if not self.has(canonical):
            raise ContentNotFoundError(f"cannot pin {canonical}: it is not in the local store {self.root}")
        (self._pins / canonical).touch()

    def unpin(self, cid: Cid) -> None:
        """Let :meth:`gc` remove the content (no-op if it was not pinned)."""
        (self._pins / normalize_cid(cid)).unlink(missing_ok=True)

    def list(self) -> Iterator[Cid]:
        """Iterate over pinned CIDs, sorted."""
        for name in sorted(os.listdir(self._pins)):
            yield Cid(name)

    def blobs(self) -> Iterator[Cid]:
        """Iterate over every stored CID, pinned or not, sorted."""
        for name in sorted(os.listdir(self._blobs)):
            yield Cid(name)

    def gc(self) -> builtins.list[Cid]:
        """Delete unpinned content and abandoned partial writes; return the removed CIDs."""
        pinned = set(os.listdir(self._pins))
        removed = [cid for cid in self.blobs() if cid not in pinned]
        for cid in removed:
            (self._blobs / cid).unlink(missing_ok=True)
        cutoff = time.time() - _STALE_TMP_S  # younger partial files may belong to a writer still running
        for tmp in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
        log.info("local store %s: gc removed %d blobs", self.root, len(removed))
        return removed
