"""The Store contract, run against both backends: the embedded store and a real IPFS daemon."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from node.devnet.ipfs import IpfsDaemon
from p2p.storage.base import FileStore, Store
from p2p.storage.cid import CHUNK_SIZE, compute_cid
from p2p.storage.errors import (
    CidMismatchError,
    ContentNotFoundError,
    ContentTooLargeError,
    InvalidCidError,
    StoreUnavailableError,
)
from p2p.storage.ipfs import IpfsStore

pytestmark = pytest.mark.integration


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_backend_implements_the_protocols(store: FileStore) -> None:
    assert isinstance(store, Store) and isinstance(store, FileStore)


@pytest.mark.parametrize("size", [0, 5, CHUNK_SIZE + 1])
def test_put_get_round_trip(store: FileStore, size: int) -> None:
    data = _data(size, size)

    cid = store.put(data)

    assert cid == compute_cid(data)
    assert store.has(cid)
    assert store.get(cid) == data
    assert store.put(data) == cid


def test_file_round_trip(store: FileStore, tmp_path: Path) -> None:
    src = tmp_path / "update.safetensors"
    src.write_bytes(_data(11, 3 * CHUNK_SIZE + 9))

    cid = store.put_file(src)
    size = store.get_file(cid, tmp_path / "copy")

    assert cid == compute_cid(src.read_bytes())
    assert size == src.stat().st_size
    assert (tmp_path / "copy").read_bytes() == src.read_bytes()


def test_pin_unpin_list(store: FileStore) -> None:
    cid = store.put(_data(12, 1000))
    assert cid not in list(store.list())

    store.pin(cid)
    assert cid in list(store.list())

    store.unpin(cid)
    store.unpin(cid)  # idempotent on both backends
    assert cid not in list(store.list())


def test_unknown_cid_is_not_found(store: FileStore) -> None:
    absent = compute_cid(f"never stored {random.random()}".encode())

    assert not store.has(absent)
    with pytest.raises(ContentNotFoundError):
        store.get(absent)
    with pytest.raises(ContentNotFoundError):
        store.pin(absent)


def test_max_size_is_refused_before_download(store: FileStore, tmp_path: Path) -> None:
    data = _data(13, 2 * CHUNK_SIZE)
    cid = store.put(data)

    with pytest.raises(ContentTooLargeError, match=f"{len(data)} bytes"):
        store.get(cid, max_size=len(data) - 1)
    with pytest.raises(ContentTooLargeError):
        store.get_file(cid, tmp_path / "out", max_size=100)
    assert not (tmp_path / "out").exists()
    assert store.get(cid, max_size=len(data)) == data


def test_invalid_cid_is_rejected(store: FileStore) -> None:
    with pytest.raises(InvalidCidError):
        store.get("QmNotACid")  # type: ignore[arg-type]


def test_gc_keeps_pinned_content(store: FileStore) -> None:
    kept, dropped = store.put(_data(14, 777)), store.put(_data(15, 778))
    store.pin(kept)

    store.gc()

    assert store.has(kept) and not store.has(dropped)
    store.unpin(kept)


def test_ipfs_reports_an_unreachable_daemon_clearly() -> None:
    store = IpfsStore("/ip4/127.0.0.1/tcp/9/http", timeout=2.0)  # discard port: nothing listens
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        store.put(b"x")


def test_ipfs_cid_forms_are_normalised(ipfs_store: IpfsStore) -> None:
    # The daemon prints base58btc ("zb2…", "zdj7…"); the store always answers with canonical base32.
    cid = ipfs_store.put(_data(16, CHUNK_SIZE + 2))
    ipfs_store.pin(cid)
    try:
        assert cid.startswith("bafybei")
        assert cid in list(ipfs_store.list())
        assert ipfs_store.size(cid) == CHUNK_SIZE + 2
    finally:
        ipfs_store.unpin(cid)


def test_ipfs_never_returns_bytes_corrupted_in_the_daemon_repo(
    ipfs_store: IpfsStore, ipfs_daemon_handle: IpfsDaemon, tmp_path: Path
) -> None:
    data = _data(17, 4096)  # one raw block: the block file holds exactly these bytes
    cid = ipfs_store.put(data)
    blocks = [p for p in (ipfs_daemon_handle.repo_dir / "blocks").rglob("*.data") if p.read_bytes() == data]
    assert len(blocks) == 1
    blocks[0].write_bytes(b"\xff" + data[1:])

    # js-ipfs serves the damaged block as it is; only the client-side hash check catches it.
    with pytest.raises(CidMismatchError, match=cid):
        ipfs_store.get(cid)
    with pytest.raises(CidMismatchError):
        ipfs_store.get_file(cid, tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_ipfs_has_answers_for_pinned_content_without_listing_the_repository(
    ipfs_store: IpfsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = ipfs_store.put(_data(31, 2000))
    ipfs_store.pin(pinned)
    loose = ipfs_store.put(_data(32, 2000))
    absent = compute_cid(_data(33, 2000))
    assert ipfs_store.has(pinned) and ipfs_store.has(loose) and not ipfs_store.has(absent)

    listed: list[int] = []
    real = ipfs_store._client.unstable.refs.local
    monkeypatch.setattr(ipfs_store._client.unstable.refs, "local", lambda: listed.append(1) or real())

    assert ipfs_store.has(pinned)
    assert listed == []  # a pinned CID costs one pin lookup, not a walk over every block of the repo
    assert ipfs_store.has(loose) and listed == [1]
    ipfs_store.unpin(pinned)
