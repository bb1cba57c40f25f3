"""The result tables of the simulation, measured in one run each.

``headline``: on non-IID clients (one chatterbot category each), does each of the seven FL algorithms beat
local-only training on the union of the clients' held-out data? Every algorithm and the local-only baseline
start from the same adapter and make the same number of local steps per client.

``robustness``: ten synthetic-skill clients, 20% and 30% of them Byzantine, each attack against each
aggregator: the final union held-out loss relative to clean FedAvg (plain mean, no attackers) measured in
the same run. The aggregators are told ``f``, the number of attackers (the usual assumption).

``federation``: the demo's setting in one process (three clients: chatterbot computers, humor, money; 20%
held out; the demo spec's training settings by default): per client, the merged model and the client's
local-only model (same adapter init, as many steps) on the client's own held-out split and on the other
clients' held-out splits (the mean of their losses). It is how the demo specs were tuned.

    python bench/experiments.py headline [--model tiny-llama|smollm2] [--lr-schedule cosine] [--json]
    python bench/experiments.py robustness [--json]
    python bench/experiments.py federation --model smollm2 --lr 0.003 --local-steps 4 [--seed 1]

Prints markdown tables (or one JSON object with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any

import torch

from training.algorithms import ALGORITHMS
from training.attacks import ATTACKS
from training.simconfig import SimulationConfig, config_from_dict
from training.simulate import prepare, run_local_baseline, run_simulation

CATEGORIES = ["ai", "coding", "emotion", "psychology", "trivia"]
ROBUST_AGGREGATORS = [
    "mean",
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "geometric_median",
    "centered_clip",
]


def headline_config(args: argparse.Namespace) -> SimulationConfig:
    tiny = args.model == "tiny-llama"
    categories = CATEGORIES[: args.clients]
    return config_from_dict(
        {
            "simulation": {"clients": len(categories), "rounds": args.rounds, "seed": args.seed},
            "data": {
                "source": "chatterbot",
                "categories": categories,
                "examples_per_client": args.examples,
                "held_out_fraction": 0.25,
                "max_eval_examples": args.eval_examples,
            },
            "model": {"name_or_path": args.model},
            "adapter": {"r": 8, "alpha": 16.0, "target_modules": ["q_proj", "v_proj"]},
            "train": {
                "lr": args.lr or (0.05 if tiny else 1e-3),
                "local_steps": args.local_steps or 10,
                "batch_size": args.batch_size,
                "max_len": args.max_len,
                **_schedule(args),
            },
        }
    )


def _schedule(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[train]`` keys of ``--lr-schedule`` / ``--min-lr`` (none for the default constant rate)."""
    if args.lr_schedule == "constant":
        return {}
    return {"lr_schedule": args.lr_schedule, "min_lr": args.min_lr}


def headline(args: argparse.Namespace) -> dict[str, Any]:
    cfg = headline_config(args)
    session = prepare(cfg)
    start = time.perf_counter()
    baseline = run_local_baseline(cfg, session=session)
    print(f"# local-only: {baseline.mean_union_loss:.4f}", file=sys.stderr, flush=True)
    rows: dict[str, Any] = {}
    initial = None
    for name in ALGORITHMS:
        result = run_simulation(cfg.replace(algorithm=name), session=session)
        initial = result.rounds[0].eval.union_loss
        final = result.final.eval
        rows[name] = {
            "union_loss": final.union_loss,
            "union_perplexity": final.union_perplexity,
            "per_client": final.per_client,
            "beats_local_mean": final.union_loss < baseline.mean_union_loss,
            "beats_local_best": final.union_loss < baseline.best_union_loss,
            "seconds": result.seconds,
        }
        print(f"# {name}: {final.union_loss:.4f} ({result.seconds:.0f} s)", file=sys.stderr, flush=True)
    return {
        "table": "headline",
        "settings": {
            "model": args.model,
            "clients": list(cfg.data.categories),
            "rounds": cfg.rounds,
            "local_steps": cfg.train.local_steps,
            "batch_size": cfg.train.batch_size,
            "max_len": cfg.train.max_len,
            "lr": cfg.train.lr,
            **_schedule(args),
            "examples_per_client": cfg.data.examples_per_client,
            "max_eval_examples": cfg.data.max_eval_examples,
            "seed": cfg.seed,
        },
        "initial_union_loss": initial,
        "local_only": {
            "mean_union_loss": baseline.mean_union_loss,
            "best_union_loss": baseline.best_union_loss,
            "per_client_union_loss": baseline.per_client_union_loss,
        },
        "algorithms": rows,
        "seconds": time.perf_counter() - start,
    }


def robustness_config(seed: int, rounds: int, steps: int) -> SimulationConfig:
    return config_from_dict(
        {
            "simulation": {"clients": 10, "rounds": rounds, "seed": seed},
            "data": {
                "source": "synthetic",
                "examples_per_client": 32,
                "held_out_fraction": 0.25,
                "max_eval_examples": 8,
                "exact_match": False,
            },
            "model": {"name_or_path": "tiny-llama"},
            "train": {"lr": 0.02, "local_steps": steps, "batch_size": 8, "max_len": 48},
        }
    )


def aggregator_params(name: str, f: int, clients: int) -> dict[str, Any]:
    if name in ("krum", "multi_krum", "median", "geometric_median", "centered_clip"):
        return {"f": f}
    if name == "trimmed_mean":
        return {"trim_ratio": f / clients}
    return {}


DEMO_CATEGORIES = ["computers", "humor", "money"]


def federation(args: argparse.Namespace) -> dict[str, Any]:
    from training.adapters import load_trainable_state
    from training.simulate import _held_out_losses, train_local_only

    rank = 8 if args.model == "smollm2" else 4  # the demo specs' adapters
    cfg = config_from_dict(
        {
            "simulation": {"clients": 3, "rounds": args.rounds, "seed": args.seed, "threads": args.threads,
                           "algorithm": args.algorithm, "aggregator": args.aggregator},
            "data": {"source": "chatterbot", "categories": DEMO_CATEGORIES, "examples_per_client": 0,
                     "held_out_fraction": 0.2, "max_eval_examples": 16},
            "model": {"name_or_path": args.model},
            "adapter": {"r": rank, "alpha": 2.0 * rank, "target_modules": ["q_proj", "v_proj"]},
            "train": {"lr": args.lr or 0.003, "local_steps": args.local_steps or 4, "batch_size": 4,
                      "max_len": 64, **_schedule(args)},
        }
    )  # fmt: skip
    session = prepare(cfg)
    start = time.perf_counter()
    merged = run_simulation(cfg, session=session).final.eval.per_client
    names = [c.name for c in session.clients]
    rows = []
    for i, client in enumerate(session.clients):
        # the local-only model exactly as run_local_baseline trains it, scored on every client's split
        load_trainable_state(session.model, session.initial)
        train_local_only(session, client.train, cfg, cfg.seed * 1_000_003 + i)
        local = _held_out_losses(session, cfg)[0]
        others = [n for n in names if n != client.name]
        rows.append(
            {
                "client": client.name,
                "merged_own": merged[client.name],
                "local_only_own": local[client.name],
                "merged_others": sum(merged[n] for n in others) / len(others),
                "local_only_others": sum(local[n] for n in others) / len(others),
            }
        )
    load_trainable_state(session.model, session.initial)
    settings = {"model": args.model, "algorithm": cfg.algorithm, "aggregator": cfg.aggregator,
                "rounds": cfg.rounds, "local_steps": cfg.train.local_steps, "lr": cfg.train.lr,
                "seed": cfg.seed}  # fmt: skip
    return {"table": "federation", "settings": settings, "rows": rows, "seconds": time.perf_counter() - start}


def federation_markdown(out: dict[str, Any]) -> str:
    lines = [
        "| client | own: merged | own: local-only | others: merged | others: local-only | others: lower |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in out["rows"]:
        wins = "merged" if r["merged_others"] < r["local_only_others"] else "local-only"
        lines.append(
            f"| {r['client']} | {r['merged_own']:.4f} | {r['local_only_own']:.4f} | "
            f"{r['merged_others']:.4f} | {r['local_only_others']:.4f} | {wins} |"
        )
    return "\n".join(lines)


def robustness(seed: int, rounds: int, steps: int) -> dict[str, Any]:
    base = robustness_config(seed, rounds, steps)
    session = prepare(base)
    start = time.perf_counter()
    clean = run_simulation(base, session=session)
    reference = clean.final.eval.union_loss
    attacks = sorted(ATTACKS)
    cells: dict[str, dict[str, float]] = {}
    for fraction in (0.2, 0.3):
        f = round(fraction * base.clients)
        for attack in attacks:
            row: dict[str, float] = {}
            for agg in ROBUST_AGGREGATORS:
                cfg = base.replace(
                    aggregator=agg,
                    aggregator_params=aggregator_params(agg, f, base.clients),
                    **{"byzantine.count": f, "byzantine.attack": attack},
                )
                row[agg] = run_simulation(cfg, session=session).final.eval.union_loss / reference
            cells[f"{int(fraction * 100)}%/{attack}"] = row
            print(f"# {fraction:.0%} {attack}: {row}", file=sys.stderr, flush=True)
    clean_rows = {}
    for agg in ROBUST_AGGREGATORS:
        cfg = base.replace(aggregator=agg, aggregator_params=aggregator_params(agg, 0, base.clients))
        clean_rows[agg] = run_simulation(cfg, session=session).final.eval.union_loss / reference
    cells["0%/clean"] = clean_rows
    return {
        "table": "robustness",
        "settings": {
            "model": "tiny-llama",
            "clients": base.clients,
            "rounds": rounds,
            "local_steps": steps,
            "batch_size": base.train.batch_size,
            "lr": base.train.lr,
            "seed": seed,
            "attack_strengths": {a: ATTACKS[a].default_strength for a in attacks},
        },
        "clean_fedavg_union_loss": reference,
        "initial_union_loss": clean.rounds[0].eval.union_loss,
        "initial_ratio": clean.rounds[0].eval.union_loss / reference,
        "relative_loss": cells,
        "seconds": time.perf_counter() - start,
    }


def headline_markdown(out: dict[str, Any]) -> str:
    local = out["local_only"]
    lines = [
        "| algorithm | union held-out loss | perplexity | vs local-only mean "
        f"({local['mean_union_loss']:.4f}) | vs best local-only ({local['best_union_loss']:.4f}) |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for name, row in out["algorithms"].items():
        delta = row["union_loss"] - local["mean_union_loss"]
        lines.append(
            f"| {name} | {row['union_loss']:.4f} | {row['union_perplexity']:.1f} | "
            f"{'beats' if row['beats_local_mean'] else 'loses'} ({delta:+.4f}) | "
            f"{'beats' if row['beats_local_best'] else 'loses'} |"
        )
    lines.append(f"| (initial model) | {out['initial_union_loss']:.4f} | | | |")
    return "\n".join(lines)


def robustness_markdown(out: dict[str, Any]) -> str:
    aggs = ROBUST_AGGREGATORS
    lines = ["| Byzantine | attack | " + " | ".join(aggs) + " |", "| --- | --- |" + " ---: |" * len(aggs)]
    for key, row in out["relative_loss"].items():
        share, attack = key.split("/")
        lines.append(f"| {share} | {attack} | " + " | ".join(f"{row[a]:.3f}" for a in aggs) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("table", choices=["headline", "robustness", "federation"])
    parser.add_argument("--model", default="tiny-llama", help="headline model: tiny-llama or smollm2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clients", type=int, default=5, help="headline: first N categories")
    parser.add_argument("--examples", type=int, default=64, help="headline: examples kept per client")
    parser.add_argument("--eval-examples", type=int, default=16, help="headline: held-out per client")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="headline, federation: local lr over rounds (cosine: the OpenFedLLM reference's decay)",
    )
    parser.add_argument("--min-lr", type=float, default=1e-6, help="with --lr-schedule cosine: the floor")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids contention)")
    parser.add_argument("--algorithm", default="fedavg", help="federation: FL algorithm")
    parser.add_argument("--aggregator", default="trimmed_mean", help="federation: aggregator")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.table == "headline":
        out = headline(args)
        table = headline_markdown(out)
    elif args.table == "federation":
        out = federation(args)
        table = federation_markdown(out)
    else:
        out = robustness(args.seed, args.rounds, args.local_steps or 5)
        table = robustness_markdown(out)
    out["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out) if args.json else table)


if __name__ == "__main__":
    main()
