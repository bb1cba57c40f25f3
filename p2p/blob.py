"""The blob-exchange stream protocol ``/fedchain/blob/1.0.0``: fetch one artifact by CID from one peer.

Wire format (all integers big-endian)::

    request   u16 cid_len | cid (ASCII) | u64 max_size
    response  u8 status | u64 size | size bytes of content (only when status == OK)

The server answers NOT_FOUND, FORBIDDEN (the requester is not a member) or TOO_LARGE (the content exceeds
the requester's ``max_size``) with ``size = 0`` and closes. The receiver checks the announced size against
its cap *before* reading any content, counts bytes while reading chunks, refuses a single byte beyond the
announced size, and verifies the CID of what it received: a provider serving corrupt bytes is detected
(:class:`~p2p.errors.BlobVerificationError`) and the caller moves on to another provider.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

import trio
from libp2p.custom_types import TProtocol

from p2p.errors import BlobProtocolError, BlobVerificationError, StorageError
from p2p.storage.atomic import atomic_write
from p2p.storage.base import Cid, Store
from p2p.storage.cid import CidBuilder
from p2p.storage.errors import ContentTooLargeError
from p2p.yamux import FastYamuxStream

log = logging.getLogger(__name__)

BLOB_PROTOCOL = TProtocol("/fedchain/blob/1.0.0")
CHUNK_SIZE = 1 << 20
"""Bytes handed to one stream write, and asked of one read on streams other than ``FastYamuxStream``.
Larger writes amortise the per-call overhead of the Noise + yamux layers (``p2p.yamux`` still cuts them into
DATA frames of one Noise message each); measured with ``bench/transfer.py``."""
MAX_CID_LENGTH = 128
MAX_BLOB_SIZE = 1 << 40
_REQUEST_TAIL = struct.Struct(">Q")
_RESPONSE = struct.Struct(">BQ")
RESPONSE_HEADER_SIZE = _RESPONSE.size

CidOf = Callable[[bytes], Cid]
"""Computes the CID of content (``p2p.storage.cid.compute_cid`` by default)."""


class Status(enum.IntEnum):
    """Response status of the blob protocol."""

    OK = 0
    NOT_FOUND = 1
    FORBIDDEN = 2
    TOO_LARGE = 3
    ERROR = 4


class Stream(Protocol):
    """The part of a libp2p stream that the protocol uses."""

    async def read(self, n: int | None = None) -> bytes: ...  # noqa: D102

    async def write(self, data: bytes) -> None: ...  # noqa: D102


def default_cid_of(data: bytes) -> Cid:
    """CID of ``data`` as the storage layer computes it (UnixFS CIDv1, raw leaves, 256 KiB chunks)."""
    from p2p.storage.cid import compute_cid  # imported late: storage is a sibling module

    return compute_cid(data)


def encode_request(cid: str, max_size: int) -> bytes:
    """Encode a request for ``cid`` accepting at most ``max_size`` bytes."""
    raw = cid.encode("ascii")
    if not 0 < len(raw) <= MAX_CID_LENGTH:
        raise BlobProtocolError(f"`cid` must be 1..{MAX_CID_LENGTH} ASCII characters, got {len(raw)}")
    if not 0 <= max_size <= MAX_BLOB_SIZE:
        raise BlobProtocolError(f"`max_size` must be in [0, {MAX_BLOB_SIZE}], got {max_size}")
    return struct.pack(">H", len(raw)) + raw + _REQUEST_TAIL.pack(max_size)


def decode_request(frame: bytes) -> tuple[Cid, int]:
    """Decode a complete request frame into ``(cid, max_size)``; raises :class:`BlobProtocolError`."""
    if len(frame) < 2:
        raise BlobProtocolError(f"request frame of {len(frame)} bytes is too short")
    (n,) = struct.unpack(">H", frame[:2])
    if not 0 < n <= MAX_CID_LENGTH:
        raise BlobProtocolError(f"request cid length {n} not in 1..{MAX_CID_LENGTH}")
    if len(frame) != 2 + n + _REQUEST_TAIL.size:
        raise BlobProtocolError(f"request frame is {len(frame)} bytes, expected {2 + n + _REQUEST_TAIL.size}")
    raw = frame[2 : 2 + n]
    if not all(48 <= b <= 57 or 97 <= b <= 122 or 65 <= b <= 90 for b in raw):
        raise BlobProtocolError("request cid is not alphanumeric ASCII")
    (max_size,) = _REQUEST_TAIL.unpack(frame[2 + n :])
    if max_size > MAX_BLOB_SIZE:
        raise BlobProtocolError(f"request max_size {max_size} over {MAX_BLOB_SIZE}")
    return Cid(raw.decode("ascii")), max_size


def encode_response_header(status: Status, size: int = 0) -> bytes:
    """Encode a response header."""
    return _RESPONSE.pack(int(status), size)


def decode_response_header(frame: bytes, max_size: int) -> tuple[Status, int]:
    """Decode a response header, rejecting an announced size over ``max_size`` before any content is read."""
    if len(frame) != RESPONSE_HEADER_SIZE:
        raise BlobProtocolError(f"response header is {len(frame)} bytes, expected {RESPONSE_HEADER_SIZE}")
    code, size = _RESPONSE.unpack(frame)
    try:
        status = Status(code)
    except ValueError as exc:
        raise BlobProtocolError(f"unknown response status {code}") from exc
    if status is not Status.OK and size != 0:
        raise BlobProtocolError(f"status {status.name} must announce size 0, got {size}")
    if size > max_size:
        raise BlobProtocolError(f"provider announces {size} bytes, over the cap of {max_size}")
    return status, size


async def read_exactly(stream: Stream, n: int) -> bytes:
    """Read exactly ``n`` bytes, raising :class:`BlobProtocolError` if the stream ends first."""
    buf = bytearray(n)
    await read_exactly_into(stream, memoryview(buf))
    return bytes(buf)


async def read_exactly_into(stream: Stream, out: memoryview) -> None:
    """Fill ``out`` from ``stream``, raising :class:`BlobProtocolError` if the stream ends first.

    Over a :class:`p2p.yamux.FastYamuxStream` the bytes are copied once, from the decrypted frames into
    ``out``; any other stream is read in chunks of :data:`CHUNK_SIZE` and copied in.
    """
    muxed = getattr(stream, "muxed_stream", stream)
    fast = muxed if isinstance(muxed, FastYamuxStream) else None
    total, done = len(out), 0
    while done < total:
        try:
            if fast is not None:
                got = await fast.read_into(out[done:])
            else:
                chunk = await stream.read(min(total - done, CHUNK_SIZE))
                got = len(chunk)
                out[done : done + got] = chunk
        except Exception as exc:  # libp2p raises StreamEOF/StreamReset/StreamError (Muxed* underneath)
            raise BlobProtocolError(f"stream ended after {done} of {total} bytes: {exc!r}") from exc
        if not got:
            raise BlobProtocolError(f"stream ended after {done} of {total} bytes")
        done += got


async def read_request(stream: Stream) -> tuple[Cid, int]:
    """Read and decode one request from ``stream``."""
    head = await read_exactly(stream, 2)
    (n,) = struct.unpack(">H", head)
    if not 0 < n <= MAX_CID_LENGTH:
        raise BlobProtocolError(f"request cid length {n} not in 1..{MAX_CID_LENGTH}")
    rest = await read_exactly(stream, n + _REQUEST_TAIL.size)
    return decode_request(head + rest)


async def serve_request(stream: Stream, store: Store, may_serve: bool) -> Status:
    """Answer one request on ``stream`` from ``store``; returns the status sent.

    A store with a ``verified_path(cid, max_size)`` (:class:`~p2p.storage.local.LocalStore`) is served from
    its file, hashed against the CID and then sent in pieces of :data:`CHUNK_SIZE`: the server holds one
    piece of the artifact, not the artifact. Any other store is served from ``get``'s bytes.
    """
    cid, max_size = await read_request(stream)
    if not may_serve:
        await stream.write(encode_response_header(Status.FORBIDDEN))
        return Status.FORBIDDEN
    verified_path = getattr(store, "verified_path", None)
    content: Path | bytes
    try:
        # Store reads hash what they return (tenths of a second for large artifacts): off the event loop,
        # so gossip keeps flowing while a blob is served.
        if not await trio.to_thread.run_sync(store.has, cid):
            await stream.write(encode_response_header(Status.NOT_FOUND))
            return Status.NOT_FOUND
        if verified_path is not None:
            content = cast(Path, await trio.to_thread.run_sync(verified_path, cid, max_size))
        else:
            content = await trio.to_thread.run_sync(store.get, cid)
    except ContentTooLargeError:
        await stream.write(encode_response_header(Status.TOO_LARGE))
        return Status.TOO_LARGE
    except StorageError as exc:
        log.warning("blob server cannot read %s: %s", cid, exc)
        await stream.write(encode_response_header(Status.ERROR))
        return Status.ERROR
    if isinstance(content, Path):
        return await _send_file(stream, cid, content, max_size)
    data = content
    if len(data) > max_size:
        await stream.write(encode_response_header(Status.TOO_LARGE))
        return Status.TOO_LARGE
    await stream.write(encode_response_header(Status.OK, len(data)))
    # Views of the (immutable) content, not copies: the muxer copies each frame's bytes anyway while it
    # frames them (~10% less sender CPU than a 1 MiB copy per write, bench/transfer.py).
    view = memoryview(data)
    for start in range(0, len(data), CHUNK_SIZE):
        await stream.write(cast(bytes, view[start : start + CHUNK_SIZE]))
    return Status.OK


async def _send_file(stream: Stream, cid: Cid, path: Path, max_size: int) -> Status:
    """Send a verified store file: header with its size, then its bytes in pieces of :data:`CHUNK_SIZE`."""
    size = (await trio.Path(path).stat()).st_size
    async with await trio.open_file(path, "rb") as f:
        if size > max_size:
            await stream.write(encode_response_header(Status.TOO_LARGE))
            return Status.TOO_LARGE
        await stream.write(encode_response_header(Status.OK, size))
        sent = 0
        while sent < size:
            chunk = await f.read(min(CHUNK_SIZE, size - sent))
            if not chunk:  # the file shrank under us: end the stream short, the requester refuses it
                raise BlobProtocolError(f"{cid}: the store file ended after {sent} of {size} bytes")
            await stream.write(chunk)
            sent += len(chunk)
    return Status.OK


async def _request(stream: Stream, cid: Cid, max_size: int) -> int:
    """Send the request for ``cid`` and read the response header: the announced size of an OK answer."""
    try:
        await stream.write(encode_request(cid, max_size))
    except Exception as exc:  # libp2p raises StreamClosed/StreamReset/StreamError
        raise BlobProtocolError(f"cannot send the request for {cid}: {exc!r}") from exc
    status, size = decode_response_header(await read_exactly(stream, RESPONSE_HEADER_SIZE), max_size)
    if status is not Status.OK:
        raise BlobProtocolError(f"provider answered {status.name} for {cid}")
    return size


async def request_blob(stream: Stream, cid: Cid, max_size: int, cid_of: CidOf) -> bytes:
    """Send a request on an open stream, read the response and return the CID-verified content.

    Raises
    ------
    BlobProtocolError
        On a non-OK status, an announced size over ``max_size``, or a stream that ends early.
    BlobVerificationError
        If the received bytes do not hash to ``cid``.
    """
    size = await _request(stream, cid, max_size)
    # The announced size is capped above, so the buffer can be allocated whole and filled in place.
    received = bytearray(size)
    await read_exactly_into(stream, memoryview(received))
    data = bytes(received)
    del received
    actual = await trio.to_thread.run_sync(cid_of, data)
    if actual != cid:
        raise BlobVerificationError(f"received {size} bytes for {cid} but they hash to {actual}")
    return data


async def request_blob_to_file(
    stream: Stream, cid: Cid, max_size: int, dest: Path, tmp_dir: Path | None = None
) -> int:
    """Like :func:`request_blob`, but stream the content into ``dest`` instead of memory; return its size.

    The content is read in pieces of :data:`CHUNK_SIZE` into one reused buffer, hashed incrementally
    (:class:`~p2p.storage.cid.CidBuilder`) and written to a temporary file in ``tmp_dir`` (default:
    ``dest``'s folder), which is renamed to ``dest`` only once every announced byte arrived and the CID
    matched: the process holds one chunk of the artifact, not the artifact. On any failure (a refusal, an
    announced size over ``max_size``, a stream that ends early, bytes that do not hash to ``cid``) the
    temporary file is removed and ``dest`` is left as it was.

    Raises
    ------
    BlobProtocolError
        On a non-OK status, an announced size over ``max_size``, or a stream that ends early.
    BlobVerificationError
        If the received bytes do not hash to ``cid``.
    """
    size = await _request(stream, cid, max_size)
    builder = CidBuilder()
    buffer = memoryview(bytearray(min(size, CHUNK_SIZE)))
    with atomic_write(Path(dest), tmp_dir) as out:
        done = 0
        while done < size:
            piece = buffer[: min(size - done, CHUNK_SIZE)]
            try:
                await read_exactly_into(stream, piece)
            except BlobProtocolError as exc:
                raise BlobProtocolError(f"{cid}: after {done} of {size} bytes: {exc}") from exc
            builder.update(piece)
            out.write(piece)
            done += len(piece)
        actual = builder.finish()
        if actual != cid:
            raise BlobVerificationError(f"received {size} bytes for {cid} but they hash to {actual}")
    return size
