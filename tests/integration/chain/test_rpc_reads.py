"""The lean read path (``ledger.rpc``) answers every ``Runs`` view exactly as web3 does, on a real anvil."""

from __future__ import annotations

import hashlib

import pytest

from ledger.chain import connect
from ledger.client import RunsClient
from ledger.deploy import deploy
from ledger.reverts import UnknownRequestError, UnknownRunError
from ledger.tx import call_view
from ledger.types import RoundId
from tests.fixtures.chain import AnvilChain, ChainEnv

pytestmark = pytest.mark.integration


def test_every_view_matches_web3(anvil: AnvilChain) -> None:
    w3 = connect(anvil.rpc_url)
    env = ChainEnv("anvil", w3, anvil.accounts, deploy(w3, anvil.accounts[0]).runs)
    run = env.new_run(members=3)
    digest = hashlib.sha256(b"update").digest()
    env.client(1).submit_update(run, RoundId(0), digest, "bafyupdate", 10)
    env.client(0).request_unlearning(run, env.address(2), RoundId(0), hashlib.sha256(b"why").digest())
    client: RunsClient = env.client(1)
    assert client._reads is not None  # an HTTP endpoint takes the lean path

    calls: list[tuple[str, tuple[object, ...]]] = [
        ("runCount", ()),
        ("requestCount", ()),
        ("runInfo", (run,)),
        ("roundInfo", (run, 0)),
        ("memberInfo", (run, env.address(2))),
        ("memberInfo", (run, env.address(9))),
        ("members", (run,)),
        ("isAllowed", (run, env.address(5))),
        ("votesFor", (run, 0, digest, "bafymerged", digest)),
        ("quorumOf", (7, 6_666)),
        ("unlearningRequest", (1,)),
    ]
    for name, args in calls:
        lean = client._view(name, *args)
        via_web3 = call_view(client.contract.functions[name](*args), client.retry)
        assert lean == via_web3, name
        assert type(lean) is type(via_web3), name
    assert client.block_number() == w3.eth.block_number

    found = 0
    for event in ("MemberJoined", "RoundOpened", "UpdateSubmitted", "UnlearningRequested", "RunCreated"):
        filters = {"runId": run}
        lean_logs = client.logs(event, filters, 0)
        web3_logs = client.contract.events[event].get_logs(argument_filters=filters, from_block=0)
        assert [(e["blockNumber"], e["args"]) for e in lean_logs] == [
            (e["blockNumber"], {k: bytes(v) if isinstance(v, bytes) else v for k, v in e["args"].items()})
            for e in web3_logs
        ], event
        found += len(lean_logs)
    assert found >= 3 + 1 + 1 + 1 + 1  # three joins, round 0 opened, one update, one request, the run
    assert client.logs("UpdateSubmitted", {"runId": run, "round": 1}, 0) == []


def test_reverts_keep_their_types(anvil: AnvilChain) -> None:
    w3 = connect(anvil.rpc_url)
    client = RunsClient(w3, deploy(w3, anvil.accounts[0]).runs)
    with pytest.raises(UnknownRunError):
        client.run_info(999)
    with pytest.raises(UnknownRequestError):
        client.unlearning_request(999)
