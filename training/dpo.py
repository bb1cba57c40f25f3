"""DPO value alignment on preference pairs, implemented directly (sigmoid loss, Rafailov et al. 2023).

``loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` where ``pi`` and ``ref`` are the summed
log-probabilities of the chosen/rejected responses under the policy and the reference model.

Reference model: in federated DPO the reference is the model at the start of the round, i.e. the base
model with the round's global adapter M(r-1) (not the bare base model). Its log-probabilities are computed
once, before the first local step, for every local pair: no second model copy is kept, and the reference
stays fixed while the adapter trains.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from training.client import ClientUpdate, ProgressFn, ScaffoldControls, train_local
from training.config import TrainConfig
from training.data import PreferencePair
from training.datasets.tokenize import Encoded, batch_order, encode_preference, pad_batch, pad_id_of
from training.errors import ConfigError
from training.evaluate import token_logprobs
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
def reference_logprobs(
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

    The reference log-probabilities come from the model as passed in (the round's global adapter), see
    the module docstring. Metrics count chosen and rejected sequences as separate examples.
    """
    if cfg.task != "dpo":
        raise ConfigError(f"`task` must be 'dpo' for train_dpo, got {cfg.task!r}")
    if not pairs:
        raise ConfigError("no preference pairs")
    pad = pad_id_of(tokenizer)
    encoded = [encode_preference(p, tokenizer, cfg.max_len) for p in pairs]
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
