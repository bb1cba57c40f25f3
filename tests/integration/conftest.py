"""Integration fixtures of every layer: the pre-imported launcher that forks ``fedchain`` commands.

``launcher`` (session) is a :class:`node.devnet.launcher.Launcher`: one process that imports torch,
transformers, web3, libp2p and the fedchain packages once (about 15-20 s) and forks each ``fedchain`` command
from there, instead of a fresh interpreter paying those imports per node and per CLI call. It starts when a
module first asks for it (tests/integration/node/conftest.py wires it into the node modules).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from node.devnet.launcher import Launcher
from node.devnet.services import ServiceError


@pytest.fixture(scope="session")
def launcher(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """A running launcher with the tests' offline hub settings; its log is printed if it fails."""
    forks = Launcher(
        tmp_path_factory.mktemp("launcher"), env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    )
    try:  # its imports overlap the session's other start-up (anvil, IPFS); the first fork waits for them
        forks.start(timeout=300.0, wait=False)
    except ServiceError as exc:
        forks.stop()
        pytest.fail(f"the launcher did not start: {exc}", pytrace=False)
    try:
        yield forks
    finally:
        code = forks.stop()
        if request.session.testsfailed or code != 0:
            sys.stderr.write(f"\nlauncher exited with code {code}\n{forks.service.tail(40)}\n")
