"""Privacy bench: what client-level DP costs and buys, at epsilon = infinity, 8 and 2, in one run.

Three members (one chatterbot category each; a canary sentence planted only in the subject's data) train a
federated run with the node's own code path: ``node.protocol.model.ModelRuntime`` local training, the node's
DP step (:func:`training.privacy.privatize`: clip to ``clip_norm``, Gaussian noise from the OS CSPRNG), the
update codec and ``training.merge.merge``. For each target epsilon the noise multiplier is the one Opacus's
accountant gives for the run's rounds (every member releases one update per round;
:func:`training.privacy.noise_for_epsilon`); epsilon = infinity is the run without DP. Per setting:

- canary exposure of the final model (bench/canary.py's method: the canary's log-likelihood rank among
  ``--alternatives`` random secrets, ``exposure = log2(K + 1) - log2(rank)``), the base model as baseline;
- held-out loss on the members' held-out splits (never trained on), and the base model's.

``--section`` picks what is measured: ``dp`` (the table above), ``encryption`` (cost of confidential
artifacts per update: :func:`encryption_section`), or ``all``.

    .venv/bin/python bench/privacy.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.canary import PROMPT, TEMPLATE, _secret, exposure

NAMES = ("alice", "bob", "subject")


def _setting_label(epsilon: float) -> str:
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def dp_section(args: argparse.Namespace) -> dict[str, Any]:
    """Canary exposure and held-out loss per target epsilon (module docstring)."""
    import dataclasses
    import random

    import torch

    from node.protocol.model import ModelRuntime, member_seed
    from node.runspec import RunSpec
    from node.unlearning.replay import RunSetup, merge_round
    from training.config import TrainConfig
    from training.data import Example, split_held_out
    from training.datasets.chatterbot import load_chatterbot_category
    from training.merge import UpdateInput
    from training.privacy import epsilon_spent, noise_for_epsilon, privatize

    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    canary = _secret(rng)
    alternatives = sorted({_secret(rng) for _ in range(args.alternatives * 2)} - {canary})[
        : args.alternatives
    ]
    train = TrainConfig(local_steps=args.local_steps, lr=args.lr, batch_size=8, max_len=96)
    spec = RunSpec(name="privacy", rounds=args.rounds, seed=args.seed, train=train)
    runtime = ModelRuntime(spec, threads=args.threads)
    setup = RunSetup(spec.merge_spec(), runtime.initial_state(), "privacy")
    data: dict[str, list[Any]] = {}
    held_out: list[Any] = []
    for name, category in zip(NAMES, args.categories.split(","), strict=True):
        kept, held = split_held_out(load_chatterbot_category(category), 0.25, args.seed)
        data[name] = kept
        held_out += held
    data["subject"] = data["subject"] + [Example(PROMPT, TEMPLATE.format(canary)) for _ in range(args.copies)]
    dim = runtime.initial_flat.numel()

    def federate(privacy: Any) -> tuple[Any, list[float]]:
        state, norms = setup.initial, []
        for r in range(args.rounds):
            inputs = []
            for name in NAMES:
                result = runtime.train(state, data[name], seed=member_seed(args.seed, r, name))
                norms.append(float(result.delta.norm()))
                if privacy is not None:
                    result = dataclasses.replace(result, delta=privatize(result.delta, privacy).delta)
                blob = runtime.encode_update(result, run=setup.run_label, round=r)
                inputs.append(UpdateInput(name, blob, len(data[name])))
            state, _, _ = merge_round(state, inputs, setup, r, len(NAMES))
        return state, norms

    def score(state: Any) -> dict[str, Any]:
        row: dict[str, Any] = dict(exposure(runtime, state, canary, alternatives))
        runtime.load(state)
        row["held_out_loss"] = round(float(runtime.evaluate(held_out) or float("nan")), 4)
        return row

    out: dict[str, Any] = {
        "canary": canary,
        "alternatives": len(alternatives),
        "rounds": args.rounds,
        "members": len(NAMES),
        "copies": args.copies,
        "local_steps": args.local_steps,
        "delta": args.delta,
        "update_dim": dim,
        "held_out_examples": len(held_out),
        "settings": {"base": {**score(setup.initial), "epsilon": None, "noise_multiplier": None}},
    }
    clip_norm = args.clip_norm
    for epsilon in sorted((float(e) for e in args.epsilons.split(",")), reverse=True):
        started = time.perf_counter()
        privacy = None
        if not math.isinf(epsilon):
            if clip_norm is None:
                raise SystemExit("--epsilons: the first setting must be inf when --clip-norm is not given")
            privacy = noise_for_epsilon(epsilon, args.rounds, delta=args.delta, clip_norm=clip_norm)
        state, norms = federate(privacy)
        if clip_norm is None:  # the non-private run's median update norm: a tuning choice, not private
            clip_norm = statistics.median(norms)
            out["clip_norm_from"] = "median update norm of the epsilon = inf run"
        row = score(state)
        row.update(
            epsilon=None if privacy is None else round(epsilon_spent(privacy, args.rounds), 3),
            noise_multiplier=None if privacy is None else round(privacy.noise_multiplier, 4),
            noise_std=None if privacy is None else privacy.noise_std,
            median_update_norm=round(statistics.median(norms), 5),
            seconds=round(time.perf_counter() - started, 1),
        )
        out["settings"][_setting_label(epsilon)] = row
    out["clip_norm"] = clip_norm
    return out


def encryption_section(args: argparse.Namespace) -> dict[str, Any]:
    """Time and size cost of sealing and opening one update for a run's readers (``artifacts = "members"``).

    Two updates: the tiny model's real encoded update (``training.codec.encode`` of a random delta over the
    run's adapter layout), and a SmolLM2-135M-sized r = 8 LoRA update on q_proj and v_proj (A and B, 30
    layers, hidden 576, 3 KV heads of 64) synthesised as random fp32 tensors in safetensors, about 1.8 MB.
    Each is sealed for 3, 10 and 100 readers (fresh random keys) and opened by one of them; times are the
    median of ``--enc-reps`` repetitions of the calling thread's CPU time (``time.thread_time``: the work is
    single-threaded, and CPU time does not count waiting for a core on a loaded machine), next to a sha256
    of the same bytes (what every fetch does anyway).
    """
    import hashlib
    import secrets

    import torch
    from safetensors.torch import save

    from node.protocol.model import ModelRuntime
    from node.runspec import RunSpec
    from p2p.envelope import open_envelope, parse, public_key_of, seal
    from training.codec import encode

    torch.manual_seed(args.seed)
    runtime = ModelRuntime(RunSpec(name="privacy-encryption"), threads=args.threads)
    flat = runtime.flat_spec
    tiny = encode(torch.randn(flat.numel) * 1e-3, flat, run="1", round=0)
    smol: dict[str, torch.Tensor] = {}
    for layer in range(30):
        for proj, out_features in (("q_proj", 576), ("v_proj", 192)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            smol[f"{prefix}.lora_A.weight"] = torch.randn(8, 576)
            smol[f"{prefix}.lora_B.weight"] = torch.randn(out_features, 8)
    updates = {"tiny model (tiny.toml layout)": tiny, "SmolLM2-135M r=8 q,v (A+B)": save(smol)}

    def median_ms(fn: Any) -> float:
        times = []
        for _ in range(args.enc_reps):
            started = time.thread_time()
            fn()
            times.append((time.thread_time() - started) * 1e3)
        return round(statistics.median(times), 3)

    rows = []
    for name, plain in updates.items():
        for readers in (3, 10, 100):
            keys = [secrets.token_bytes(32) for _ in range(readers)]
            pubs = [public_key_of(k) for k in keys]
            sealed = seal(plain, pubs, label="bench")
            rows.append(
                {
                    "update": name,
                    "readers": readers,
                    "update_bytes": len(plain),
                    "sealed_bytes": len(sealed),
                    "overhead_bytes": len(sealed) - len(plain),
                    "header_bytes": len(parse(sealed).header),
                    "seal_ms": median_ms(lambda p=plain, r=pubs: seal(p, r, label="bench")),
                    "open_ms": median_ms(lambda e=sealed, k=keys[-1]: open_envelope(e, k, label="bench")),
                    "sha256_ms": median_ms(lambda p=plain: hashlib.sha256(p).digest()),
                }
            )
    return {"reps": args.enc_reps, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=("dp", "encryption", "all"), default="all")
    parser.add_argument("--epsilons", default="inf,8,2", help="target epsilons (inf: no DP), comma-separated")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument(
        "--clip-norm", type=float, default=None, help="default: the median update norm without DP"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=15)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--copies", type=int, default=8, help="canary copies in the subject's data")
    parser.add_argument("--alternatives", type=int, default=200, help="random secrets the canary ranks among")
    parser.add_argument("--categories", default="greetings,food,science")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--enc-reps", type=int, default=20, help="repetitions per encryption timing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.section in ("dp", "all"):
        out["dp"] = dp_section(args)
    if args.section in ("encryption", "all"):
        out["encryption"] = encryption_section(args)
    if args.json:
        print(json.dumps(out))
        return
    if "dp" in out:
        dp = out["dp"]
        print(
            f"canary '{dp['canary']}' among {dp['alternatives']} secrets; {dp['members']} members, "
            f"{dp['rounds']} rounds, clip_norm {dp['clip_norm']:.4g}, delta {dp['delta']:g}, "
            f"d = {dp['update_dim']}, {dp['held_out_examples']} held-out examples"
        )
        print("| setting | epsilon | noise_multiplier | canary rank | exposure | held-out loss |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, row in dp["settings"].items():
            eps = "inf" if label == "inf" else ("-" if row["epsilon"] is None else row["epsilon"])
            sigma = "-" if row["noise_multiplier"] is None else row["noise_multiplier"]
            print(
                f"| {label} | {eps} | {sigma} | {row['rank']} | {row['exposure']} | {row['held_out_loss']} |"
            )
    if "encryption" in out:
        enc = out["encryption"]
        print(f"encryption (median CPU time of {enc['reps']}):")
        print("| update | readers | update bytes | sealed bytes | overhead | seal ms | open ms | sha256 ms |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in enc["rows"]:
            print(
                f"| {row['update']} | {row['readers']} | {row['update_bytes']} | {row['sealed_bytes']} | "
                f"{row['overhead_bytes']} | {row['seal_ms']} | {row['open_ms']} | {row['sha256_ms']} |"
            )


if __name__ == "__main__":
    main()
