"""The embedded store: round trips, pins and gc, corruption, size limits, atomic writes, open_store."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from p2p.storage import open_store
from p2p.storage.cid import CHUNK_SIZE, compute_cid
from p2p.storage.errors import (
    CidMismatchError,
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCidError,
    InvalidStoreSpecError,
)
from p2p.storage.local import LocalStore


def _blob(store: LocalStore, cid: str) -> Path:
    return store.root / "blobs" / cid


def test_put_returns_the_cid_and_get_returns_the_bytes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = random.Random(1).randbytes(CHUNK_SIZE * 2 + 3)

    cid = store.put(data)

    assert cid == compute_cid(data)
    assert store.get(cid) == data
    assert store.has(cid)
    assert store.put(data) == cid  # idempotent
    assert list(store.blobs()) == [cid]


def test_put_file_and_get_file_stream_through_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    src = tmp_path / "in.bin"
    src.write_bytes(random.Random(2).randbytes(CHUNK_SIZE + 1))

    cid = store.put_file(src)
    size = store.get_file(cid, tmp_path / "out.bin")

    assert cid == compute_cid(src.read_bytes())
    assert size == src.stat().st_size
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    assert os.listdir(store.root / "tmp") == []


def test_pins_survive_gc_and_unpinned_content_does_not(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    kept, dropped = store.put(b"keep me"), store.put(b"drop me")

    store.pin(kept)
    removed = store.gc()

    assert removed == [dropped]
    assert store.has(kept) and not store.has(dropped)
    assert list(LocalStore(tmp_path / "s").list()) == [kept]  # pins persist across instances
    store.unpin(kept)
    store.unpin(kept)  # unpinning twice is fine
    assert list(store.list()) == []
    assert store.gc() == [kept]


def test_pin_of_absent_content_fails(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(ContentNotFoundError, match="not in the local store"):
        store.pin(compute_cid(b"never stored"))


def test_get_of_absent_content_fails(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(ContentNotFoundError):
        store.get(compute_cid(b"never stored"))


def test_put_file_with_move_renames_the_file_into_place(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    data = random.Random(3).randbytes(CHUNK_SIZE * 3 + 5)
    src = store.tmp_dir / "encoded.safetensors"
    src.write_bytes(data)

    cid = store.put_file(src, move=True)

    assert cid == compute_cid(data)
    assert not src.exists()
    assert store.verified_path(cid) == store.blob_path(cid) == _blob(store, cid)
    assert store.get(cid) == data


@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_corrupt_blob_on_disk_is_detected_not_returned(tmp_path: Path, damage: str) -> None:
    store = LocalStore(tmp_path / "s")
    data = random.Random(4).randbytes(CHUNK_SIZE + 100)
    cid = store.put(data)
    raw = bytearray(_blob(store, cid).read_bytes())
    if damage == "flip":
        raw[CHUNK_SIZE + 7] ^= 0x01
    elif damage == "truncate":
        del raw[-1]
    else:
        raw += b"\x00"
    _blob(store, cid).write_bytes(bytes(raw))

    with pytest.raises(CidMismatchError, match=cid):
        store.get(cid)
    with pytest.raises(CidMismatchError):
        store.get_file(cid, tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()  # no partial or bad output file
    with pytest.raises(CidMismatchError, match=cid):
        store.verified_path(cid)


def test_max_size_is_checked_before_reading(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    cid = compute_cid(b"whatever")
    with open(_blob(store, cid), "wb") as f:  # a 64 GiB sparse file: reading it would exhaust memory
        f.truncate(64 << 30)

    with pytest.raises(ContentTooLargeError, match="more than max_size=1024"):
        store.get(cid, max_size=1024)
    with pytest.raises(ContentTooLargeError):
        store.get_file(cid, tmp_path / "out.bin", max_size=1024)
    with pytest.raises(ContentTooLargeError):
        store.verified_path(cid, max_size=1024)


def test_max_size_allows_content_of_exactly_that_size(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    cid = store.put(b"12345")
    assert store.get(cid, max_size=5) == b"12345"


def test_invalid_cid_is_a_value_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(InvalidCidError):
        store.get("../../etc/passwd")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.has("not-a-cid")  # type: ignore[arg-type]


def test_stale_partial_writes_are_collected(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    stale, fresh = store.root / "tmp" / ".put-old", store.root / "tmp" / ".put-new"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"in progress")
    os.utime(stale, (0, 0))

    store.gc()

    assert not stale.exists() and fresh.exists()


def test_open_store_reads_directory_and_ipfs_specs(tmp_path: Path) -> None:
    local = open_store(tmp_path / "a")
    prefixed = open_store(f"local:{tmp_path / 'b'}")
    ipfs = open_store("ipfs:/ip4/127.0.0.1/tcp/5001/http")

    assert isinstance(local, LocalStore) and isinstance(prefixed, LocalStore)
    assert repr(ipfs) == "IpfsStore('/ip4/127.0.0.1/tcp/5001/http')"
    with pytest.raises(ValueError, match="multiaddr"):
        open_store("ipfs:localhost:5001")
    with pytest.raises(ValueError, match="empty"):
        open_store(" ")
    with pytest.raises(InvalidStoreSpecError, match="invalid IPFS API address"):
        open_store("ipfs:/ip4/127.0.0.1/tcp/not-a-port")
