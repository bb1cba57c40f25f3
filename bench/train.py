"""LoRA training throughput of ``training/`` against a plain transformers + peft loop, measured side by side.

Both sides train the same model with the same LoRA shape, optimiser, learning rate and batches (same example
order, padded the same way inside the loop). The plain loop is the textbook one: forward with labels,
backward, ``AdamW.step``, ``zero_grad``. Runs alternate (plain, ours, plain, ours, ...) after a warm-up of
each; the median tokens/s of each side is reported, and ``ratio`` is the median over the repeats of
``ours / plain`` for adjacent runs (target >= 0.95), robust to load from other processes.
``cpu_time_ratio`` compares tokens per CPU-second of this process, which is less sensitive still.

Usage::

    .venv/bin/python bench/train.py [--json] [--model tiny-llama|smollm2|PATH] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from training.adapters import attach_adapter
from training.client import train_local
from training.config import AdapterConfig, TrainConfig
from training.datasets.synthetic import synthetic_clients
from training.datasets.tokenize import Encoded, batch_order, encode_sft, pad_batch, pad_id_of
from training.models import load_model
from training.sft import sft_batches, sft_loss


def plain_loop(model: Any, encoded: list[Encoded], pad_id: int, cfg: TrainConfig) -> tuple[int, float, float]:
    """The baseline: a plain transformers + peft training loop. Returns (tokens, seconds, cpu seconds)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    device = params[0].device
    model.train()
    tokens = 0
    start, cpu = time.perf_counter(), time.process_time()
    order = batch_order(len(encoded), cfg.batch_size, cfg.seed, steps=cfg.local_steps, epochs=1)
    for indices in order:
        batch = pad_batch([encoded[i] for i in indices], pad_id)
        tokens += int(batch["attention_mask"].sum())
        out = model(**{k: v.to(device) for k, v in batch.items()})
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens, time.perf_counter() - start, time.process_time() - cpu


def ours(model: Any, encoded: list[Encoded], pad_id: int, cfg: TrainConfig) -> tuple[int, float, float]:
    """fedchain's local training loop on the same batches. Returns (tokens, seconds, cpu seconds)."""
    start, cpu = time.perf_counter(), time.process_time()
    update = train_local(
        model, sft_batches(encoded, pad_id, cfg), sft_loss, cfg, total_steps=cfg.local_steps or 0
    )
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    return update.metrics.tokens, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: 1 on CPU, torch's on GPU)"
    )
    args = parser.parse_args()
    # One thread on CPU: on a shared machine, oversubscribed OpenMP threads make runs vary 3x or more, which
    # swamps the per-step overhead this benchmark is about.
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)

    adapter = AdapterConfig(lora_mode="standard", r=8)  # the plain loop trains both factors too
    cfg = TrainConfig(
        lr=1e-3, local_steps=args.steps, batch_size=args.batch_size, max_len=args.max_len, max_grad_norm=None
    )
    warm = TrainConfig(**{**cfg.__dict__, "local_steps": 3})

    from peft import LoraConfig, TaskType, get_peft_model

    base_plain, tokenizer = load_model(args.model, args.dtype, args.device, cache_dir=args.cache_dir)
    plain_model = get_peft_model(
        base_plain,
        LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=adapter.r,
            lora_alpha=int(adapter.alpha),
            lora_dropout=0.0,
            target_modules=list(adapter.target_modules),
        ),
    )
    base_ours, _ = load_model(args.model, args.dtype, args.device, cache_dir=args.cache_dir)
    our_model = attach_adapter(base_ours, adapter, run_seed=0)

    examples = [e for client in synthetic_clients(4, 64, seed=0).values() for e in client]
    encoded = [encode_sft(e, tokenizer, cfg.max_len) for e in examples]
    pad = pad_id_of(tokenizer)

    plain_loop(plain_model, encoded, pad, warm)
    ours(our_model, encoded, pad, warm)
    plain_rates, our_rates, plain_cpu, our_cpu = [], [], [], []
    for _ in range(args.repeats):
        tokens, seconds, cpu = plain_loop(plain_model, encoded, pad, cfg)
        plain_rates.append(tokens / seconds)
        plain_cpu.append(tokens / cpu)
        tokens, seconds, cpu = ours(our_model, encoded, pad, cfg)
        our_rates.append(tokens / seconds)
        our_cpu.append(tokens / cpu)

    plain_rate, our_rate = statistics.median(plain_rates), statistics.median(our_rates)
    # Adjacent runs share the machine's load, so the median of paired ratios is the robust figure.
    ratio = statistics.median(o / p for o, p in zip(our_rates, plain_rates, strict=True))
    cpu_ratio = statistics.median(o / p for o, p in zip(our_cpu, plain_cpu, strict=True))
    result = {
        "bench": "train",
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "plain_tokens_per_s": round(plain_rate, 1),
        "fedchain_tokens_per_s": round(our_rate, 1),
        "ratio": round(ratio, 3),
        "cpu_time_ratio": round(cpu_ratio, 3),
        "plain_runs": [round(r, 1) for r in plain_rates],
        "fedchain_runs": [round(r, 1) for r in our_rates],
        "target": 0.95,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"plain transformers+peft: {plain_rate:,.0f} tokens/s (median of {args.repeats})")
        print(f"fedchain training/:      {our_rate:,.0f} tokens/s")
        print(f"ratio (median of paired runs): {result['ratio']:.3f}x (target >= 0.95)")
        print(f"ratio of tokens per CPU-second: {result['cpu_time_ratio']:.3f}x")


if __name__ == "__main__":
    main()
