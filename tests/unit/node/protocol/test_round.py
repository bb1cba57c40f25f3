"""Tests for node.protocol.round: two members drive real rounds on in-process py-evm with the tiny model.

The members share one content store (like nodes sharing an IPFS daemon) and take turns calling
:func:`node.protocol.round.step`; blocks are mined between steps. A member whose process "crashes" (its
context is thrown away) resumes from its SQLite state and the chain without training, submitting or voting
twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.config import NodeConfig
from node.console.eventlog import EventLog, read_events
from node.home import NodeHome
from node.protocol.context import NodeContext, Step
from node.protocol.model import LocalData, ModelRuntime
from node.protocol.retrieval import Fetcher
from node.protocol.round import step
from node.protocol.state import NodeState
from node.runspec import ChainParams, RunSpec
from training.config import AdapterConfig, ModelConfig, TrainConfig
from training.data import Example

_OPEN: list[NodeContext] = []


@pytest.fixture(autouse=True)
def _close_contexts() -> Any:
    yield
    while _OPEN:
        ctx = _OPEN.pop()
        ctx.state.close()
        ctx.log.close()


@pytest.fixture
def chain() -> Any:
    from ledger.chain import connect, dev_accounts
    from ledger.deploy import deploy

    w3 = connect("py-evm")
    accounts = dev_accounts("py-evm", 3)
    return w3, accounts, deploy(w3, accounts[0]).runs


def _spec(model_dir: Path, **changes: Any) -> RunSpec:
    return RunSpec(
        **changes,
        rounds=2,
        seed=3,
        max_norm=1000.0,
        chain=ChainParams(submit_blocks=30, vote_blocks=30, join_blocks=8, quorum_bps=10_000),
        model=ModelConfig(name_or_path=str(model_dir)),
        adapter=AdapterConfig(r=2),
        train=TrainConfig(local_steps=2, batch_size=2, max_len=32, lr=0.01),
    )


def _examples(tag: str) -> list[Example]:
    return [Example(prompt=f"{tag} question {i}", response=f"{tag} answer {i}") for i in range(6)]


def _context(
    home: Path, w3: Any, account: Any, registry: str, spec: RunSpec, run_id: int, store: Any, ipfs: Any = None
) -> NodeContext:
    from ledger.client import RunsClient

    state = NodeState(home / "state.db")
    ctx = NodeContext(
        run_id=run_id,
        spec=spec,
        client=RunsClient(w3, registry, account),
        address=str(account.address),
        fetcher=Fetcher(store, state, ipfs=ipfs),
        p2p=None,
        runtime=ModelRuntime(spec, threads=1),
        data=LocalData("test", _examples(home.name), _examples(home.name)[:2]),
        state=state,
        log=EventLog(home / "node.jsonl", console="none"),
        home=NodeHome(home),
        config=NodeConfig(),
    )
    _OPEN.append(ctx)
    return ctx


def _drive(w3: Any, ctxs: list[NodeContext], until: Callable[[], bool], steps: int = 200) -> None:
    from ledger.chain import mine

    for _ in range(steps):
        if until():
            return
        for ctx in ctxs:
            step(ctx)
        mine(w3, 1)
    raise AssertionError("rounds did not progress")


def _setup(
    tmp_path: Path,
    chain: Any,
    tiny_model_dir: Path,
    quorum_bps: int = 10_000,
    rounds: int = 0,
    **changes: Any,
) -> tuple[Any, list[Any], str, RunSpec, int, Any]:
    from ledger.client import RunsClient
    from ledger.types import RunConfig
    from p2p.storage import LocalStore

    w3, accounts, registry = chain
    spec = _spec(tiny_model_dir, **changes)
    store = LocalStore(tmp_path / "shared-store")
    cid = store.put(spec.canonical_bytes())
    creator = RunsClient(w3, registry, accounts[0])
    run_id = creator.create_run(
        RunConfig(
            spec_sha256=spec.sha256(),
            spec_cid=cid,
            quorum_bps=quorum_bps,
            submit_blocks=30,
            vote_blocks=30,
            rounds=rounds,  # 0: open-ended, the node stops after the spec's rounds on its own
        ),
        join_blocks=spec.chain.join_blocks,
    )
    for account in accounts[1:]:
        RunsClient(w3, registry, account).join(run_id)
    return w3, accounts, registry, spec, int(run_id), store


def test_two_members_finalise_every_round_with_the_same_model(
    tmp_path: Path, chain: Any, tiny_model_dir: Path
) -> None:
    w3, accounts, registry, spec, run_id, store = _setup(tmp_path, chain, tiny_model_dir, rounds=2)
    ctxs = [
        _context(tmp_path / f"node{i}", w3, accounts[i + 1], registry, spec, run_id, store) for i in range(2)
    ]

    _drive(w3, ctxs, lambda: all(step(c) is Step.DONE for c in ctxs))

    from node.protocol.runner import _loop

    info = ctxs[0].client.run_info(run_id)
    assert (info.completed, info.current_round, info.finalized_rounds) == (True, 1, 2)  # complete on chain
    assert _loop(ctxs[0], step, lambda c: None) == 0  # a completed run ends the loop cleanly (exit 0)
    for c in ctxs:
        done = [e for e in read_events(c.home.log_path) if e["event"] == "run.completed"]
        assert [(e["rounds"], e["last_round"]) for e in done] == [(2, 1)]  # logged once

    client = ctxs[0].client
    for rnd in range(2):
        result = client.round_result(run_id, rnd)
        assert result is not None and result.votes == 2
        assert {c.state.round(run_id, rnd).final_sha for c in ctxs} == {result.merged_sha256.hex()}
        assert all(c.state.round(run_id, rnd).merged_sha == result.merged_sha256.hex() for c in ctxs)
    assert all(client.member_info(run_id, a.address).accepted_contributions == 2 for a in accounts[1:])
    from node.console.status import run_status

    report = run_status(client, run_id)
    assert (report["status"], report["planned_rounds"], report["finalized_rounds"]) == ("completed", 2, 2)
    for entry in report["rounds"][:2]:
        assert entry["merged_sha256"] == client.round_result(run_id, entry["round"]).merged_sha256.hex()
        assert {s["member"] for s in entry["submissions"]} == {a.address for a in accounts[1:]}
    merged_1 = ctxs[0].state.round(run_id, 1)
    assert ctxs[1].state.round(run_id, 1).base_sha == ctxs[0].state.round(run_id, 0).final_sha
    assert merged_1.local_loss is not None and merged_1.merged_loss is not None


def test_a_member_restarted_mid_round_never_trains_submits_or_votes_twice(
    tmp_path: Path, chain: Any, tiny_model_dir: Path
) -> None:
    from ledger.chain import mine

    w3, accounts, registry, spec, run_id, store = _setup(tmp_path, chain, tiny_model_dir)
    a = _context(tmp_path / "a", w3, accounts[1], registry, spec, run_id, store)
    b = _context(tmp_path / "b", w3, accounts[2], registry, spec, run_id, store)
    client = a.client

    def a_submitted() -> bool:
        return a.state.round(run_id, 0).submit_tx is not None

    for _ in range(50):  # only member a acts until it has submitted round 0
        if a_submitted():
            break
        step(a)
        mine(w3, 1)
    assert a_submitted()
    _OPEN.remove(a)
    a.state.close()
    a.log.close()
    restarted = _context(tmp_path / "a", w3, accounts[1], registry, spec, run_id, store)

    _drive(w3, [restarted, b], lambda: all(step(c) is Step.DONE for c in (restarted, b)))

    events = read_events(tmp_path / "a" / "node.jsonl")
    trained = [e["round"] for e in events if e["event"] == "round.trained"]
    submitted = [e["round"] for e in events if e["event"] == "round.submitted"]
    voted = [e["round"] for e in events if e["event"] == "round.voted"]
    assert trained == [0, 1] and submitted == [0, 1] and voted == [0, 1]
    assert client.member_info(run_id, accounts[1].address).submitted_rounds == 2
    assert client.round_result(run_id, 1) is not None


def test_a_set_the_aggregator_refuses_is_not_voted_and_the_round_is_closed_as_failed(
    tmp_path: Path, chain: Any, tiny_model_dir: Path
) -> None:
    from ledger.types import RoundStatus

    w3, accounts, registry, spec, run_id, store = _setup(
        tmp_path, chain, tiny_model_dir, aggregator="krum", aggregator_params={"f": 1}
    )
    ctxs = [
        _context(tmp_path / f"node{i}", w3, accounts[i + 1], registry, spec, run_id, store) for i in range(2)
    ]
    client = ctxs[0].client

    _drive(w3, ctxs, lambda: client.run_info(run_id).current_round >= 1)

    assert client.round_info(run_id, 0).status == RoundStatus.FAILED
    assert client.votes(run_id, 0) == []
    for i in range(2):
        events = read_events(tmp_path / f"node{i}" / "node.jsonl")
        failures = [e for e in events if e["event"] == "round.merge_failed"]
        assert len(failures) == 1 and "krum" in failures[0]["why"]


def test_a_member_waiting_for_the_vote_phase_prefetches_the_updates_committed_so_far(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from ledger.chain import connect, dev_accounts, mine
    from ledger.deploy import deploy
    from p2p.storage import LocalStore

    w3 = connect("py-evm")
    accounts = dev_accounts("py-evm", 4)
    w3, accounts, registry, spec, run_id, shared = _setup(
        tmp_path, (w3, accounts, deploy(w3, accounts[0]).runs), tiny_model_dir
    )
    ctxs = []
    for i in range(3):  # own stores; the shared one stands in for IPFS, the only way between members here
        own = LocalStore(tmp_path / f"own{i}")
        ctxs.append(_context(tmp_path / f"node{i}", w3, accounts[i + 1], registry, spec, run_id, own, shared))
    first, second, last = ctxs
    _drive(w3, [first], lambda: first.state.round(run_id, 0).submit_tx is not None)
    _drive(w3, [second], lambda: second.state.round(run_id, 0).submit_tx is not None)
    theirs = second.state.round(run_id, 0).update_cid
    assert theirs is not None and not first.store.has(theirs)

    step(first)  # still the submit phase (2 of 3): fetch the second member's update now
    mine(w3, 1)
    step(first)  # nothing new: no second fetch

    assert first.store.has(theirs)
    prefetched = [e for e in read_events(first.home.log_path) if e["event"] == "round.prefetched"]
    assert [(e["round"], e["updates"], e["missing"]) for e in prefetched] == [(0, 1, 0)]
    _drive(w3, ctxs, lambda: first.state.round(run_id, 0).vote_tx is not None)
    fetched = next(e for e in read_events(first.home.log_path) if e["event"] == "round.fetched")
    assert fetched["sources"] == {"store": 2, "ipfs": 1}  # only the last member's update was fetched late

    merged = first.state.round(run_id, 0).merged_cid
    assert merged is not None and first.loop.unpublished == [(merged, "merged")]  # mirrored later, as a chore
    _drive(w3, [first], lambda: not first.loop.unpublished, steps=20)  # the next step that only waits does it
    assert shared.has(merged)


def test_a_vote_after_quorum_lands_late_and_a_merged_round_is_voted_late_when_settled(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from ledger.chain import connect, dev_accounts
    from ledger.deploy import deploy
    from ledger.types import RoundStatus
    from node.protocol.vote import _merge, vote

    w3 = connect("py-evm")
    accounts = dev_accounts("py-evm", 4)
    w3, accounts, registry, spec, run_id, store = _setup(
        tmp_path, (w3, accounts, deploy(w3, accounts[0]).runs), tiny_model_dir, quorum_bps=3_000
    )  # 1 of 3 members finalises a round
    ctxs = [
        _context(tmp_path / f"node{i}", w3, accounts[i + 1], registry, spec, run_id, store) for i in range(3)
    ]
    racing, settling = ctxs[1], ctxs[2]
    _drive(w3, ctxs, lambda: all(c.state.round(run_id, 0).submit_tx is not None for c in ctxs))
    info = settling.client.round_info(run_id, 0)
    assert _merge(settling, info) is not None  # merged, then (a crash) not voted before the quorum came
    _drive(w3, ctxs[:1], lambda: ctxs[0].client.round_info(run_id, 0).status == RoundStatus.FINALIZED)

    assert vote(racing, info) is True  # merges the same set; the contract takes its vote as late
    step(settling)  # settling round 0 sends its merged result late

    for ctx in (racing, settling):
        events = [e for e in read_events(ctx.home.log_path) if e.get("round") == 0]
        assert [(e["event"], e["agrees"]) for e in events if e["event"].startswith("round.vote")] == [
            ("round.vote_late", True)
        ]
        assert ctx.state.round(run_id, 0).vote_tx is not None
    client = racing.client
    assert len(client.votes(run_id, 0)) == 1  # the quorum's vote: late votes are not counted
    assert [(v.voter, v.agrees) for v in client.late_votes(run_id, 0)] == [
        (racing.address, True),
        (settling.address, True),
    ]
    assert client.round_info(run_id, 0).status == RoundStatus.FINALIZED


@pytest.mark.slow
def test_a_topk_run_finalises_and_each_member_keeps_its_residual_in_state_db(
    tmp_path: Path, chain: Any, tiny_model_dir: Path
) -> None:
    import torch

    from training.codec import decode

    w3, accounts, registry, spec, run_id, store = _setup(
        tmp_path, chain, tiny_model_dir, rounds=2, codec="topk", topk_fraction=0.25
    )
    ctxs = [
        _context(tmp_path / f"node{i}", w3, accounts[i + 1], registry, spec, run_id, store) for i in range(2)
    ]

    _drive(w3, ctxs, lambda: all(step(c) is Step.DONE for c in ctxs))

    numel = ctxs[0].runtime.flat_spec.numel
    for c in ctxs:
        assert ctxs[0].client.round_result(run_id, 1) is not None
        after_0, after_1 = c.state.residual(run_id, before=1), c.state.residual(run_id, before=2)
        assert after_0 is not None and after_1 is not None and len(after_1) == 4 * numel
        assert after_0 != after_1  # round 1 started from round 0's residual and left its own
        update = c.fetcher.store.get(c.state.round(run_id, 1).update_cid)
        sent = decode(update, c.runtime.flat_spec, params=spec.codec_params()).delta
        assert int((sent != 0).sum()) <= spec.codec_params().max_k(numel)
        residual = torch.frombuffer(bytearray(after_1), dtype=torch.float32)
        assert bool((residual[sent != 0] == 0).all())  # what was sent is not owed any more
