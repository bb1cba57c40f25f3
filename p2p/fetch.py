"""Fetching artifacts over the blob protocol: one CID from a list of providers, or a round's set in parallel.

Either into memory (:func:`fetch_one`, :func:`fetch_many`) or streamed into files (:func:`fetch_one_to_file`,
:func:`fetch_many_to_files`: one chunk in memory at a time). A provider that times out, refuses, ends the
stream early or serves bytes that do not hash to the CID is skipped and the next provider is tried; every
failure is logged with its reason and returned in the :class:`FetchError` message when no provider
succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from p2p.blob import BLOB_PROTOCOL, CidOf, request_blob, request_blob_to_file
from p2p.errors import FetchError, P2PError
from p2p.storage.base import Cid

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class FetchRequest:
    """One artifact to fetch: its CID, who announced having it, and the most bytes we accept for it."""

    cid: Cid
    providers: tuple[str, ...]
    max_size: int

    def __post_init__(self) -> None:
        if not self.providers:
            raise ValueError(f"`providers` must not be empty for {self.cid}")
        if self.max_size < 0:
            raise ValueError(f"`max_size` must be >= 0, got {self.max_size}")


async def _on_stream(host: IHost, peer: str, use: Callable[[INetStream], Awaitable[T]]) -> T:
    """Open a blob stream to ``peer``, run ``use`` on it, close it (no timeout here; the caller bounds it)."""
    stream = await host.new_stream(ID.from_base58(peer), [BLOB_PROTOCOL])
    try:
        return await use(stream)
    finally:
        with trio.move_on_after(2):
            try:
                await stream.close()
            except Exception as exc:  # closing a stream the peer already reset is not an error for us
                log.debug("closing blob stream to %s: %s", peer, exc)


async def fetch_from_peer(host: IHost, peer: str, cid: Cid, max_size: int, cid_of: CidOf) -> bytes:
    """Fetch ``cid`` from one connected peer (no timeout here; the caller bounds it)."""
    return await _on_stream(host, peer, lambda stream: request_blob(stream, cid, max_size, cid_of))


async def _from_providers(request: FetchRequest, timeout: float, attempt: Callable[[str], Awaitable[T]]) -> T:
    """Run ``attempt(peer)`` for each provider in turn, ``timeout`` seconds each, until one succeeds."""
    failures: list[str] = []
    for peer in request.providers:
        try:
            with trio.fail_after(timeout):
                result = await attempt(peer)
        except trio.TooSlowError:
            failures.append(f"{peer}: timed out after {timeout:g} s")
        except P2PError as exc:
            failures.append(f"{peer}: {exc}")
        except Exception as exc:  # libp2p dial/negotiation errors: try the next provider
            failures.append(f"{peer}: {type(exc).__name__}: {exc}")
        else:
            if failures:
                log.info("fetched %s from %s after failures: %s", request.cid, peer, "; ".join(failures))
            return result
        log.warning("fetch of %s failed: %s", request.cid, failures[-1])
    raise FetchError(f"no provider delivered {request.cid}: " + ("; ".join(failures) or "no providers"))


async def fetch_one(host: IHost, request: FetchRequest, cid_of: CidOf, timeout: float) -> bytes:
    """Fetch one artifact, trying each provider in turn with ``timeout`` seconds per attempt.

    Raises
    ------
    FetchError
        If no provider delivered verified content; the message lists each provider's failure.
    """
    return await _from_providers(
        request,
        timeout,
        lambda peer: fetch_from_peer(host, peer, request.cid, request.max_size, cid_of),
    )


async def fetch_one_to_file(
    host: IHost, request: FetchRequest, dest: Path, timeout: float, tmp_dir: Path | None = None
) -> int:
    """Like :func:`fetch_one`, but stream the content into ``dest`` (:func:`p2p.blob.request_blob_to_file`).

    ``dest`` appears only once a provider's bytes hashed to the CID; a failed attempt leaves no file, and
    the next provider is tried. Returns the content's size.
    """

    def attempt(peer: str) -> Awaitable[int]:
        return _on_stream(
            host,
            peer,
            lambda stream: request_blob_to_file(stream, request.cid, request.max_size, dest, tmp_dir),
        )

    return await _from_providers(request, timeout, attempt)


async def _gather(
    requests: Sequence[FetchRequest],
    parallelism: int,
    one: Callable[[FetchRequest], Awaitable[R]],
) -> dict[Cid, R | FetchError]:
    if parallelism < 1:
        raise ValueError(f"`parallelism` must be >= 1, got {parallelism}")
    results: dict[Cid, R | FetchError] = {}
    limiter = trio.CapacityLimiter(parallelism)

    async def run(request: FetchRequest) -> None:
        async with limiter:
            try:
                results[request.cid] = await one(request)
            except FetchError as exc:
                results[request.cid] = exc

    async with trio.open_nursery() as nursery:
        for request in requests:
            nursery.start_soon(run, request)
    return results


async def fetch_many(
    host: IHost,
    requests: Sequence[FetchRequest],
    cid_of: CidOf,
    timeout: float,
    parallelism: int = 4,
) -> dict[Cid, bytes | FetchError]:
    """Fetch several artifacts concurrently (at most ``parallelism`` at once).

    Returns a mapping from each CID to its verified bytes, or to the :class:`FetchError` explaining why it
    could not be fetched: one unavailable artifact does not fail the others (the round just excludes it).
    """
    return await _gather(requests, parallelism, lambda r: fetch_one(host, r, cid_of, timeout))


async def fetch_many_to_files(
    host: IHost,
    requests: Sequence[FetchRequest],
    dest_of: Callable[[Cid], Path],
    timeout: float,
    parallelism: int = 4,
    tmp_dir: Path | None = None,
) -> dict[Cid, int | FetchError]:
    """Like :func:`fetch_many`, each artifact streamed into the file ``dest_of(cid)``; maps CIDs to sizes."""
    return await _gather(
        requests, parallelism, lambda r: fetch_one_to_file(host, r, dest_of(r.cid), timeout, tmp_dir)
    )
