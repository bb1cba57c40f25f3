"""Unlearning: the pure replay and the node hook, on a real contract (py-evm) and real stores."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from ledger.types import RequestStatus, RoundId
from node.audit.auditor import audit_run
from node.console.eventlog import EventLog
from node.protocol.context import LoopState
from node.protocol.history import base_of_round, read_history
from node.protocol.retrieval import Fetcher
from node.protocol.state import NodeState
from node.unlearning.replay import (
    ArtifactError,
    ArtifactUnavailable,
    RunSetup,
    fetch_checked,
    fetch_checked_file,
    load_state,
    merge_round,
    named_included_set,
    replay_unlearning,
    update_inputs,
)
from node.unlearning.requests import FetcherReader, process_pending, request_rows
from p2p.storage import LocalStore
from tests.fixtures.chain import ChainEnv
from tests.fixtures.fedrun import ToyRun, toy_setup
from training.merge import ModelState, state_hash


@pytest.fixture
def toy(pyevm_chain: ChainEnv, tmp_path: Path) -> ToyRun:
    run = ToyRun([pyevm_chain.client(i) for i in range(4)], LocalStore(tmp_path / "store"))
    run.create(pyevm_chain.mine_to)
    run.round(0, [1, 2, 3], record=False)
    run.round(1, [1, 2, 3])
    return run


@dataclass
class _Spec:
    setup: RunSetup

    def merge_spec(self) -> Any:
        return self.setup.merge_spec


@dataclass
class _Runtime:
    setup: RunSetup

    def initial_state(self) -> ModelState:
        return self.setup.initial


@dataclass
class ToyNode:
    """A node context as the round loop builds it, with the toy run's setup instead of a loaded model."""

    run_id: int
    client: Any
    address: str
    fetcher: Fetcher
    state: NodeState
    log: EventLog
    spec: _Spec
    runtime: _Runtime
    loop: LoopState = field(default_factory=LoopState)
    kept: dict[str, ModelState] = field(default_factory=dict)

    @property
    def run_key(self) -> str:
        return str(self.run_id)

    @property
    def store(self) -> Any:
        return self.fetcher.store

    def max_state_bytes(self) -> int:
        return 1 << 20

    def remember(self, sha: str, state: ModelState) -> None:
        self.kept[sha] = state


def _node(toy: ToyRun, i: int, tmp_path: Path) -> ToyNode:
    home = tmp_path / f"node{i}"
    state = NodeState(home / "state.db")
    setup = toy.setup()
    return ToyNode(
        toy.run,
        toy.clients[i],
        toy.clients[i].account_address,
        Fetcher(toy.store, state),
        state,
        EventLog(home / "node.jsonl", console="none"),
        _Spec(setup),
        _Runtime(setup),
    )


def _expected_without(toy: ToyRun, subject: str, first: int, last: int) -> str:
    """The replay computed by hand: finalised M(first-1), then each round's named set minus the subject."""
    setup = toy.setup()
    history = read_history(toy.clients[0], toy.run)
    state = load_state(toy.store, base_of_round(history, first), setup)
    for r in range(first, last + 1):
        keep = [s for s in named_included_set(history.round(r)) if to_checksum_address(s.member) != subject]
        eligible = history.round(r).info.eligible
        state, _, _ = merge_round(state, update_inputs(toy.store, keep), setup, r, eligible)
    return state_hash(state)


def test_replay_leaves_the_subject_out_from_its_first_round(toy: ToyRun) -> None:
    subject = toy.clients[3].account_address
    request = toy.clients[0].request_unlearning(toy.run, subject, RoundId(1), b"\x01" * 32)

    result = replay_unlearning(read_history(toy.clients[0], toy.run), request, toy.store, toy.setup())

    assert result.base.kind == "round" and result.base.source == 0
    assert [s.round for s in result.steps] == [1]
    assert all(s.excluded == (subject,) and subject not in s.included for s in result.steps)
    assert result.sha256 == _expected_without(toy, subject, 1, 1)
    assert result.sha256 != toy.merged[1]


def test_replay_from_round_zero_starts_from_the_initial_state(toy: ToyRun) -> None:
    subject = toy.clients[2].account_address
    request = toy.clients[2].request_unlearning(toy.run, subject, RoundId(0), b"\x02" * 32)

    result = replay_unlearning(read_history(toy.clients[0], toy.run), request, toy.store, toy.setup())

    assert result.base.kind == "initial"
    assert [s.round for s in result.steps] == [0, 1]
    assert result.sha256 == _expected_without(toy, subject, 0, 1)


def test_nodes_fulfil_a_request_then_rounds_start_from_the_unlearned_model(
    toy: ToyRun, tmp_path: Path
) -> None:
    subject = toy.clients[3].account_address
    request = toy.clients[0].request_unlearning(toy.run, subject, RoundId(1), b"\x03" * 32)
    nodes = [_node(toy, i, tmp_path) for i in (1, 2)]

    for node in nodes:
        node.loop.current_round = 2
        process_pending(node)
        process_pending(node)  # a second call (e.g. after a restart) must not vote again

    req = toy.clients[0].unlearning_request(request)
    assert req.status == RequestStatus.FULFILLED
    assert req.result_sha256.hex() == _expected_without(toy, subject, 1, 1)
    assert all(n.loop.excluded == {subject} for n in nodes)
    subject_cids = {
        s.cid
        for rec in read_history(toy.clients[0], toy.run).rounds
        for s in rec.submissions
        if to_checksum_address(s.member) == subject
    }
    assert subject_cids and not subject_cids & set(toy.store.list())
    events = [json.loads(line)["event"] for line in nodes[1].log.path.read_text().splitlines()]
    assert events.count("unlearning.voted") == 1 and "unlearning.fulfilled" in events

    toy.round(2, [1, 2], record=False)  # open while the request was fulfilled: superseded
    for node in nodes:
        node.loop.current_round = 3
        process_pending(node)
    adoption = nodes[0].state.latest_adoption(toy.run, before=3)
    assert adoption is not None and adoption.sha == req.result_sha256.hex()
    toy.round(3, [1, 2], record=False)
    history = read_history(toy.clients[0], toy.run)
    assert base_of_round(history, 2).kind == "round" and base_of_round(history, 3).kind == "unlearning"
    report = audit_run(toy.clients[0], toy.run, toy.store, toy_setup)
    assert report.ok, [m.describe() for m in report.mismatches]
    assert report.requests[0].recomputed_sha256 == req.result_sha256.hex()
    assert report.rounds[3].base == f"unlearning request {request}"
    rows = request_rows(toy.clients[0], toy.run)
    assert [(r["request"], r["status"], r["subject"]) for r in rows] == [(request, "fulfilled", subject)]
    for node in nodes:
        node.log.close()
        node.state.close()


def test_audit_names_a_request_fulfilled_with_a_model_that_is_not_the_replay(toy: ToyRun) -> None:
    subject = toy.clients[3].account_address
    request = toy.clients[0].request_unlearning(toy.run, subject, RoundId(1), b"\x04" * 32)
    history = read_history(toy.clients[0], toy.run)
    stale = load_state(toy.store, base_of_round(history, 2), toy.setup())  # M(1), still with the subject
    from training.merge import encode_state

    cid = str(toy.store.put(encode_state(stale)))
    for i in (1, 2):
        toy.clients[i].vote_unlearning(request, bytes.fromhex(state_hash(stale)), cid)

    report = audit_run(toy.clients[0], toy.run, toy.store, toy_setup)

    assert [(m.what, m.request) for m in report.mismatches] == [
        ("unlearning-sha256", request),
        ("unlearning-cid", request),
    ]


def test_updates_streamed_to_files_merge_to_the_hash_of_their_bytes(toy: ToyRun, tmp_path: Path) -> None:
    setup = toy.setup()
    history = read_history(toy.clients[0], toy.run)
    rec = history.round(1)
    named = named_included_set(rec)
    start = load_state(toy.store, base_of_round(history, 1), setup)
    from_bytes, _, _ = merge_round(start, update_inputs(toy.store, named), setup, 1, rec.info.eligible)
    with setup.files() as folder:
        inputs = update_inputs(toy.store, named, files=folder)
        assert all(isinstance(i.data, Path) and i.data.parent == folder for i in inputs)
        from_files, _, _ = merge_round(start, inputs, setup, 1, rec.info.eligible)
    assert not folder.exists()
    assert state_hash(from_files) == state_hash(from_bytes) == toy.merged[1]


def test_fetch_checked_file_removes_a_copy_that_does_not_match_the_chain(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    data = b"an update's bytes" * 100
    cid = str(store.put(data))
    dest = tmp_path / "copy"

    assert fetch_checked_file(store, cid, hashlib.sha256(data).digest(), dest).read_bytes() == data
    with pytest.raises(ArtifactError, match="the chain records"):
        fetch_checked_file(store, cid, b"\x00" * 32, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()
    missing = str(LocalStore(tmp_path / "other").put(b"not in the first store"))
    with pytest.raises(ArtifactUnavailable):
        fetch_checked_file(store, missing, None, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_a_node_reports_an_artifact_no_source_has_as_unavailable(toy: ToyRun, tmp_path: Path) -> None:
    node = _node(toy, 0, tmp_path)
    missing = str(LocalStore(tmp_path / "other").put(b"never published"))
    reader = FetcherReader(node)
    with pytest.raises(ArtifactUnavailable):
        fetch_checked(reader, missing, b"\x00" * 32)
    with pytest.raises(ArtifactUnavailable):
        fetch_checked_file(reader, missing, None, tmp_path / "missing")
    present = str(toy.store.put(b"kept by the node"))
    got = fetch_checked_file(reader, present, hashlib.sha256(b"kept by the node").digest(), tmp_path / "c")
    assert got.read_bytes() == b"kept by the node"
    node.log.close()
