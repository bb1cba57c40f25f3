from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from training.adapters import attach_adapter
from training.config import AdapterConfig, TrainConfig
from training.datasets.synthetic import synthetic_preferences
from training.datasets.tokenize import encode_preference, pad_id_of
from training.dpo import dpo_loss, reference_logprobs, train_dpo
from training.errors import ConfigError
from training.models import load_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CFG = TrainConfig(task="dpo", lr=1e-2, local_steps=8, batch_size=8, max_len=64, dpo_beta=0.5)


def fresh(tiny_model_dir: Path, adapter: AdapterConfig | None = None) -> Any:
    return attach_adapter(load_model(str(tiny_model_dir))[0], adapter or AdapterConfig(), run_seed=0)


def test_dpo_loss_matches_hand_computation() -> None:
    pc, pr = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
    rc, rr = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])

    loss = dpo_loss(pc, pr, rc, rr, beta=0.5)

    # margins: (1 - (-1)) = 2 and (0 - 1) = -1; loss = mean(-log sigmoid(0.5 * m))
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert dpo_loss(pc, pr, pc, pr, beta=0.1).item() == pytest.approx(math.log(2))


def test_dpo_starts_at_log2_and_raises_the_preference_margin(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = fresh(tiny_model_dir)
    pairs = synthetic_preferences("antonyms", 16, seed=0)
    encoded = [encode_preference(p, tiny_tokenizer, 64) for p in pairs]
    ref = reference_logprobs(model, encoded, pad_id_of(tiny_tokenizer), batch_size=8)
    losses: list[float] = []

    update = train_dpo(model, tiny_tokenizer, pairs, CFG, progress=lambda s, t, loss: losses.append(loss))

    after = reference_logprobs(model, encoded, pad_id_of(tiny_tokenizer), batch_size=8)
    # The reference is the round-start model: the first step sees policy == reference.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    margin_gain = (after[:, 0] - ref[:, 0]) - (after[:, 1] - ref[:, 1])
    assert margin_gain.mean() > 0
    assert update.metrics.steps == 8 and update.metrics.examples == 2 * 8 * 8
    assert update.metrics.final_loss < math.log(2)


def test_dpo_with_prompt_tuning(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir, AdapterConfig(method="prompt_tuning"))
    pairs = synthetic_preferences("capitals", 8, seed=0)

    update = train_dpo(model, tiny_tokenizer, pairs, TrainConfig(**{**CFG.__dict__, "local_steps": 3}))

    assert list(update.delta) == ["prompt_embeddings"] and update.delta["prompt_embeddings"].abs().sum() > 0


def test_dpo_rejects_wrong_task_and_empty_pairs(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    with pytest.raises(ConfigError, match="`task` must be 'dpo'"):
        train_dpo(model, tiny_tokenizer, synthetic_preferences("reverse", 2, 0), TrainConfig())
    with pytest.raises(ConfigError, match="no preference pairs"):
        train_dpo(model, tiny_tokenizer, [], CFG)
