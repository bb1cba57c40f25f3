"""Event records and the listener interface: what the event log emits and what every view consumes.

An event record is a plain dict: ``ts`` (unix seconds), ``event`` (a dotted name such as
``round.submitted``) and the event's own fields (``run``, ``round``, hashes, CIDs, seconds, counts), all
JSON-ready. :class:`node.console.eventlog.EventLog` writes each record and then hands it to its
listeners; the views (:mod:`node.console.view`, :mod:`node.console.progress`) depend on this module only,
never on the log, so the log can start a view without an import cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

Listener = Callable[[dict[str, Any]], object]
"""Receives each event record (``ts``, ``event`` and the plain fields) after it is written."""


class Display(Protocol):
    """A live view the event log feeds and stops: it gets every record and is stopped when the log closes."""

    def handle(self, record: dict[str, Any]) -> None:
        """Take one event record."""

    def stop(self) -> None:
        """Stop drawing (leaving the permanent lines)."""


def human_line(record: dict[str, Any], name: str = "") -> str:
    """Format an event record as one terminal line: time, node name, round, event, ``key=value`` fields."""
    stamp = time.strftime("%H:%M:%S", time.localtime(record["ts"]))
    where = f"r{record['round']}" if "round" in record else ""
    rest = " ".join(f"{k}={_short(v)}" for k, v in record.items() if k not in ("ts", "event", "round", "run"))
    return f"{stamp} {name} {where:>4} {record['event']:<20} {rest}".rstrip()


def style_of(event: str) -> str | None:
    """Return the terminal style of an event's line (by full name, then by its first part), or ``None``."""
    return _STYLES.get(event, _STYLES.get(event.split(".")[0], "")) or None


_STYLES = {
    "error": "bold red",
    "round.diverged": "bold red",
    "round.failed": "red",
    "round.waiting": "yellow",
    "round.finalized": "bold green",
    "round.voted": "green",
    "round.submitted": "green",
    "round.trained": "cyan",
    "round.train_step": "dim cyan",
    "run.done": "bold green",
}
"""Terminal colour of each event (by full name, then by its first part)."""


def _short(value: Any) -> str:
    text = str(value)
    if isinstance(value, str) and len(text) > 20 and " " not in text:
        return text[:12] + "…"
    return text
