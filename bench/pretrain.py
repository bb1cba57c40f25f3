"""Federated pre-training against central and member-alone training on the same token budget.

The text is the English ``chatterbot-corpus`` (the installed PyPI package, 21 categories, 81k tokens with
the tiny Llama's tokenizer), cut into four non-IID shards by topic: ``tech_support``; ``coding``;
``trivia`` + ``emotion``; the other 17 categories. The last ``--held-out`` of each shard's blocks is held
out; the union of those is the held-out set every model is scored on (token-weighted loss, perplexity = exp).

Every model starts from the same seeded initialisation of ``--model`` and sees the same number of tokens:

- (a) central: one model, ``members * rounds * local_steps`` AdamW steps of ``batch_size`` blocks drawn
  from the union of the four training shards (one optimiser);
- (b) federated: four members, ``rounds`` DiLoCo rounds of ``local_steps`` AdamW steps each on their own
  shard, the ``diloco`` outer step (Nesterov, lr 0.7, momentum 0.9) on the mean update, through the real
  codec and merge (``fedchain simulate``'s code), once per ``--codecs`` entry;
- (c) alone: each member ``rounds * local_steps`` steps on its own shard only (one optimiser).

Bytes communicated: (b) counts the encoded updates the members sent (what ``RoundMetrics.update_bytes``
reports). Per-step data-parallel training of the same four workers would exchange every step's fp32
gradient: a ring all-reduce sends ``2 (N - 1) / N * 4 d`` bytes per worker per step, over
``rounds * local_steps`` steps (each worker one batch per step).

    python bench/pretrain.py [--model tiny-llama] [--rounds 8] [--local-steps 40] [--codecs fp32,int8]

Prints a markdown table (or one JSON object with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training.client import make_optimizer
from training.datasets.chatterbot import chatterbot_categories
from training.pretrain import load_flat, perplexity, train_blocks
from training.simconfig import SimulationConfig, config_from_dict
from training.simulate import run_simulation
from training.simulate_pretrain import evaluate_pretrain, prepare_pretrain
from training.text import chatterbot_texts

SHARDS = [["tech_support"], ["coding"], ["trivia", "emotion"]]
"""The first three shards by topic; the fourth holds every other English category."""


def write_shards(folder: Path) -> list[str]:
    """Write the four shards as UTF-8 text files and return their paths."""
    names = chatterbot_categories()
    taken = {c for shard in SHARDS for c in shard}
    shards = [*SHARDS, [c for c in names if c not in taken]]
    texts = chatterbot_texts(names)
    paths = []
    for i, shard in enumerate(shards):
        path = folder / f"shard{i}.txt"
        path.write_text("\n\n".join(texts[c] for c in shard), encoding="utf-8")
        paths.append(str(path))
    return paths


def make_config(args: argparse.Namespace, paths: list[str], codec: str) -> SimulationConfig:
    return config_from_dict(
        {
            "simulation": {
                "clients": len(paths),
                "rounds": args.rounds,
                "algorithm": "diloco",
                "codec": codec,
                "seed": args.seed,
                "threads": args.threads,
                "local_baseline": False,
            },
            "data": {
                "source": "text",
                "paths": paths,
                "held_out_fraction": args.held_out,
                "max_eval_examples": 0,
            },
            "model": {"name_or_path": args.model},
            "train": {
                "task": "pretrain",
                "lr": args.lr,
                "local_steps": args.local_steps,
                "batch_size": args.batch_size,
                "max_len": args.max_len,
            },
        }
    )


def _one_model(session: Any, cfg: SimulationConfig, blocks: torch.Tensor, steps: int, seed: int) -> Any:
    """Train the session's model from the initial parameters for ``steps`` steps on ``blocks``; score it."""
    load_flat(session.model, session.initial, session.spec)
    train_cfg = replace(cfg.train, seed=seed)
    params = [p for _, p in sorted(session.model.named_parameters())]
    train_blocks(session.model, blocks, train_cfg, steps=steps, optimizer=make_optimizer(params, train_cfg))
    return evaluate_pretrain(session)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    codecs = [c for c in args.codecs.split(",") if c]
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(Path(tmp))
        cfg = make_config(args, paths, codecs[0])
        started = time.perf_counter()
        session = prepare_pretrain(cfg)
        n = len(session.clients)
        steps = cfg.rounds * (cfg.train.local_steps or 1)
        d = session.spec.numel
        rows: list[dict[str, Any]] = []
        initial = evaluate_pretrain(session)
        rows.append({"setting": "initial model", "loss": initial.union_loss, "bytes": 0})
        union = torch.cat([c.train for c in session.clients])
        t0 = time.perf_counter()
        central = _one_model(session, cfg, union, n * steps, args.seed)
        rows.append(
            {
                "setting": "(a) central",
                "loss": central.union_loss,
                "bytes": 0,
                "seconds": time.perf_counter() - t0,
            }
        )
        for codec in codecs:
            t0 = time.perf_counter()
            result = run_simulation(make_config(args, paths, codec))
            sent = sum(r.update_bytes for r in result.rounds[1:])
            rows.append(
                {
                    "setting": f"(b) federated, {codec}",
                    "loss": result.final.eval.union_loss,
                    "bytes": sent,
                    "seconds": time.perf_counter() - t0,
                }
            )
        alone = []
        t0 = time.perf_counter()
        for i, client in enumerate(session.clients):
            scores = _one_model(session, cfg, client.train, steps, args.seed * 1_000_003 + i)
            alone.append(scores.union_loss)
        rows.append(
            {
                "setting": "(c) alone (mean of 4)",
                "loss": sum(alone) / n,
                "best_loss": min(alone),
                "bytes": 0,
                "seconds": time.perf_counter() - t0,
            }
        )
    data_parallel = steps * n * (2 * (n - 1) / n) * 4 * d
    for row in rows:
        row["perplexity"] = perplexity(row["loss"])
        row["vs_central"] = row["perplexity"] / perplexity(central.union_loss) - 1.0
        if row["bytes"]:
            row["dp_ratio"] = data_parallel / row["bytes"]
    return {
        "model": args.model,
        "parameters": d,
        "members": n,
        "rounds": cfg.rounds,
        "local_steps": cfg.train.local_steps,
        "batch_size": cfg.train.batch_size,
        "max_len": cfg.train.max_len,
        "tokens_per_model": n * steps * cfg.train.batch_size * cfg.train.max_len,
        "train_tokens": int(union.numel()),
        "held_out_tokens": sum(int(c.held_out.numel()) for c in session.clients),
        "data_parallel_bytes": data_parallel,
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
    }


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['model']} ({report['parameters']:,} parameters), {report['members']} members, "
        f"{report['rounds']} rounds x {report['local_steps']} local steps, batch {report['batch_size']} x "
        f"{report['max_len']} tokens: {report['tokens_per_model']:,} tokens per setting "
        f"({report['train_tokens']:,} training tokens, {report['held_out_tokens']:,} held out); "
        f"{report['seconds']:.0f} s",
        "",
        "| setting | union held-out loss | perplexity | vs central | MB sent | data-parallel MB / sent |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    dp = report["data_parallel_bytes"]
    for row in report["rows"]:
        sent = _mb(row["bytes"]) if row["bytes"] else "-"
        ratio = f"{row['dp_ratio']:.0f}x" if "dp_ratio" in row else "-"
        vs = f"{row['vs_central'] * 100:+.1f} %" if row["setting"] != "initial model" else "-"
        loss = f"{row['loss']:.4f}"
        if "best_loss" in row:
            loss += f" (best {row['best_loss']:.4f})"
        lines.append(f"| {row['setting']} | {loss} | {row['perplexity']:.2f} | {vs} | {sent} | {ratio} |")
    lines.append("")
    lines.append(
        f"Per-step data-parallel exchange of the same training: {_mb(dp)} MB (ring all-reduce, fp32)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--held-out", type=float, default=0.1)
    parser.add_argument("--codecs", default="fp32,int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not math.isfinite(args.lr) or args.lr <= 0:
        parser.error("--lr must be > 0")
    report = run(args)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
