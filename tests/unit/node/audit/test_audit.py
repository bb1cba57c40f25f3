"""The audit on a real contract (py-evm) and the embedded store, with rounds driven from the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.types import RoundId
from node.audit.auditor import audit_run
from node.unlearning.replay import RunSetup
from p2p.storage import LocalStore
from tests.fixtures.chain import ChainEnv
from tests.fixtures.fedrun import ToyRun, toy_setup
from training.merge import ModelState


@pytest.fixture
def toy(pyevm_chain: ChainEnv, tmp_path: Path) -> ToyRun:
    run = ToyRun([pyevm_chain.client(i) for i in range(4)], LocalStore(tmp_path / "store"))
    run.create(pyevm_chain.mine_to)
    return run


def _audit(toy: ToyRun):  # type: ignore[no-untyped-def]
    return audit_run(toy.clients[0], toy.run, toy.store, toy_setup)


def test_audit_passes_on_honest_rounds_and_counts_contributions(toy: ToyRun) -> None:
    toy.round(0, [1, 2, 3])
    toy.round(1, [1, 2])
    toy.round(2, [1, 2, 3], record=False)

    report = _audit(toy)

    assert report.ok, [m.describe() for m in report.mismatches]
    assert [row.recomputed_sha256 for row in report.rounds[:3]] == [toy.merged[r] for r in range(3)]
    assert [len(row.included) for row in report.rounds[:3]] == [3, 2, 3]
    counts = {
        m.member: (m.submitted_on_chain, m.accepted_on_chain, len(m.included_rounds)) for m in report.members
    }
    assert counts[toy.clients[3].account_address] == (2, 1, 2)
    assert counts[toy.clients[1].account_address] == (3, 2, 3)


def test_audit_names_a_round_finalised_by_a_colluding_quorum(toy: ToyRun) -> None:
    toy.round(0, [1, 2, 3])
    for i in (1, 2, 3):
        toy.submit(toy.clients[i], 1, seed=7 + i)
    toy.mine(toy.clients[0].round_info(toy.run, RoundId(1)).submit_end)  # type: ignore[operator]
    honest, pairs = toy.honest_merge(1)
    forged = ModelState(honest.params * 2, honest.server_state, honest.control, honest.spec)
    toy.vote(toy.clients[1], 1, forged, pairs)
    toy.vote(toy.clients[2], 1, forged, pairs)
    assert toy.clients[0].round_result(toy.run, RoundId(1)) is not None
    toy.round(2, [1, 2, 3])

    report = _audit(toy)

    assert not report.ok
    whats = {(m.what, m.round) for m in report.mismatches}
    assert ("merged-sha256", 1) in whats
    assert all(m.round == 1 for m in report.mismatches), [m.describe() for m in report.mismatches]
    assert report.rounds[2].recomputed_sha256 == report.rounds[2].merged_sha256


def test_audit_names_an_included_update_whose_bytes_do_not_match_its_commit(toy: ToyRun) -> None:
    for i in (1, 2):
        toy.submit(toy.clients[i], 0, seed=i)
    other = toy.store.put(b"not the committed update")
    toy.clients[3].submit_update(toy.run, RoundId(0), bytes(range(32)), str(other), 10)
    toy.mine(toy.clients[0].round_info(toy.run, RoundId(0)).submit_end)  # type: ignore[operator]
    honest, pairs = toy.honest_merge(0)
    liar = (toy.clients[3].account_address, bytes(range(32)))
    forged_pairs = sorted([*pairs, liar], key=lambda p: int(p[0], 16))
    toy.vote(toy.clients[1], 0, honest, forged_pairs)
    toy.vote(toy.clients[2], 0, honest, forged_pairs)

    report = _audit(toy)

    update = [m for m in report.mismatches if m.what == "update"]
    assert update and update[0].round == 0 and "sha256" in update[0].detail
    assert any("update of" in note and "unusable" in note for note in report.notes)


def test_audit_notes_but_accepts_an_unusable_update_the_quorum_left_out(toy: ToyRun) -> None:
    for i in (1, 2):
        toy.submit(toy.clients[i], 0, seed=i)
    toy.clients[3].submit_update(toy.run, RoundId(0), bytes(range(32)), "bafkreiaaaa", 10)
    toy.mine(toy.clients[0].round_info(toy.run, RoundId(0)).submit_end)  # type: ignore[operator]
    honest, pairs = toy.honest_merge(0)
    toy.vote(toy.clients[1], 0, honest, pairs)
    toy.vote(toy.clients[2], 0, honest, pairs)

    report = _audit(toy)

    assert report.ok, [m.describe() for m in report.mismatches]
    assert report.rounds[0].included == sorted(
        [toy.clients[1].account_address, toy.clients[2].account_address], key=lambda a: int(a, 16)
    )


def test_audit_reports_a_spec_that_does_not_match_its_hash(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    toy = ToyRun([pyevm_chain.client(i) for i in range(3)], store)
    toy.create(pyevm_chain.mine_to)
    store.unpin(store.put(toy.spec))
    store.gc()

    report = _audit(toy)

    assert [m.what for m in report.mismatches] == ["spec"]


def test_audit_reports_a_spec_it_cannot_load(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    toy = ToyRun([pyevm_chain.client(i) for i in range(3)], LocalStore(tmp_path / "store"))
    toy.create(pyevm_chain.mine_to)

    def refuse(data: bytes, info: object) -> RunSetup:
        raise ValueError("`model` is not available here")

    report = audit_run(toy.clients[0], toy.run, toy.store, refuse)

    assert [(m.what, m.found) for m in report.mismatches] == [("spec", "unusable")]
    assert "not available" in report.mismatches[0].detail
