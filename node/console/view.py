"""What a person watching a node should see, folded from the node's event records (no terminal involved).

:class:`NodeView` takes event records one at a time (:meth:`NodeView.apply`) and keeps the run, round,
phase, member count and last finalised model, the round's local training (:class:`Training`), its artifact
transfers (:class:`Transfer`) and why the node is idle (:class:`Waiting`); ``apply`` returns the lasting line
an event prints, if any. :mod:`node.console.progress` draws it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from node.console.events import human_line, style_of

TRANSIENT = frozenset(
    {
        "round.waiting",
        "round.training",
        "round.train_step",
        "round.trained",
        "round.submitted",
        "round.fetched",
        "round.merged",
        "round.voted",
        "round.contributions",
        "fetch.progress",
        "fetch.done",
        "committee.drawn",
        "committee.committed",
        "committee.voted",
        "committee.quorum",
    }
)
"""Events shown only in the live area; every other event also prints a lasting line."""

_PHASES = {
    "round.training": "training",
    "round.train_step": "training",
    "round.trained": "committing update",
    "round.submitted": "submitted",
    "round.fetched": "merging",
    "round.merged": "voting",
    "round.voted": "voted",
    "round.merge_failed": "merge failed",
    "committee.committed": "committed (signed)",
    "committee.proposed": "proposed",
    "committee.voted": "voted (signed)",
    "committee.quorum": "quorum",
    "committee.finalized": "finalising",
}
_WAIT_PHASES = (
    ("round starts at block", "not started"),
    ("not eligible", "not eligible"),
    ("vote phase", "submit window"),
    ("quorum", "vote window"),
    ("too few updates", "vote window"),
    ("cannot merge", "vote window"),
    ("privacy budget", "budget spent"),
    ("outside the committee", "outside committee"),
    ("committee: waiting for votes", "committee vote"),
    ("committee: ", "committee"),
)
_STARTS_AT = re.compile(r"^round starts at block (\d+)$")
_OF_MEMBERS = re.compile(r"\((\d+)(?:/| of )(\d+) (?:submitted|equal votes)\)")


@dataclass
class Training:
    """Local training of one round, as reported by ``round.training`` / ``round.train_step``."""

    round: int
    started: float
    examples: int | None = None
    step: int = 0
    steps: int | None = None
    loss: float | None = None
    last: float = 0.0
    seconds: float | None = None

    def rate(self) -> float | None:
        """Optimiser steps per second so far (``None`` before the first timed step)."""
        if self.seconds is not None and self.seconds > 0:
            return self.step / self.seconds
        elapsed = self.last - self.started
        return self.step / elapsed if self.step and elapsed > 0 else None

    def eta_s(self, now: float) -> float | None:
        """Seconds left at the current rate, counted down from the last step report."""
        rate = self.rate()
        if rate is None or self.steps is None or self.seconds is not None:
            return None
        return max(0.0, (self.steps - self.step) / rate - max(0.0, now - self.last))


@dataclass
class Transfer:
    """One batch of artifacts being fetched (``fetch.progress`` / ``fetch.done``, or ``round.fetched``)."""

    kind: str
    round: int | None
    total: int
    done: int = 0
    bytes: int | None = 0
    sources: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    seconds: float | None = None

    @property
    def finished(self) -> bool:
        """Whether the batch is over (every artifact delivered or given up on)."""
        return self.seconds is not None


@dataclass
class Waiting:
    """Why the node is idle, since when."""

    round: int | None
    why: str
    since: float


@dataclass
class NodeView:
    """What a person watching one node sees, folded from its event records (no terminal involved)."""

    name: str = ""
    run: int | None = None
    round: int | None = None
    phase: str = "starting"
    members: int | None = None
    final: tuple[int, str, str] | None = None
    training: Training | None = None
    transfers: dict[tuple[str, int | None], Transfer] = field(default_factory=dict)
    waiting: Waiting | None = None
    losses: dict[int, dict[str, float]] = field(default_factory=dict)
    privacy: tuple[float, float] | None = None
    """This member's differential-privacy spend so far, ``(epsilon, delta)`` (``None``: no DP)."""

    def apply(self, record: dict[str, Any]) -> tuple[str, str | None] | None:
        """Fold one event record in; return the lasting line it prints as ``(text, style)``, if any."""
        event = str(record.get("event", ""))
        ts = float(record.get("ts", time.time()))
        rnd = _int(record.get("round"))
        if isinstance(record.get("run"), int):
            self.run = record["run"]
        if rnd is not None and event != "round.finalized" and (self.round is None or rnd > self.round):
            self._new_round(rnd)
        if isinstance(record.get("eligible"), int):
            self.members = record["eligible"]
        handler = getattr(self, "_on_" + event.replace(".", "_"), None)
        if handler is not None:
            handler(record, ts, rnd)
        if event in _PHASES and (rnd is None or rnd == self.round):
            self.phase = _PHASES[event]
        if event in TRANSIENT:
            return None
        if event == "round.finalized":
            return self._finalized_line(record, rnd), "bold green"
        return human_line(record, self.name), style_of(event)

    def _new_round(self, rnd: int) -> None:
        self.round = rnd
        self.training = None
        self.transfers = {k: t for k, t in self.transfers.items() if not t.finished}
        if self.waiting is not None and self.waiting.round is not None and self.waiting.round < rnd:
            self.waiting = None

    def _clear_wait(self, rnd: int | None) -> None:
        if self.waiting is not None and (
            rnd is None or self.waiting.round is None or rnd >= self.waiting.round
        ):
            self.waiting = None

    # ---- one handler per event that changes the view -------------------------------------------------

    def _on_round_waiting(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        why = str(record.get("why", ""))
        found = _OF_MEMBERS.search(why)
        if found:
            self.members = int(found.group(2))
        for needle, phase in _WAIT_PHASES:
            if needle in why:
                self.phase = phase
                break
        self.waiting = Waiting(rnd, _waiting_text(why, rnd, record), ts)

    def _on_round_training(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)
        self.training = Training(rnd or 0, ts, examples=_int(record.get("examples")), last=ts)

    def _on_round_train_step(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)
        if self.training is None or self.training.round != rnd:
            self.training = Training(rnd or 0, ts, last=ts)
        self.training.step = _int(record.get("step")) or 0
        self.training.steps = _int(record.get("steps"))
        self.training.loss = _float(record.get("loss"))
        self.training.last = ts

    def _on_privacy_spent(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        epsilon, delta = _float(record.get("epsilon")), _float(record.get("delta"))
        if epsilon is not None and delta is not None:
            self.privacy = (epsilon, delta)

    _on_privacy_refused = _on_privacy_spent

    def _on_round_trained(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        if self.training is None or self.training.round != rnd:
            self.training = Training(rnd or 0, ts, last=ts)
        steps = _int(record.get("steps"))
        if steps is not None:
            self.training.step = self.training.steps = steps
        self.training.loss = _float(record.get("loss"))
        self.training.seconds = _float(record.get("seconds"))
        self._loss(rnd, "train", record.get("loss"))

    def _on_round_submitted(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)

    def _on_fetch_progress(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)
        kind = str(record.get("kind", "artifact"))
        transfer = self.transfers.get((kind, rnd))
        if transfer is None or transfer.finished:
            transfer = self.transfers[(kind, rnd)] = Transfer(kind, rnd, _int(record.get("total")) or 0)
            self.phase = f"fetching {plural_kind(kind)}"
        transfer.done = _int(record.get("done")) or 0
        transfer.bytes = _int(record.get("bytes"))
        source = record.get("source")
        if isinstance(source, str):
            transfer.sources[source] = transfer.sources.get(source, 0) + 1
        elif transfer.done:  # the first report counts what the own store already had
            transfer.sources["store"] = transfer.done

    def _on_fetch_done(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        kind = str(record.get("kind", "artifact"))
        transfer = self.transfers.setdefault((kind, rnd), Transfer(kind, rnd, _int(record.get("total")) or 0))
        transfer.done = _int(record.get("done")) or 0
        transfer.bytes = _int(record.get("bytes"))
        transfer.failed = _int(record.get("failed")) or 0
        if isinstance(record.get("sources"), dict):
            transfer.sources = {str(k): int(v) for k, v in record["sources"].items()}
        transfer.seconds = _float(record.get("seconds")) or 0.0

    def _on_round_fetched(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)
        known = self.transfers.get(("update", rnd))
        if known is not None and known.finished:
            return
        sources = record.get("sources")
        counts = {str(k): int(v) for k, v in sources.items()} if isinstance(sources, dict) else {}
        done = _int(record.get("updates")) or 0
        self.transfers[("update", rnd)] = Transfer(
            "update", rnd, done, done, None, counts, 0, _float(record.get("seconds")) or 0.0
        )

    def _on_round_merged(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)

    def _on_round_scored(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        # Scoring runs off the critical path: usually after the round's finalised line was printed, so
        # the score also prints its own lasting line; a score that comes first joins the finalised line.
        self._loss(rnd, "local", record.get("local_loss"))
        self._loss(rnd, "merged", record.get("merged_loss"))

    def _on_round_voted(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self._clear_wait(rnd)

    def _on_round_finalized(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        if rnd is None:
            return
        if self.final is None or rnd >= self.final[0]:
            self.final = (rnd, str(record.get("sha", "")), str(record.get("cid", "")))
        if self.round is None or rnd >= self.round:
            self.round = rnd
            self.phase = "finalised"
            self._clear_wait(rnd)

    def _on_round_failed(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        if rnd is not None and rnd == self.round:
            self.phase = "failed"
            self._clear_wait(rnd)

    def _on_node_started(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self.waiting = Waiting(None, "loading the run spec, the model and the local data", ts)

    def _on_node_ready(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self.phase = "ready"
        self._clear_wait(None)

    def _on_run_done(self, record: dict[str, Any], ts: float, rnd: int | None) -> None:
        self.phase = "run done"
        self.waiting = None

    def _loss(self, rnd: int | None, which: str, value: Any) -> None:
        loss = _float(value)
        if rnd is not None and loss is not None:
            self.losses.setdefault(rnd, {})[which] = loss

    # ---- lines and the live area ---------------------------------------------------------------------

    def _finalized_line(self, record: dict[str, Any], rnd: int | None) -> str:
        parts = [
            f"✓ round {rnd} finalised",
            f"{record.get('votes', '?')}/{record.get('eligible', '?')} votes",
        ]
        parts.append(f"sha {short_hash(str(record.get('sha', '')))}")
        parts.append(f"cid {short_cid(str(record.get('cid', '')))}")
        if record.get("ours") is False:
            parts.append("adopted (our vote differed)")
        losses = self.losses.get(rnd, {}) if rnd is not None else {}
        if "train" in losses:
            parts.append(f"train loss {losses['train']:.4f}")
        if "local" in losses:
            parts.append(f"local held-out loss {losses['local']:.4f}")
        if "merged" in losses:
            parts.append(f"merged loss {losses['merged']:.4f}")
        timings = record.get("timings")
        if isinstance(timings, dict) and timings:
            parts.append(
                " ".join(f"{k} {float(v):.1f}s" for k, v in timings.items() if _float(v) is not None)
            )
        return " · ".join(parts)


def _waiting_text(why: str, rnd: int | None, record: dict[str, Any]) -> str:
    starts = _STARTS_AT.match(why)
    if not starts:
        return why
    text = f"round {rnd if rnd is not None else '?'} starts at block {starts.group(1)}"
    head = _int(record.get("head"))
    if head is not None:
        text += f" (in ~{max(0, int(starts.group(1)) - head)} blocks)"
    return text


def plural_kind(kind: str) -> str:
    """Return the plural of an artifact kind as shown on screen (``update`` -> ``updates``)."""
    return {"merged": "models", "spec": "specs"}.get(kind, kind + "s")


def short_hash(sha: str) -> str:
    """Return the first 12 hex digits of a hash (``?`` if empty)."""
    return sha[:12] if sha else "?"


def short_cid(cid: str) -> str:
    """Return a CID shortened to its first and last 6 characters (``?`` if empty)."""
    return f"{cid[:6]}…{cid[-6:]}" if len(cid) > 14 else cid or "?"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
