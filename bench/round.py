"""Where the wall time of a round goes: training, transfer, aggregation, chain and waiting, for 4 and 8 nodes.

For each cluster size a fresh devnet (anvil with 1 s blocks + an IPFS daemon) runs the tiny-model spec
(``node/specs/tiny.toml``, ``--rounds`` rounds) with N ``fedchain node`` processes on loopback, each with its
own embedded store (updates travel over the libp2p blob stream). Every node logs, per finalised round, its
time split (``round.finalized.timings``: ``train``, ``transfer``, ``aggregate``, ``chain``, ``wait``); the
round's wall time on a node is the time between its previous round's finalisation and this one's (so
round 0, which also waits out the join window, is left out). ``other`` is the wall time no phase accounts
for (chain reads of a step, settling, scoring the held-out split; negative when a phase overlaps the next
round's wall time). Reported per size: the mean of every phase over nodes and
rounds, and each phase's share of the round; the baseline is local training, so ``overhead_ratio`` is
(round - training) / training and ``non_training_share`` is (round - training) / round.

    python bench/round.py                  # 4 and 8 nodes, 3 rounds
    python bench/round.py --sizes 4 --rounds 2 --json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHASES = ("train", "transfer", "aggregate", "chain", "wait")
SKILLS = ("arithmetic", "reverse", "capitals")


def _spec(folder: Path, rounds: int, size: int) -> Path:
    text = (ROOT / "node" / "specs" / "tiny.toml").read_text()
    text = text.replace("rounds = 2", f"rounds = {rounds}", 1)
    text = text.replace("join_blocks = 45", f"join_blocks = {45 + 8 * size}", 1)
    path = folder / "bench.toml"
    path.write_text(text)
    return path


def _round_rows(events: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Rounds 1.. of one node (round 0 also waits out the join window and warms up, so it is left out)."""
    finals = [e for e in events if e.get("event") == "round.finalized"]
    rows = []
    for before, e in zip(finals, finals[1:], strict=False):
        timings = e.get("timings") or {}
        row = {p: float(timings.get(p, 0.0)) for p in PHASES}
        row["round"] = float(e["ts"] - before["ts"])
        row["other"] = row["round"] - sum(row[p] for p in PHASES)
        rows.append(row)
    return rows


def measure(size: int, rounds: int) -> dict[str, Any]:
    """Run one cluster of ``size`` nodes for ``rounds`` rounds and return its mean time split."""
    from node.cluster import LocalCluster
    from node.devnet.anvil import AnvilConfig
    from node.devnet.harness import Devnet

    with tempfile.TemporaryDirectory(prefix="fedchain-bench-round-") as tmp:
        folder = Path(tmp)
        with Devnet(folder / "devnet", AnvilConfig(block_time=1.0), ipfs=True) as devnet:
            cluster = LocalCluster(folder / "nodes", devnet, size)
            cluster.init()
            run_id = cluster.create_run(_spec(folder, rounds, size))
            started = time.monotonic()
            try:
                cluster.start(run_id, [f"synthetic:{SKILLS[i % len(SKILLS)]}:40" for i in range(size)])
                cluster.wait_until(
                    lambda: all(cluster.events(i, "run.done") for i in range(size)),
                    120.0 + 60.0 * rounds,
                    "run.done",
                )
            finally:
                cluster.stop()
            rows = [row for i in range(size) for row in _round_rows(cluster.events(i))]
    if not rows:
        raise RuntimeError(f"{size} nodes: no finalised round was logged")
    mean = {key: statistics.fmean(row[key] for row in rows) for key in (*PHASES, "other", "round")}
    overhead = mean["round"] - mean["train"]
    return {
        "nodes": size,
        "rounds": rounds,
        "samples": len(rows),
        "seconds": {k: round(v, 4) for k, v in mean.items()},
        "share": {k: round(mean[k] / mean["round"], 4) for k in (*PHASES, "other")},
        "non_training_share": round(overhead / mean["round"], 4),
        "overhead_ratio": round(overhead / mean["train"], 1) if mean["train"] > 0 else None,
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8], help="cluster sizes (1..9)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cluster")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = [measure(size, args.rounds) for size in args.sizes]
    report: dict[str, Any] = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "block_time_s": 1.0,
        "model": "tiny-llama",
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"round time split, tiny model, 1 s blocks ({report['machine']['cpus']} CPUs)")
    header = f"{'nodes':>5} {'round s':>8} " + " ".join(f"{p:>9}" for p in (*PHASES, "other")) + "  non-train"
    print(header)
    for r in results:
        s = r["seconds"]
        print(
            f"{r['nodes']:>5} {s['round']:>8.2f} "
            + " ".join(f"{s[p]:>9.3f}" for p in (*PHASES, "other"))
            + f"  {100 * r['non_training_share']:.1f} %"
        )


if __name__ == "__main__":
    main()
