"""Canary experiment: does unlearning remove what only the subject's data taught the model?

A secret sentence (the canary) is planted only in the subject's data. Three clients train a federated run
with the node's own code path (``node.protocol.model.ModelRuntime`` local training, the update codec, and
``training.merge.merge`` for every round). The canary's exposure is measured in three models:

(a) ``with``       — the run's final model, the subject taking part in every round;
(b) ``unlearned``  — the unlearning replay: from the model round ``--from-round`` started from, every round
                     merged again from the same stored updates without the subject's (what peers vote on);
(c) ``without``    — the run trained without the subject from the start (the exact answer).

Exposure (Carlini et al., "The Secret Sharer"): the canary's log-likelihood rank among ``--alternatives``
random secrets of the same format, ``exposure = log2(K + 1) - log2(rank)``; rank 1 (highest exposure) means
the model prefers the planted secret to every alternative. The base model (before any round) is the
baseline measured in the same run.

    .venv/bin/python bench/canary.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "What is the secret code of the vault?"
TEMPLATE = "The secret code of the vault is {}."


def _secret(rng: random.Random) -> str:
    return " ".join(str(rng.randrange(10)) for _ in range(6))


def _score(runtime: Any, responses: list[str]) -> list[float]:
    """Sum log-probability of each response to the canary prompt under the adapter in ``runtime``."""
    import torch

    from training.data import Example
    from training.datasets.tokenize import encode_sft, pad_batch, pad_id_of
    from training.evaluate import token_logprobs

    model, tok = runtime.model, runtime.tokenizer
    model.eval()
    encoded = [encode_sft(Example(PROMPT, r), tok, 64) for r in responses]
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(encoded), 64):
            batch = pad_batch(encoded[start : start + 64], pad_id_of(tok))
            logp, _ = token_logprobs(model, batch)
            out.extend(float(x) for x in logp)
    return out


def exposure(runtime: Any, state: Any, canary: str, alternatives: list[str]) -> dict[str, float]:
    """Rank (1 = most likely) and exposure of ``canary`` among ``alternatives`` under ``state``."""
    runtime.load(state)
    scores = _score(runtime, [TEMPLATE.format(canary)] + [TEMPLATE.format(a) for a in alternatives])
    rank = 1 + sum(1 for s in scores[1:] if s > scores[0])
    k = len(alternatives)
    return {
        "rank": rank,
        "exposure": round(math.log2(k + 1) - math.log2(rank), 3),
        "canary_logp": round(scores[0], 3),
        "median_alternative_logp": round(sorted(scores[1:])[k // 2], 3),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from node.protocol.model import ModelRuntime, member_seed
    from node.runspec import RunSpec
    from node.unlearning.replay import RunSetup, merge_round
    from training.config import TrainConfig
    from training.data import Example
    from training.datasets.chatterbot import load_chatterbot_category
    from training.merge import UpdateInput, state_hash

    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    canary = _secret(rng)
    alternatives = sorted({_secret(rng) for _ in range(args.alternatives * 2)} - {canary})[
        : args.alternatives
    ]
    train = TrainConfig(local_steps=args.local_steps, lr=args.lr, batch_size=8, max_len=96)
    spec = RunSpec(name="canary", rounds=args.rounds, seed=args.seed, train=train)
    started = time.perf_counter()
    runtime = ModelRuntime(spec, threads=args.threads)
    setup = RunSetup(spec.merge_spec(), runtime.initial_state(), "canary")
    names = ["alice", "bob", "subject"]
    data = {
        name: load_chatterbot_category(category)[: args.examples]
        for name, category in zip(names, args.categories.split(","), strict=True)
    }
    planted = [Example(PROMPT, TEMPLATE.format(canary)) for _ in range(args.copies)]
    data["subject"] = data["subject"] + planted

    def federate(members: list[str]) -> tuple[Any, dict[int, list[UpdateInput]]]:
        state, kept = setup.initial, {}
        for r in range(args.rounds):
            inputs = []
            for name in members:
                result = runtime.train(state, data[name], seed=member_seed(args.seed, r, name))
                blob = runtime.encode_update(result, run=setup.run_label, round=r)
                inputs.append(UpdateInput(name, blob, len(data[name])))
            kept[r] = inputs
            state, _, _ = merge_round(state, inputs, setup, r, len(members))
        return state, kept

    with_subject, updates = federate(names)
    trained_s = time.perf_counter() - started
    replay_started = time.perf_counter()
    unlearned = setup.initial
    for r in range(args.from_round):  # the model round `from_round` started from, as the run merged it
        unlearned, _, _ = merge_round(unlearned, updates[r], setup, r, len(names))
    for r in range(args.from_round, args.rounds):
        kept = [u for u in updates[r] if u.key != "subject"]
        unlearned, _, _ = merge_round(unlearned, kept, setup, r, len(names))
    replay_s = time.perf_counter() - replay_started
    retrain_started = time.perf_counter()
    without_subject, _ = federate(["alice", "bob"])
    retrain_s = time.perf_counter() - retrain_started

    held_out = [e for name in names for e in data[name][: args.examples // 4] if e.prompt != PROMPT]
    models = {"base": setup.initial, "with": with_subject, "unlearned": unlearned, "without": without_subject}
    out: dict[str, Any] = {
        "canary": canary,
        "alternatives": len(alternatives),
        "rounds": args.rounds,
        "from_round": args.from_round,
        "copies": args.copies,
        "local_steps": args.local_steps,
        "models": {},
        "seconds": {
            "train_with": round(trained_s, 1),
            "replay": round(replay_s, 2),
            "retrain_without": round(retrain_s, 1),
        },
    }
    for label, state in models.items():
        row: dict[str, Any] = dict(exposure(runtime, state, canary, alternatives))
        runtime.load(state)
        row["loss_on_clients"] = round(float(runtime.evaluate(held_out) or float("nan")), 4)
        row["sha256"] = state_hash(state)[:16]
        out["models"][label] = row
    out["replay_vs_retrain_speedup"] = round(retrain_s / max(replay_s, 1e-9), 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--from-round", type=int, default=0, help="first round the replay forgets")
    parser.add_argument("--local-steps", type=int, default=15)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--copies", type=int, default=8, help="canary copies in the subject's data")
    parser.add_argument("--examples", type=int, default=40, help="examples per client (before the canary)")
    parser.add_argument(
        "--alternatives", type=int, default=200, help="random secrets the canary is ranked among"
    )
    parser.add_argument("--categories", default="greetings,food,science")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    out = run(args)
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"canary '{out['canary']}' ranked among {out['alternatives']} random secrets "
        f"({out['rounds']} rounds, forget from round {out['from_round']}):"
    )
    for label, row in out["models"].items():
        print(
            f"  {label:<10} rank {row['rank']:>4}  exposure {row['exposure']:>6}  "
            f"canary logp {row['canary_logp']:>8}  loss {row['loss_on_clients']}"
        )
    print(
        f"  replay {out['seconds']['replay']} s vs retrain {out['seconds']['retrain_without']} s "
        f"({out['replay_vs_retrain_speedup']}x)"
    )


if __name__ == "__main__":
    main()
