"""Federated pre-training against central and member-alone training on the same token budget.

The text is the English ``chatterbot-corpus`` (the installed PyPI package, 21 categories, 81k tokens with
the tiny Llama's tokenizer), cut into four non-IID shards by topic: ``tech_support``; ``coding``;
``trivia`` + ``emotion``; the other 17 categories. The last ``--held-out`` of each shard's blocks is held
out; the union of those is the held-out set every model is scored on (token-weighted loss, perplexity = exp).

Every setting starts from the same seeded initialisation of ``--model`` and trains on the same number of
blocks, ``members * rounds * local_steps * batch_size`` (:func:`settings`):

- (a) central, data-parallel equivalent: one model, ``rounds * local_steps`` AdamW steps of
  ``members * batch_size`` blocks drawn from the union of the four training shards: what synchronous
  data-parallel training of the four members (each its batch, gradients all-reduced every step) computes,
  and the training the bytes ratio is measured against;
- (a) central, one worker: one model, ``members * rounds * local_steps`` steps of ``batch_size`` blocks
  (four times as many sequential steps at the member batch);
- (b) federated: four members, ``rounds`` DiLoCo rounds of ``local_steps`` AdamW steps each on their own
  shard (each member's AdamW state kept across rounds unless ``--inner-state reset``), the ``diloco``
  outer step (Nesterov, ``--outer-lr`` 0.7, ``--outer-momentum`` 0.9) on the mean update, through the
  real codec and merge (``fedchain simulate``'s code), once per ``--codecs`` entry;
- (c) alone: each member ``rounds * local_steps`` steps on its own shard only (one optimiser): the four
  models together see the budget, each a quarter of it.

Every setting uses the same inner schedule: ``--lr`` (constant, or ``--lr-schedule cosine`` decaying per
round to ``--min-lr``: the run spec's ``[train] lr_schedule``; the central baselines step the rate at the
same fractions of their steps) with an optional linear warm-up over each optimiser's first
``--warmup-steps`` steps.

Bytes communicated: (b) counts the encoded updates the members sent (what ``RoundMetrics.update_bytes``
reports). Synchronous data-parallel training of the same four workers (row (a), data-parallel equivalent)
exchanges every step's fp32 gradient: a ring all-reduce sends ``2 (N - 1) / N * 4 d`` bytes per worker per
step, over ``rounds * local_steps`` steps (:func:`data_parallel_bytes`).

    python bench/pretrain.py [--model tiny-llama] [--rounds 8] [--local-steps 40] [--codecs fp32,int8]

Prints a markdown table (or one JSON object with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from training.datasets.chatterbot import chatterbot_categories
from training.inner_state import make_inner_optimizer
from training.pretrain import load_flat, perplexity, train_blocks
from training.simconfig import SimulationConfig, config_from_dict
from training.simulate_pretrain import evaluate_pretrain, prepare_pretrain, run_pretrain
from training.text import chatterbot_texts

SHARDS = [["tech_support"], ["coding"], ["trivia", "emotion"]]
"""The first three shards by topic; the fourth holds every other English category."""


@dataclass(frozen=True)
class Setting:
    """One row's training: ``models`` models, each from ``workers`` workers' ``steps`` steps of ``batch``."""

    key: str
    label: str
    models: int
    workers: int
    steps: int
    batch: int

    @property
    def blocks_per_model(self) -> int:
        """Training blocks (of ``max_len`` tokens) that went into each of the setting's models."""
        return self.workers * self.steps * self.batch

    @property
    def blocks(self) -> int:
        """Training blocks of the whole setting (every model, every worker)."""
        return self.models * self.blocks_per_model

    def shape(self) -> str:
        """``steps x batch``, with the number of workers or models when there are several."""
        text = f"{self.steps} x {self.batch}"
        if self.workers > 1:
            return f"{self.workers} members x {text}"
        return f"{text} each" if self.models > 1 else text


def settings(members: int, rounds: int, local_steps: int, batch_size: int) -> dict[str, Setting]:
    """The four settings of the module docstring, by key (``dp``, ``central``, ``federated``, ``alone``).

    Every one trains on ``members * rounds * local_steps * batch_size`` blocks in all.
    """
    steps = rounds * local_steps
    return {
        "dp": Setting("dp", "(a) central, data-parallel equivalent", 1, 1, steps, members * batch_size),
        "central": Setting("central", "(a) central, one worker", 1, 1, members * steps, batch_size),
        "federated": Setting("federated", "(b) federated", 1, members, steps, batch_size),
        "alone": Setting("alone", f"(c) alone (mean of {members})", members, 1, steps, batch_size),
    }


def data_parallel_bytes(members: int, steps: int, numel: int) -> int:
    """Bytes all workers send in ``steps`` ring all-reduces of an fp32 gradient of ``numel`` values.

    Each worker sends ``2 (members - 1)`` chunks of ``numel / members`` values per all-reduce (reduce-scatter,
    then all-gather): ``2 (N - 1) / N * 4 d`` bytes, times ``N`` workers.
    """
    if members < 1 or steps < 0 or numel < 0:
        raise ValueError(f"need members >= 1, steps >= 0, numel >= 0; got {members}, {steps}, {numel}")
    return steps * 2 * (members - 1) * 4 * numel


def write_shards(folder: Path, split: str = "topic", seed: int = 0) -> list[str]:
    """Write the four shards as UTF-8 text files and return their paths.

    ``split = "topic"``: the non-IID shards of the module docstring. ``"iid"``: every category's
    conversations in an order shuffled with ``seed``, dealt round-robin over the four shards (the control
    that removes the topic skew; shuffled so that each shard's held-out tail is a sample of every topic,
    not the corpus's last category).
    """
    names = chatterbot_categories()
    taken = {c for shard in SHARDS for c in shard}
    shards = [*SHARDS, [c for c in names if c not in taken]]
    texts = chatterbot_texts(names)
    if split == "iid":
        dealt: list[list[str]] = [[] for _ in shards]
        conversations = [conv for c in names for conv in texts[c].split("\n\n")]
        random.Random(seed).shuffle(conversations)
        for j, conv in enumerate(conversations):
            dealt[j % len(shards)].append(conv)
        bodies = ["\n\n".join(d) for d in dealt]
    else:
        bodies = ["\n\n".join(texts[c] for c in shard) for shard in shards]
    paths = []
    for i, body in enumerate(bodies):
        path = folder / f"shard{i}.txt"
        path.write_text(body, encoding="utf-8")
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
                "lr_schedule": args.lr_schedule,
                "min_lr": args.min_lr,
                "local_steps": args.local_steps,
                "batch_size": args.batch_size,
                "max_len": args.max_len,
            },
            "server": {"server_lr": args.outer_lr, "beta1": args.outer_momentum},
        }
    )


def _one_model(
    session: Any,
    cfg: SimulationConfig,
    blocks: torch.Tensor,
    steps: int,
    seed: int,
    *,
    batch_size: int,
    warmup_steps: int,
) -> Any:
    """Train the session's model from the initial parameters for ``steps`` steps on ``blocks``; score it.

    One AdamW throughout. At a constant rate the steps are one run (so the result does not depend on how
    the federated budget is split into rounds); with a schedule they run in ``cfg.rounds`` equal chunks,
    chunk ``r`` at the rate the federated members use in round ``r`` (``[train] lr_schedule``), each
    chunk a new seeded block order.
    """
    load_flat(session.model, session.initial, session.spec)
    params = [p for _, p in sorted(session.model.named_parameters())]
    base = replace(cfg.train, seed=seed, batch_size=batch_size)
    opt = make_inner_optimizer(params, base, None)
    chunks = 1 if cfg.train.lr_schedule == "constant" else cfg.rounds
    per_chunk = steps // chunks
    for r in range(chunks):
        chunk = base.for_round(r, cfg.rounds)
        for group in opt.param_groups:
            group["lr"] = chunk.lr
        n = per_chunk if r < chunks - 1 else steps - per_chunk * (chunks - 1)
        train_blocks(
            session.model,
            blocks,
            replace(chunk, seed=seed if chunks == 1 else seed * 1009 + r),
            steps=n,
            optimizer=opt,
            warmup_steps=warmup_steps,
        )
    return evaluate_pretrain(session)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    codecs = [c for c in args.codecs.split(",") if c]
    chosen = set(args.settings.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_shards(Path(tmp), args.split, args.seed)
        cfg = make_config(args, paths, codecs[0] if codecs else "fp32")
        started = time.perf_counter()
        session = prepare_pretrain(cfg)
        n = len(session.clients)
        plan = settings(n, cfg.rounds, cfg.train.local_steps or 1, cfg.train.batch_size)
        d = session.spec.numel
        rows: list[dict[str, Any]] = []
        initial = evaluate_pretrain(session)
        rows.append({"setting": "initial model", "loss": initial.union_loss, "bytes": 0})
        union = torch.cat([c.train for c in session.clients])

        def row(setting: Setting, loss: float, sent: int, t0: float, **extra: Any) -> dict[str, Any]:
            return {
                "setting": setting.label,
                "key": setting.key,
                "loss": loss,
                "bytes": sent,
                "shape": setting.shape(),
                "steps": setting.steps,
                "batch": setting.batch,
                "workers": setting.workers,
                "models": setting.models,
                "blocks": setting.blocks,
                "seconds": time.perf_counter() - t0,
                **extra,
            }

        for setting in (plan["dp"], plan["central"]):
            if setting.key not in chosen:
                continue
            t0 = time.perf_counter()
            scores = _one_model(
                session,
                cfg,
                union,
                setting.steps,
                args.seed,
                batch_size=setting.batch,
                warmup_steps=args.warmup_steps,
            )
            rows.append(row(setting, scores.union_loss, 0, t0))
        for codec in codecs if "federated" in chosen else []:
            t0 = time.perf_counter()
            result = run_pretrain(
                make_config(args, paths, codec),
                keep_inner_state=args.inner_state == "keep",
                warmup_steps=args.warmup_steps,
            )
            sent = sum(r.update_bytes for r in result.rounds[1:])
            federated = replace(plan["federated"], label=f"{plan['federated'].label}, {codec}")
            curve = [r.eval.union_loss for r in result.rounds]
            rows.append(row(federated, result.final.eval.union_loss, sent, t0, round_losses=curve))
        if "alone" in chosen:
            alone = []
            t0 = time.perf_counter()
            for i, client in enumerate(session.clients):
                scores = _one_model(
                    session,
                    cfg,
                    client.train,
                    plan["alone"].steps,
                    args.seed * 1_000_003 + i,
                    batch_size=plan["alone"].batch,
                    warmup_steps=args.warmup_steps,
                )
                alone.append(scores.union_loss)
            rows.append(row(plan["alone"], sum(alone) / n, 0, t0, best_loss=min(alone)))
    data_parallel = data_parallel_bytes(n, plan["dp"].steps, d)
    reference = {r.get("key"): r["loss"] for r in rows}
    for r in rows:
        r["perplexity"] = perplexity(r["loss"])
        for key in ("dp", "central"):
            if key in reference:
                r[f"vs_{key}"] = r["perplexity"] / perplexity(reference[key]) - 1.0
        if r["bytes"]:
            r["dp_ratio"] = data_parallel / r["bytes"]
    return {
        "model": args.model,
        "parameters": d,
        "members": n,
        "rounds": cfg.rounds,
        "local_steps": cfg.train.local_steps,
        "batch_size": cfg.train.batch_size,
        "max_len": cfg.train.max_len,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "warmup_steps": args.warmup_steps,
        "outer_lr": args.outer_lr,
        "outer_momentum": args.outer_momentum,
        "inner_state": args.inner_state,
        "split": args.split,
        "seed": args.seed,
        "tokens_per_setting": plan["dp"].blocks * cfg.train.max_len,
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
        f"{report['max_len']} tokens, {report['split']} shards: "
        f"{report['tokens_per_setting']:,} tokens per setting "
        f"({report['train_tokens']:,} training tokens, {report['held_out_tokens']:,} held out); "
        f"inner lr {report['lr']:g} ({report['lr_schedule']}, warm-up {report['warmup_steps']} steps, "
        f"state {report['inner_state']}), outer lr {report['outer_lr']:g}, momentum "
        f"{report['outer_momentum']:g}; {report['seconds']:.0f} s",
        "",
        "| setting | steps x batch | union held-out loss | perplexity | vs data-parallel | vs one worker "
        "| MB sent | data-parallel MB / sent |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    dp = report["data_parallel_bytes"]
    for row in report["rows"]:
        sent = _mb(row["bytes"]) if row["bytes"] else "-"
        ratio = f"{row['dp_ratio']:.0f}x" if "dp_ratio" in row else "-"
        initial = row["setting"] == "initial model"
        vs = [
            f"{row[f'vs_{k}'] * 100:+.1f} %" if f"vs_{k}" in row and not initial else "-"
            for k in ("dp", "central")
        ]
        loss = f"{row['loss']:.4f}"
        if "best_loss" in row:
            loss += f" (best {row['best_loss']:.4f})"
        lines.append(
            f"| {row['setting']} | {row.get('shape', '-')} | {loss} | {row['perplexity']:.2f} | {vs[0]} "
            f"| {vs[1]} | {sent} | {ratio} |"
        )
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
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--min-lr", type=float, default=1e-6, help="cosine: the rate of the last round")
    parser.add_argument("--warmup-steps", type=int, default=0, help="linear inner warm-up (optimiser steps)")
    parser.add_argument("--inner-state", choices=["keep", "reset"], default="keep")
    parser.add_argument("--outer-lr", type=float, default=0.7)
    parser.add_argument("--outer-momentum", type=float, default=0.9)
    parser.add_argument("--codecs", default="fp32,int8")
    parser.add_argument(
        "--split", choices=["topic", "iid"], default="topic", help="non-IID topic shards, or an IID control"
    )
    parser.add_argument(
        "--settings",
        default="dp,central,federated,alone",
        help="comma-separated subset of dp, central, federated, alone",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not math.isfinite(args.lr) or args.lr <= 0:
        parser.error("--lr must be > 0")
    unknown = set(args.settings.split(",")) - {"dp", "central", "federated", "alone"}
    if unknown:
        parser.error(f"--settings: unknown {sorted(unknown)}; use dp, central, federated, alone")
    if args.warmup_steps < 0:
        parser.error("--warmup-steps must be >= 0")
    report = run(args)
    print(json.dumps(report) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
