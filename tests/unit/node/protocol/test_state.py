"""Tests for node.protocol.state: durable round records, adoptions and artifacts across reopenings."""

from __future__ import annotations

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
