"""Codec bench: bytes per round and the held-out loss each update codec costs, side by side in one run.

One simulated federation (a ``fedchain simulate`` config, by default the synthetic FedAvg example on the
tiny Llama) is run once per codec with the same data, seeds and model: ``fp32`` (no compression), ``int8``,
``int4`` and ``topk`` at each ``--topk`` fraction, with error feedback (as every top-k member runs) and
without it (``no EF``: the residual dropped, to show what it is worth). Every update goes through the
codec's bytes and the very merge the nodes run (``training.simulate``), so the bytes are what a member
would upload and the loss is the merged model's on the union of held-out data.

Per codec: the encoded bytes of one update (mean over clients and rounds) and its ratio to fp32, the final
union held-out loss and perplexity, and the loss difference to fp32 and to int8.

    .venv/bin/python bench/codecs.py [--config training/configs/synthetic-fedavg.toml] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthetic-fedavg.toml"


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the federation once per codec; return one row per codec and the config it ran."""
    from training.simconfig import load_config
    from training.simulate import prepare, run_simulation

    base = load_config(args.config)
    changes: dict[str, Any] = {"threads": args.threads, "local_baseline": False}
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    base = base.replace(**changes)
    variants: list[tuple[str, dict[str, Any]]] = [
        ("fp32", {"codec": "fp32"}),
        ("int8", {"codec": "int8"}),
        (f"int4 (block {args.block})", {"codec": "int4", "codec_block": args.block}),
    ]
    variants += [(f"topk {f:g}", {"codec": "topk", "topk_fraction": f}) for f in args.topk]
    variants += [
        (f"topk {f:g} no EF", {"codec": "topk", "topk_fraction": f, "error_feedback": False})
        for f in args.topk
    ]
    session = prepare(base) if base.train.task != "pretrain" else None
    rows: list[dict[str, Any]] = []
    for label, change in variants:
        cfg = base.replace(**change)
        started = time.perf_counter()
        result = run_simulation(cfg, session=session)
        sent = [r for r in result.rounds if r.round > 0]
        updates = sum(r.accepted + len(r.rejected) for r in sent)
        rows.append(
            {
                "codec": label,
                "bytes_per_update": sum(r.update_bytes for r in sent) / max(updates, 1),
                "bytes_per_round": sum(r.update_bytes for r in sent) / max(len(sent), 1),
                "round0_loss": result.rounds[0].eval.union_loss,
                "loss": result.final.eval.union_loss,
                "perplexity": result.final.eval.union_perplexity,
                "accepted": [r.accepted for r in sent],
                "seconds": time.perf_counter() - started,
            }
        )
        print(f"{label}: loss {rows[-1]['loss']:.4f}", file=sys.stderr)
    fp32, int8 = rows[0], rows[1]
    for row in rows:
        row["bytes_ratio"] = row["bytes_per_update"] / fp32["bytes_per_update"]
        row["loss_vs_fp32"] = row["loss"] - fp32["loss"]
        row["loss_vs_int8"] = row["loss"] - int8["loss"]
    config = dataclasses.asdict(base)
    summary = {k: config[k] for k in ("clients", "rounds", "algorithm", "aggregator", "seed")}
    summary.update(task=base.train.task, local_steps=base.train.local_steps, model=base.model.name_or_path)
    return {"config": str(args.config), "run": summary, "rows": rows}


def _print(report: dict[str, Any]) -> None:
    run = report["run"]
    print(
        f"{report['config']}: {run['clients']} clients, {run['rounds']} rounds x {run['local_steps']} steps, "
        f"{run['algorithm']} / {run['aggregator']}, task {run['task']}, model {run['model']}"
    )
    print(f"{'codec':<16} {'B/update':>10} {'x fp32':>7} {'loss':>8} {'ppl':>9} {'-fp32':>8} {'-int8':>8}")
    for row in report["rows"]:
        ppl = row["perplexity"]
        print(
            f"{row['codec']:<16} {row['bytes_per_update']:>10.0f} {row['bytes_ratio']:>7.3f} "
            f"{row['loss']:>8.4f} {ppl if math.isfinite(ppl) else float('inf'):>9.3f} "
            f"{row['loss_vs_fp32']:>+8.4f} {row['loss_vs_int8']:>+8.4f}"
        )
    print(f"round 0 (no training): loss {report['rows'][0]['round0_loss']:.4f}")


def main() -> None:
    """Parse the flags, run the bench and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="fedchain simulate TOML")
    parser.add_argument("--rounds", type=int, default=None, help="override the config's rounds")
    parser.add_argument("--block", type=int, default=64, help="int4 block size")
    parser.add_argument("--topk", type=float, nargs="+", default=[0.1, 0.01], help="top-k fractions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)


if __name__ == "__main__":
    main()
