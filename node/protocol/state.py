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
    Small key/value facts, read and written only through :class:`NodeState`'s named records (the keys keep
    their format so older databases read back): ``settled:<run>`` (rounds settled), ``completed:<run>``
    (block of ``RunCompleted`` once logged), ``merge_failed:<run>:<round>`` (why a set cannot be merged),
    ``wait:<run>:<round>`` (last wait reason logged), ``score_due:<run>``, ``contributions_due:<run>``,
    ``not_selected:<run>:<round>:<member>``, ``selection:<run>:<round>``, ``privacy:<run>`` (the privacy
    ledger), ``privacy_refused:<run>:<round>``, ``committee:<kind>:<run>:<round>``,
    ``pubkey:<run>:<member>``, ``unlearn:open:<run>``, ``unlearn:vote:<request>``,
    ``unlearn:applied:<request>``.
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
from typing import Any, Literal

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
class LocalRound:
    """The node's own record of one round (``None``: not done yet).

    What the chain says about a round is :class:`node.protocol.history.RoundRecord`.
    """

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


CommitteeRecord = Literal["commits", "commit", "proposal", "vote"]
"""The JSON documents a committee round keeps (:meth:`NodeState.committee_record`)."""

_ROUND_FIELDS = tuple(f.name for f in dataclasses.fields(LocalRound))


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

    def round(self, run: int, round: int) -> LocalRound:
        """Return the node's record of ``round`` (an empty one if none)."""
        rows = self._exec(
            f"SELECT {', '.join(_ROUND_FIELDS)} FROM rounds WHERE run = ? AND round = ?", (run, round)
        )
        return LocalRound(*rows[0]) if rows else LocalRound(run, round)

    def rounds(self, run: int) -> list[LocalRound]:
        """Every recorded round of ``run``, in order."""
        rows = self._exec(
            f"SELECT {', '.join(_ROUND_FIELDS)} FROM rounds WHERE run = ? ORDER BY round", (run,)
        )
        return [LocalRound(*row) for row in rows]

    def update_round(self, run: int, round: int, **fields: Any) -> LocalRound:
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
        """Return a raw ``meta`` value, or ``None`` (protocol state uses the named records below)."""
        rows = self._exec("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set(self, key: str, value: str) -> None:
        """Store a raw ``meta`` value durably (protocol state uses the named records below)."""
        self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ---- protocol records (rows of ``meta``; the keys are listed in the module docstring) ----------------

    def settled_rounds(self, run: int) -> int:
        """How many rounds of ``run`` are settled (rounds ``0 .. n-1``; ``n`` is the next to settle)."""
        return int(self.get(f"settled:{run}") or 0)

    def mark_settled(self, run: int, round: int) -> None:
        """Record that every round of ``run`` up to and including ``round`` is settled."""
        self.set(f"settled:{run}", str(round + 1))

    def completion_block(self, run: int) -> int | None:
        """Return the block of ``run``'s ``RunCompleted`` once this node logged it, else ``None``."""
        raw = self.get(f"completed:{run}")
        return None if raw is None else int(raw)

    def mark_completed(self, run: int, block: int) -> None:
        """Record that this node logged ``run``'s completion (``RunCompleted`` at ``block``)."""
        self.set(f"completed:{run}", str(block))

    def merge_failure(self, run: int, round: int) -> str | None:
        """Why merging ``round``'s fixed update set failed for good (``None``: it did not)."""
        return self.get(f"merge_failed:{run}:{round}")

    def mark_merge_failed(self, run: int, round: int, reason: str) -> None:
        """Record that ``round``'s update set cannot be merged (the member does not vote it)."""
        self.set(f"merge_failed:{run}:{round}", reason)

    def wait_reason(self, run: int, round: int) -> str | None:
        """Return the last wait reason logged for ``round`` (``None``: none yet)."""
        return self.get(f"wait:{run}:{round}")

    def set_wait_reason(self, run: int, round: int, why: str) -> None:
        """Record the wait reason just logged for ``round``."""
        self.set(f"wait:{run}:{round}", why)

    def score_due(self, run: int) -> int | None:
        """Return the round whose merged model is still to be scored (``None``: nothing due)."""
        raw = self.get(f"score_due:{run}")
        return int(raw) if raw else None

    def set_score_due(self, run: int, round: int | None) -> None:
        """Record the round whose merged model is to be scored next (``None``: nothing due)."""
        self.set(f"score_due:{run}", "" if round is None else str(round))

    def contributions_due(self, run: int) -> dict[int, str]:
        """Finalised rounds whose contributions are still to be recorded: ``{round: included JSON}``."""
        due: dict[str, str] = json.loads(self.get(f"contributions_due:{run}") or "{}")
        return {int(rnd): included for rnd, included in due.items()}

    def queue_contributions(self, run: int, round: int, included: str) -> None:
        """Queue ``round``'s contributions (``included``: JSON list of ``[member, sha256 hex]``)."""
        self._write_contributions_due(run, {**self.contributions_due(run), round: included})

    def contributions_done(self, run: int, round: int) -> None:
        """Take ``round`` off the queue of contributions to record."""
        due = self.contributions_due(run)
        due.pop(round, None)
        self._write_contributions_due(run, due)

    def _write_contributions_due(self, run: int, due: dict[int, str]) -> None:
        self.set(f"contributions_due:{run}", json.dumps({str(r): v for r, v in due.items()}, sort_keys=True))

    def not_selected(self, run: int, round: int, member: str) -> str | None:
        """Return the sha256 hex of ``member``'s update that client sampling left out of ``round``."""
        return self.get(f"not_selected:{run}:{round}:{member.lower()}")

    def mark_not_selected(self, run: int, round: int, member: str, sha256_hex: str) -> None:
        """Record that ``member``'s update ``sha256_hex`` was left out of ``round`` by client sampling."""
        self.set(f"not_selected:{run}:{round}:{member.lower()}", sha256_hex)

    def selection(self, run: int, round: int) -> str | None:
        """Return ``round``'s client-sampling selection (``node.protocol.sampling.Selection`` JSON)."""
        return self.get(f"selection:{run}:{round}") or None

    def set_selection(self, run: int, round: int, selection_json: str) -> None:
        """Keep ``round``'s client-sampling selection (its inputs never change once computed)."""
        self.set(f"selection:{run}:{round}", selection_json)

    def privacy_ledger(self, run: int) -> dict[str, Any] | None:
        """Return the member's privacy ledger of ``run`` (``config``, ``releases``, ``member_budget``)."""
        raw = self.get(f"privacy:{run}")
        return None if raw is None else dict(json.loads(raw))

    def set_privacy_ledger(self, run: int, ledger: dict[str, Any]) -> None:
        """Store this member's privacy ledger of ``run`` durably."""
        self.set(f"privacy:{run}", json.dumps(ledger, sort_keys=True))

    def privacy_refusal(self, run: int, round: int) -> str | None:
        """Why the privacy budget kept this member from training ``round`` (``None``: not refused)."""
        return self.get(f"privacy_refused:{run}:{round}")

    def mark_privacy_refused(self, run: int, round: int, why: str) -> None:
        """Record that the privacy budget keeps this member from training ``round``."""
        self.set(f"privacy_refused:{run}:{round}", why)

    def committee_record(self, run: int, round: int, kind: CommitteeRecord) -> str | None:
        """Return a committee round's kept JSON document of ``kind`` (``None``: none kept).

        ``commits``: the commits this member holds; ``commit``, ``proposal``, ``vote``: its own.
        """
        return self.get(f"committee:{kind}:{run}:{round}") or None

    def set_committee_record(self, run: int, round: int, kind: CommitteeRecord, doc: str) -> None:
        """Keep a committee round's JSON document of ``kind`` durably (before what it records leaves)."""
        self.set(f"committee:{kind}:{run}:{round}", doc)

    def member_public_key(self, run: int, member: str) -> bytes | None:
        """``member``'s public key in ``run`` as recovered from the chain before (``None``: not yet)."""
        raw = self.get(f"pubkey:{run}:{member.lower()}")
        return None if raw is None else bytes.fromhex(raw)

    def set_member_public_key(self, run: int, member: str, key: bytes) -> None:
        """Keep ``member``'s public key in ``run`` (recovered from the chain)."""
        self.set(f"pubkey:{run}:{member.lower()}", key.hex())

    def unlearning_open(self, run: int) -> bool:
        """Whether ``run`` had unlearning work left (a pending request or an error) at the last check."""
        return self.get(f"unlearn:open:{run}") == "1"

    def set_unlearning_open(self, run: int, open: bool) -> None:
        """Record whether ``run`` has unlearning work left."""
        self.set(f"unlearn:open:{run}", "1" if open else "0")

    def unlearning_vote(self, request: int) -> str | None:
        """Return what this member did about request ``request``'s vote (:meth:`set_unlearning_vote`)."""
        return self.get(f"unlearn:vote:{request}")

    def set_unlearning_vote(self, request: int, outcome: str) -> None:
        """Record this member's vote on unlearning request ``request``.

        ``outcome`` is ``on-chain`` (found on chain), ``intent:<sha>:<cid>`` (replayed, about to vote), the
        vote's transaction hash in hex, or ``refused:<revert>``.
        """
        self.set(f"unlearn:vote:{request}", outcome)

    def unlearning_applied(self, request: int) -> bool:
        """Whether this node applied fulfilled request ``request`` (unpinned its subject's updates)."""
        return self.get(f"unlearn:applied:{request}") == "1"

    def mark_unlearning_applied(self, request: int) -> None:
        """Record that this node applied fulfilled unlearning request ``request``."""
        self.set(f"unlearn:applied:{request}", "1")


def round_s(seconds: float) -> float:
    """Seconds rounded to milliseconds for logs and timings."""
    return round(seconds, 3)
