"""A pre-training member's inner AdamW state in its node home, kept from one round to its next.

DiLoCo keeps each worker's inner optimiser state across outer steps (:mod:`training.inner_state`). It is the
member's own and not part of consensus: after training round ``r`` the node writes it to
``runs/<run>/inner_state/round-<r>.safetensors`` (safetensors tensors ``exp_avg`` and ``exp_avg_sq`` with a
JSON header naming the format, the step count, the layout, the run and the round), and training round ``r'``
resumes from the file of the latest round before ``r'``. The two latest files are kept, so a round trained
again after a restart (killed after training, before committing) resumes the same state as the first time.

A file that cannot be used (corrupt, another layout or run, written by something else) is logged as
``round.inner_state_ignored`` with the file and the reason, and the round starts a fresh AdamW: it never
stops the node.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.flat import FlatSpec
from training.inner_state import InnerState, InnerStateError, load, save

FOLDER = "inner_state"
"""Sub-folder of the run folder holding the files."""

_NAME = re.compile(r"^round-(\d{1,12})\.safetensors$")
_KEEP = 2

LogEvent = Callable[..., Any]


def state_path(run_dir: Path, rnd: int) -> Path:
    """Return the file that holds the state after training round ``rnd``."""
    return run_dir / FOLDER / f"round-{rnd:06d}.safetensors"


def _saved_rounds(run_dir: Path) -> list[int]:
    folder = run_dir / FOLDER
    if not folder.is_dir():
        return []
    rounds = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            rounds.append(int(match.group(1)))
    return sorted(rounds)


def load_inner_state(
    run_dir: Path, run_id: int, rnd: int, spec: FlatSpec, log_event: LogEvent
) -> InnerState | None:
    """Return the state saved after this member's latest round before ``rnd``; ``None``: start fresh.

    A file that :func:`training.inner_state.load` refuses is logged (``round.inner_state_ignored``) and
    ``None`` returned.
    """
    earlier = [r for r in _saved_rounds(run_dir) if r < rnd]
    if not earlier:
        return None
    path = state_path(run_dir, earlier[-1])
    try:
        state = load(path, spec, expect={"run": run_id, "round": earlier[-1]})
    except InnerStateError as exc:
        log_event("round.inner_state_ignored", run=run_id, round=rnd, file=str(path), why=str(exc))
        return None
    log_event("round.inner_state_resumed", run=run_id, round=rnd, trained_round=earlier[-1], step=state.step)
    return state


def save_inner_state(
    run_dir: Path, run_id: int, rnd: int, state: InnerState, spec: FlatSpec, log_event: LogEvent
) -> Path | None:
    """Write the state after training round ``rnd`` and delete all but the two latest rounds' files.

    A failed write (disk full, permissions) is logged (``round.inner_state_unsaved``) and ``None``
    returned: the next round then starts a fresh AdamW, the update of this one is unaffected.
    """
    try:
        path = save(state_path(run_dir, rnd), state, spec, extra={"run": run_id, "round": rnd})
        for old in _saved_rounds(run_dir)[:-_KEEP]:
            state_path(run_dir, old).unlink(missing_ok=True)
    except OSError as exc:
        log_event("round.inner_state_unsaved", run=run_id, round=rnd, why=str(exc))
        return None
    return path
