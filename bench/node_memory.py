"""Peak memory of a node process in a real pre-training round of a ~60M-parameter Llama on the devnet.

One anvil (1 s blocks) and one IPFS daemon, two ``fedchain node`` processes (``LocalCluster``, embedded
stores, fetching from each other over the blob stream), one DiLoCo round (fp32 pseudo-gradients, 1 local
AdamW step of batch 1, 32-token sequences). The model is a Llama config written to a folder (hidden 768,
MLP 2048, 8 layers, 12 heads; the tiny Llama's 1000-token tokenizer): 58.2M parameters, a 233 MB fp32
state. While the nodes run, each one's ``/proc/<pid>/status`` is read twice a second: ``VmHWM`` (the
kernel's peak RSS) at the end, and ``VmRSS`` attributed to the phase its event log was in (start,
train, submit + fetch, merge, vote + finalise + score). Figures are MB and multiples of the fp32 state
(``4 * params`` bytes).

    .venv/bin/python bench/node_memory.py            # about 6 minutes on 2 loaded cores
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from node.console.eventlog import read_events

SHAPE = {
    "hidden_size": 768,
    "intermediate_size": 2048,
    "num_hidden_layers": 8,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
}
DATA = ["chatterbot:ai", "chatterbot:computers"]
PHASES = (
    ("start (model built)", None),
    ("train", "round.training"),
    ("submit + fetch", "round.trained"),
    ("merge", "round.fetched"),
    ("vote, finalise, score", "round.merged"),
)
SPEC = """
[run]
name = "bench-node-memory"
rounds = 1
algorithm = "diloco"
aggregator = "mean"
codec = "fp32"
seed = 7

[chain]
quorum_bps = 6666
submit_blocks = 400           # voting opens early once both members submitted
vote_blocks = 300
min_updates = 1
join_blocks = 40

[model]
name_or_path = "{model}"

[train]
task = "pretrain"
lr = 0.003
local_steps = 1
batch_size = 1
max_len = 32
"""


def write_model(folder: Path) -> None:
    """Write the ~60M Llama's config and the tiny Llama's tokenizer to ``folder``."""
    from training.pretrain import load_pretrain_tokenizer, model_config

    tokenizer = load_pretrain_tokenizer("tiny-llama")
    config = model_config("tiny-llama", tokenizer, max_len=32)
    for key, value in SHAPE.items():
        setattr(config, key, value)
    config.head_dim = SHAPE["hidden_size"] // SHAPE["num_attention_heads"]
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _status(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process in kB (empty once it has exited)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


class Sampler(threading.Thread):
    """Reads every node's RSS twice a second and keeps its peak per phase, and its last ``VmHWM``."""

    def __init__(self, pids: dict[int, int], logs: dict[int, Path]) -> None:
        super().__init__(daemon=True)
        self.pids, self.logs = pids, logs
        self.peak: dict[int, dict[str, int]] = {i: {} for i in pids}
        self.hwm: dict[int, int] = {}
        self.done = threading.Event()

    def _phase(self, i: int) -> str:
        seen = {e.get("event") for e in read_events(self.logs[i])}
        phase = PHASES[0][0]
        for name, starts_at in PHASES[1:]:
            if starts_at in seen:
                phase = name
        return phase

    def run(self) -> None:
        while not self.done.is_set():
            for i, pid in self.pids.items():
                status = _status(pid)
                if not status:
                    continue
                phase = self._phase(i)
                self.peak[i][phase] = max(self.peak[i].get(phase, 0), status.get("VmRSS", 0))
                self.hwm[i] = status.get("VmHWM", self.hwm.get(i, 0))
            self.done.wait(0.5)


def run(work: Path, timeout: float) -> dict[str, Any]:
    """Run the round; return per node its peak RSS (kB), per-phase peaks and the model's parameter count."""
    from node.devnet.anvil import AnvilConfig
    from node.devnet.cluster import LocalCluster
    from node.devnet.harness import Devnet

    write_model(work / "model")
    spec = work / "spec.toml"
    spec.write_text(SPEC.format(model=work / "model"))
    with Devnet(work / "devnet", AnvilConfig(accounts=len(DATA) + 1, block_time=1)) as devnet:
        cluster = LocalCluster(work / "nodes", devnet, len(DATA), node_memory_mib=3000)
        cluster.init()
        run_id = cluster.create_run(spec)
        try:
            cluster.start(run_id, DATA)
            pids = {i: p.pid for i, p in cluster.processes.items() if p.pid is not None}
            sampler = Sampler(pids, {m.index: m.log_path for m in cluster.members})
            sampler.start()
            cluster.wait_until(
                lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)), timeout, "run.done"
            )
            sampler.done.set()
            sampler.join()
        finally:
            cluster.stop()
        params = int(cluster.events(0, "node.ready")[0]["params"])
        finalized = {e["sha"] for i in range(cluster.size) for e in cluster.events(i, "round.finalized")}
        sizes = {
            e["event"]: e.get("size")
            for e in cluster.events(0)
            if e.get("event") in ("round.trained", "round.merged")
        }
        return {
            "params": params,
            "finalized": sorted(finalized),
            "hwm": sampler.hwm,
            "phases": sampler.peak,
            "update_bytes": sizes.get("round.trained"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for run.done")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="node-memory-") as folder:
        out = run(Path(folder), args.timeout)
    state_mb = 4 * out["params"] / 1e6
    print(f"model: {out['params'] / 1e6:.1f}M parameters, fp32 state {state_mb:.0f} MB")
    print(f"finalised merged hashes: {out['finalized']}; update {out['update_bytes']} bytes")
    print("| node | phase | peak RSS (MB) | x fp32 state |")
    print("|---|---|---:|---:|")
    for i in sorted(out["hwm"]):
        for name, _ in PHASES:
            kb = out["phases"][i].get(name)
            if kb:
                mb = kb * 1024 / 1e6
                print(f"| node{i} | {name} | {mb:.0f} | {mb / state_mb:.2f} |")
        hwm = out["hwm"][i] * 1024 / 1e6
        print(f"| node{i} | **whole run (VmHWM)** | {hwm:.0f} | {hwm / state_mb:.2f} |")


if __name__ == "__main__":
    main()
