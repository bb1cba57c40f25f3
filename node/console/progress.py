"""A live terminal view of a running node, drawn from the same event records its log writes.

:class:`node.console.view.NodeView` folds event records (``round.training``, ``round.train_step``,
``fetch.progress``, ``round.waiting``, ``round.finalized``, ...) into what a person watching a node wants to
see; :func:`render` turns a view into the live area (a header line, a training bar, transfer bars, a spinner
with the waiting reason). :class:`ProgressDisplay` subscribes to the node's
:class:`node.console.eventlog.EventLog`, draws the area with rich ``Live`` a few times per second, and prints
lasting lines above it: finalised and failed rounds, errors and warnings, start and stop. Events only update
the view; drawing happens on rich's refresh thread, at ``refresh_per_second``, so a burst of events costs one
redraw.

:func:`choose_console` decides what ``fedchain node start`` shows: the live view only when both stdout and
stderr are terminals (or ``--progress`` forces it), else one line per event as before; :func:`open_log`
opens the node's event log with that console (starting the live view for ``"progress"``).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from node.console.eventlog import EventLog
from node.console.view import NodeView, Training, Transfer, plural_kind, short_cid, short_hash

_BAR_WIDTH = 24


def header(view: NodeView) -> Text:
    """Return the header line: node, run, round, phase, members, last finalised hash and CID."""
    text = Text()
    if view.name:
        text.append(f"{view.name} ", style="bold")
    text.append(f"run {view.run if view.run is not None else '?'}")
    text.append(f" · round {view.round if view.round is not None else '-'}")
    text.append(f" · {view.phase}", style="cyan")
    if view.members is not None:
        text.append(f" · {view.members} member{'s' if view.members != 1 else ''}")
    if view.privacy is not None:
        text.append(f" · ε {view.privacy[0]:.3g} (δ {view.privacy[1]:g})", style="magenta")
    if view.final is not None:
        rnd, sha, cid = view.final
        text.append(f" · final r{rnd} {short_hash(sha)} ({short_cid(cid)})", style="green")
    return text


def render(view: NodeView, now: float | None = None) -> RenderableType:
    """Return the live area for ``view`` at time ``now`` (unix seconds; default: the current time)."""
    now = time.time() if now is None else now
    rows: list[RenderableType] = [header(view)]
    bars = Table.grid(padding=(0, 1))
    bars.add_column(no_wrap=True)
    bars.add_column(width=_BAR_WIDTH, no_wrap=True)
    bars.add_column()  # the facts wrap on a narrow terminal rather than lose their end
    if view.training is not None:
        bars.add_row(*_training_row(view.training, now))
    for transfer in view.transfers.values():
        bars.add_row(*_transfer_row(transfer))
    if bars.row_count:
        rows.append(bars)
    if view.waiting is not None:
        waited = max(0.0, now - view.waiting.since)
        rows.append(Spinner("dots", Text(f"{view.waiting.why} · {_clock(waited)}", style="yellow")))
    return Group(*rows)


def _training_row(training: Training, now: float) -> tuple[RenderableType, ...]:
    total = training.steps or 0
    label = Text(f"train r{training.round}", style="cyan")
    bar = ProgressBar(total=float(total) if total else None, completed=float(training.step), width=_BAR_WIDTH)
    facts = [f"step {training.step}/{total or '?'}"]
    if training.loss is not None:
        facts.append(f"loss {training.loss:.4f}")
    rate = training.rate()
    if rate is not None:
        facts.append(f"{rate:.2f} steps/s")
    eta = training.eta_s(now)
    if training.seconds is not None:
        facts.append(f"done in {_clock(training.seconds)}")
    elif eta is not None:
        facts.append(f"ETA {_clock(eta)}")
    return label, bar, Text(" · ".join(facts))


class ProgressDisplay:
    """Draws a :class:`NodeView` live on a rich console and prints lasting lines above it.

    Parameters
    ----------
    console
        Where to draw (a terminal console: stderr in ``fedchain node start``).
    name
        Node name shown in the header and on lasting lines.
    refresh_per_second
        Redraws per second (events in between only update the view).
    redirect
        Route other writes to ``sys.stdout`` / ``sys.stderr`` above the live area while it runs.
    """

    def __init__(
        self, console: Console, *, name: str = "", refresh_per_second: float = 4.0, redirect: bool = False
    ) -> None:
        if not 0 < refresh_per_second <= 30:
            raise ValueError(f"`refresh_per_second` must be in (0, 30], got {refresh_per_second}")
        self.console = console
        self.view = NodeView(name=name)
        self._lock = threading.Lock()
        self._live = Live(
            console=console,
            get_renderable=self._renderable,
            refresh_per_second=refresh_per_second,
            transient=True,
            redirect_stdout=redirect,
            redirect_stderr=redirect,
        )
        self._started = False

    @classmethod
    def for_stream(cls, stream: TextIO, *, name: str = "") -> ProgressDisplay:
        """Make a display drawing on ``stream`` as a terminal (other output goes above it if it is stderr)."""
        console = Console(file=stream, force_terminal=True, highlight=False)
        return cls(console, name=name, redirect=stream is sys.stderr)

    def start(self) -> None:
        """Start drawing (a rich refresh thread)."""
        if not self._started:
            self._live.start()
            self._started = True

    def stop(self) -> None:
        """Stop drawing and clear the live area; lasting lines stay."""
        if self._started:
            self._started = False
            self._live.stop()

    def handle(self, record: dict[str, Any]) -> None:
        """Fold one event record in (an event log listener); print its lasting line."""
        with self._lock:
            line = self.view.apply(record)
        # printed outside our lock: rich's refresh thread holds its own lock while asking for the renderable
        if line is not None:
            self.console.print(Text(line[0], style=line[1] or ""), soft_wrap=True)

    def _renderable(self) -> RenderableType:
        return self.render()

    def render(self, now: float | None = None) -> RenderableType:
        """Return the live area as it would be drawn at ``now`` (unix seconds; default: the current time)."""
        with self._lock:
            return render(self.view, now)


def open_log(path: Path, *, console: str = "human", name: str = "", stream: TextIO | None = None) -> EventLog:
    """Open the event log at ``path`` with a ``console`` mode of :data:`node.console.eventlog.CONSOLES`.

    For ``"progress"`` a :class:`ProgressDisplay` on ``stream`` (default stderr) is started and given to the
    log, which feeds it every record and stops it on close; other modes are :class:`EventLog`'s own.
    """
    if console != "progress":
        return EventLog(path, console=console, name=name, stream=stream)
    display = ProgressDisplay.for_stream(stream or sys.stderr, name=name)
    display.start()
    try:
        return EventLog(path, console=console, name=name, display=display)
    except BaseException:
        display.stop()
        raise


def choose_console(*, quiet: bool, json_log: bool, progress: bool | None, stdout: Any, stderr: Any) -> str:
    """Return the ``EventLog`` console mode for ``fedchain node start``'s flags and terminals.

    ``--quiet`` wins, then ``--json-log``; ``progress=True`` forces the live view, ``False`` refuses it,
    ``None`` (auto) shows it only when both ``stdout`` and ``stderr`` are terminals, so pipes, CI and
    redirected output keep one plain line per event.
    """
    if quiet:
        return "none"
    if json_log:
        return "json"
    if progress is None:
        progress = _isatty(stdout) and _isatty(stderr)
    return "progress" if progress else "human"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # a closed or replaced stream is no terminal
        return False


def _transfer_row(transfer: Transfer) -> tuple[RenderableType, ...]:
    where = f" r{transfer.round}" if transfer.round is not None else ""
    label = Text(f"fetch {plural_kind(transfer.kind)}{where}", style="magenta")
    bar = ProgressBar(total=float(transfer.total) or 1.0, completed=float(transfer.done), width=_BAR_WIDTH)
    facts = [f"{transfer.done}/{transfer.total} {plural_kind(transfer.kind)} fetched"]
    if transfer.bytes is not None:
        facts[0] += f", {_size(transfer.bytes)}"
    if transfer.sources:
        order = sorted(transfer.sources.items(), key=lambda kv: (_SOURCE_ORDER.get(kv[0], 9), kv[0]))
        facts.append(", ".join(f"{_SOURCE_NAMES.get(k, k)} {v}" for k, v in order))
    if transfer.failed:
        facts.append(f"{transfer.failed} unavailable")
    if transfer.seconds is not None:
        facts.append(f"in {transfer.seconds:.1f}s")
    return label, bar, Text(" · ".join(facts))


_SOURCE_NAMES = {"store": "own store", "peers": "peers", "ipfs": "IPFS"}
_SOURCE_ORDER = {name: i for i, name in enumerate(_SOURCE_NAMES)}


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _clock(seconds: float) -> str:
    whole = int(seconds + 0.5)
    return (
        f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
        if whole >= 3600
        else f"{whole // 60}:{whole % 60:02d}"
    )
