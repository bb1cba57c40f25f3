"""The node's structured event log: one JSON object per line, plus a human line on the terminal.

Every event has ``ts`` (unix seconds), ``event`` (a dotted name such as ``round.submitted``) and its own
fields (``run``, ``round``, hashes, CIDs, seconds, counts). The file (``<home>/node.jsonl``) is what tests,
the demo and ``bench/round.py`` read; the terminal line is for people and can be turned off (``--quiet``)
or replaced by the JSON itself on stdout (``--json-log``). With ``console="progress"`` the terminal belongs
to a live display instead (a :class:`node.console.events.Display`; :func:`node.console.progress.open_log`
makes one). Listeners added with :meth:`EventLog.subscribe` receive every record after it is written to the
file. The record format, the listener interface and the terminal line are :mod:`node.console.events`.

The event names the node emits, each with its meaning, are :data:`node.console.events.EVENTS`.
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

from node.console.events import Display, Listener, human_line, style_of

_log = logging.getLogger(__name__)

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
        ``"human"`` (default), ``"json"`` (the JSON line on stdout), ``"none"``, or ``"progress"`` (the
        terminal belongs to ``display``).
    name
        Short node name shown on terminal lines.
    stream
        Where terminal output goes (default stdout).
    display
        The live view of a ``"progress"`` console (required there, refused otherwise): it receives every
        record and is stopped by :meth:`close`.
    """

    def __init__(
        self,
        path: Path,
        *,
        console: str = "human",
        name: str = "",
        stream: TextIO | None = None,
        display: Display | None = None,
    ) -> None:
        if console not in CONSOLES:
            raise ValueError(f"`console` must be one of {', '.join(CONSOLES)}, got {console!r}")
        if (console == "progress") != (display is not None):
            raise ValueError("a `display` is what a `console` of 'progress' shows, and only that console's")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.console = console
        self.name = name
        self._stream = stream or sys.stdout
        self._file = path.open("ab", buffering=0)  # one write(2) per line: nothing waits in a buffer
        self._torn = False
        self.dropped = 0
        """Events that could not be written (a full disk); they were still shown and passed on."""
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._rich: Any = None
        self._display = display
        if console == "human":
            from rich.console import Console

            self._rich = Console(file=self._stream, highlight=False, soft_wrap=True)
        elif display is not None:
            self.subscribe(display.handle)

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
            self._write(line)
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

    def _write(self, line: str) -> None:
        """Append one line; a write the file system refuses drops the line, it never stops the node."""
        data = ("\n" if self._torn else "").encode() + line.encode() + b"\n"  # end a torn line first
        try:
            written = self._file.write(data) or 0
        except OSError as exc:  # ENOSPC, EIO, a quota: the state database is the record, the log is a view
            self.dropped += 1
            if self.dropped == 1:
                _log.warning("event log %s refused a write (%s); dropping events", self.path, exc)
            return
        if written < len(data):  # a partial write: the rest is lost; the next line starts a new one
            self._torn = True
            self.dropped += 1
        else:
            self._torn = False

    def close(self) -> None:
        """Close the file (and stop the live display, leaving its permanent lines)."""
        with self._lock:
            self._file.close()
            display, self._display = self._display, None
        if display is not None:
            display.stop()


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
