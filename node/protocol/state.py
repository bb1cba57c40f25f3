"""The node's durable state: one SQLite database (WAL, synchronous=FULL) under the node home.

What is written here is written BEFORE the action it enables: an artifact row (and the pinned blob) before
its CID is committed on chain, an intent (the update's hash and CID, the merged hash) before the
transaction is sent. After a crash the node reads this state and the chain (the source of truth: did the
submission or vote land?) and continues without training twice, submitting twice or voting twice.

Tables
------
rounds
    One row per (run, round): this node's update, submission, merge, vote, the finalised result, losses.
adoptions
    The model state each round's successor starts from: (run, round, sha, cid, source); the latest row of
    a round wins, so an unlearning result can supersede a finalised merge.
artifacts
    Every blob the node stored or fetched and keeps pinned: cid, sha256, kind, run, round, size.
meta
    Small key/value facts (e.g. which runs this node joined).
residuals
    A ``topk`` run's error-feedback residual (what this member has not sent yet; float32 bytes) after each
    of its last two encoded rounds, so a restart neither loses it nor applies it twice.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    run INTEGER NOT NULL, round INTEGER NOT NULL,
    base_sha TEXT, update_sha TEXT, update_cid TEXT, update_size INTEGER, num_samples INTEGER,
    submit_tx TEXT, merged_sha TEXT, merged_cid TEXT, included TEXT, rejected TEXT, vote_tx TEXT,
    final_sha TEXT, final_cid TEXT, status TEXT NOT NULL DEFAULT 'open',
    local_loss REAL, merged_loss REAL, timings TEXT, updated REAL,
    PRIMARY KEY (run, round)
);
CREATE TABLE IF NOT EXISTS adoptions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run INTEGER NOT NULL, round INTEGER NOT NULL,
    sha TEXT NOT NULL, cid TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS artifacts (
    cid TEXT PRIMARY KEY, sha256 TEXT NOT NULL, kind TEXT NOT NULL, run INTEGER, round INTEGER,
    size INTEGER NOT NULL, pinned INTEGER NOT NULL DEFAULT 1, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS residuals (
    run INTEGER NOT NULL, round INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (run, round)
);
"""


@dataclass(frozen=True)
class RoundRecord:
    """The node's record of one round (``None``: not done yet)."""

    run: int
    round: int
    base_sha: str | None = None
    update_sha: str | None = None
    update_cid: str | None = None
    update_size: int | None = None
    num_samples: int | None = None
    submit_tx: str | None = None
    merged_sha: str | None = None
    merged_cid: str | None = None
    included: str | None = None
    """JSON list of ``[member, sha256 hex]`` pairs this node merged."""
    rejected: str | None = None
    """JSON object ``{member: reason}``."""
    vote_tx: str | None = None
    final_sha: str | None = None
    final_cid: str | None = None
    status: str = "open"
    """``open``, ``finalized`` or ``failed``."""
    local_loss: float | None = None
    merged_loss: float | None = None
    timings: str | None = None
    """JSON object of seconds per phase (train, transfer, merge, chain, wait)."""
    updated: float | None = None

    def timing(self) -> dict[str, float]:
        """Return the parsed :attr:`timings`."""
        return dict(json.loads(self.timings)) if self.timings else {}


@dataclass(frozen=True)
class Adoption:
    """A model state adopted as the result of a round."""

    run: int
    round: int
    sha: str
    cid: str
    source: str


_ROUND_FIELDS = tuple(f.name for f in dataclasses.fields(RoundRecord))


class NodeState:
    """The node's SQLite state; safe to call from several threads (one connection behind a lock).

    Parameters
    ----------
    path
        Database file (created with its tables if missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    # ---- rounds ------------------------------------------------------------------------------------------

    def round(self, run: int, round: int) -> RoundRecord:
        """Return the node's record of ``round`` (an empty one if none)."""
        rows = self._exec(
            f"SELECT {', '.join(_ROUND_FIELDS)} FROM rounds WHERE run = ? AND round = ?", (run, round)
        )
        return RoundRecord(*rows[0]) if rows else RoundRecord(run, round)

    def rounds(self, run: int) -> list[RoundRecord]:
        """Every recorded round of ``run``, in order."""
        rows = self._exec(
            f"SELECT {', '.join(_ROUND_FIELDS)} FROM rounds WHERE run = ? ORDER BY round", (run,)
        )
        return [RoundRecord(*row) for row in rows]

    def update_round(self, run: int, round: int, **fields: Any) -> RoundRecord:
        """Set fields of a round's record (created if missing), durably; returns the new record.

        Raises
        ------
        ValueError
            If a field name is unknown.
        """
        unknown = sorted(set(fields) - set(_ROUND_FIELDS[2:]))
        if unknown:
            raise ValueError(f"unknown round field(s) {unknown}")
        fields["updated"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO rounds (run, round) VALUES (?, ?)", (run, round))
            self._db.execute(
                f"UPDATE rounds SET {cols} WHERE run = ? AND round = ?", (*fields.values(), run, round)
            )
        return self.round(run, round)

    def add_timing(self, run: int, round: int, phase: str, seconds: float) -> None:
        """Add ``seconds`` to a round's time spent in ``phase``."""
        timings = self.round(run, round).timing()
        timings[phase] = round_s(timings.get(phase, 0.0) + seconds)
        self.update_round(run, round, timings=json.dumps(timings, sort_keys=True))

    # ---- adoptions ---------------------------------------------------------------------------------------

    def adopt(self, run: int, round: int, sha: str, cid: str, source: str) -> None:
        """Record that ``round``'s result is the state ``sha`` (``cid``), from ``source``."""
        self._exec(
            "INSERT INTO adoptions (run, round, sha, cid, source, created) VALUES (?, ?, ?, ?, ?, ?)",
            (run, round, sha, cid, source, time.time()),
        )

    def latest_adoption(self, run: int, before: int | None = None) -> Adoption | None:
        """Return the adoption of the latest round ``< before`` (any when ``None``); latest row wins."""
        limit = before if before is not None else 2**62
        rows = self._exec(
            "SELECT run, round, sha, cid, source FROM adoptions WHERE run = ? AND round < ? "
            "ORDER BY round DESC, seq DESC LIMIT 1",
            (run, limit),
        )
        return Adoption(*rows[0]) if rows else None

    def adoptions(self, run: int) -> list[Adoption]:
        """Every adoption of ``run`` in insertion order."""
        rows = self._exec(
            "SELECT run, round, sha, cid, source FROM adoptions WHERE run = ? ORDER BY seq", (run,)
        )
        return [Adoption(*row) for row in rows]

    # ---- artifacts ---------------------------------------------------------------------------------------

    def record_artifact(
        self, cid: str, sha256: str, kind: str, run: int | None, round: int | None, size: int
    ) -> None:
        """Remember a stored (pinned) artifact; recording the same CID again is a no-op."""
        self._exec(
            "INSERT OR IGNORE INTO artifacts (cid, sha256, kind, run, round, size, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cid, sha256, kind, run, round, size, time.time()),
        )

    def set_pinned(self, cid: str, pinned: bool) -> None:
        """Mark an artifact pinned or unpinned."""
        self._exec("UPDATE artifacts SET pinned = ? WHERE cid = ?", (int(pinned), cid))

    def artifacts(self, run: int | None = None) -> list[dict[str, Any]]:
        """Return recorded artifacts (of one run, or all), oldest first."""
        cols = ("cid", "sha256", "kind", "run", "round", "size", "pinned")
        where, args = ("WHERE run = ?", (run,)) if run is not None else ("", ())
        rows = self._exec(f"SELECT {', '.join(cols)} FROM artifacts {where} ORDER BY created", args)
        return [dict(zip(cols, row, strict=True)) for row in rows]

    def artifact_by_sha(self, sha256: str) -> str | None:
        """CID of a recorded artifact with this sha256, if any."""
        rows = self._exec("SELECT cid FROM artifacts WHERE sha256 = ? LIMIT 1", (sha256,))
        return str(rows[0][0]) if rows else None

    # ---- error-feedback residuals ------------------------------------------------------------------------

    def residual(self, run: int, before: int) -> bytes | None:
        """Return the residual stored after the latest round before ``before`` (``None``: none yet)."""
        rows = self._exec(
            "SELECT data FROM residuals WHERE run = ? AND round < ? ORDER BY round DESC LIMIT 1",
            (run, before),
        )
        return bytes(rows[0][0]) if rows else None

    def set_residual(self, run: int, round: int, data: bytes) -> None:
        """Store the residual after ``round``; keep it and the one before (what a re-encoded round reads)."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO residuals (run, round, data) VALUES (?, ?, ?)", (run, round, data)
            )
            self._db.execute(
                "DELETE FROM residuals WHERE run = ? AND round < "
                "(SELECT COALESCE(MAX(round), -1) FROM residuals WHERE run = ? AND round < ?)",
                (run, run, round),
            )
            self._db.execute("COMMIT")

    # ---- meta --------------------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return a stored value, or ``None``."""
        rows = self._exec("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set(self, key: str, value: str) -> None:
        """Store a value durably."""
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def round_s(seconds: float) -> float:
    """Seconds rounded to milliseconds for logs and timings."""
    return round(seconds, 3)
