"""``fedchain devnet up/down`` and ``fedchain demo``, as a user runs them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import connect
from ledger.client import RunsClient
from node.devnet.services import pid_alive
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


@pytest.mark.slow
def test_demo_trains_finalises_and_audits_a_run_of_three_nodes(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    args = ["demo", "--model", "tiny", "--nodes", "3", "--rounds", "2", "--report", str(report), "--json"]
    result = fedchain(*args, timeout=420)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [r["status"] for r in summary["rounds"]] == ["finalized", "finalized"]
    assert all(
        len(r["contributors"]) >= 2 and r["votes"] >= 2 and r["nodes_agree"] for r in summary["rounds"]
    )
    assert all(r["merged_cid"].startswith("baf") for r in summary["rounds"])
    assert [r["finalized_block"] for r in summary["rounds"]] == sorted(
        {r["finalized_block"] for r in summary["rounds"]}
    )
    assert [row["data"] for row in summary["losses"]] == [m["data"] for m in summary["members"]]
    assert len({m["data"] for m in summary["members"]}) == 3
    for row in summary["losses"]:
        assert row["merged_loss"] < row["initial_loss"] and row["local_only_loss"] < row["initial_loss"]
        check_other_distribution_scores(row, summary["members"])
    comparison = summary["comparison"]
    assert comparison["nodes"] == 3
    assert comparison["federation_wins_others"] == sum(r["federation_wins_others"] for r in summary["losses"])
    assert comparison["local_only_wins_own"] == [
        r["node"] for r in summary["losses"] if not r["federation_wins_own"]
    ]
    assert f"lower loss on {comparison['federation_wins_others']} of 3 nodes" in comparison["note"]
    assert summary["audit"] == {"ok": True, "rounds_recomputed": 2, "recomputed_equal": 2, "mismatches": []}
    assert summary["report"] == str(report.resolve())
    page = report.read_text()  # the run report, with every node's recorded losses
    assert "Audit passed" in page
    assert '<figure id="losses"><svg' in page and '<figure id="phases"><svg' in page


def check_other_distribution_scores(row: dict[str, Any], members: list[dict[str, Any]]) -> None:
    """Each model is scored on the node's own held-out split and on the other members' (loss and F1)."""
    assert row["others"] == [m["data"] for m in members if m["data"] != row["data"]]
    assert row["others_held_out"] >= 2
    for model in ("initial", "merged", "local_only"):
        assert math.isfinite(row[f"{model}_others_loss"]) and row[f"{model}_others_loss"] > 0
        assert row[f"{model}_others_loss"] != row[f"{model}_loss"]
        assert 0.0 <= row[f"{model}_f1"] <= 1.0 and 0.0 <= row[f"{model}_others_f1"] <= 1.0
    assert row["merged_others_loss"] < row["initial_others_loss"]
    assert row["federation_wins_own"] == (row["merged_loss"] < row["local_only_loss"])
    assert row["federation_wins_others"] == (row["merged_others_loss"] < row["local_only_others_loss"])


def test_demo_rejects_bad_options() -> None:
    result = fedchain("demo", "--nodes", "0")

    assert result.returncode == 2 and "`--nodes` must be >= 1, got 0" in result.stderr
    huge = fedchain("demo", "--nodes", "100000", "--model", "tiny")
    assert huge.returncode == 2 and "`--nodes` 100000 cannot run on this machine" in huge.stderr
    seed = fedchain("demo", "--seed", "-1", "--model", "tiny")
    assert seed.returncode == 2 and "`--seed` must be in [0, 2**63), got -1" in seed.stderr
