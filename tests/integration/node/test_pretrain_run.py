"""A federated pre-training run on the devnet: anvil (1 s blocks) + an IPFS daemon, four ``fedchain node``
processes pre-training the tiny Llama from scratch (every parameter, DiLoCo outer step).

Each member holds one chatterbot category as plain text. The run (``demo-pretrain-tiny.toml``, two rounds)
must finalise on chain with every node on the same merged hash and a falling held-out loss, ``fedchain
audit`` must recompute every round, and ``fedchain export`` must write a ``save_pretrained`` folder that
transformers loads with the finalised parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.devnet.cluster import LocalCluster, fedchain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "demo-pretrain-tiny.toml"
DATA = ["chatterbot:ai", "chatterbot:computers", "chatterbot:science", "chatterbot:history"]
ROUNDS = 2


@pytest.fixture(scope="module")
def finished(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, int]]:
    cluster = LocalCluster(tmp_path_factory.mktemp("nodes"), devnet, len(DATA), store="ipfs")
    cluster.init()
    run_id = cluster.create_run(SPEC)
    try:
        cluster.start(run_id, DATA)
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)),
            480,
            "every node's run.done",
        )
        yield cluster, run_id
    finally:
        cluster.stop()
        for member in cluster.members:
            errors = [e for e in cluster.events(member.index, "error") if e.get("fatal")]
            if errors:
                print(f"node{member.index} fatal errors: {errors}")


def _finalized(cluster: LocalCluster, run_id: int) -> dict[int, str]:
    done = fedchain("status", "--run", str(run_id), "--home", str(cluster.members[0].home), "--json")
    assert done.returncode == 0, done.stderr
    rounds = json.loads(done.stdout)["rounds"]
    return {r["round"]: r["merged_sha256"] for r in rounds if r["status"] == "finalized"}


def test_pretrain_rounds_finalise_with_one_merged_hash_and_the_loss_falls(
    finished: tuple[LocalCluster, int],
) -> None:
    cluster, run_id = finished

    finalized = _finalized(cluster, run_id)

    assert len(finalized) == ROUNDS
    for rnd, sha in finalized.items():
        finals = {e["sha"] for i in range(cluster.size) for e in cluster.events(i, "round.finalized")
                  if e["round"] == rnd}  # fmt: skip
        assert finals == {sha}
    ready = cluster.events(0, "node.ready")[0]
    assert ready["params"] == 210_240  # every parameter of the tiny Llama is exchanged
    for i in range(cluster.size):
        scored = {e["round"]: e for e in cluster.events(i, "round.scored")}
        merged = [e["merged_loss"] for _, e in sorted(scored.items()) if e.get("merged_loss") is not None]
        assert merged, f"node{i} scored no merged model"
        assert merged[-1] < 6.5, merged  # the random init scores ln(1000) = 6.9
        resumed = cluster.events(i, "round.inner_state_resumed")  # DiLoCo: AdamW kept from round to round
        assert resumed and all(e["trained_round"] < e["round"] and e["step"] > 0 for e in resumed), resumed


def test_the_audit_recomputes_every_pretrain_round(finished: tuple[LocalCluster, int]) -> None:
    cluster, run_id = finished
    devnet = cluster.devnet
    cmd = [
        str(Path(sys.executable).parent / "fedchain"),
        "audit",
        "--rpc-url",
        devnet.rpc_url,
        "--registry",
        devnet.runs_address,
        "--ipfs-api",
        devnet.ipfs_api,
        "--run",
        str(run_id),
        "--json",
    ]

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)

    assert proc.stdout, proc.stderr[-3000:]
    run = json.loads(proc.stdout)["runs"][0]
    assert proc.returncode == 0, run.get("mismatch_lines")
    recomputed = {r["round"]: r["recomputed_sha256"] for r in run["rounds"] if r.get("recomputed_sha256")}
    finalized = _finalized(cluster, run_id)
    assert {r: recomputed.get(r) for r in finalized} == finalized


def test_export_writes_a_save_pretrained_model(finished: tuple[LocalCluster, int], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cluster, run_id = finished
    out = tmp_path / "model"

    proc = fedchain("export", "--run", str(run_id), "--home", str(cluster.members[1].home), "--out", str(out))

    assert proc.returncode == 0, proc.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == 210_240
    assert len(AutoTokenizer.from_pretrained(out)) == 1000
