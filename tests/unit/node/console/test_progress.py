"""Tests for node.console.progress: what a person watching ``fedchain node start`` sees, from real events."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
from rich.console import Console
from typer.testing import CliRunner

from node.cli import app
from node.console.eventlog import EventLog, read_events
from node.console.progress import ProgressDisplay, choose_console, open_log

SHA = "1a2b3c4d5e6f" + "0" * 52
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def _console() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=140, color_system=None)


def _text(console: Console) -> str:
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", str(out))  # cursor moves of a live display, if any


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[EventLog, ProgressDisplay, Console]]:
    """A real event log (file only) with a display subscribed, drawing on a recording terminal console."""
    console = _console()
    display = ProgressDisplay(console, name="n0")
    log = EventLog(tmp_path / "node.jsonl", console="none", name="n0")
    log.subscribe(display.handle)
    yield log, display, console
    log.close()


def _screen(display: ProgressDisplay, console: Console, now: float) -> str:
    console.print(display.render(now=now))
    return _text(console)


def test_training_bar_shows_step_loss_rate_and_eta() -> None:
    console = _console()
    display = ProgressDisplay(console, name="n0")
    display.handle(
        {"ts": 100.0, "event": "round.training", "run": 1, "round": 2, "base": SHA, "examples": 40}
    )
    display.handle({"ts": 106.0, "event": "round.train_step", "run": 1, "round": 2, "step": 3, "steps": 4,
                    "loss": 1.23456})  # fmt: skip

    screen = _screen(display, console, now=106.5)

    assert "n0 run 1 · round 2 · training" in screen
    assert "train r2" in screen and "step 3/4 · loss 1.2346 · 0.50 steps/s · ETA 0:02" in screen
    assert "━" in screen  # the bar itself


def test_finished_training_shows_its_duration_instead_of_an_eta(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("round.training", run=1, round=0, base=SHA, examples=40)
    last = log.event("round.trained", run=1, round=0, loss=0.5, steps=8, seconds=4.0, sha=SHA, cid=CID)

    screen = _screen(display, console, now=last["ts"])

    assert "step 8/8" in screen and "2.00 steps/s" in screen and "done in 0:04" in screen
    assert "ETA" not in screen


def test_startup_shows_what_the_node_is_loading_until_it_is_ready(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("node.started", run=1, address="0x" + "ab" * 20, peer_id="16Uiu2HAm", listen=[], store="local")
    loading = _screen(display, console, now=0.0)
    console.file = io.StringIO()
    log.event("node.ready", run=1, spec="tiny", model="tiny-llama", params=1024, initial_sha=SHA)
    ready = _screen(display, console, now=0.0)

    assert "node.started" in loading  # its lasting line
    assert "loading the run spec, the model and the local data" in loading
    assert "n0 run 1 · round - · ready" in ready and "loading" not in ready.split("node.ready")[1]


def test_waiting_reasons_are_shown_with_the_round_and_member_count(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("round.waiting", run=1, round=2, why="round starts at block 140")
    starts = _screen(display, console, now=0.0)
    console.file = io.StringIO()
    log.event("round.waiting", run=1, round=2, why="waiting for the vote phase (2/3 submitted)")
    vote = _screen(display, console, now=0.0)
    console.file = io.StringIO()
    log.event("round.waiting", run=1, round=2, head=131, why="round starts at block 140")
    soon = _screen(display, console, now=0.0)

    assert "round 2 starts at block 140" in starts and "not started" in starts
    assert "waiting for the vote phase (2/3 submitted)" in vote
    assert "3 members" in vote and "submit window" in vote
    assert "round 2 starts at block 140 (in ~9 blocks)" in soon


def test_quorum_wait_ends_when_the_round_is_finalised_which_prints_a_lasting_line(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("round.trained", run=1, round=0, loss=2.25, steps=4, seconds=1.0, sha=SHA, cid=CID)
    log.event("round.scored", run=1, round=0, local_loss=1.9, seconds=0.2)
    log.event("round.merged", run=1, round=0, sha=SHA, cid=CID, included=3, rejected={})
    log.event("round.scored", run=1, round=0, merged_loss=1.75, seconds=0.2)
    log.event("round.waiting", run=1, round=0, why="waiting for quorum (2 of 3 equal votes)")
    waiting = _screen(display, console, now=0.0)
    console.file = io.StringIO()
    last = log.event(
        "round.finalized", run=1, round=0, sha=SHA, cid=CID, votes=3, eligible=3, block=120, ours=True,
        timings={"train": 1.0, "transfer": 0.5},
    )  # fmt: skip
    lines = _text(console)
    console.file = io.StringIO()
    after = _screen(display, console, now=last["ts"])

    assert "waiting for quorum (2 of 3 equal votes)" in waiting
    assert "✓ round 0 finalised · 3/3 votes · sha 1a2b3c4d5e6f" in lines
    assert "train loss 2.2500 · local held-out loss 1.9000 · merged loss 1.7500" in lines
    assert "train 1.0s transfer 0.5s" in lines
    assert "round 0 · finalised · 3 members · final r0 1a2b3c4d5e6f (bafkre…quvyku)" in after
    assert "waiting for quorum" not in after


def test_transfers_count_artifacts_bytes_and_sources(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("fetch.progress", run=1, round=3, kind="update", total=5, done=1, bytes=4 << 20)
    log.event("fetch.progress", run=1, round=3, kind="update", total=5, done=2, bytes=8 << 20,
              cid=CID, source="peers")  # fmt: skip
    log.event("fetch.progress", run=1, round=3, kind="update", total=5, done=3, bytes=13002342,
              cid=CID, source="ipfs")  # fmt: skip
    during = _screen(display, console, now=0.0)
    console.file = io.StringIO()
    log.event("fetch.done", run=1, round=3, kind="update", total=5, done=4, bytes=17 << 20, failed=1,
              sources={"store": 1, "peers": 2, "ipfs": 1}, seconds=1.5)  # fmt: skip
    done = _screen(display, console, now=0.0)

    assert "fetching updates" in during
    assert "3/5 updates fetched, 12.4 MiB · own store 1, peers 1, IPFS 1" in during
    assert "4/5 updates fetched, 17.0 MiB · own store 1, peers 2, IPFS 1 · 1 unavailable · in 1.5s" in done


def test_round_fetched_alone_still_shows_what_was_fetched(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("round.fetched", run=1, round=1, updates=3, sources={"store": 1, "peers": 2}, seconds=0.4)

    screen = _screen(display, console, now=0.0)

    assert "3/3 updates fetched · own store 1, peers 2 · in 0.4s" in screen


def test_errors_and_warnings_print_lasting_lines_and_progress_events_do_not(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, _, console = watched
    log.event("round.train_step", run=1, round=1, step=1, steps=4, loss=2.0)
    log.event("round.waiting", run=1, round=1, why="waiting for the vote phase (1/3 submitted)")
    log.event("error", run=1, round=1, kind="ConnectionError", message="rpc down", retry_in_s=2.0)
    log.event("chain.retry", what="join", message="nonce too low", retry_in_s=1.0)

    lines = _text(console)

    assert "error" in lines and "kind=ConnectionError message=rpc down retry_in_s=2.0" in lines
    assert "chain.retry" in lines and "what=join" in lines
    assert "round.train_step" not in lines and "round.waiting" not in lines


def test_malformed_records_neither_crash_nor_stop_the_display(
    watched: tuple[EventLog, ProgressDisplay, Console],
) -> None:
    log, display, console = watched
    log.event("round.train_step", run="x", round="two", step=None, steps="many", loss="nan")
    log.event("fetch.done", run=1, round=1, kind="update", sources=["not", "a", "dict"], seconds="slow")
    log.event("round.finalized", run=1, round=None, votes=None)
    display.handle({"event": "round.waiting"})
    last = log.event("round.train_step", run=1, round=4, step=2, steps=4, loss=1.0)

    screen = _screen(display, console, now=last["ts"])

    assert "step 2/4" in screen and "round 4" in screen


def test_progress_console_draws_live_on_its_stream_and_keeps_the_json_log_whole(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = open_log(tmp_path / "node.jsonl", console="progress", name="n0", stream=stream)
    log.event("round.training", run=1, round=0, base=SHA, examples=4)
    for step in range(1, 5):
        log.event("round.train_step", run=1, round=0, step=step, steps=4, loss=1.0 / step)
    log.event("round.finalized", run=1, round=0, sha=SHA, cid=CID, votes=2, eligible=3, block=9, ours=True)
    log.event("run.done", run=1, rounds=1)
    log.close()

    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    events = [e["event"] for e in read_events(tmp_path / "node.jsonl")]

    assert "✓ round 0 finalised · 2/3 votes" in shown and "run.done" in shown
    assert "round.train_step" not in shown
    assert events == ["round.training"] + ["round.train_step"] * 4 + ["round.finalized", "run.done"]


def test_listeners_get_every_record_and_a_failing_one_does_not_stop_the_log(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    log = EventLog(tmp_path / "node.jsonl", console="none")

    def broken(record: dict[str, Any]) -> None:
        raise RuntimeError("display bug")

    log.subscribe(broken)
    unsubscribe = log.subscribe(seen.append)
    log.event("round.voted", run=1, round=0, sha=b"\x01")
    unsubscribe()
    log.event("round.voted", run=1, round=1, sha=b"\x02")
    log.close()

    assert [r["sha"] for r in seen] == ["01"]
    assert len(read_events(tmp_path / "node.jsonl")) == 2


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """The slave end of a real pseudo-terminal, as a text stream."""
    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w")
    yield stream
    stream.close()
    os.close(leader)


def test_progress_is_automatic_only_when_stdout_and_stderr_are_terminals(terminal: TextIO) -> None:
    pipe = io.StringIO()

    def mode(
        progress: bool | None, out: TextIO, err: TextIO, quiet: bool = False, json_log: bool = False
    ) -> str:
        return choose_console(quiet=quiet, json_log=json_log, progress=progress, stdout=out, stderr=err)

    assert mode(None, terminal, terminal) == "progress"
    assert mode(None, terminal, pipe) == "human"
    assert mode(None, pipe, terminal) == "human"
    assert mode(False, terminal, terminal) == "human"
    assert mode(True, pipe, pipe) == "progress"
    assert mode(None, terminal, terminal, json_log=True) == "json"
    assert mode(True, terminal, terminal, quiet=True) == "none"


def test_without_a_terminal_the_log_prints_one_plain_line_per_event(tmp_path: Path) -> None:
    out = io.StringIO()
    console = choose_console(quiet=False, json_log=False, progress=None, stdout=out, stderr=out)
    log = open_log(tmp_path / "node.jsonl", console=console, name="n0", stream=out)
    log.event("round.train_step", run=1, round=2, step=3, steps=4, loss=1.5)
    log.event("round.waiting", run=1, round=2, why="waiting for quorum (2 of 3 equal votes)")
    log.close()

    lines = out.getvalue().splitlines()

    assert len(lines) == 2
    assert "r2 round.train_step" in lines[0] and "step=3 steps=4 loss=1.5" in lines[0]
    assert "round.waiting" in lines[1] and "why=waiting for quorum (2 of 3 equal votes)" in lines[1]
    assert "\x1b" not in out.getvalue()


def test_node_start_help_documents_the_progress_flag() -> None:
    result = CliRunner().invoke(app, ["node", "start", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "--progress" in result.output and "--no-progress" in result.output
    assert "Live progress display" in result.output
