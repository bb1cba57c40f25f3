"""Artifact retrieval in a fixed order: own store, then peers over the blob stream, then IPFS.

Every delivered blob is checked against its CID (the stores and the blob protocol re-hash) and, when the
chain names one, its sha256; then it is put into the node's own store, pinned and recorded in the state
database, so the node keeps (and serves) every artifact of its runs.

With an ``events`` sink (the node's ``EventLog.event``), a batch that needs anything beyond the own store
reports ``fetch.progress`` (artifacts done of total, bytes so far, the source of the last one) once after the
own-store pass and once per artifact delivered from peers or IPFS, then ``fetch.done`` (counts per source,
bytes, failures, seconds). The peer blob stream and the IPFS client give no byte-level callback, so progress
is counted in whole artifacts.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from node.errors import ArtifactUnavailableError
from node.protocol.state import NodeState

log = logging.getLogger(__name__)

EventSink = Callable[..., object]
"""``sink(event_name, **fields)``: where a :class:`Fetcher` reports transfer progress."""


@dataclass(frozen=True)
class Want:
    """One artifact to get: its CID, expected sha256 (hex, or ``None``), a size cap and what it is."""

    cid: str
    sha256: str | None
    max_size: int
    kind: str
    run: int | None = None
    round: int | None = None


class Fetcher:
    """Gets artifacts from the node's own store, its peers, or an IPFS daemon, and keeps them.

    Parameters
    ----------
    store
        The node's own content store (a ``p2p.storage`` store).
    state
        Where kept artifacts are recorded.
    p2p
        The node's ``P2PNode`` (``None``: no peer fetching).
    providers
        ``providers(cid)``: peer ids believed to hold ``cid`` (announcers first, then connected peers).
    ipfs
        A store over an IPFS daemon tried last (``None``: none).
    events
        ``events(name, **fields)``, e.g. ``EventLog.event``: receives ``fetch.progress`` and ``fetch.done``
        (``None``: no events). Settable after construction, like ``providers``.
    """

    def __init__(
        self,
        store: Any,
        state: NodeState,
        *,
        p2p: Any = None,
        providers: Callable[[str], list[str]] | None = None,
        ipfs: Any = None,
        events: EventSink | None = None,
    ) -> None:
        self.store = store
        self.state = state
        self.p2p = p2p
        self.providers = providers or (lambda cid: [])
        self.ipfs = ipfs
        self.events = events
        self._scratch: Path | None = None

    def keep(
        self,
        data: bytes,
        kind: str,
        run: int | None = None,
        round: int | None = None,
        *,
        publish: bool = True,
    ) -> str:
        """Put ``data`` into the own store, pin it, record it; return its CID (durable before returning).

        With ``publish`` (this node's own artifacts) and an IPFS daemon configured besides an embedded own
        store, the bytes are also added and pinned there, so that anyone (an auditor) can fetch them; a
        failure to publish is logged, not raised: the own store and the peers still serve them.
        """
        cid = str(self.store.put(data))
        self.store.pin(cid)
        self.state.record_artifact(cid, hashlib.sha256(data).hexdigest(), kind, run, round, len(data))
        if publish:
            self._publish(cid, data, kind)
        return cid

    def keep_file(
        self,
        path: Path,
        kind: str,
        run: int | None = None,
        round: int | None = None,
        *,
        publish: bool = True,
        sha256: str | None = None,
    ) -> Kept:
        """Like :meth:`keep` for the content of a file, streamed (never held whole in memory).

        A file in :attr:`scratch` is gone afterwards (moved into a ``LocalStore``, else copied into the own
        store and removed); any other file is copied. ``sha256``: the content's hash when the caller has
        just checked it (else it is computed).
        """
        kept = self._keep(Path(path), kind, run, round, sha256)
        if Path(path).parent == self.scratch:
            Path(path).unlink(missing_ok=True)
        if publish:
            self.publish(kept.cid, kind)
        return kept

    def _keep(self, path: Path, kind: str, run: int | None, round: int | None, sha256: str | None) -> Kept:
        size = path.stat().st_size
        sha = sha256 if sha256 is not None else file_sha256(path)[0]
        cid = self._put_file(path)
        self.store.pin(cid)
        self.state.record_artifact(cid, sha, kind, run, round, size)
        return Kept(cid, sha, size)

    @property
    def scratch(self) -> Path:
        """Where fetched and freshly encoded artifacts are written before they are kept.

        The own store's ``tmp_dir`` when it has one (a ``LocalStore``: keeping is a rename), else a private
        temporary folder, whose files :meth:`get_files` returned are removed when it is called next.
        """
        if self._scratch is None:
            tmp = getattr(self.store, "tmp_dir", None)
            self._scratch = Path(tmp) if tmp is not None else Path(tempfile.mkdtemp(prefix="fedchain-fetch-"))
        return self._scratch

    def _put_file(self, path: Path) -> str:
        if path.parent == self.scratch and hasattr(self.store, "blob_path"):
            return str(self.store.put_file(path, move=True))
        if hasattr(self.store, "put_file"):
            return str(self.store.put_file(path))
        return str(self.store.put(path.read_bytes()))

    def _local_path(self, cid: str, copy: Path) -> Path:
        """Return the own store's file for a kept ``cid`` (a ``LocalStore``), else its scratch ``copy``."""
        if hasattr(self.store, "blob_path"):
            return Path(self.store.blob_path(cid))
        return copy

    def publish(self, cid: str, kind: str) -> bool:
        """Add and pin an artifact of the own store to the IPFS daemon too; return whether it is there now.

        For artifacts kept with ``publish=False`` whose mirroring should not delay what comes next (the
        vote phase keeps the merged state and votes; the round loop's chores publish it later). Without an
        IPFS daemon there is nothing to do (``False``); an artifact missing from the own store or a failing
        daemon is logged, never raised (``False``). A file-backed own store and daemon move the content as
        a file (streamed).
        """
        if self.ipfs is None:
            return False
        if hasattr(self.store, "verified_path") and hasattr(self.ipfs, "put_file"):
            try:
                path = self.store.verified_path(cid)
            except Exception as exc:
                log.warning("could not read %s %s to publish it: %s", kind, cid, exc)
                return False
            return self._mirror(cid, kind, lambda: self.ipfs.put_file(path))
        try:
            data = bytes(self.store.get(cid))
        except Exception as exc:
            log.warning("could not read %s %s to publish it: %s", kind, cid, exc)
            return False
        return self._publish(cid, data, kind)

    def _publish(self, cid: str, data: bytes, kind: str) -> bool:
        return self._mirror(cid, kind, lambda: self.ipfs.put(data))

    def _mirror(self, cid: str, kind: str, put: Callable[[], object]) -> bool:
        if self.ipfs is None:
            return False
        try:
            put()
            self.ipfs.pin(cid)
        except Exception as exc:  # IPFS is a mirror here; the artifact is already kept locally
            log.warning("could not publish %s %s to IPFS: %s", kind, cid, exc)
            return False
        return True

    def _check(self, want: Want, path: Path, source: str) -> Path:
        """Check a CID-verified file against the sha256 the chain names; a mismatch is removed and raised."""
        if want.sha256 is not None and file_sha256(path)[0] != want.sha256:
            if source != "store":  # a fetched copy: nothing of it is kept
                path.unlink(missing_ok=True)
            raise ArtifactUnavailableError(
                f"{want.kind} {want.cid} from {source}: bytes do not match sha256 {want.sha256[:12]}…"
            )
        return path

    def _from_store(self, want: Want) -> Path | None:
        try:
            if not self.store.has(want.cid):
                return None
            if hasattr(self.store, "verified_path"):
                path = Path(self.store.verified_path(want.cid, max_size=want.max_size))
            else:
                path = self.scratch / want.cid
                self.store.get_file(want.cid, path, max_size=want.max_size)
            return self._check(want, path, "store")
        except Exception as exc:  # any store failure just moves on to the next source
            log.warning("own store could not serve %s: %s", want.cid, exc)
            return None

    def _from_ipfs(self, want: Want) -> Path:
        if self.ipfs is None:
            raise ArtifactUnavailableError(
                f"{want.kind} {want.cid}: not in own store, no peer had it, no IPFS"
            )
        dest = self.scratch / f"ipfs-{want.cid}"
        try:
            self.ipfs.get_file(want.cid, dest, max_size=want.max_size)
            return self._check(want, dest, "ipfs")
        except ArtifactUnavailableError:
            raise
        except Exception as exc:
            raise ArtifactUnavailableError(
                f"{want.kind} {want.cid}: unavailable everywhere (IPFS: {exc})"
            ) from exc

    def _from_peers(self, missing: Sequence[Want]) -> dict[str, Path]:
        """Fetch what the own store lacks from peers, streamed into :attr:`scratch` and sha256-checked."""
        from p2p.fetch import FetchRequest

        requests = []
        for want in missing:
            providers = [p for p in dict.fromkeys(self.providers(want.cid)) if p != self.p2p.peer_id]
            if providers:
                requests.append(FetchRequest(want.cid, tuple(providers), want.max_size))  # type: ignore[arg-type]
        if not requests:
            return {}
        try:
            results = self.p2p.fetch_to_files(requests, self.scratch)
        except Exception as exc:  # the p2p layer's own failure: fall through to IPFS
            log.warning("peer fetch failed: %s", exc)
            return {}
        out: dict[str, Path] = {}
        for want in missing:
            value = results.get(want.cid)
            if isinstance(value, Path):
                try:
                    out[want.cid] = self._check(want, value, "peers")
                except ArtifactUnavailableError as exc:
                    log.warning("%s", exc)
        return out

    def get(self, want: Want) -> tuple[bytes, str]:
        """Return ``(bytes, source)`` for one artifact, source being ``store``, ``peers`` or ``ipfs``.

        Raises
        ------
        ArtifactUnavailableError
            If no source delivered matching bytes.
        """
        return self.get_many([want])[want.cid]  # type: ignore[return-value]

    def get_file(self, want: Want) -> tuple[Path, str]:
        """Like :meth:`get`, but return the kept file (see :meth:`get_files`) instead of its bytes."""
        return self.get_files([want])[want.cid]  # type: ignore[return-value]

    def get_many(
        self, wants: Sequence[Want], *, raise_errors: bool = True
    ) -> dict[str, tuple[bytes, str] | Exception]:
        """Get several artifacts as bytes: :meth:`get_files`, each file then read whole."""
        files = self.get_files(wants, raise_errors=raise_errors)
        return {
            cid: (value[0].read_bytes(), value[1]) if isinstance(value, tuple) else value
            for cid, value in files.items()
        }

    def get_files(
        self, wants: Sequence[Want], *, raise_errors: bool = True
    ) -> dict[str, tuple[Path, str] | Exception]:
        """Get several artifacts: own store first, then the rest in parallel from peers, then IPFS.

        Returns, per CID, ``(file, source)``: the file holding the verified content, kept in the own store
        (for a ``LocalStore`` its own blob file: read it, never write it; for other own stores a copy in
        :attr:`scratch`, valid until the next call). Content is streamed between the
        sources and files in pieces and hashed as it passes (CID, then the chain's sha256), never held
        whole in memory; a copy that fails a check is removed before the next source is tried, so nothing
        of it is kept or recorded. With ``raise_errors=False`` a failed artifact maps to its
        :class:`ArtifactUnavailableError`.
        """
        if not hasattr(self.store, "blob_path") and self._scratch is not None:
            for old in self._scratch.iterdir():  # the copies handed out by the previous call
                old.unlink(missing_ok=True)
        out: dict[str, tuple[Path, str] | Exception] = {}
        missing: list[Want] = []
        for want in wants:
            path = self._from_store(want)
            if path is not None:
                out[want.cid] = (path, "store")
            else:
                missing.append(want)
        report = _Report(self.events, wants, out) if missing and self.events is not None else None
        if missing and self.p2p is not None:
            fetched = self._from_peers(missing)
            for want in missing:
                if want.cid in fetched:
                    out[want.cid] = (fetched[want.cid], "peers")
                    _advance(report, want, out)
        for want in missing:
            if want.cid in out:
                continue
            try:
                out[want.cid] = (self._from_ipfs(want), "ipfs")
            except ArtifactUnavailableError as exc:
                if raise_errors:
                    if report is not None:
                        report.done(out)
                    raise
                out[want.cid] = exc
            else:
                _advance(report, want, out)
        for want in wants:
            value = out.get(want.cid)
            if isinstance(value, tuple) and value[1] != "store":
                kept = self._keep(value[0], want.kind, want.run, want.round, want.sha256)
                out[want.cid] = (self._local_path(kept.cid, value[0]), value[1])
            elif isinstance(value, tuple):
                sha = want.sha256 or file_sha256(value[0])[0]
                size = value[0].stat().st_size
                self.state.record_artifact(want.cid, sha, want.kind, want.run, want.round, size)
        if report is not None:
            report.done(out)
        return out


class Kept(NamedTuple):
    """An artifact :meth:`Fetcher.keep_file` kept: its CID, sha256 (hex) and size in bytes."""

    cid: str
    sha256: str
    size: int


def file_sha256(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file's content, read in pieces of 1 MiB."""
    digest = hashlib.sha256()
    size = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size


Got = dict[str, tuple[Path, str] | Exception]


def _advance(report: _Report | None, want: Want, out: Got) -> None:
    if report is not None:
        report.progress(want, out)


class _Report:
    """Emits one batch's ``fetch.progress`` / ``fetch.done`` events; a failing sink never fails a fetch."""

    def __init__(self, sink: EventSink, wants: Sequence[Want], out: Got) -> None:
        self.sink = sink
        self.started = time.perf_counter()
        first = wants[0]
        kinds = {w.kind for w in wants}
        self.fields: dict[str, Any] = {
            "run": first.run,
            "round": first.round,
            "kind": first.kind if len(kinds) == 1 else "artifact",
            "total": len(wants),
        }
        self._emit("fetch.progress", **self._counts(out), cid=None, source=None)

    def _counts(self, out: Got) -> dict[str, int]:
        got = [v for v in out.values() if isinstance(v, tuple)]
        return {"done": len(got), "bytes": sum(v[0].stat().st_size for v in got)}

    def _emit(self, event: str, **fields: Any) -> None:
        try:
            self.sink(event, **{k: v for k, v in self.fields.items() if v is not None}, **fields)
        except Exception as exc:  # progress is for people watching; the transfer goes on
            log.warning("could not report %s: %s", event, exc)

    def progress(self, want: Want, out: Got) -> None:
        value = out[want.cid]
        source = value[1] if isinstance(value, tuple) else None
        self._emit("fetch.progress", **self._counts(out), cid=want.cid, source=source)

    def done(self, out: Got) -> None:
        sources: dict[str, int] = {}
        for value in out.values():
            if isinstance(value, tuple):
                sources[value[1]] = sources.get(value[1], 0) + 1
        counts = self._counts(out)
        self._emit(
            "fetch.done",
            **counts,
            failed=int(self.fields["total"]) - counts["done"],
            sources=sources,
            seconds=round(time.perf_counter() - self.started, 3),
        )
