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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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

    def publish(self, cid: str, kind: str) -> bool:
        """Add and pin an artifact of the own store to the IPFS daemon too; return whether it is there now.

        For artifacts kept with ``publish=False`` whose mirroring should not delay what comes next (the
        vote phase keeps the merged state and votes; the round loop's chores publish it later). Without an
        IPFS daemon there is nothing to do (``False``); an artifact missing from the own store or a failing
        daemon is logged, never raised (``False``).
        """
        if self.ipfs is None:
            return False
        try:
            data = bytes(self.store.get(cid))
        except Exception as exc:
            log.warning("could not read %s %s to publish it: %s", kind, cid, exc)
            return False
        return self._publish(cid, data, kind)

    def _publish(self, cid: str, data: bytes, kind: str) -> bool:
        if self.ipfs is None:
            return False
        try:
            self.ipfs.put(data)
            self.ipfs.pin(cid)
        except Exception as exc:  # IPFS is a mirror here; the artifact is already kept locally
            log.warning("could not publish %s %s to IPFS: %s", kind, cid, exc)
            return False
        return True

    def _check(self, want: Want, data: bytes) -> bytes:
        if want.sha256 is not None and hashlib.sha256(data).hexdigest() != want.sha256:
            raise ArtifactUnavailableError(
                f"{want.kind} {want.cid}: bytes do not match sha256 {want.sha256[:12]}…"
            )
        return data

    def _from_store(self, want: Want) -> bytes | None:
        try:
            if not self.store.has(want.cid):
                return None
            return self._check(want, bytes(self.store.get(want.cid, max_size=want.max_size)))
        except Exception as exc:  # any store failure just moves on to the next source
            log.warning("own store could not serve %s: %s", want.cid, exc)
            return None

    def _from_ipfs(self, want: Want) -> bytes:
        if self.ipfs is None:
            raise ArtifactUnavailableError(
                f"{want.kind} {want.cid}: not in own store, no peer had it, no IPFS"
            )
        try:
            return self._check(want, bytes(self.ipfs.get(want.cid, max_size=want.max_size)))
        except ArtifactUnavailableError:
            raise
        except Exception as exc:
            raise ArtifactUnavailableError(
                f"{want.kind} {want.cid}: unavailable everywhere (IPFS: {exc})"
            ) from exc

    def get(self, want: Want) -> tuple[bytes, str]:
        """Return ``(bytes, source)`` for one artifact, source being ``store``, ``peers`` or ``ipfs``.

        Raises
        ------
        ArtifactUnavailableError
            If no source delivered matching bytes.
        """
        return self.get_many([want])[want.cid]  # type: ignore[return-value]

    def get_many(
        self, wants: Sequence[Want], *, raise_errors: bool = True
    ) -> dict[str, tuple[bytes, str] | Exception]:
        """Get several artifacts: own store first, then the rest in parallel from peers, then IPFS.

        With ``raise_errors=False`` a failed artifact maps to its :class:`ArtifactUnavailableError`.
        """
        out: dict[str, tuple[bytes, str] | Exception] = {}
        missing: list[Want] = []
        for want in wants:
            data = self._from_store(want)
            if data is not None:
                out[want.cid] = (data, "store")
            else:
                missing.append(want)
        report = _Report(self.events, wants, out) if missing and self.events is not None else None
        if missing and self.p2p is not None:
            from p2p.fetch import FetchRequest

            requests = []
            for want in missing:
                providers = [p for p in dict.fromkeys(self.providers(want.cid)) if p != self.p2p.peer_id]
                if providers:
                    requests.append(FetchRequest(want.cid, tuple(providers), want.max_size))  # type: ignore[arg-type]
            if requests:
                try:
                    results = self.p2p.fetch_many(requests)
                except Exception as exc:  # the p2p layer's own failure: fall through to IPFS
                    log.warning("peer fetch failed: %s", exc)
                    results = {}
                for want in missing:
                    value = results.get(want.cid)
                    if isinstance(value, bytes):
                        try:
                            out[want.cid] = (self._check(want, value), "peers")
                        except ArtifactUnavailableError as exc:
                            log.warning("%s", exc)
                        else:
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
                self.keep(value[0], want.kind, want.run, want.round, publish=False)
            elif isinstance(value, tuple):
                self.state.record_artifact(
                    want.cid,
                    hashlib.sha256(value[0]).hexdigest(),
                    want.kind,
                    want.run,
                    want.round,
                    len(value[0]),
                )
        if report is not None:
            report.done(out)
        return out


def _advance(report: _Report | None, want: Want, out: dict[str, tuple[bytes, str] | Exception]) -> None:
    if report is not None:
        report.progress(want, out)


class _Report:
    """Emits one batch's ``fetch.progress`` / ``fetch.done`` events; a failing sink never fails a fetch."""

    def __init__(
        self, sink: EventSink, wants: Sequence[Want], out: dict[str, tuple[bytes, str] | Exception]
    ) -> None:
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

    def _counts(self, out: dict[str, tuple[bytes, str] | Exception]) -> dict[str, int]:
        got = [v for v in out.values() if isinstance(v, tuple)]
        return {"done": len(got), "bytes": sum(len(v[0]) for v in got)}

    def _emit(self, event: str, **fields: Any) -> None:
        try:
            self.sink(event, **{k: v for k, v in self.fields.items() if v is not None}, **fields)
        except Exception as exc:  # progress is for people watching; the transfer goes on
            log.warning("could not report %s: %s", event, exc)

    def progress(self, want: Want, out: dict[str, tuple[bytes, str] | Exception]) -> None:
        value = out[want.cid]
        source = value[1] if isinstance(value, tuple) else None
        self._emit("fetch.progress", **self._counts(out), cid=want.cid, source=source)

    def done(self, out: dict[str, tuple[bytes, str] | Exception]) -> None:
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
