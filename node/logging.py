"""The node's structured event log: one JSON object per line, plus a human line on the terminal.

Every event has ``ts`` (unix seconds), ``event`` (a dotted name such as ``round.submitted``) and its own
fields (``run``, ``round``, hashes, CIDs, seconds, counts). The file (``<home>/node.jsonl``) is what tests,
the demo and ``bench/round.py`` read; the terminal line is for people and can be turned off (``--quiet``)
or replaced by the JSON itself on stdout (``--json-log``). With ``console="progress"`` the terminal shows
a live display on stderr instead (:mod:`node.progress`). Listeners added with :meth:`EventLog.subscribe`
receive every record after it is written to the file.

Event names the node emits: ``node.started``, ``node.joined``, ``node.stopped``, ``round.waiting``,
``round.training``, ``round.trained``, ``round.stored``, ``round.submitted``, ``round.fetched``,
``round.merged``, ``round.voted``, ``round.finalized``, ``round.adopted``, ``round.diverged``,
``round.failed``, ``round.closed_failed``, ``round.contributions``, ``round.evaluated``, ``chain.retry``,
``fetch.progress``, ``fetch.done``, ``fetch.failed``, ``run.done``, ``error``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

_log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], object]
"""Receives each event record (``ts``, ``event`` and the plain fields) after it is written."""

CONSOLES = ("human", "json", "none", "progress")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class EventLog:
    """Writes events to a JSON-lines file and, unless quiet, a short line to the terminal.

    Parameters
    ----------
    path
        The JSON-lines file (appended to; created with its folder).
    console
        ``"human"`` (default), ``"json"`` (the JSON line on stdout), ``"none"``, or ``"progress"`` (a live
        :class:`node.progress.ProgressDisplay` on ``stream``, default stderr, drawn as a terminal).
    name
        Short node name shown on terminal lines.
    stream
        Where terminal output goes (default stdout; stderr for ``"progress"``).
    """

    def __init__(
        self, path: Path, *, console: str = "human", name: str = "", stream: TextIO | None = None
    ) -> None:
        if console not in CONSOLES:
            raise ValueError(f"`console` must be one of {', '.join(CONSOLES)}, got {console!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.console = console
        self.name = name
        self._stream = stream or (sys.stderr if console == "progress" else sys.stdout)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._rich: Any = None
        self._display: Any = None
        if console == "human":
            from rich.console import Console

            self._rich = Console(file=self._stream, highlight=False, soft_wrap=True)
        elif console == "progress":
            from node.progress import ProgressDisplay

            self._display = ProgressDisplay.for_stream(self._stream, name=name)
            self._display.start()
            self.subscribe(self._display.handle)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(record)`` for every later event; returns a function that unsubscribes it.

        Listeners run in the emitting thread, in order, one event at a time; one that raises is logged
        (Python ``logging``) and the event still counts as recorded.
        """
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Record one event; returns the record written."""
        record = {"ts": round(time.time(), 3), "event": event, **{k: _plain(v) for k, v in fields.items()}}
        line = json.dumps(record, sort_keys=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            if self.console == "json":
                print(line, file=self._stream, flush=True)
            elif self._rich is not None:
                self._rich.print(human_line(record, self.name), style=style_of(event), markup=False)
            for listener in self._listeners:
                try:
                    listener(record)
                except Exception as exc:  # a display must never stop the node
                    _log.warning("event listener %r failed on %s: %s", listener, event, exc)
        return record

    def close(self) -> None:
        """Close the file (and stop the live display, leaving its permanent lines)."""
        with self._lock:
            self._file.close()
            display, self._display = self._display, None
        if display is not None:
            display.stop()


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


def read_events(path: Path) -> list[dict[str, Any]]:
    """Parse a node's JSON-lines log (a torn last line, from a kill, is skipped)."""
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            events.append(record)
    return events
