"""Streaming a blob into a file (p2p.blob.request_blob_to_file): verified, atomic, nothing left on failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from p2p.blob import (
    CHUNK_SIZE,
    Status,
    encode_response_header,
    request_blob_to_file,
    serve_request,
)
from p2p.errors import BlobProtocolError, BlobVerificationError
from p2p.storage.base import Cid
from p2p.storage.cid import compute_cid
from p2p.storage.local import LocalStore

DATA = bytes(range(251)) * 12000  # ~3 MB: several chunks, not a multiple of one
CID = compute_cid(DATA)


class PipeStream:
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
        return self.blobs[cid]


def _fetch(store: DictStore, cid: Cid, max_size: int, dest: Path, tmp: Path) -> int:
    async def main() -> int:
        client, server = trio.testing.memory_stream_pair()

        async def serve() -> None:
            await serve_request(PipeStream(server), store, True)  # type: ignore[arg-type]
            await server.aclose()

        outcome: list[int | Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                outcome.append(await request_blob_to_file(PipeStream(client), cid, max_size, dest, tmp))
            except Exception as exc:
                outcome.append(exc)
                nursery.cancel_scope.cancel()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return trio.run(main)


def _raw(response: bytes, cid: Cid, max_size: int, dest: Path, tmp: Path) -> int:
    """Answer the request with fixed bytes (a provider that lies), then end the stream."""

    async def main() -> int:
        client, server = trio.testing.memory_stream_pair()

        async def serve() -> None:
            await server.receive_some(4096)
            await server.send_all(response)
            await server.aclose()

        outcome: list[int | Exception] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            try:
                outcome.append(await request_blob_to_file(PipeStream(client), cid, max_size, dest, tmp))
            except Exception as exc:
                outcome.append(exc)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    return trio.run(main)


def test_the_blob_arrives_in_the_file_verified(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "out" / "blob", tmp_path / "tmp"
    dest.parent.mkdir()

    size = _fetch(DictStore({CID: DATA}), CID, len(DATA), dest, tmp)

    assert size == len(DATA) > 2 * CHUNK_SIZE
    assert dest.read_bytes() == DATA
    assert list(tmp.iterdir()) == []


def test_corrupt_bytes_leave_no_file_and_keep_the_old_one(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "blob", tmp_path / "tmp"
    dest.write_bytes(b"previous")
    corrupt = bytearray(DATA)
    corrupt[-1] ^= 1

    with pytest.raises(BlobVerificationError, match="hash to"):
        _fetch(DictStore({CID: bytes(corrupt)}), CID, len(DATA), dest, tmp)

    assert dest.read_bytes() == b"previous"
    assert list(tmp.iterdir()) == []


def test_an_oversized_announcement_is_refused_before_any_file_is_made(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "blob", tmp_path / "tmp"

    with pytest.raises(BlobProtocolError, match="over the cap"):
        _raw(encode_response_header(Status.OK, len(DATA)) + DATA, CID, len(DATA) - 1, dest, tmp)

    assert not dest.exists()
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_a_stream_ending_early_leaves_no_partial_file(tmp_path: Path) -> None:
    dest, tmp = tmp_path / "blob", tmp_path / "tmp"
    truncated = encode_response_header(Status.OK, len(DATA)) + DATA[: CHUNK_SIZE + 5]

    with pytest.raises(BlobProtocolError, match=f"after {CHUNK_SIZE} of {len(DATA)} bytes"):
        _raw(truncated, CID, len(DATA), dest, tmp)

    assert not dest.exists()
    assert list(tmp.iterdir()) == []


def test_a_refusal_names_the_status(tmp_path: Path) -> None:
    with pytest.raises(BlobProtocolError, match="NOT_FOUND"):
        _raw(encode_response_header(Status.NOT_FOUND), CID, len(DATA), tmp_path / "blob", tmp_path / "tmp")
    assert not (tmp_path / "blob").exists()


def test_a_local_store_is_served_from_its_file_and_arrives_verified(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid = store.put(DATA)
    dest, tmp = tmp_path / "out", tmp_path / "tmp"

    size = _fetch(store, cid, len(DATA), dest, tmp)  # type: ignore[arg-type]

    assert size == len(DATA)
    assert dest.read_bytes() == DATA


def test_a_corrupt_store_file_is_answered_error_and_nothing_arrives(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid = store.put(DATA)
    blob = store.blob_path(cid)
    damaged = bytearray(blob.read_bytes())
    damaged[CHUNK_SIZE + 3] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    dest, tmp = tmp_path / "out", tmp_path / "tmp"

    with pytest.raises(BlobProtocolError, match="ERROR"):
        _fetch(store, cid, len(DATA), dest, tmp)  # type: ignore[arg-type]

    assert not dest.exists()
    assert not tmp.exists() or list(tmp.iterdir()) == []


def test_a_store_file_over_the_requesters_cap_is_answered_too_large(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    cid = store.put(DATA)

    with pytest.raises(BlobProtocolError, match="TOO_LARGE"):
        _fetch(store, cid, len(DATA) - 1, tmp_path / "out", tmp_path / "tmp")  # type: ignore[arg-type]

    assert not (tmp_path / "out").exists()
