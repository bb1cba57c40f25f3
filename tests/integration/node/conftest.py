"""The node modules' devnet: one anvil (1 s blocks), the session's IPFS daemon, a registry per module.

Starting anvil and js-ipfs took about 18 s per module. Every module creates its own run, and runs on one
chain are independent, so the modules share one anvil for the session (``node_anvil``) and the session's
IPFS daemon (``ipfs_daemon``, tests/fixtures/storage.py); ``devnet`` deploys a fresh ``Runs`` registry for
each module, so run ids, members, events and audits stay the module's own, as with a devnet of its own.
Modules run one after another, so two clusters never sign with the same dev keys at once (the ledger reads
each account's nonce from the chain). A module that needs a chain of its own (test_reorg rewrites blocks,
test_wan runs in network namespaces) defines its own ``devnet`` fixture, which takes precedence.

Every module but those of :data:`FRESH_PROCESS_MODULES` forks its ``fedchain`` commands (node processes and
CLI calls) from the session's ``launcher`` (tests/integration/conftest.py), so none pays the imports of torch,
transformers, web3 and libp2p again. test_node_basic starts fresh interpreters, so that a node's real
start-up (it joins before its heavy imports, a signal during them) stays tested; members in network
namespaces (test_wan) start as fresh processes under their command prefix whatever the module.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator

import pytest

from node.devnet.anvil import AnvilConfig
from node.devnet.cluster import use_launcher
from node.devnet.harness import Devnet, DevnetState
from node.devnet.ipfs import IpfsDaemon
from node.devnet.services import ServiceError

NODE_ACCOUNTS = 20
"""Funded dev accounts of the shared chain: the largest cluster here (test_scale, 16 members) needs 17."""
FRESH_PROCESS_MODULES = ("test_node_basic",)
"""Modules whose ``fedchain`` commands are fresh interpreters rather than forks of the launcher."""
FRESH_PROCESSES_ENV = "FEDCHAIN_FRESH_PROCESSES"
"""Set to ``1``, every module starts fresh interpreters (to time them, or to rule the launcher out)."""


@pytest.fixture(scope="module", autouse=True)
def forked_commands(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fork the module's ``fedchain`` commands from the session's launcher (fresh ones for some modules)."""
    fresh = request.path.stem in FRESH_PROCESS_MODULES or os.environ.get(FRESH_PROCESSES_ENV) == "1"
    previous = use_launcher(None if fresh else request.getfixturevalue("launcher"))
    try:
        yield
    finally:
        use_launcher(previous)


@pytest.fixture(scope="session")
def node_anvil(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Devnet, DevnetState]]:
    """anvil with 1 s blocks and :data:`NODE_ACCOUNTS` funded accounts, shared by the node modules."""
    devnet = Devnet(
        tmp_path_factory.mktemp("node-anvil"), AnvilConfig(block_time=1.0, accounts=NODE_ACCOUNTS), ipfs=False
    )
    try:
        state = devnet.start(timeout=60.0)
    except ServiceError as exc:
        pytest.fail(f"anvil did not start: {exc}", pytrace=False)
    try:
        yield devnet, state
    finally:
        code = devnet.anvil.stop()
        if request.session.testsfailed or code not in (0, None, -2, 130):
            sys.stderr.write(f"\nnode anvil exited with code {code}\n{devnet.anvil.process.tail(60)}\n")


@pytest.fixture(scope="module")
def devnet(node_anvil: tuple[Devnet, DevnetState], ipfs_daemon_handle: IpfsDaemon) -> DevnetState:
    """The shared chain with a ``Runs`` registry deployed for this module, and the session's IPFS daemon."""
    from ledger.chain import connect, dev_accounts
    from ledger.deploy import deploy

    _, state = node_anvil
    deployment = deploy(connect(state.rpc_url), dev_accounts("anvil", 1)[0])
    return dataclasses.replace(
        state,
        runs_address=deployment.runs,
        deploy_block=deployment.block_number,
        ipfs_pid=ipfs_daemon_handle.pid,
        ipfs_api=ipfs_daemon_handle.api_addr,
        ipfs_log_path=str(ipfs_daemon_handle.log_path),
    )
