from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from training.adapters import attach_adapter, trainable_parameters
from training.config import AdapterConfig, TrainConfig
from training.datasets.synthetic import synthetic_preferences
from training.datasets.tokenize import encode_preference, pad_id_of
from training.dpo import dpo_loss, evaluate_dpo, policy_logprobs, reference_logprobs, train_dpo
from training.errors import ConfigError, TrainingError
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

    after = policy_logprobs(model, encoded, pad_id_of(tiny_tokenizer), batch_size=8)
    # The reference is the base model and the fresh LoRA adapter (B = 0) leaves it unchanged: the first
    # step sees policy == reference.
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


def test_the_reference_is_the_base_model_with_the_adapter_disabled(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = fresh(tiny_model_dir)
    pairs = synthetic_preferences("capitals", 8, seed=1)
    encoded = [encode_preference(p, tiny_tokenizer, 64) for p in pairs]
    pad = pad_id_of(tiny_tokenizer)
    base = policy_logprobs(load_model(str(tiny_model_dir))[0], encoded, pad, batch_size=8)

    train_dpo(model, tiny_tokenizer, pairs, CFG)

    trained = policy_logprobs(model, encoded, pad, batch_size=8)
    trainable = sorted(trainable_parameters(model))
    assert not torch.allclose(trained, base)
    torch.testing.assert_close(reference_logprobs(model, encoded, pad, batch_size=8), base)
    # Disabling the adapter leaves FFA-LoRA's frozen A factors frozen.
    assert sorted(trainable_parameters(model)) == trainable and all("lora_B" in n for n in trainable)
    # The next round's DPO starts away from log 2: the reference stays the base, not the round's start.
    losses: list[float] = []
    train_dpo(model, tiny_tokenizer, pairs, CFG, progress=lambda s, t, loss: losses.append(loss))
    assert losses[0] < math.log(2) - 1e-3


def test_evaluate_dpo_scores_loss_accuracy_and_margin_by_hand(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = fresh(tiny_model_dir)
    pairs = synthetic_preferences("antonyms", 12, seed=2)
    encoded = [encode_preference(p, tiny_tokenizer, 64) for p in pairs]
    pad = pad_id_of(tiny_tokenizer)

    before = evaluate_dpo(model, tiny_tokenizer, pairs, beta=0.5, max_len=64)
    train_dpo(model, tiny_tokenizer, pairs, CFG)
    after = evaluate_dpo(model, tiny_tokenizer, pairs, beta=0.5, max_len=64)

    # Policy == reference: every reward is 0, no pair is strictly preferred, the loss is log 2.
    assert before.loss == pytest.approx(math.log(2), abs=1e-6)
    assert before.reward_accuracy == 0.0 and before.pairs == 12
    policy = policy_logprobs(model, encoded, pad, batch_size=8)
    ref = reference_logprobs(model, encoded, pad, batch_size=8)
    margin = 0.5 * ((policy[:, 0] - ref[:, 0]) - (policy[:, 1] - ref[:, 1]))
    assert after.reward_accuracy == pytest.approx(float((margin > 0).double().mean()))
    assert after.margin == pytest.approx(float(margin.mean()), rel=1e-5)
    assert after.loss == pytest.approx(float(torch.nn.functional.softplus(-margin).mean()), rel=1e-5)
    assert after.loss < before.loss and after.reward_accuracy > 0.5


def test_evaluate_dpo_refuses_no_pairs_and_a_plain_model(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match="no evaluation preference pairs"):
        evaluate_dpo(fresh(tiny_model_dir), tiny_tokenizer, [], beta=0.1)
    with pytest.raises(TrainingError, match="needs a PEFT model"):
        evaluate_dpo(
            load_model(str(tiny_model_dir))[0],
            tiny_tokenizer,
            synthetic_preferences("reverse", 2, 0),
            beta=0.1,
        )
