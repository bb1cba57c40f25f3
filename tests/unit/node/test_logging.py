"""Tests for node.logging: JSON lines that survive a torn last line."""

from __future__ import annotations

import io
from pathlib import Path

from node.logging import EventLog, read_events


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
