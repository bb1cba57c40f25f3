"""Tests for node.protocol.state: durable round records, adoptions, artifacts and protocol records."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from node.protocol.state import NodeState


def test_round_records_survive_reopening(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    db.update_round(1, 0, update_sha="aa", update_cid="bafy", num_samples=12)
    db.add_timing(1, 0, "train", 1.5)
    db.add_timing(1, 0, "train", 0.25)
    db.close()

    reopened = NodeState(tmp_path / "state.db")
    record = reopened.round(1, 0)

    assert (record.update_sha, record.update_cid, record.num_samples) == ("aa", "bafy", 12)
    assert record.timing() == {"train": 1.75}
    assert reopened.round(1, 1).update_sha is None
    assert [r.round for r in reopened.rounds(1)] == [0]


def test_unknown_round_fields_are_refused(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")

    with pytest.raises(ValueError, match="unknown round field"):
        db.update_round(1, 0, colour="red")


def test_latest_adoption_before_a_round_and_latest_row_wins(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    db.adopt(1, 0, "s0", "c0", "finalized")
    db.adopt(1, 2, "s2", "c2", "finalized")
    db.adopt(1, 2, "u2", "cu", "unlearning")

    assert db.latest_adoption(1, before=0) is None
    assert db.latest_adoption(1, before=2).sha == "s0"  # type: ignore[union-attr]
    assert db.latest_adoption(1, before=3).sha == "u2"  # type: ignore[union-attr]
    assert db.latest_adoption(2) is None


def test_artifacts_are_recorded_once_and_can_be_unpinned(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    db.record_artifact("bafy1", "ab", "update", 1, 0, 10)
    db.record_artifact("bafy1", "ab", "update", 1, 0, 10)
    db.set_pinned("bafy1", False)

    assert db.artifacts(1) == [
        {"cid": "bafy1", "sha256": "ab", "kind": "update", "run": 1, "round": 0, "size": 10, "pinned": 0}
    ]
    assert db.artifact_by_sha("ab") == "bafy1"
    db.set("k", "v")
    assert db.get("k") == "v"


def test_the_error_feedback_residual_survives_reopening_and_keeps_two_rounds(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    for rnd in range(4):
        db.set_residual(1, rnd, bytes([rnd]) * 8)
    db.set_residual(2, 0, b"other run")
    db.set_residual(1, 3, b"re-encoded")  # a round encoded again after a restart replaces its own row
    db.close()

    reopened = NodeState(tmp_path / "state.db")

    assert reopened.residual(1, before=4) == b"re-encoded"
    assert reopened.residual(1, before=3) == bytes([2]) * 8  # what a re-encoded round 3 starts from
    assert reopened.residual(1, before=2) is None  # rounds 0 and 1 were dropped
    assert reopened.residual(1, before=0) is None
    assert reopened.residual(2, before=1) == b"other run"


# ---- protocol records --------------------------------------------------------------------------------------

_OLD_KEYS = {  # rows as databases written before the named records hold them (the format is unchanged)
    "settled:7": "3",
    "completed:7": "812",
    "merge_failed:7:2": "too few valid updates",
    "wait:7:3": "waiting for quorum",
    "score_due:7": "2",
    "contributions_due:7": '{"0": "[[\\"0xA\\", \\"aa\\"]]", "10": "[]"}',
    "not_selected:7:1:0xabc": "beef",
    "selection:7:1": '{"round": 1}',
    "privacy:7": '{"config": {}, "member_budget": null, "releases": [0, 0, 2]}',
    "privacy_refused:7:4": "over budget",
    "committee:commits:7:1": "[]",
    "committee:vote:7:1": '{"index": 2}',
    "pubkey:7:0xabc": "02ff",
    "unlearn:open:7": "1",
    "unlearn:vote:5": "intent:aa:bafy",
    "unlearn:applied:5": "1",
}


def test_a_database_written_with_the_old_meta_keys_reads_back_through_the_records(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    NodeState(path).close()
    with sqlite3.connect(path) as raw:
        raw.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(_OLD_KEYS.items()))
    raw.close()

    db = NodeState(path)

    assert db.settled_rounds(7) == 3
    assert db.completion_block(7) == 812
    assert db.merge_failure(7, 2) == "too few valid updates"
    assert db.wait_reason(7, 3) == "waiting for quorum"
    assert db.score_due(7) == 2
    assert db.contributions_due(7) == {0: '[["0xA", "aa"]]', 10: "[]"}
    assert db.not_selected(7, 1, "0xABC") == "beef"
    assert db.selection(7, 1) == '{"round": 1}'
    assert db.privacy_ledger(7) == {"config": {}, "member_budget": None, "releases": [0, 0, 2]}
    assert db.privacy_refusal(7, 4) == "over budget"
    assert db.committee_record(7, 1, "commits") == "[]"
    assert db.committee_record(7, 1, "vote") == '{"index": 2}'
    assert db.member_public_key(7, "0xAbC") == bytes.fromhex("02ff")
    assert db.unlearning_open(7) is True
    assert db.unlearning_vote(5) == "intent:aa:bafy"
    assert db.unlearning_applied(5) is True


def test_the_records_write_the_keys_older_nodes_read(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = NodeState(path)
    db.mark_settled(7, 2)
    db.mark_completed(7, 812)
    db.mark_merge_failed(7, 2, "too few valid updates")
    db.set_wait_reason(7, 3, "waiting for quorum")
    db.set_score_due(7, 2)
    db.queue_contributions(7, 0, '[["0xA", "aa"]]')
    db.queue_contributions(7, 10, "[]")
    db.mark_not_selected(7, 1, "0xABC", "beef")
    db.set_selection(7, 1, '{"round": 1}')
    db.set_privacy_ledger(7, {"releases": [0, 0, 2], "config": {}, "member_budget": None})
    db.mark_privacy_refused(7, 4, "over budget")
    db.set_committee_record(7, 1, "commits", "[]")
    db.set_committee_record(7, 1, "vote", '{"index": 2}')
    db.set_member_public_key(7, "0xAbC", bytes.fromhex("02ff"))
    db.set_unlearning_open(7, True)
    db.set_unlearning_vote(5, "intent:aa:bafy")
    db.mark_unlearning_applied(5)
    db.close()

    with sqlite3.connect(path) as raw:
        rows = dict(raw.execute("SELECT key, value FROM meta").fetchall())
    raw.close()

    assert rows == _OLD_KEYS


def test_records_that_are_not_written_read_as_nothing(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")

    assert db.settled_rounds(1) == 0
    assert db.completion_block(1) is None
    assert db.merge_failure(1, 0) is None
    assert db.wait_reason(1, 0) is None
    assert db.score_due(1) is None
    assert db.contributions_due(1) == {}
    assert db.not_selected(1, 0, "0xabc") is None
    assert db.selection(1, 0) is None
    assert db.privacy_ledger(1) is None
    assert db.privacy_refusal(1, 0) is None
    assert db.committee_record(1, 0, "proposal") is None
    assert db.member_public_key(1, "0xabc") is None
    assert db.unlearning_open(1) is False
    assert db.unlearning_vote(1) is None
    assert db.unlearning_applied(1) is False


def test_records_are_per_run_round_and_member(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    db.mark_merge_failed(1, 0, "r0")
    db.mark_not_selected(1, 0, "0xAAA", "aa")
    db.set_committee_record(1, 0, "commit", "{}")
    db.mark_settled(1, 4)

    assert db.merge_failure(1, 1) is None and db.merge_failure(2, 0) is None
    assert db.not_selected(1, 0, "0xaaa") == "aa" and db.not_selected(1, 0, "0xbbb") is None
    assert db.committee_record(1, 0, "vote") is None and db.committee_record(2, 0, "commit") is None
    assert db.settled_rounds(1) == 5 and db.settled_rounds(2) == 0


def test_score_due_and_the_contributions_queue_empty_again(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    db.set_score_due(1, 3)
    db.set_score_due(1, None)
    db.queue_contributions(1, 2, "[]")
    db.queue_contributions(1, 1, '[["0xA", "aa"]]')
    db.queue_contributions(1, 2, '[["0xB", "bb"]]')  # queued again: the later list wins
    db.contributions_done(1, 1)
    db.contributions_done(1, 9)  # not queued: nothing to take off

    assert db.score_due(1) is None
    assert db.contributions_due(1) == {2: '[["0xB", "bb"]]'}
    db.contributions_done(1, 2)
    assert db.contributions_due(1) == {}


def test_unlearning_work_can_close_again(tmp_path: Path) -> None:
    db = NodeState(tmp_path / "state.db")
    db.set_unlearning_open(3, True)
    db.set_unlearning_open(3, False)
    db.set_unlearning_vote(9, "refused:AlreadyVotedError")

    assert db.unlearning_open(3) is False
    assert db.unlearning_vote(9) == "refused:AlreadyVotedError"


def test_no_node_module_builds_a_state_key() -> None:
    """Protocol state goes through NodeState's named records, so no module spells a ``meta`` key."""
    root = Path(__file__).resolve().parents[4] / "node"
    raw = re.compile(r"\bstate\.(get|set)\(")
    modules = [p for p in sorted(root.rglob("*.py")) if p != root / "protocol" / "state.py"]
    offenders = [
        f"{path.relative_to(root.parent)}:{n}"
        for path in modules
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if raw.search(line)
    ]

    assert len(modules) > 50 and offenders == []
