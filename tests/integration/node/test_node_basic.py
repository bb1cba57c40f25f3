"""A first real check of the node: anvil (1 s blocks) + an IPFS daemon, three ``fedchain node`` processes.

Each member has its own embedded store, so updates travel between processes over the libp2p blob stream
(the devnet's IPFS daemon is the last fallback). The run (tiny model, two rounds) must finalise on chain
with every node ending on the same merged-model hash; ``fedchain status --json`` and ``fedchain export``
then show and export it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.devnet.cluster import LocalCluster, fedchain

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = ["synthetic:arithmetic:40", "synthetic:reverse:40", "synthetic:capitals:40"]
OTHERS = "synthetic:antonyms:12"
"""Node 0's extra evaluation source (``--eval-data``): a distribution no member trains on."""


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def _has_mapped(pid: int, library: str) -> bool:
    """Whether process ``pid`` has a file whose name contains ``library`` in its memory map (Linux)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:  # the process is gone
        return False


@pytest.fixture(scope="module")
def finished(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, int]]:
    cluster = LocalCluster(tmp_path_factory.mktemp("nodes"), devnet, len(DATA))
    cluster.init()
    run_id = cluster.create_run(SPEC)
    try:
        cluster.start(run_id, DATA, extra={0: ["--eval-data", OTHERS]})
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)),
            300,
            "every node's run.done",
        )
        yield cluster, run_id
    finally:
        cluster.stop()
        for member in cluster.members:
            errors = [e for e in cluster.events(member.index, "error") if e.get("fatal")]
            if errors:
                print(f"node{member.index} fatal errors: {errors}")


@pytest.fixture(scope="module")
def starting(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalCluster, int]:
    """Two members and a run of their own that no node process has started yet (one member per signal)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("starting"), devnet, 2)
    cluster.init()
    return cluster, cluster.create_run(SPEC)


@pytest.mark.parametrize(
    ("sig", "member"), [(signal.SIGINT, 0), (signal.SIGTERM, 1)], ids=["SIGINT", "SIGTERM"]
)
def test_a_node_stopped_while_starting_exits_before_loading_the_model(
    starting: tuple[LocalCluster, int], sig: signal.Signals, member: int
) -> None:
    # Runs before the module's cluster starts (file order); its members reuse dev keys 1 and 2 in a run of
    # their own, each member's node started once, by the test of one signal.
    cluster, run_id = starting
    proc = cluster.process(member, run_id, DATA[member])
    proc.start()
    try:
        cluster.wait_until(lambda: bool(cluster.events(member, "node.started")), 120, "node.started")
        assert proc.pid is not None
        pid = proc.pid
        # past the spec fetch, into importing torch and loading the model (seconds more): nothing before the
        # spec fetch imports torch, so its shared library in the process's memory map marks that stage
        _wait(lambda: not proc.is_running() or _has_mapped(pid, "libtorch"), 120, "the node importing torch")
        assert proc.is_running(), proc.tail(20)
        os.kill(pid, sig)
        _wait(lambda: not proc.is_running(), 15, f"the node to exit after {sig.name}:\n{proc.tail(20)}")
    finally:
        code = proc.stop(timeout=5.0)
    assert code == 130
    names = [e["event"] for e in cluster.events(member)]
    assert "node.ready" not in names  # it stopped starting instead of finishing the start first
    assert names[-2:] == ["node.interrupted", "node.stopped"]


def test_rounds_finalise_on_chain_with_one_merged_hash_on_every_node(
    finished: tuple[LocalCluster, int],
) -> None:
    cluster, run_id = finished
    home = str(cluster.members[0].home)

    done = fedchain("status", "--run", str(run_id), "--home", home, "--json")

    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    finalized = [r for r in status["rounds"] if r["status"] == "finalized"]
    assert len(finalized) == 2
    assert (status["status"], status["planned_rounds"]) == ("completed", 2)  # complete on chain
    completed = [e for i in range(cluster.size) for e in cluster.events(i, "run.completed")]
    assert [(e["rounds"], e["last_round"]) for e in completed] == [(2, finalized[-1]["round"])] * cluster.size
    for entry in finalized:
        finals = {e["sha"] for i in range(cluster.size) for e in cluster.events(i, "round.finalized")
                  if e["round"] == entry["round"]}  # fmt: skip
        assert finals == {entry["merged_sha256"]}
        voted = {e["sha"] for i in range(cluster.size) for e in cluster.events(i, "round.voted")
                 if e["round"] == entry["round"]}  # fmt: skip
        assert voted == {entry["merged_sha256"]}
        assert len(entry["submissions"]) >= 2
    assert {m["address"] for m in status["members"]} == {m.address for m in cluster.members}
    assert sum(m["accepted_contributions"] for m in status["members"]) >= 4


def test_the_merged_model_is_scored_on_the_eval_sources_by_loss_and_token_f1(
    finished: tuple[LocalCluster, int],
) -> None:
    cluster, _ = finished

    ready = [e for i in range(cluster.size) for e in cluster.events(i, "node.ready")]
    scored = [[e for e in cluster.events(i, "round.scored") if "merged_loss" in e] for i in range(2)]

    assert [e["eval_others"] for e in ready] == [12, 0, 0]
    assert all(scored)
    with_others, without = scored[0][-1], scored[1][-1]
    assert math.isfinite(with_others["merged_others_loss"]) and with_others["merged_others_loss"] > 0
    assert with_others["merged_others_loss"] != with_others["merged_loss"]  # other data, other score
    for event in (with_others, without):
        assert 0.0 <= event["merged_f1"] <= 1.0
    assert 0.0 <= with_others["merged_others_f1"] <= 1.0
    assert without["merged_others_loss"] is None and without["merged_others_f1"] is None


def test_updates_travel_between_nodes_over_the_blob_stream(finished: tuple[LocalCluster, int]) -> None:
    cluster, _ = finished

    sources: dict[str, int] = {}
    for i in range(cluster.size):
        for event in cluster.events(i, "round.fetched"):
            for source, count in event["sources"].items():
                sources[source] = sources.get(source, 0) + count

    assert sources.get("peers", 0) > 0


def test_export_writes_a_peft_folder_of_the_finalised_model(
    finished: tuple[LocalCluster, int], tmp_path: Path
) -> None:
    cluster, run_id = finished
    out = tmp_path / "adapter"

    done = fedchain(
        "export", "--run", str(run_id), "--out", str(out), "--home", str(cluster.members[1].home), "--json"
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # the run's last finalised round (round 0 fails when the nodes come up after its window on a busy machine)
    assert report["round"] == max(e["round"] for e in cluster.events(1, "round.finalized"))
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    from peft import PeftModel

    from training.models import load_model

    base, _ = load_model("tiny-llama")
    model = PeftModel.from_pretrained(base, str(out))
    assert any("lora_B" in name for name, _ in model.named_parameters())
