from __future__ import annotations

import hashlib
import struct

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.blob import (
    RESPONSE_HEADER_SIZE,
    Status,
    decode_request,
    decode_response_header,
    encode_request,
    encode_response_header,
    request_blob,
    serve_request,
)
from p2p.errors import BlobProtocolError, BlobVerificationError, StorageError
from p2p.storage.base import Cid
from p2p.storage.cid import compute_cid


class PipeStream:
    """One end of an in-memory byte pipe with the read/write interface of a libp2p stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream

    async def read(self, n: int | None = None) -> bytes:
        return await self._stream.receive_some(n)

    async def write(self, data: bytes) -> None:
        await self._stream.send_all(data)


class DictStore:
    def __init__(self, blobs: dict[Cid, bytes]) -> None:
        self.blobs = blobs

    def has(self, cid: Cid) -> bool:
        return cid in self.blobs

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:
        if cid not in self.blobs:
            raise StorageError(f"{cid} missing")
        return self.blobs[cid]


def exchange(store: DictStore, cid: Cid, max_size: int, *, may_serve: bool = True) -> tuple[bytes, Status]:
    async def main() -> tuple[bytes, Status]:
        client, server = trio.testing.memory_stream_pair()
        statuses: list[Status] = []

        async def serve() -> None:
            statuses.append(await serve_request(PipeStream(server), store, may_serve))  # type: ignore[arg-type]
            await server.aclose()

        outcome: list[bytes | Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                outcome.append(await request_blob(PipeStream(client), cid, max_size, compute_cid))
            except Exception as exc:
                outcome.append(exc)
                nursery.cancel_scope.cancel()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0], statuses[0]

    return trio.run(main)


DATA = bytes(range(256)) * 5000  # 1.28 MB: several 256 KiB chunks, a dag-pb root
CID = compute_cid(DATA)


def test_a_blob_is_transferred_and_verified() -> None:
    data, status = exchange(DictStore({CID: DATA}), CID, len(DATA))

    assert status is Status.OK
    assert hashlib.sha256(data).digest() == hashlib.sha256(DATA).digest()


def test_corrupt_content_is_detected() -> None:
    corrupt = bytearray(DATA)
    corrupt[1000] ^= 1

    with pytest.raises(BlobVerificationError, match="hash to"):
        exchange(DictStore({CID: bytes(corrupt)}), CID, len(DATA))


@pytest.mark.parametrize(
    ("store", "max_size", "may_serve", "status"),
    [
        (DictStore({}), len(DATA), True, "NOT_FOUND"),
        (DictStore({CID: DATA}), len(DATA) - 1, True, "TOO_LARGE"),
        (DictStore({CID: DATA}), len(DATA), False, "FORBIDDEN"),
    ],
)
def test_refusals_reach_the_requester_as_errors(
    store: DictStore, max_size: int, may_serve: bool, status: str
) -> None:
    with pytest.raises(BlobProtocolError, match=status):
        exchange(store, CID, max_size, may_serve=may_serve)


def test_an_announced_size_over_the_cap_is_rejected_before_reading() -> None:
    with pytest.raises(BlobProtocolError, match="over the cap of 10"):
        decode_response_header(encode_response_header(Status.OK, 11), max_size=10)


def test_requests_round_trip() -> None:
    assert decode_request(encode_request(CID, 123)) == (CID, 123)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00",
        struct.pack(">H", 0) + bytes(8),
        struct.pack(">H", 3) + b"a/c" + bytes(8),
        b"\xff\xff" + bytes(10),
    ],
)
def test_malformed_requests_are_rejected(frame: bytes) -> None:
    with pytest.raises(BlobProtocolError):
        decode_request(frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_request_decoder_never_raises_anything_but_protocol_error(frame: bytes) -> None:
    try:
        decode_request(frame)
    except BlobProtocolError:
        return


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=2 * RESPONSE_HEADER_SIZE), st.integers(0, 2**64))
def test_response_header_decoder_never_raises_anything_but_protocol_error(frame: bytes, cap: int) -> None:
    try:
        status, size = decode_response_header(frame, cap)
    except BlobProtocolError:
        return
    assert size <= cap
    assert status is Status.OK or size == 0


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_a_truncated_or_garbage_response_never_raises_anything_but_p2p_errors(response: bytes) -> None:
    async def main() -> None:
        client, server = trio.testing.memory_stream_pair()
        await server.send_all(response)
        await server.aclose()
        await request_blob(PipeStream(client), CID, len(DATA), compute_cid)

    with pytest.raises((BlobProtocolError, BlobVerificationError)):
        trio.run(main)
