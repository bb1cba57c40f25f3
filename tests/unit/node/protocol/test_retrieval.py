"""Tests for node.protocol.retrieval: own store first, an IPFS-like fallback last, hash checks, keeping it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from node.console.eventlog import EventLog, read_events
from node.errors import ArtifactUnavailableError
from node.protocol.retrieval import Fetcher, Want
from node.protocol.state import NodeState
from p2p.storage import LocalStore


def _want(data: bytes, cid: str, sha: str | None = None) -> Want:
    return Want(cid, sha if sha is not None else hashlib.sha256(data).hexdigest(), 1 << 20, "update", 1, 0)


def test_own_store_is_tried_first(tmp_path: Path) -> None:
    own = LocalStore(tmp_path / "own")
    cid = own.put(b"update bytes")
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"))

    data, source = fetcher.get(_want(b"update bytes", cid))

    assert (data, source) == (b"update bytes", "store")


def test_fallback_store_is_used_and_the_artifact_is_kept_and_recorded(tmp_path: Path) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    cid = remote.put(b"from far away")
    state = NodeState(tmp_path / "s.db")
    fetcher = Fetcher(own, state, ipfs=remote)

    data, source = fetcher.get(_want(b"from far away", cid))

    assert (data, source) == (b"from far away", "ipfs")
    assert own.has(cid)
    assert state.artifacts(1)[0]["cid"] == cid


def test_wrong_sha256_is_unavailable_not_accepted(tmp_path: Path) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    cid = remote.put(b"payload")
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), ipfs=remote)

    with pytest.raises(ArtifactUnavailableError, match="sha256"):
        fetcher.get(_want(b"payload", cid, sha="00" * 32))
    assert not own.has(cid)


def test_get_many_reports_missing_artifacts_without_raising(tmp_path: Path) -> None:
    own = LocalStore(tmp_path / "own")
    present = own.put(b"here")
    missing = LocalStore(tmp_path / "other").put(b"not here")
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"))

    out = fetcher.get_many([_want(b"here", present), _want(b"not here", missing)], raise_errors=False)

    assert out[present] == (b"here", "store")
    assert isinstance(out[missing], ArtifactUnavailableError)


def test_a_batch_beyond_the_own_store_reports_progress_per_artifact_then_done(tmp_path: Path) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    blobs = [b"own update", b"far update one", b"far update two!", b"lost update"]
    cids = [own.put(blobs[0]), remote.put(blobs[1]), remote.put(blobs[2])]
    cids.append(LocalStore(tmp_path / "nowhere").put(blobs[3]))
    log = EventLog(tmp_path / "node.jsonl", console="none")
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), ipfs=remote, events=log.event)

    fetcher.get_many([_want(b, c) for b, c in zip(blobs, cids, strict=True)], raise_errors=False)
    log.close()

    events = read_events(tmp_path / "node.jsonl")
    progress = [
        (e["done"], e["total"], e["bytes"], e["source"]) for e in events if e["event"] == "fetch.progress"
    ]
    assert progress == [(1, 4, 10, None), (2, 4, 24, "ipfs"), (3, 4, 39, "ipfs")]
    done = events[-1]
    assert (
        done["event"] == "fetch.done" and done["kind"] == "update" and (done["run"], done["round"]) == (1, 0)
    )
    assert (done["done"], done["failed"], done["bytes"]) == (3, 1, 39)
    assert done["sources"] == {"store": 1, "ipfs": 2}


def test_a_batch_served_by_the_own_store_reports_nothing(tmp_path: Path) -> None:
    own = LocalStore(tmp_path / "own")
    cid = own.put(b"here")
    seen: list[str] = []
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), events=lambda event, **fields: seen.append(event))

    fetcher.get_many([_want(b"here", cid)])

    assert seen == []


def test_a_failing_event_sink_does_not_fail_the_fetch(tmp_path: Path) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    cid = remote.put(b"payload")

    def broken(event: str, **fields: object) -> None:
        raise OSError("terminal gone")

    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), ipfs=remote, events=broken)

    assert fetcher.get(_want(b"payload", cid)) == (b"payload", "ipfs")


def test_an_artifact_kept_unpublished_is_mirrored_by_publish_and_a_missing_one_is_reported(
    tmp_path: Path,
) -> None:
    own, mirror = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "mirror")
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), ipfs=mirror)

    cid = fetcher.keep(b"merged state", "merged", 1, 0, publish=False)
    assert own.has(cid) and not mirror.has(cid)
    assert fetcher.publish(cid, "merged") is True
    assert mirror.get(cid) == b"merged state"

    gone = LocalStore(tmp_path / "elsewhere").put(b"never kept here")
    assert fetcher.publish(gone, "merged") is False  # not in the own store: reported, no exception
    assert not mirror.has(gone)
    assert Fetcher(own, NodeState(tmp_path / "t.db")).publish(cid, "merged") is False  # no daemon


class FilePeers:
    """A ``P2PNode`` stand-in whose peers deliver fixed (CID-verified) bytes into the destination folder."""

    peer_id = "self"

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.asked: list[str] = []

    def fetch_to_files(self, requests: list[object], dest_dir: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for request in requests:
            cid = request.cid  # type: ignore[attr-defined]
            self.asked.append(cid)
            (dest_dir / cid).write_bytes(self.blobs[cid])
            out[cid] = dest_dir / cid
        return out


def _leftovers(store: LocalStore) -> list[Path]:
    return list(store.tmp_dir.iterdir())


def test_get_files_moves_a_peer_copy_into_the_own_store_and_returns_its_file(tmp_path: Path) -> None:
    own = LocalStore(tmp_path / "own")
    data = bytes(range(256)) * 4000  # ~1 MB: several 256 KiB pieces
    cid = LocalStore(tmp_path / "peer").put(data)
    state = NodeState(tmp_path / "s.db")
    fetcher = Fetcher(own, state, p2p=FilePeers({cid: data}), providers=lambda c: ["peer"])

    out = fetcher.get_files([_want(data, cid)])

    path, source = out[cid]  # type: ignore[misc]
    assert source == "peers" and path == own.blob_path(cid) and path.read_bytes() == data
    assert own.has(cid) and cid in set(own.list())
    assert state.artifacts(1)[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert _leftovers(own) == []
    assert fetcher.get(_want(data, cid)) == (data, "store")  # the bytes path reads the same file


def test_a_peer_copy_with_the_wrong_sha256_leaves_no_file_and_no_record(tmp_path: Path) -> None:
    own = LocalStore(tmp_path / "own")
    cid = LocalStore(tmp_path / "peer").put(b"what the peer holds")
    state = NodeState(tmp_path / "s.db")
    fetcher = Fetcher(own, state, p2p=FilePeers({cid: b"what the peer holds"}), providers=lambda c: ["peer"])

    out = fetcher.get_files([_want(b"x", cid, sha="00" * 32)], raise_errors=False)

    assert isinstance(out[cid], ArtifactUnavailableError)
    assert not own.has(cid) and _leftovers(own) == [] and state.artifacts(1) == []


def test_an_oversized_ipfs_artifact_is_refused_before_download_and_leaves_nothing(tmp_path: Path) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    data = b"y" * 5000
    cid = remote.put(data)
    state = NodeState(tmp_path / "s.db")
    fetcher = Fetcher(own, state, ipfs=remote)
    small = Want(cid, hashlib.sha256(data).hexdigest(), 4999, "merged", 1, 0)

    with pytest.raises(ArtifactUnavailableError, match="max_size=4999"):
        fetcher.get_file(small)

    assert not own.has(cid) and _leftovers(own) == [] and state.artifacts(1) == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_ipfs_artifact_is_refused_and_leaves_nothing(tmp_path: Path, damage: str) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    data = bytes(range(256)) * 2000
    cid = remote.put(data)
    raw = bytearray(remote.blob_path(cid).read_bytes())
    if damage == "flip":
        raw[300_000] ^= 1
    else:
        del raw[-10:]
    remote.blob_path(cid).write_bytes(bytes(raw))
    state = NodeState(tmp_path / "s.db")
    fetcher = Fetcher(own, state, ipfs=remote)

    with pytest.raises(ArtifactUnavailableError, match="corrupt"):
        fetcher.get_file(_want(data, cid))

    assert not own.has(cid) and _leftovers(own) == [] and state.artifacts(1) == []


def test_a_corrupt_own_copy_is_passed_over_for_a_good_one(tmp_path: Path) -> None:
    own, remote = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "remote")
    data = bytes(range(256)) * 2000
    cid = own.put(data)
    remote.put(data)
    own.blob_path(cid).write_bytes(data[:-1] + b"\x00")
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), ipfs=remote)

    path, source = fetcher.get_file(_want(data, cid))

    assert source == "ipfs" and path.read_bytes() == data and own.get(cid) == data


def test_keep_file_moves_a_scratch_file_in_and_records_its_hash(tmp_path: Path) -> None:
    own, mirror = LocalStore(tmp_path / "own"), LocalStore(tmp_path / "mirror")
    state = NodeState(tmp_path / "s.db")
    fetcher = Fetcher(own, state, ipfs=mirror)
    data = b"encoded state" * 50_000
    src = fetcher.scratch / "state.safetensors"
    src.write_bytes(data)

    kept = fetcher.keep_file(src, "merged", 1, 2)

    assert not src.exists() and own.get(kept.cid) == data and mirror.get(kept.cid) == data
    assert (kept.sha256, kept.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert state.artifacts(1)[0]["cid"] == kept.cid and kept.cid in set(own.list())


class PlainStore:
    """An own store without files of its own (like ``IpfsStore``): bytes and streamed file copies only."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner

    def put(self, data: bytes) -> str:
        return self.inner.put(data)

    def get(self, cid: str, max_size: int | None = None) -> bytes:
        return self.inner.get(cid, max_size)  # type: ignore[arg-type]

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)  # type: ignore[arg-type]

    def pin(self, cid: str) -> None:
        self.inner.pin(cid)  # type: ignore[arg-type]

    def put_file(self, path: Path) -> str:
        return self.inner.put_file(path)

    def get_file(self, cid: str, dest: Path, max_size: int | None = None) -> int:
        return self.inner.get_file(cid, dest, max_size)  # type: ignore[arg-type]


def test_an_own_store_without_files_gets_scratch_copies_that_the_next_call_removes(tmp_path: Path) -> None:
    own, remote = PlainStore(LocalStore(tmp_path / "own")), LocalStore(tmp_path / "remote")
    first, second = b"first artifact" * 1000, b"second artifact" * 1000
    cids = [remote.put(first), remote.put(second)]
    fetcher = Fetcher(own, NodeState(tmp_path / "s.db"), ipfs=remote)

    path, source = fetcher.get_file(_want(first, cids[0]))
    assert source == "ipfs" and path.read_bytes() == first and own.has(cids[0])
    again, source = fetcher.get_file(_want(second, cids[1]))

    assert source == "ipfs" and again.read_bytes() == second and not path.exists()
    encoded = fetcher.scratch / "merged.safetensors"
    encoded.write_bytes(b"merged")
    kept = fetcher.keep_file(encoded, "merged", 1, 0, publish=False)
    assert not encoded.exists() and own.get(kept.cid) == b"merged"
    assert fetcher.get(_want(first, cids[0])) == (first, "store")
