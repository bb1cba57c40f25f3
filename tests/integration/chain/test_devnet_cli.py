"""``fedchain devnet up/down`` and the chain-only ``fedchain demo``, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.chain import connect
from ledger.client import RunsClient
from node.services import pid_alive
from p2p.storage.ipfs import IpfsStore

pytestmark = pytest.mark.integration
FEDCHAIN = [sys.executable, "-c", "from node.cli import main; main()"]


def fedchain(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDCHAIN, *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_devnet_up_deploys_and_down_stops(tmp_path: Path) -> None:
    folder = str(tmp_path / "devnet")
    up = fedchain("devnet", "up", "--dir", folder, "--json")
    assert up.returncode == 0, up.stderr
    state = json.loads(up.stdout)
    try:
        assert state["rpc_url"].startswith("http://127.0.0.1:")
        assert state["chain_id"] == 31337 and len(state["accounts"]) == 10
        w3 = connect(state["rpc_url"])
        assert RunsClient(w3, state["runs_address"]).run_count() == 0  # the registry answers
        ipfs = IpfsStore(state["ipfs_api"])  # the daemon answers and stores content
        cid = ipfs.put(b"devnet")
        assert ipfs.get(cid) == b"devnet"
        again = fedchain("devnet", "up", "--dir", folder)
        assert again.returncode == 1 and "already running" in again.stderr
        status = fedchain("devnet", "status", "--dir", folder, "--json")
        assert json.loads(status.stdout)["anvil_pid"] == state["anvil_pid"]
    finally:
        down = fedchain("devnet", "down", "--dir", folder, "--json")
    assert down.returncode == 0 and json.loads(down.stdout) == {
        "stopped": True,
        "anvil_pid": state["anvil_pid"],
        "ipfs_pid": state["ipfs_pid"],
    }
    assert not pid_alive(state["anvil_pid"])
    assert not pid_alive(state["ipfs_pid"])
    assert fedchain("devnet", "status", "--dir", folder).returncode == 1


def test_demo_finalises_every_round_on_chain() -> None:
    result = fedchain("demo", "--nodes", "3", "--rounds", "2", "--json", timeout=180)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "chain-only preview" in summary["note"]
    assert [r["status"] for r in summary["rounds"]] == ["finalized", "finalized"]
    assert all(len(r["contributors"]) == 3 and r["votes"] >= r["quorum"] for r in summary["rounds"])
    assert [m["accepted_contributions"] for m in summary["members"]] == [2, 2, 2]


def test_demo_rejects_bad_options() -> None:
    result = fedchain("demo", "--nodes", "0")

    assert result.returncode == 2 and "`--nodes` must be in [1, 9], got 0" in result.stderr
