"""The node's structured event log: one JSON object per line, plus a human line on the terminal.

Every event has ``ts`` (unix seconds), ``event`` (a dotted name such as ``round.submitted``) and its own
fields (``run``, ``round``, hashes, CIDs, seconds, counts). The file (``<home>/node.jsonl``) is what tests,
the demo and ``bench/round.py`` read; the terminal line is for people and can be turned off (``--quiet``)
or replaced by the JSON itself on stdout (``--json-log``).

Event names the node emits: ``node.started``, ``node.joined``, ``node.stopped``, ``round.waiting``,
``round.training``, ``round.trained``, ``round.stored``, ``round.submitted``, ``round.fetched``,
``round.merged``, ``round.voted``, ``round.finalized``, ``round.adopted``, ``round.diverged``,
``round.failed``, ``round.closed_failed``, ``round.contributions``, ``round.evaluated``, ``chain.retry``,
``fetch.failed``, ``run.done``, ``error``.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO


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
        ``"human"`` (default), ``"json"`` (the JSON line on stdout) or ``"none"``.
    name
        Short node name shown on terminal lines.
    """

    def __init__(
        self, path: Path, *, console: str = "human", name: str = "", stream: TextIO | None = None
    ) -> None:
        if console not in ("human", "json", "none"):
            raise ValueError(f"`console` must be human, json or none, got {console!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.console = console
        self.name = name
        self._stream = stream or sys.stdout
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._rich: Any = None
        if console == "human":
            from rich.console import Console

            self._rich = Console(file=self._stream, highlight=False, soft_wrap=True)

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
                style = _STYLES.get(event, _STYLES.get(event.split(".")[0], ""))
                self._rich.print(self._human(record), style=style or None, markup=False)
        return record

    def _human(self, record: dict[str, Any]) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record["ts"]))
        where = f"r{record['round']}" if "round" in record else ""
        rest = " ".join(
            f"{k}={_short(v)}" for k, v in record.items() if k not in ("ts", "event", "round", "run")
        )
        return f"{stamp} {self.name} {where:>4} {record['event']:<20} {rest}".rstrip()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


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
