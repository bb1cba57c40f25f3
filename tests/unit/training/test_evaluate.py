from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from training.adapters import attach_adapter
from training.config import AdapterConfig
from training.data import Example
from training.datasets.synthetic import synthetic_task
from training.datasets.tokenize import encode_sft, pad_batch, pad_id_of
from training.errors import ConfigError
from training.evaluate import (
    UNION,
    answer_f1,
    evaluate_clients,
    evaluate_loss,
    exact_match,
    generate_answers,
    normalize_answer,
    token_f1,
)
from training.models import load_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def fresh(tiny_model_dir: Path, adapter: AdapterConfig | None = None) -> Any:
    return attach_adapter(load_model(str(tiny_model_dir))[0], adapter or AdapterConfig(), run_seed=0)


def test_evaluate_loss_matches_the_models_own_masked_loss(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    data = synthetic_task("reverse", 6, seed=0)
    batch = pad_batch([encode_sft(e, tiny_tokenizer, 64) for e in data], pad_id_of(tiny_tokenizer))

    result = evaluate_loss(model, tiny_tokenizer, data, max_len=64, batch_size=4)

    with torch.no_grad():
        reference = model(**batch).loss.item()
    assert result.loss == pytest.approx(reference, rel=1e-5)
    assert result.tokens == int((batch["labels"][:, 1:] != -100).sum())
    assert result.examples == 6
    assert result.perplexity == pytest.approx(math.exp(result.loss))


def test_evaluate_clients_reports_each_client_and_the_union(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = fresh(tiny_model_dir)
    held_out = {"a": synthetic_task("capitals", 5, 0), "b": synthetic_task("reverse", 3, 0), "empty": []}

    results = evaluate_clients(model, tiny_tokenizer, held_out, max_len=64)

    union = evaluate_loss(model, tiny_tokenizer, held_out["a"] + held_out["b"], max_len=64)
    assert list(results) == ["a", "b", UNION]
    assert results[UNION].loss == pytest.approx(union.loss, rel=1e-6)
    assert results[UNION].tokens == results["a"].tokens + results["b"].tokens == union.tokens
    with pytest.raises(ConfigError, match="may not be named 'union'"):
        evaluate_clients(model, tiny_tokenizer, {UNION: held_out["a"]})


@pytest.mark.parametrize("method", ["lora", "prompt_tuning"])
def test_exact_match_compares_greedy_answers(tiny_model_dir: Path, tiny_tokenizer: Any, method: str) -> None:
    model = fresh(tiny_model_dir, AdapterConfig(method=method))  # type: ignore[arg-type]
    prompts = synthetic_task("antonyms", 4, seed=0)
    answers = generate_answers(model, tiny_tokenizer, prompts, max_new_tokens=4, batch_size=3)
    right = [Example(e.prompt, a) for e, a in zip(prompts, answers, strict=True)]
    wrong = [Example(e.prompt, a + " nope") for e, a in zip(prompts, answers, strict=True)]

    assert exact_match(model, tiny_tokenizer, right, max_new_tokens=4) == 1.0
    assert exact_match(model, tiny_tokenizer, wrong, max_new_tokens=4) == 0.0
    assert exact_match(model, tiny_tokenizer, right[:2] + wrong[2:], max_new_tokens=4, batch_size=1) == 0.5


@pytest.mark.parametrize(
    ("prediction", "reference", "f1"),
    [
        ("the cat sat", "The cat sat.", 1.0),  # case, punctuation and articles do not count
        ("cat sat down", "cat sat", 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)),  # P 2/3, R 1 -> 0.8
        ("dog", "cat", 0.0),
        ("a cat", "cat cat", 2 * 1.0 * 0.5 / 1.5),  # one shared "cat": P 1, R 1/2 -> 2/3
        ("cat cat cat", "cat cat", 2 * (2 / 3) * 1.0 / (2 / 3 + 1.0)),  # repeats count as often as shared
        ("", "", 1.0),
        ("the", "", 1.0),  # only an article: no words on either side
        ("", "cat", 0.0),
        ("cat", "!!", 0.0),
    ],
)
def test_token_f1_hand_computed(prediction: str, reference: str, f1: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(f1)


def test_normalize_answer() -> None:
    assert normalize_answer("  The Answer, is: AN apple!  ") == "answer is apple"


def test_answer_f1_scores_greedy_answers(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    prompts = synthetic_task("antonyms", 4, seed=0)
    answers = generate_answers(model, tiny_tokenizer, prompts, max_new_tokens=4)
    right = [Example(e.prompt, a) for e, a in zip(prompts, answers, strict=True)]
    longer = [Example(e.prompt, a + " nope") for e, a in zip(prompts, answers, strict=True)]
    words = [len(normalize_answer(a).split()) for a in answers]
    expected = sum(2 * k / (2 * k + 1) for k in words) / len(words)  # P 1, R k/(k+1)

    assert answer_f1(model, tiny_tokenizer, right, max_new_tokens=4) == 1.0
    assert answer_f1(model, tiny_tokenizer, longer, max_new_tokens=4, batch_size=3) == pytest.approx(expected)
    with pytest.raises(ConfigError, match="no evaluation examples"):
        answer_f1(model, tiny_tokenizer, [], max_new_tokens=4)
