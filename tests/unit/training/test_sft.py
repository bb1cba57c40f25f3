from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.adapters import attach_adapter, trainable_state
from training.config import AdapterConfig, TrainConfig
from training.datasets.synthetic import synthetic_task
from training.errors import ConfigError
from training.evaluate import evaluate_loss
from training.models import load_model
from training.sft import num_steps, train_sft

pytestmark = pytest.mark.usefixtures("torch_one_thread")

CFG = TrainConfig(lr=1e-2, local_steps=12, batch_size=8, max_len=64)


def fresh(tiny_model_dir: Path, adapter: AdapterConfig | None = None) -> Any:
    base, _ = load_model(str(tiny_model_dir))
    return attach_adapter(base, adapter or AdapterConfig(), run_seed=0)


def test_sft_lowers_the_loss_and_trains_only_b(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    data = synthetic_task("capitals", 32, seed=0)
    before = evaluate_loss(model, tiny_tokenizer, data, max_len=64)
    a_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n}

    update = train_sft(model, tiny_tokenizer, data, CFG)

    after = evaluate_loss(model, tiny_tokenizer, data, max_len=64)
    assert after.loss < before.loss - 0.05
    assert all(torch.equal(p, a_before[n]) for n, p in model.named_parameters() if "lora_A" in n)
    assert update.metrics.steps == 12 and update.metrics.examples == 96 and update.metrics.tokens > 0
    assert set(update.delta) == set(update.state) == set(trainable_state(model))
    assert all(torch.equal(update.state[k], update.delta[k]) for k in update.state)  # global B was zero


def test_sft_is_reproducible_with_the_same_seed(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    data = synthetic_task("reverse", 16, seed=0)

    first = train_sft(fresh(tiny_model_dir), tiny_tokenizer, data, CFG)
    second = train_sft(fresh(tiny_model_dir), tiny_tokenizer, data, CFG)
    other = train_sft(fresh(tiny_model_dir), tiny_tokenizer, data, TrainConfig(**{**CFG.__dict__, "seed": 1}))

    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert not all(torch.equal(first.state[k], other.state[k]) for k in first.state)


def test_sft_epochs_and_progress(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    data = synthetic_task("antonyms", 10, seed=0)
    cfg = TrainConfig(local_steps=None, epochs=2, batch_size=4, max_len=64)
    seen: list[tuple[int, int, float]] = []

    update = train_sft(fresh(tiny_model_dir), tiny_tokenizer, data, cfg, progress=lambda *a: seen.append(a))

    assert num_steps(10, cfg) == 6 == update.metrics.steps
    assert [(s, t) for s, t, _ in seen] == [(i, 6) for i in range(1, 7)]
    assert update.metrics.examples == 20


def test_prompt_tuning_and_standard_lora_train_through_the_same_pipeline(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    data = synthetic_task("arithmetic", 16, seed=0)
    for adapter in (AdapterConfig(method="prompt_tuning"), AdapterConfig(lora_mode="standard")):
        model = fresh(tiny_model_dir, adapter)
        before = evaluate_loss(model, tiny_tokenizer, data, max_len=64)

        update = train_sft(model, tiny_tokenizer, data, CFG)

        assert evaluate_loss(model, tiny_tokenizer, data, max_len=64).loss < before.loss
        assert any(d.abs().sum() > 0 for d in update.delta.values())


def test_sft_rejects_wrong_task_and_empty_data(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    with pytest.raises(ConfigError, match="`task` must be 'sft'"):
        train_sft(model, tiny_tokenizer, synthetic_task("reverse", 2, 0), TrainConfig(task="dpo"))
    with pytest.raises(ConfigError, match="no training examples"):
        train_sft(model, tiny_tokenizer, [], CFG)


def test_sft_on_a_bfloat16_base_trains_float32_adapters(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    base, _ = load_model(str(tiny_model_dir), dtype="bfloat16")
    model = attach_adapter(base, AdapterConfig(), run_seed=0)
    data = synthetic_task("capitals", 8, 0)

    update = train_sft(model, tiny_tokenizer, data, TrainConfig(local_steps=2, lr=1e-2))

    assert all(v.dtype == torch.float32 for v in update.delta.values())
    assert any(v.abs().sum() > 0 for v in update.delta.values())
    assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if "lora" not in n)
