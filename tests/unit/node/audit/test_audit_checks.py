"""The audit's vote checks and its `unavailable` verdict on a real contract (py-evm) and the local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.types import RoundId
from node.audit.auditor import audit_run
from node.audit.votes import VOTE_CHECKS
from node.protocol.history import read_history
from p2p.storage import Cid, LocalStore
from tests.fixtures.chain import ChainEnv
from tests.fixtures.fedrun import ToyRun, toy_setup


@pytest.fixture
def toy(pyevm_chain: ChainEnv, tmp_path: Path) -> ToyRun:
    run = ToyRun([pyevm_chain.client(i) for i in range(4)], LocalStore(tmp_path / "store"))
    run.create(pyevm_chain.mine_to)
    return run


def test_every_round_passes_the_vote_checks_after_a_ban(toy: ToyRun) -> None:
    toy.round(0, [1, 2, 3])
    toy.clients[0].request_unlearning(toy.run, toy.clients[3].account_address, RoundId(1), b"\x01" * 32)
    toy.round(1, [1, 2])

    report = audit_run(toy.clients[0], toy.run, toy.store, toy_setup)

    assert [m.what for m in report.mismatches if m.what in VOTE_CHECKS] == []
    rows = {row.round: row for row in report.rounds}
    assert rows[0].vote_checks == dict.fromkeys(VOTE_CHECKS, True)
    assert rows[1].vote_checks == dict.fromkeys(VOTE_CHECKS, True)
    assert report.to_json()["rounds"][1]["vote_checks"]["quorum"] is True


def test_an_included_update_missing_from_the_store_is_unavailable_not_a_wrong_merge(toy: ToyRun) -> None:
    toy.round(0, [1, 2, 3])
    toy.round(1, [1, 2, 3])
    toy.round(2, [1, 2, 3])
    gone = read_history(toy.clients[0], toy.run).round(1).submissions[0]
    toy.store.unpin(Cid(gone.cid))
    toy.store.gc()

    report = audit_run(toy.clients[0], toy.run, toy.store, toy_setup)

    assert report.ok, [m.describe() for m in report.mismatches]
    assert not report.complete
    assert [(u.round, u.member, u.cid) for u in report.unavailable] == [(1, gone.member, gone.cid)]
    rows = {row.round: row for row in report.rounds}
    assert rows[1].unavailable == [gone.member] and rows[1].recomputed_sha256 is None
    assert rows[2].recomputed_sha256 == toy.merged[2]  # the audit went on from round 1's recorded model
    assert report.to_json()["unavailable"][0]["round"] == 1
