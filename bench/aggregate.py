"""Benchmark the robust aggregators against a plain ``torch.mean`` of the same matrix.

Each aggregator runs in a fresh subprocess (so ``ru_maxrss`` is its own): the process first runs the
aggregator once on a small ``[n, 1000]`` matrix (the JIT warm-up: loading, or on a cold cache compiling, the
numba kernels; reported as ``warmup_seconds``), builds the ``[n, d]`` float32 matrix, records its peak RSS,
runs the aggregator once and records the peak RSS again, then alternates ``--repeats`` timed runs of the
aggregator and of ``updates.mean(dim=0)`` on the same matrix (best of each kept; alternating makes both see
the same load on a shared machine). Reported per aggregator: time, time as a ratio to that mean, warm-up
time, and peak extra memory in MB and as a multiple of the input size.

    python bench/aggregate.py                 # n=16, d=10,000,000
    python bench/aggregate.py --d 1000000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PARAMS: dict[str, dict[str, Any]] = {
    "mean": {},
    "norm_bound": {"max_norm": 1.0},
    "median": {},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"f": 3},
    "multi_krum": {"f": 3},
    "geometric_median": {},
    "centered_clip": {},
}
TARGETS = {"median": 4.0, "trimmed_mean": 4.0, "krum": 3.0, "multi_krum": 3.0, "geometric_median": 3.0}
TARGETS["centered_clip"] = 3.0


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(name: str, n: int, d: int, repeats: int) -> dict[str, Any]:
    """Time one aggregator and the plain mean in this process; return the measurements."""
    import torch

    sys.path.insert(0, str(ROOT))
    from training.aggregate import AGGREGATORS

    gen = torch.Generator().manual_seed(0)
    params = dict(PARAMS[name])
    if name == "norm_bound":
        params["max_norm"] = 2e-3
    fn = AGGREGATORS[name]
    start = time.perf_counter()
    fn(torch.randn(n, 1000, generator=torch.Generator().manual_seed(1)), torch.ones(n), **params)
    warmup = time.perf_counter() - start
    updates = torch.randn(n, d, generator=gen)
    updates.mul_(1e-3 / d**0.5)  # norms around 1e-3 like LoRA deltas, then a few far-off rows
    updates[: max(1, n // 8)].mul_(50.0)
    weights = torch.randint(10, 1000, (n,), generator=gen).to(torch.float32)
    base = _maxrss_mb()
    out = fn(updates, weights, **params)
    peak = _maxrss_mb()
    del out
    # Aggregator and plain mean alternate, so that both see the same load on a shared machine.
    best = mean_best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(updates, weights, **params)
        best = min(best, time.perf_counter() - start)
        del out
        start = time.perf_counter()
        ref = updates.mean(dim=0)
        mean_best = min(mean_best, time.perf_counter() - start)
        del ref
    input_mb = n * d * 4 / 2**20
    extra = max(0.0, peak - base)
    return {
        "aggregator": name,
        "seconds": best,
        "mean_seconds": mean_best,
        "ratio_to_mean": best / mean_best,
        "target_ratio": TARGETS.get(name),
        "warmup_seconds": round(warmup, 3),
        "peak_extra_mb": round(extra, 1),
        "peak_extra_x_input": round(extra / input_mb, 3),
    }


def main() -> None:
    """Run every aggregator in its own subprocess and print a table or one JSON object."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=16, help="number of updates (rows)")
    parser.add_argument("--d", type=int, default=10_000_000, help="update length (columns)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per aggregator; the best is kept")
    parser.add_argument("--only", nargs="*", default=None, help="aggregators to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.d, args.repeats)))
        return
    names = args.only or list(PARAMS)
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--n", str(args.n), "--d", str(args.d)]
        cmd += ["--repeats", str(args.repeats)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=False, cwd=ROOT, env=dict(os.environ)
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if not args.json:
            r = rows[-1]
            target = f"(target {r['target_ratio']:.0f}x)" if r["target_ratio"] else ""
            print(
                f"{name:>17}  {r['seconds']:8.3f} s  {r['ratio_to_mean']:6.2f}x mean {target:14}"
                f"  peak +{r['peak_extra_mb']:8.1f} MB ({r['peak_extra_x_input']:.2f}x input)"
                f"  warm-up {r['warmup_seconds']:.2f} s",
                flush=True,
            )
    if args.json:
        import torch

        report = {
            "n": args.n,
            "d": args.d,
            "input_mb": round(args.n * args.d * 4 / 2**20, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(),
            "results": rows,
        }
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
