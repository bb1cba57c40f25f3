"""Tests for node.console.eventlog: JSON lines that survive a torn last line."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from node.console.eventlog import EventLog, read_events


def test_events_are_json_lines_with_plain_values(tmp_path: Path) -> None:
    out = io.StringIO()
    log = EventLog(tmp_path / "node.jsonl", console="human", name="n0", stream=out)
    log.event("round.voted", run=1, round=2, sha=b"\x01\x02", nan=float("nan"), items=(1, 2))
    log.close()
    with (tmp_path / "node.jsonl").open("a") as f:
        f.write('{"torn": ')  # what a SIGKILL mid-write leaves

    events = read_events(tmp_path / "node.jsonl")

    assert len(events) == 1
    assert events[0]["event"] == "round.voted"
    assert events[0]["sha"] == "0102"
    assert events[0]["nan"] == "nan"
    assert events[0]["items"] == [1, 2]
    assert "round.voted" in out.getvalue() and "r2" in out.getvalue()


def test_a_progress_console_needs_its_display_and_only_it_takes_one(tmp_path: Path) -> None:
    class Shown:
        def __init__(self) -> None:
            self.records: list[str] = []
            self.stopped = False

        def handle(self, record: dict[str, object]) -> None:
            self.records.append(str(record["event"]))

        def stop(self) -> None:
            self.stopped = True

    with pytest.raises(ValueError, match="display"):
        EventLog(tmp_path / "a.jsonl", console="progress")
    with pytest.raises(ValueError, match="display"):
        EventLog(tmp_path / "b.jsonl", console="human", display=Shown())

    shown = Shown()
    log = EventLog(tmp_path / "c.jsonl", console="progress", display=shown)
    log.event("round.voted", run=1, round=0)
    log.close()

    assert shown.records == ["round.voted"] and shown.stopped


def test_the_log_and_the_event_interface_import_no_view() -> None:
    """The views depend on the event interface, never the other way: no import cycle through the console."""
    console = Path(__file__).resolve().parents[4] / "node" / "console"
    for name in ("events.py", "eventlog.py"):
        tree = ast.parse((console / name).read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("node.")
        }
        assert not imported & {"node.console.progress", "node.console.view"}, (name, imported)
