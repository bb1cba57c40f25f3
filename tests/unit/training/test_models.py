from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.errors import ModelLoadError
from training.models import (
    TINY_VOCAB_SIZE,
    build_tiny_llama,
    build_tiny_tokenizer,
    load_model,
    smollm2_gguf_path,
    tiny_llama_dir,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_tiny_tokenizer_is_deterministic(tiny_tokenizer: Any) -> None:
    rebuilt = build_tiny_tokenizer()

    assert rebuilt.backend_tokenizer.to_str() == tiny_tokenizer.backend_tokenizer.to_str()
    assert len(rebuilt) == TINY_VOCAB_SIZE


def test_tiny_tokenizer_round_trips_text_and_has_chat_template(tiny_tokenizer: Any) -> None:
    text = "What is the capital of Norway? Oslo, obviously!"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]

    rendered = tiny_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )

    assert tiny_tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 2  # BPE merges learned from the corpus
    assert rendered == "<|user|>\nhi</s><|assistant|>\n"
    assert tiny_tokenizer.pad_token == "<pad>" and tiny_tokenizer.eos_token == "</s>"


def test_build_tiny_llama_same_seed_same_weights(tiny_tokenizer: Any) -> None:
    a, b, c = (build_tiny_llama(tiny_tokenizer, seed=s) for s in (1, 1, 2))

    wa, wb, wc = (m.state_dict()["model.layers.0.self_attn.q_proj.weight"] for m in (a, b, c))

    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_tiny_llama_dir_is_built_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    first = tiny_llama_dir(tiny_model_dir.parent.parent)
    stamp = (first / "model.safetensors").stat().st_mtime_ns

    again = tiny_llama_dir(tiny_model_dir.parent.parent)

    assert first == again == tiny_model_dir
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp


def test_load_model_freezes_base_and_applies_dtype(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model(str(tiny_model_dir), dtype="bfloat16")
    config: Any = model.config

    params = list(model.parameters())

    assert all(p.dtype == torch.bfloat16 for p in params)
    assert not any(p.requires_grad for p in params)
    assert not model.training
    assert config.pad_token_id == tokenizer.pad_token_id


def test_load_model_rejects_unknown_dtype_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="`dtype` must be one of"):
        load_model("tiny-llama", dtype="float8")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_model(str(tmp_path / "nowhere"))


def test_smollm2_gguf_ships_in_package() -> None:
    path = smollm2_gguf_path()

    assert path.is_file() and path.suffix == ".gguf"


@pytest.mark.slow
def test_smollm2_converts_once_to_safetensors_and_answers(tmp_path: Path) -> None:
    from training.data import Example
    from training.evaluate import generate_answers

    model, tokenizer = load_model("smollm2", cache_dir=tmp_path)
    folder = tmp_path / "models" / "smollm2-135m-instruct"
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    again, _ = load_model("smollm2", cache_dir=tmp_path)

    answer = generate_answers(model, tokenizer, [Example("What is the capital of France?", "Paris")])[0]

    assert not list(folder.glob("*.gguf"))
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert sum(p.numel() for p in again.parameters()) > 100_000_000
    assert "Paris" in answer
