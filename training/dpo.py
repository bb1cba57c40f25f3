"""DPO value alignment on preference pairs, implemented directly (sigmoid loss, Rafailov et al. 2023).

``loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` where ``pi`` and ``ref`` are the summed
log-probabilities of the chosen/rejected responses under the policy and the reference model.

Reference model: the frozen base model, i.e. the PEFT model with its adapter disabled, as TRL's
``DPOTrainer`` does for a PEFT model given no ``ref_model`` (and so the OpenFedLLM reference, whose
``main_dpo.py`` passes ``model_ref = None`` with PEFT). The reference is therefore the same in every round
and on every member, and the implicit reward ``beta * (log pi(y|x) - log ref(y|x))`` of the merged model is
comparable across rounds. Its log-probabilities are computed once per round, before the first local step,
for every local pair: no second model copy is kept.

Scoring (:func:`evaluate_dpo`): held-out DPO loss against the same reference, and reward accuracy, the
fraction of pairs whose chosen reward is strictly above the rejected reward (TRL's ``rewards/accuracies``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from training.client import ClientUpdate, ProgressFn, ScaffoldControls, train_local
from training.config import TrainConfig
from training.data import PreferencePair
from training.datasets.tokenize import Encoded, batch_order, encode_preference, pad_batch, pad_id_of
from training.errors import ConfigError, TrainingError
from training.evaluate import UNION, token_logprobs
from training.sft import num_steps


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Tensor:
    """Mean DPO sigmoid loss over a batch of summed sequence log-probabilities (all shaped ``[b]``)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -functional.logsigmoid(beta * margin).mean()


def _pair_batch(chosen: Sequence[Encoded], rejected: Sequence[Encoded], pad_id: int) -> dict[str, Tensor]:
    # Chosen rows first, then rejected rows: one forward pass for both halves.
    return pad_batch([*chosen, *rejected], pad_id)


@torch.no_grad()
def policy_logprobs(
    model: Any, pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int, batch_size: int
) -> Tensor:
    """Compute summed log-probabilities ``[n, 2]`` (chosen, rejected) of every pair under the model now."""
    model.eval()
    device = next(p for p in model.parameters()).device
    rows = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = _pair_batch([c for c, _ in chunk], [r for _, r in chunk], pad_id)
        logp, _ = token_logprobs(model, {k: v.to(device) for k, v in batch.items()})
        rows.append(logp.view(2, -1).T.float().cpu())
    return torch.cat(rows)


def reference_logprobs(
    model: Any, pairs: Sequence[tuple[Encoded, Encoded]], pad_id: int, batch_size: int
) -> Tensor:
    """Log-probabilities ``[n, 2]`` of every pair under the reference: the base model, adapter disabled.

    Raises
    ------
    TrainingError
        If the model is not a PEFT model (it has no adapter to disable).
    """
    disable = getattr(model, "disable_adapter", None)
    if disable is None:
        raise TrainingError(
            "DPO needs a PEFT model: the reference is the base model with the adapter disabled"
        )
    # PEFT re-enables the adapter on leaving the context and marks every adapter parameter trainable
    # again, which would unfreeze FFA-LoRA's A factor: the flags are put back as they were.
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with disable():
            return policy_logprobs(model, pairs, pad_id, batch_size)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass(frozen=True)
class DpoResult:
    """Held-out DPO scores over ``pairs`` preference pairs.

    Attributes
    ----------
    loss
        Mean DPO sigmoid loss against the reference (``log 2`` when the policy equals the reference).
    reward_accuracy
        Fraction of pairs whose chosen reward is strictly greater than the rejected reward.
    margin
        Mean reward margin ``r_chosen - r_rejected`` (rewards are ``beta * (log pi - log ref)``).
    pairs
        Number of pairs scored.
    """

    loss: float
    reward_accuracy: float
    margin: float
    pairs: int


def _scores(policy: Tensor, ref: Tensor, beta: float) -> DpoResult:
    rewards = beta * (policy - ref)  # [n, 2]: chosen, rejected
    margin = rewards[:, 0] - rewards[:, 1]
    return DpoResult(
        loss=float(-functional.logsigmoid(margin).mean()),
        reward_accuracy=float((margin > 0).double().mean()),
        margin=float(margin.double().mean()),
        pairs=int(margin.shape[0]),
    )


def evaluate_dpo(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    *,
    beta: float,
    max_len: int = 256,
    batch_size: int = 16,
    template: str | None = None,
) -> DpoResult:
    """Held-out DPO loss, reward accuracy and margin of the adapter in the model (model left in eval mode)."""
    if not pairs:
        raise ConfigError("no evaluation preference pairs")
    pad = pad_id_of(tokenizer)
    encoded = [encode_preference(p, tokenizer, max_len, template) for p in pairs]
    ref = reference_logprobs(model, encoded, pad, batch_size)
    return _scores(policy_logprobs(model, encoded, pad, batch_size), ref, beta)


def evaluate_dpo_clients(
    model: Any,
    tokenizer: Any,
    held_out: Mapping[str, Sequence[PreferencePair]],
    *,
    beta: float,
    max_len: int = 256,
    batch_size: int = 16,
    template: str | None = None,
) -> dict[str, DpoResult]:
    """:func:`evaluate_dpo` per client and on the union of all pairs (key ``training.evaluate.UNION``).

    The union's scores weigh every pair equally (the pair-weighted means of the clients').
    """
    if UNION in held_out:
        raise ConfigError(f"a client may not be named {UNION!r}")
    results = {
        name: evaluate_dpo(
            model, tokenizer, pairs, beta=beta, max_len=max_len, batch_size=batch_size, template=template
        )
        for name, pairs in sorted(held_out.items())
        if pairs
    }
    if not results:
        raise ConfigError("no evaluation preference pairs")
    n = sum(r.pairs for r in results.values())
    results[UNION] = DpoResult(
        loss=sum(r.loss * r.pairs for r in results.values()) / n,
        reward_accuracy=sum(r.reward_accuracy * r.pairs for r in results.values()) / n,
        margin=sum(r.margin * r.pairs for r in results.values()) / n,
        pairs=n,
    )
    return results


def dpo_step_loss(beta: float) -> Any:
    """Return the per-batch DPO loss function for :func:`training.client.train_local`."""

    def loss_fn(model: Any, batch: dict[str, Tensor]) -> Tensor:
        logp, _ = token_logprobs(model, batch)
        chosen, rejected = logp.view(2, -1)
        return dpo_loss(chosen, rejected, batch["ref_chosen"], batch["ref_rejected"], beta)

    return loss_fn


def _dpo_batches(
    encoded: Sequence[tuple[Encoded, Encoded]], ref: Tensor, pad_id: int, cfg: TrainConfig
) -> Iterator[dict[str, Tensor]]:
    for indices in batch_order(
        len(encoded), cfg.batch_size, cfg.seed, steps=cfg.local_steps, epochs=cfg.epochs
    ):
        batch = _pair_batch([encoded[i][0] for i in indices], [encoded[i][1] for i in indices], pad_id)
        batch["ref_chosen"], batch["ref_rejected"] = ref[indices, 0], ref[indices, 1]
        yield batch


def train_dpo(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[PreferencePair],
    cfg: TrainConfig,
    *,
    controls: ScaffoldControls | None = None,
    progress: ProgressFn | None = None,
) -> ClientUpdate:
    """Align the model's adapter with the client's preference pairs for one round.

    The reference log-probabilities come from the base model (the adapter disabled), see the module
    docstring. Metrics count chosen and rejected sequences as separate examples.
    """
    if cfg.task != "dpo":
        raise ConfigError(f"`task` must be 'dpo' for train_dpo, got {cfg.task!r}")
    if not pairs:
        raise ConfigError("no preference pairs")
    pad = pad_id_of(tokenizer)
    encoded = [encode_preference(p, tokenizer, cfg.max_len, cfg.template) for p in pairs]
    ref = reference_logprobs(model, encoded, pad, cfg.batch_size)
    return train_local(
        model,
        _dpo_batches(encoded, ref, pad, cfg),
        dpo_step_loss(cfg.dpo_beta),
        cfg,
        total_steps=num_steps(len(encoded), cfg),
        controls=controls,
        progress=progress,
    )
