"""Supervised instruction tuning: next-token loss on the response only (the prompt is masked)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torch import Tensor

from training.client import ClientUpdate, ProgressFn, ScaffoldControls, train_local
from training.config import TrainConfig
from training.data import Example
from training.datasets.tokenize import Encoded, batch_order, encode_sft, pad_batch, pad_id_of
from training.errors import ConfigError

MODEL_INPUTS = ("input_ids", "attention_mask", "labels")


def sft_loss(model: Any, batch: dict[str, Tensor]) -> Tensor:
    """Mean cross-entropy over response tokens (labels ``-100`` elsewhere), as computed by the model."""
    loss: Tensor = model(**{k: batch[k] for k in MODEL_INPUTS}).loss
    return loss


def num_steps(num_items: int, cfg: TrainConfig) -> int:
    """Optimiser steps that :func:`train_sft` / ``train_dpo`` will make for ``num_items`` examples."""
    if cfg.local_steps is not None:
        return cfg.local_steps
    return cfg.epochs * -(-num_items // cfg.batch_size)


def sft_batches(encoded: Sequence[Encoded], pad_id: int, cfg: TrainConfig) -> Iterator[dict[str, Tensor]]:
    """Yield padded batches in the seeded order of ``cfg`` (``local_steps`` or ``epochs``)."""
    for indices in batch_order(
        len(encoded), cfg.batch_size, cfg.seed, steps=cfg.local_steps, epochs=cfg.epochs
    ):
        yield pad_batch([encoded[i] for i in indices], pad_id)


def train_sft(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    cfg: TrainConfig,
    *,
    controls: ScaffoldControls | None = None,
    progress: ProgressFn | None = None,
) -> ClientUpdate:
    """Instruction-tune the model's adapter on ``examples`` for one round.

    Parameters
    ----------
    model
        PEFT model holding the round's global adapter state.
    tokenizer
        Its tokenizer (chat template used when present).
    examples
        The client's local training examples.
    cfg
        Local training configuration (``task`` must be ``"sft"``).
    controls
        SCAFFOLD control variates, when ``cfg.client_algorithm == "scaffold"``.
    progress
        Optional per-step callback ``(step, total, loss)``.
    """
    if cfg.task != "sft":
        raise ConfigError(f"`task` must be 'sft' for train_sft, got {cfg.task!r}")
    if not examples:
        raise ConfigError("no training examples")
    encoded = [encode_sft(e, tokenizer, cfg.max_len, cfg.template) for e in examples]
    return train_local(
        model,
        sft_batches(encoded, pad_id_of(tokenizer), cfg),
        sft_loss,
        cfg,
        total_steps=num_steps(len(encoded), cfg),
        controls=controls,
        progress=progress,
    )
