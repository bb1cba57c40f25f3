"""The IPFS backend: a :class:`~p2p.storage.base.Store` over a daemon's HTTP RPC (Kubo or js-ipfs).

Content is added with ``cid_version=1, raw_leaves=True, chunker="size-262144"`` so the daemon names it
exactly as :func:`p2p.storage.cid.compute_cid` does; ``put`` checks that it did. ``get`` asks the daemon
for the size first (``files/stat``), refuses content over ``max_size`` before downloading it, caps the
download at ``max_size + 1`` bytes in case the daemon lied, and re-hashes the bytes locally: a daemon is
never trusted to return the content a CID names.

js-ipfs 0.66 quirks handled here: it reports version 0.18.1, which ``ipfshttpclient.connect()`` rejects,
so the client is constructed directly; in offline mode it waits forever for a block it does not hold,
so presence is decided from ``refs/local`` before any request that could wait for the network.
"""

from __future__ import annotations

import builtins
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_exc

from p2p.errors import StorageError
from p2p.storage.atomic import atomic_write
from p2p.storage.base import Cid
from p2p.storage.cid import CHUNK_SIZE, CidBuilder, compute_cid, compute_file_cid, normalize_cid, parse_cid
from p2p.storage.errors import (
    CidMismatchError,
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidStoreSpecError,
    StoreUnavailableError,
)

log = logging.getLogger(__name__)

# ipfshttpclient 0.7 passes urllib3 a parameter that urllib3 2.x only warns about, on every request.
warnings.filterwarnings(
    "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
)

_ADD_OPTIONS: dict[str, Any] = {"cid_version": 1, "raw_leaves": True, "chunker": f"size-{CHUNK_SIZE}"}
_T = TypeVar("_T")


class IpfsStore:
    """A content-addressed store backed by an IPFS daemon.

    Parameters
    ----------
    api_addr
        Multiaddr of the daemon's HTTP RPC API, e.g. ``/ip4/127.0.0.1/tcp/5001/http``.
    timeout
        Seconds to wait for any single RPC call.
    network_timeout
        Seconds that :meth:`get` and :meth:`pin` let the daemon search the network for content it does
        not hold. ``0`` (default) means only content already held by the daemon is served, and a miss
        fails at once (a js-ipfs daemon in offline mode would otherwise wait forever).
    """

    def __init__(self, api_addr: str, *, timeout: float = 60.0, network_timeout: float = 0.0) -> None:
        if timeout <= 0:
            raise InvalidStoreSpecError(f"`timeout` must be > 0, got {timeout}")
        if network_timeout < 0:
            raise InvalidStoreSpecError(f"`network_timeout` must be >= 0, got {network_timeout}")
        self.api_addr = api_addr
        self.timeout = timeout
        self.network_timeout = network_timeout
        try:
            self._client = ipfshttpclient.Client(api_addr, timeout=timeout)
        except ipfs_exc.Error as exc:
            raise InvalidStoreSpecError(f"invalid IPFS API address {api_addr!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"IpfsStore({self.api_addr!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.close()

    def __enter__(self) -> IpfsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run one RPC call, mapping the client's exceptions to storage errors that name the daemon."""
        try:
            return fn()
        except ipfs_exc.TimeoutError as exc:
            raise StoreUnavailableError(f"IPFS daemon at {self.api_addr}: {what} timed out: {exc}") from exc
        except ipfs_exc.ConnectionError as exc:
            raise StoreUnavailableError(
                f"IPFS daemon at {self.api_addr} is unreachable ({what}): {exc}; is it running?"
            ) from exc
        except ipfs_exc.Error as exc:
            raise StorageError(f"IPFS daemon at {self.api_addr}: {what} failed: {exc}") from exc

    def version(self) -> str:
        """Return the daemon's version string (also a cheap liveness check)."""
        info = self._call("version", lambda: self._client.version())
        return str(info["Version"])

    def _added_cid(self, response: Any, expected: Cid) -> Cid:
        items = response if isinstance(response, builtins.list) else [response]
        cid = normalize_cid(str(items[-1]["Hash"]))
        if cid != expected:
            raise CidMismatchError(
                f"IPFS daemon at {self.api_addr} named the content {cid} but fedchain computes {expected}; "
                "the daemon does not honour cid_version=1/raw_leaves/size-262144"
            )
        return cid

    def put(self, data: bytes) -> Cid:
        """Add ``data`` to the daemon (unpinned) and return its CID, checked against the local scheme."""
        expected = compute_cid(data)
        response = self._call("add", lambda: self._client.add(io.BytesIO(data), pin=False, **_ADD_OPTIONS))
        return self._added_cid(response, expected)

    def put_file(self, path: Path) -> Cid:
        """Add a file's content (streamed by the client) and return its CID."""
        expected = compute_file_cid(path)
        response = self._call("add", lambda: self._client.add(str(path), pin=False, **_ADD_OPTIONS))
        return self._added_cid(response, expected)

    def has(self, cid: Cid) -> bool:
        """Whether the daemon holds the root block of ``cid``; no network search.

        A recursive pin answers at once (``pin/ls`` of the one CID: pinned content is held whole); only
        unpinned content is looked up in ``refs/local``, which lists every block of the repository, so
        the cost of a node's usual checks (its own, pinned artifacts) does not grow with the repository.
        """
        if self._pinned(normalize_cid(cid)):
            return True
        digest = parse_cid(cid).digest
        refs = self._call("refs/local", lambda: self._client.unstable.refs.local())
        for ref in refs:
            try:
                if parse_cid(str(ref["Ref"])).digest == digest:
                    return True
            except StorageError:  # an identity or non-sha256 block of someone else's
                continue
        return False

    def _pinned(self, cid: Cid) -> bool:
        """Whether ``cid`` itself is pinned recursively (one pin-set lookup on the daemon)."""
        try:
            response = self._call("pin/ls", lambda: self._client.pin.ls(cid, type="recursive"))
        except StoreUnavailableError:
            raise
        except StorageError:  # "is not pinned" (or no match)
            return False
        return any(normalize_cid(str(key)) == cid for key in response.get("Keys", {}))

    def _require_present(self, cid: Cid, action: str) -> float:
        """Return the timeout for a call that may wait on the network; fail fast if that is not allowed."""
        if self.network_timeout == 0:
            if not self.has(cid):
                raise ContentNotFoundError(
                    f"cannot {action} {cid}: the IPFS daemon at {self.api_addr} lacks it"
                )
            return self.timeout
        return self.timeout + self.network_timeout

    def size(self, cid: Cid) -> int:
        """Return the content size in bytes as the daemon reports it (nothing is downloaded)."""
        canonical = normalize_cid(cid)
        wait = self._require_present(canonical, "stat")
        stat = self._call("files/stat", lambda: self._client.files.stat(f"/ipfs/{canonical}", timeout=wait))
        return int(stat["Size"])

    def _checked_size(self, cid: Cid, max_size: int | None) -> int:
        size = self.size(cid)
        if max_size is not None and size > max_size:
            raise ContentTooLargeError(f"{cid} is {size} bytes, more than max_size={max_size}")
        return size

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:
        """Download the content named by ``cid`` and verify it locally.

        Raises
        ------
        InvalidCidError
            ``cid`` is not a CID.
        ContentNotFoundError
            The daemon does not hold it (and ``network_timeout`` is 0).
        ContentTooLargeError
            The daemon reports more than ``max_size`` bytes (nothing is downloaded).
        CidMismatchError
            The daemon returned bytes that do not hash to ``cid``.
        StoreUnavailableError
            The daemon is unreachable or timed out.
        """
        canonical = normalize_cid(cid)
        size = self._checked_size(canonical, max_size)
        cap = size if max_size is None else max_size + 1  # never read more than we were willing to take
        data = b"".join(self._stream(canonical, cap))
        if max_size is not None and len(data) > max_size:
            raise ContentTooLargeError(f"{cid}: the daemon sent more than max_size={max_size} bytes")
        actual = compute_cid(data)
        if actual != canonical:
            log.error("IPFS daemon %s returned bad content for %s (hashes to %s)", self.api_addr, cid, actual)
            raise CidMismatchError(
                f"IPFS daemon returned {len(data)} bytes for {canonical} hashing to {actual}"
            )
        return bytes(data)

    def get_file(self, cid: Cid, dest: Path, max_size: int | None = None) -> int:
        """Stream the content named by ``cid`` to ``dest`` (atomically, verified); return its size."""
        canonical = normalize_cid(cid)
        size = self._checked_size(canonical, max_size)
        cap = size if max_size is None else max_size + 1
        builder = CidBuilder()
        with atomic_write(Path(dest)) as out:
            for chunk in self._stream(canonical, cap):
                builder.update(chunk)
                if max_size is not None and builder.size > max_size:
                    raise ContentTooLargeError(f"{cid}: the daemon sent more than max_size={max_size} bytes")
                out.write(chunk)
            actual = builder.finish()
            if actual != canonical:
                log.error(
                    "IPFS daemon %s returned bad content for %s (hashes to %s)", self.api_addr, cid, actual
                )
                raise CidMismatchError(f"IPFS daemon returned content for {canonical} hashing to {actual}")
        return builder.size

    def _stream(self, cid: Cid, length: int) -> Iterator[bytes]:
        """Yield the bytes of ``cat`` as they arrive, mapping client errors raised mid-stream."""
        if length == 0:  # js-ipfs rejects length=0; the empty content is then checked against its CID
            return
        response = self._call(
            "cat", lambda: self._client.cat(cid, length=length, stream=True, timeout=self.timeout)
        )
        with response:
            iterator = iter(response)
            while (chunk := self._call("cat", lambda: next(iterator, None))) is not None:
                yield chunk

    def pin(self, cid: Cid) -> None:
        """Pin ``cid`` recursively on the daemon."""
        canonical = normalize_cid(cid)
        wait = self._require_present(canonical, "pin")
        self._call("pin/add", lambda: self._client.pin.add(canonical, timeout=wait))

    def unpin(self, cid: Cid) -> None:
        """Remove the pin on ``cid`` (no-op if it was not pinned)."""
        canonical = normalize_cid(cid)
        try:
            self._call("pin/rm", lambda: self._client.pin.rm(canonical))
        except StoreUnavailableError:
            raise
        except StorageError as exc:
            if "not pinned" not in str(exc).lower():
                raise

    def list(self) -> Iterator[Cid]:
        """Iterate over recursively pinned CIDs (canonical form, sorted)."""
        response = self._call("pin/ls", lambda: self._client.pin.ls(type="recursive"))
        yield from sorted(normalize_cid(str(key)) for key in response["Keys"])

    def gc(self) -> builtins.list[Cid]:
        """Run the daemon's garbage collection; return the removed block CIDs."""
        removed = self._call("repo/gc", lambda: self._client.repo.gc())
        return [normalize_cid(str(item["Key"]["/"])) for item in removed if "Key" in item]
