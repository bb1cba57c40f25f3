"""The audit of a sampled run (clients_per_round = 2 of 3) on a real contract (py-evm) and embedded store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ledger.types import RoundId, RunInfo
from node.audit.auditor import audit_run
from node.protocol.sampling import Selection, read_selection
from node.unlearning.replay import RunSetup
from p2p.storage import LocalStore
from tests.fixtures.chain import ChainEnv
from tests.fixtures.fedrun import ToyRun, toy_setup

K = 2


def _sampled_setup(data: bytes, info: RunInfo) -> RunSetup:
    return dataclasses.replace(toy_setup(data, info), clients_per_round=K)


@pytest.fixture
def toy(pyevm_chain: ChainEnv, tmp_path: Path) -> ToyRun:
    run = ToyRun([pyevm_chain.client(i) for i in range(4)], LocalStore(tmp_path / "store"))
    run.load_setup = _sampled_setup
    run.create(pyevm_chain.mine_to)
    return run


def _selection(toy: ToyRun, r: int) -> Selection:
    info = toy.clients[0].round_info(toy.run, RoundId(r))
    toy.mine(info.start_block + 1)  # type: ignore[operator]
    selection = read_selection(toy.clients[0], toy.run, info, K)
    assert selection is not None and len(selection.selected) == K
    return selection


def _round_with_a_rogue(toy: ToyRun, r: int, *, include_rogue: bool) -> str:
    """Selected members and the one unselected member submit; the selected vote; return the rogue."""
    selection = _selection(toy, r)
    by_address = {c.account_address: c for c in toy.members}
    (rogue,) = [a for a in by_address if not selection.includes(a)]
    for i, address in enumerate([*selection.selected, rogue]):
        toy.submit(by_address[address], r, seed=100 * r + i)
    toy.mine(toy.clients[0].round_info(toy.run, RoundId(r)).submit_end)  # type: ignore[operator]
    state, pairs = toy.honest_merge(r, skip=() if include_rogue else (rogue,))
    assert (rogue in [m for m, _ in pairs]) == include_rogue
    for address in selection.selected:
        toy.vote(by_address[address], r, state, pairs)
    result = toy.clients[0].round_result(toy.run, RoundId(r))
    assert result is not None
    toy.merged[r] = result.merged_sha256.hex()
    return rogue


def test_audit_passes_when_only_selected_updates_are_merged(toy: ToyRun) -> None:
    rogue = _round_with_a_rogue(toy, 0, include_rogue=False)

    report = audit_run(toy.clients[0], toy.run, toy.store, _sampled_setup)

    assert report.ok, [m.describe() for m in report.mismatches]
    row = report.rounds[0]
    assert row.selected is not None and rogue not in row.selected and len(row.selected) == K
    assert row.included == row.selected
    assert any(f"{rogue} was left out: not selected" in note for note in report.notes)


def test_audit_flags_an_included_update_of_an_unselected_member(toy: ToyRun) -> None:
    _round_with_a_rogue(toy, 0, include_rogue=False)
    rogue = _round_with_a_rogue(toy, 1, include_rogue=True)

    report = audit_run(toy.clients[0], toy.run, toy.store, _sampled_setup)

    flagged = [m for m in report.mismatches if m.what == "selection"]
    assert [(m.round, m.found) for m in flagged] == [(1, rogue)]
    assert all(m.what == "selection" for m in report.mismatches)  # the merge itself is the named set's
    # Without sampling in the setup, the same chain passes: the check comes from clients_per_round.
    assert audit_run(toy.clients[0], toy.run, toy.store, toy_setup).ok
