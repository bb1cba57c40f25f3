"""Client-level DP in the node's rounds (py-evm chain, tiny model, real state databases).

A member whose own budget allows exactly one update trains round 0, refuses round 1 (``privacy.refused``),
still merges and votes, and the run finalises; its spend survives a restart; status and the progress view
show each member's (epsilon, delta).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.config import NodeConfig, TrainingSection
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
from training.privacy import PrivacyConfig, epsilon_spent

pytestmark = pytest.mark.slow

PRIVACY = PrivacyConfig(clip_norm=0.05, noise_multiplier=2.0, delta=1e-5)
ONE = epsilon_spent(PRIVACY, 1)

_OPEN: list[NodeContext] = []


@pytest.fixture(autouse=True)
def _close_contexts() -> Any:
    yield
    while _OPEN:
        ctx = _OPEN.pop()
        ctx.state.close()
        ctx.log.close()


def _examples(tag: str) -> list[Example]:
    return [Example(prompt=f"{tag} question {i}", response=f"{tag} answer {i}") for i in range(6)]


def _context(
    home: Path, w3: Any, account: Any, registry: str, spec: RunSpec, run_id: int, store: Any, budget: float
) -> NodeContext:
    from ledger.client import RunsClient

    state = NodeState(home / "state.db")
    ctx = NodeContext(
        run_id=run_id,
        spec=spec,
        client=RunsClient(w3, registry, account),
        address=str(account.address),
        fetcher=Fetcher(store, state),
        p2p=None,
        runtime=ModelRuntime(spec, threads=1),
        data=LocalData("test", _examples(home.name), _examples(home.name)[:2]),
        state=state,
        log=EventLog(home / "node.jsonl", console="none"),
        home=NodeHome(home),
        config=NodeConfig(training=TrainingSection(epsilon_budget=budget)),
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


def test_a_member_out_of_budget_refuses_to_train_but_votes_and_keeps_its_spend(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from ledger.chain import connect, dev_accounts
    from ledger.client import RunsClient
    from ledger.deploy import deploy
    from ledger.types import RunConfig
    from node.console.status import run_status
    from node.console.view import NodeView
    from node.protocol.privacy import refusal, releases, spend
    from p2p.storage import LocalStore

    w3 = connect("py-evm")
    accounts = dev_accounts("py-evm", 3)
    registry = deploy(w3, accounts[0]).runs
    spec = RunSpec(
        rounds=2,
        seed=3,
        max_norm=1000.0,
        chain=ChainParams(submit_blocks=30, vote_blocks=30, join_blocks=8, quorum_bps=10_000),
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        adapter=AdapterConfig(r=2),
        train=TrainConfig(local_steps=2, batch_size=2, max_len=32, lr=0.01),
        privacy=PRIVACY,
    )
    store = LocalStore(tmp_path / "shared-store")
    cid = store.put(spec.canonical_bytes())
    creator = RunsClient(w3, registry, accounts[0])
    run_id = int(
        creator.create_run(
            RunConfig(
                spec_sha256=spec.sha256(), spec_cid=cid, quorum_bps=10_000, submit_blocks=30, vote_blocks=30
            ),
            join_blocks=spec.chain.join_blocks,
        )
    )
    for account in accounts[1:]:
        RunsClient(w3, registry, account).join(run_id)
    # a's own budget allows exactly one update; b has none (the run sets none)
    a = _context(tmp_path / "a", w3, accounts[1], registry, spec, run_id, store, ONE * 1.01)
    b = _context(tmp_path / "b", w3, accounts[2], registry, spec, run_id, store, 0.0)

    _drive(w3, [a, b], lambda: all(step(c) is Step.DONE for c in (a, b)))

    client = a.client
    for rnd in range(2):  # quorum is both members: round 1 finalised only because a voted
        result = client.round_result(run_id, rnd)
        assert result is not None and result.votes == 2
    events = read_events(tmp_path / "a" / "node.jsonl")
    assert [e["round"] for e in events if e["event"] == "round.trained"] == [0]
    assert [e["round"] for e in events if e["event"] == "round.submitted"] == [0]
    assert [e["round"] for e in events if e["event"] == "round.voted"] == [0, 1]
    refused = [e for e in events if e["event"] == "privacy.refused"]
    assert [e["round"] for e in refused] == [1]
    assert "privacy budget" in refused[0]["why"] and refused[0]["epsilon"] == pytest.approx(ONE, abs=1e-4)
    spent = [e for e in events if e["event"] == "privacy.spent"]
    assert [e["round"] for e in spent] == [0] and spent[0]["clipped"] is True  # clip 0.05 binds
    b_events = read_events(tmp_path / "b" / "node.jsonl")
    assert [e["round"] for e in b_events if e["event"] == "privacy.spent"] == [0, 1]
    assert {s.member for s in client.submissions(run_id, 1, client.round_info(run_id, 1).start_block)} == {
        accounts[2].address
    }

    # status: every member's spend from its updates on chain
    members = {m["address"]: m for m in run_status(client, run_id, privacy=PRIVACY)["members"]}
    assert members[accounts[1].address]["privacy"] == {"epsilon": round(ONE, 4), "delta": 1e-5}
    two = epsilon_spent(PRIVACY, 2)
    assert members[accounts[2].address]["privacy"]["epsilon"] == pytest.approx(two, abs=1e-4)
    # the progress view shows (epsilon, delta)
    view = NodeView()
    for record in events:
        view.apply(record)
    assert view.privacy == (pytest.approx(ONE, abs=1e-4), 1e-5)

    # restart (a new process on the same home): the spend is still there and still refuses
    _OPEN.remove(a)
    a.state.close()
    a.log.close()
    again = _context(tmp_path / "a", w3, accounts[1], registry, spec, run_id, store, ONE * 1.01)
    assert releases(again.state, run_id) == [0]
    assert spend(again) == {"epsilon": round(ONE, 4), "delta": 1e-5, "releases": 1, "budget": ONE * 1.01}
    assert refusal(again, 2) is not None


def test_status_reads_a_nodes_own_spend_from_its_state(tmp_path: Path) -> None:
    from node.cli.status import _own_privacy

    state = NodeState(tmp_path / "state.db")
    config = {"clip_norm": 0.5, "noise_multiplier": 3.0, "delta": 1e-6, "epsilon_budget": 40.0}
    state.set_privacy_ledger(4, {"config": config, "releases": [0, 1, 3], "member_budget": 20.0})
    state.close()

    own = _own_privacy(tmp_path / "state.db", 4)

    assert own is not None
    privacy, report = own
    assert privacy == PrivacyConfig(**config)
    assert report["releases"] == 3 and report["budget"] == 20.0
    assert report["epsilon"] == round(epsilon_spent(privacy, 3), 4)
    assert _own_privacy(tmp_path / "state.db", 5) is None
    assert _own_privacy(tmp_path / "missing.db", 4) is None
