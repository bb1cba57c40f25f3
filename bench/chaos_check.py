"""The invariants a fault campaign run (``bench/chaos.py``) must keep, checked from the chain and the nodes.

:func:`check_run` reads one run's on-chain history (:func:`node.protocol.history.read_history`), every
node's ``state.db`` (read-only) and event log, and the IPFS daemon, and returns the violations it finds, each
a short sentence naming the round, the member and what is wrong:

* ``finality``: every finalised round has one hash, and every member node recorded it as the round's result
  and adopted it (``rounds.final_sha`` and the latest ``adoptions`` row; every ``round.finalized`` event);
* ``availability``: every committed update can be fetched from IPFS and hashes to its commit, and no vote
  of a member left a committed update out as unavailable (the finalised included set is every commit);
* ``no double action``: at most one commit and one vote per member and round on chain, the node's recorded
  intent (``update_sha``) is what the chain holds, every ``round.submitted`` event names that hash, and no
  node had a commit or vote refused as a repeat;
* ``liveness``: the first round that opens after the last fault healed finalises before its vote window
  ends (``None`` when no round opened after the faults: reported as unchecked, not as a violation);
* ``integrity``: every ``state.db`` opens and ``PRAGMA integrity_check`` answers ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPEAT_WORDS = ("already", "duplicate")
"""A refused commit or vote whose reason contains one of these was a second attempt."""


@dataclass(frozen=True)
class NodeView:
    """What the checker needs of one node: its address, database and event log."""

    index: int
    address: str
    state_path: Path
    log_path: Path


@dataclass
class RunCheck:
    """The outcome of checking one run."""

    rounds_finalized: int = 0
    rounds: int = 0
    """Rounds opened (finalised or failed) up to the run's last."""
    liveness_checked: bool = False
    violations: list[str] = field(default_factory=list)


def integrity(path: Path) -> str | None:
    """Return ``None`` if the database at ``path`` opens and passes ``integrity_check``, else why not."""
    if not path.is_file():
        return f"{path} is missing"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            rows = db.execute("PRAGMA integrity_check").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return f"{path} does not open: {exc}"
    answer = "; ".join(str(r[0]) for r in rows)
    return None if answer == "ok" else f"{path} fails integrity_check: {answer}"


def _state_rows(path: Path, run: int) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """The node's ``rounds`` rows of ``run`` by round, and the sha of each round's latest adoption."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        db.row_factory = sqlite3.Row
        rounds = {int(r["round"]): dict(r) for r in db.execute("SELECT * FROM rounds WHERE run = ?", (run,))}
        adopted: dict[int, str] = {}
        for r in db.execute("SELECT round, sha FROM adoptions WHERE run = ? ORDER BY seq", (run,)):
            adopted[int(r["round"])] = str(r["sha"])
    finally:
        db.close()
    return rounds, adopted


def _events(path: Path, run: int) -> list[dict[str, Any]]:
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill or a full disk
        if isinstance(event, dict) and event.get("run") == run:
            out.append(event)
    return out


@dataclass(frozen=True)
class _Node:
    """One node's records of the run: its database rows, adoptions and logged events."""

    view: NodeView
    rows: dict[int, dict[str, Any]]
    adopted: dict[int, str]
    events: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return f"node{self.view.index}"

    def logged(self, event: str, r: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event and e.get("round") == r]


def _chain_round(rec: Any, fetch: Callable[[str], bytes]) -> list[str]:
    """What the chain alone says is wrong with one round: repeats, unreadable or missing updates."""
    from ledger.types import included_set_hash

    r, out = int(rec.round), []
    for kind, actions in (("submit", rec.submissions), ("vote", rec.votes)):
        counts: dict[str, int] = {}
        for action in actions:
            counts[action.member.lower()] = counts.get(action.member.lower(), 0) + 1
        out += [f"double {kind}: round {r}: {m} did it {n} times" for m, n in counts.items() if n > 1]
    for s in rec.submissions:
        try:
            data = fetch(s.cid)
        except Exception as exc:  # any failure to read it back is unavailability
            out.append(f"availability: round {r}: update {s.cid} of {s.member} not fetchable: {exc}")
            continue
        if hashlib.sha256(data).digest() != bytes(s.sha256):
            out.append(f"availability: round {r}: update {s.cid} of {s.member} has another hash")
    if rec.result is not None and rec.submissions:
        everyone = included_set_hash([(s.member, bytes(s.sha256)) for s in rec.submissions])
        if bytes(rec.result.included_set_hash) != everyone:
            out.append(f"availability: round {r} finalised without every committed update")
    return out


def _node_round(node: _Node, rec: Any) -> list[str]:
    """What is wrong with one node's part in one round: its intents, refusals, exclusions, adoption."""
    r, name, out = int(rec.round), node.name, []
    row = node.rows.get(r, {})
    committed = {s.member.lower() for s in rec.submissions}
    mine = [bytes(s.sha256).hex() for s in rec.submissions if s.member.lower() == node.view.address.lower()]
    if mine and row.get("update_sha") and row["update_sha"] != mine[0]:
        out.append(f"double submit: round {r}: {name} recorded another update than it committed")
    if mine and {e.get("sha") for e in node.logged("round.submitted", r)} - {mine[0]}:
        out.append(f"double submit: round {r}: {name} logged a commit the chain does not hold")
    for e in node.logged("round.submit_refused", r) + node.logged("round.vote_refused", r):
        if any(w in str(e.get("why", "")).lower() for w in REPEAT_WORDS):
            out.append(f"double action: round {r}: {name} {e['event']}: {e.get('why')}")
    for member, why in json.loads(row.get("rejected") or "{}").items():
        if "unavailable" in str(why) and member.lower() in committed:
            out.append(f"availability: round {r}: {name} merged without {member}'s update: {why}")
    joined = any(e.get("event") == "node.joined" for e in node.events)
    if rec.result is None or not joined:
        return out
    final = bytes(rec.result.merged_sha256).hex()
    if row.get("final_sha") != final:
        out.append(f"finality: round {r}: {name} recorded {row.get('final_sha')}, chain {final}")
    if node.adopted.get(r) != final:
        out.append(f"finality: round {r}: {name} adopted {node.adopted.get(r)}, chain {final}")
    if {e.get("sha") for e in node.logged("round.finalized", r)} - {final}:
        out.append(f"finality: round {r}: {name} logged another finalised hash")
    return out


def check_run(
    history: Any,
    nodes: Sequence[NodeView],
    fetch: Callable[[str], bytes],
    *,
    rounds: int,
    faults_end_block: int,
) -> RunCheck:
    """Check one finished run of ``rounds`` rounds, its failed rounds included (module docstring).

    ``fetch`` reads a CID from the IPFS daemon; ``faults_end_block`` is the chain head when the last fault
    healed.
    """
    run = int(history.run_id)
    out = RunCheck()
    readable = []
    for view in nodes:
        problem = integrity(view.state_path)
        if problem is not None:
            out.violations.append(f"integrity: node{view.index}: {problem}")
        else:
            readable.append(_Node(view, *_state_rows(view.state_path, run), _events(view.log_path, run)))
    first_after = None
    for rec in history.rounds:
        if out.rounds_finalized == rounds:  # the run is over: a round after its last stays open, unused
            break
        out.rounds += 1
        out.rounds_finalized += rec.result is not None
        if first_after is None and rec.info.start_block >= faults_end_block:
            first_after = rec
        out.violations += _chain_round(rec, fetch)
        for node in readable:
            out.violations += _node_round(node, rec)
    if first_after is not None:
        out.liveness_checked = True
        info = first_after.info
        if first_after.result is None or first_after.result.block_number >= info.vote_end:
            out.violations.append(
                f"liveness: round {int(first_after.round)}, the first after the faults (block "
                f"{faults_end_block}), did not finalise within its windows (blocks {info.start_block}-"
                f"{info.vote_end})"
            )
    return out
