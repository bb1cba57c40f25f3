"""Pre-training: the model from a config, its seeded initialisation, local AdamW steps on text blocks, the
pseudo-gradient, config validation, export, and `fedchain simulate` of a pre-training config end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from training.config import TrainConfig
from training.determinism import state_sha256
from training.errors import ConfigError
from training.pretrain import (
    PRETRAIN_CONFIGS,
    block_loss,
    build_model,
    check_model_name,
    check_pretrain_tables,
    export_pretrained,
    flat_params,
    load_flat,
    load_pretrain_tokenizer,
    local_update,
    split_blocks,
)
from training.simconfig import config_from_dict, load_config
from training.text import pack_blocks, tokenize_documents

ROOT = Path(__file__).resolve().parents[3]
TEXT = " ".join(f"the {w} sat on the mat and the dog ran to the {w}." for w in ("cat", "bird", "fox") * 30)
BASE: dict[str, dict[str, Any]] = {
    "simulation": {"clients": 2, "rounds": 2, "algorithm": "diloco", "seed": 0, "threads": 1},
    "data": {"source": "chatterbot", "categories": ["ai", "computers"], "max_eval_examples": 4},
    "model": {"name_or_path": "tiny-llama"},
    "train": {"task": "pretrain", "lr": 0.003, "local_steps": 3, "batch_size": 4, "max_len": 32},
}


def _doc(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    doc = {name: dict(table) for name, table in BASE.items()}
    for name, table in sections.items():
        doc.setdefault(name, {}).update(table)
    return doc


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_pretrain_tokenizer("tiny-llama")


@pytest.fixture(scope="module")
def blocks(tokenizer: Any) -> torch.Tensor:
    return pack_blocks(tokenize_documents([TEXT], tokenizer), 32)


def test_same_seed_same_bytes_other_seed_other_bytes(tokenizer: Any) -> None:
    a, spec = flat_params(build_model("tiny-llama", tokenizer, seed=1))
    b, _ = flat_params(build_model("tiny-llama", tokenizer, seed=1))
    c, _ = flat_params(build_model("tiny-llama", tokenizer, seed=2))

    assert a.numpy().tobytes() == b.numpy().tobytes()
    assert not torch.equal(a, c)
    assert list(spec.names) == sorted(spec.names) and spec.numel == a.numel()


def test_init_is_llama_scaled_uniform_with_unit_norms_and_zero_padding(tokenizer: Any) -> None:
    model = build_model("tiny-llama", tokenizer, seed=0)
    params = {k: v.detach() for k, v in model.named_parameters()}

    norms = [n for n in params if n.endswith("norm.weight")]
    matrix = params["model.layers.0.mlp.up_proj.weight"]
    bound = 0.02 * 3**0.5

    assert norms and all(bool((params[n] == 1).all()) for n in norms)
    assert bool((params["model.embed_tokens.weight"][tokenizer.pad_token_id] == 0).all())
    assert float(matrix.abs().max()) <= bound and abs(float(matrix.std()) - 0.02) < 0.002
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.slow
def test_init_bytes_do_not_depend_on_the_instruction_set(tokenizer: Any) -> None:
    code = (
        "from training.pretrain import build_model, flat_params, load_pretrain_tokenizer\n"
        "from training.determinism import state_sha256\n"
        "m = build_model('tiny-llama', load_pretrain_tokenizer('tiny-llama'), seed=5)\n"
        "print(state_sha256({'p': flat_params(m)[0]}))\n"
    )
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="3")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    here = state_sha256({"p": flat_params(build_model("tiny-llama", tokenizer, seed=5))[0]})

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == here


def test_local_steps_lower_the_loss_and_the_update_is_end_minus_start(
    tokenizer: Any, blocks: torch.Tensor, torch_one_thread: None
) -> None:
    model = build_model("tiny-llama", tokenizer, seed=0)
    start, spec = flat_params(model)
    before, _ = block_loss(model, blocks)
    cfg = TrainConfig(task="pretrain", lr=0.01, local_steps=4, batch_size=4, max_len=32, seed=3)

    delta, metrics = local_update(model, blocks, cfg)
    end, _ = flat_params(model)
    after, _ = block_loss(model, blocks)

    assert metrics.steps == 4 and metrics.tokens == 4 * 4 * 32
    assert after < before - 0.5
    assert torch.equal(delta, end - start) and bool((delta != 0).any())
    load_flat(model, start, spec)  # back to the start: the next member trains from the global state
    assert torch.equal(flat_params(model)[0], start)


def test_export_is_a_save_pretrained_folder(tmp_path: Path, tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = build_model("tiny-llama", tokenizer, seed=4)

    folder = export_pretrained(model, tokenizer, tmp_path / "out")
    loaded = AutoModelForCausalLM.from_pretrained(folder)

    assert torch.equal(flat_params(loaded)[0], flat_params(model)[0])
    assert len(AutoTokenizer.from_pretrained(folder)) == len(tokenizer)


def test_named_configs_and_folders_are_the_only_models(tmp_path: Path, tokenizer: Any) -> None:
    from training.pretrain import model_config

    (tmp_path / "config.json").write_text("{}")
    check_model_name(str(tmp_path))
    cfg = model_config("llama-30m", tokenizer)
    d = cfg.hidden_size
    layer = 4 * d * d + 3 * d * cfg.intermediate_size + 2 * d
    total = cfg.num_hidden_layers * layer + 2 * cfg.vocab_size * d + d

    assert set(PRETRAIN_CONFIGS) == {"tiny-llama", "llama-30m"}
    assert 20e6 < total < 60e6
    with pytest.raises(ConfigError, match=r"\[model\] `name_or_path` 'smollm2' is not a pre-training model"):
        check_model_name("smollm2")


def test_split_blocks_holds_out_the_tail(blocks: torch.Tensor) -> None:
    train, held = split_blocks(blocks, 0.25, where="x")

    assert torch.equal(torch.cat([train, held]), blocks) and held.shape[0] == round(blocks.shape[0] * 0.25)
    with pytest.raises(ConfigError, match="client 'c': 1 blocks of text, too few"):
        split_blocks(blocks[:1], 0.25, where="client 'c'")


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"adapter": {"r": 4}}, r"\[adapter\] `r` does not apply to \[train\] task = 'pretrain'"),
        ({"train": {"dpo_beta": 0.5}}, r"\[train\] `dpo_beta` does not apply to task = 'pretrain'"),
        ({"train": {"template": "alpaca"}}, r"\[train\] `template` does not apply"),
        ({"model": {"name_or_path": "gpt-zzz"}}, r"\[model\] `name_or_path` 'gpt-zzz' is not a pre-training"),
        ({"data": {"source": "synthetic", "categories": []}}, r"`source` 'synthetic' has no plain text"),
        ({"data": {"source": "text", "categories": []}}, r"`paths` must list one file per client"),
        (
            {"simulation": {"algorithm": "scaffold"}},
            r"`algorithm` 'scaffold' does not apply to \[train\] task",
        ),
        ({"simulation": {"algorithm": "fedprox"}}, r"`algorithm` 'fedprox' does not apply"),
    ],
)
def test_config_of_other_tasks_is_refused_naming_the_field(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_doc(**sections))


def test_text_source_is_for_pretraining_only() -> None:
    doc = _doc(data={"source": "text", "paths": ["a.txt", "b.txt"], "categories": []})
    doc["train"] = {"task": "sft"}

    with pytest.raises(ConfigError, match=r"`source` 'text' is plain text for \[train\] task = 'pretrain'"):
        config_from_dict(doc)


def test_check_pretrain_tables_accepts_a_clean_config() -> None:
    check_pretrain_tables(None, TrainConfig(task="pretrain"))
    check_pretrain_tables({}, TrainConfig(task="pretrain"))


def test_bad_text_shard_in_a_simulation_names_the_file(tmp_path: Path) -> None:
    from training.errors import DataFormatError
    from training.simulate import run_simulation

    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(TEXT)
    bad.write_bytes(b"ok \xff\xfe")
    cfg = config_from_dict(_doc(data={"source": "text", "paths": [str(good), str(bad)], "categories": []}))

    with pytest.raises(DataFormatError, match=r"bad.txt: not UTF-8 text: byte offset 3"):
        run_simulation(cfg)


def test_simulation_pretrains_every_round_through_the_merge(tmp_path: Path) -> None:
    from training.simulate import run_simulation

    paths = []
    for i, word in enumerate(("cat", "fox")):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(TEXT.replace("cat", word))
    cfg = config_from_dict(
        _doc(
            data={"source": "text", "paths": [str(p) for p in paths], "categories": []},
            simulation={"local_baseline": True},
        )
    )

    result = run_simulation(cfg)

    losses = [r.eval.union_loss for r in result.rounds]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0]
    assert [r.accepted for r in result.rounds[1:]] == [2, 2]
    assert result.baseline is not None and set(result.baseline.per_client_union_loss) == {
        "client-0",
        "client-1",
    }
    d = flat_params(build_model("tiny-llama", load_pretrain_tokenizer("tiny-llama"), 0))[1].numel
    assert all(r.update_bytes > 2 * 4 * d for r in result.rounds[1:])  # fp32: two members' full vectors
    json.dumps(result.to_dict())  # the CLI's --json output


def test_simulation_with_the_topk_codec_sends_less(tmp_path: Path) -> None:
    from training.simulate import run_simulation

    cfg = config_from_dict(_doc(simulation={"codec": "topk", "topk_fraction": 0.05, "rounds": 1}))
    fp32 = config_from_dict(_doc(simulation={"rounds": 1}))

    sent = run_simulation(cfg).rounds[1].update_bytes
    full = run_simulation(fp32).rounds[1].update_bytes

    assert sent < full / 5


def test_example_config_loads() -> None:
    cfg = load_config(ROOT / "training" / "configs" / "pretrain-tiny.toml")

    assert cfg.train.task == "pretrain" and cfg.algorithm == "diloco" and cfg.clients == 4


def test_pretrain_model_trains_and_names_its_config(tmp_path: Path) -> None:
    from training.pretrain import PretrainModel, config_digest

    a = PretrainModel("tiny-llama", seed=0, max_len=32)
    b = PretrainModel("tiny-llama", seed=9, max_len=32)
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    blocks = a.blocks(str(text))
    cfg = TrainConfig(task="pretrain", local_steps=2, batch_size=2, max_len=32)

    delta, metrics = a.train(a.initial_flat, blocks, cfg)

    assert a.base_digest == b.base_digest  # the seed changes the weights, not the model's definition
    assert a.base_digest != config_digest(build_model("llama-30m", a.tokenizer, 0).config, a.tokenizer)
    assert delta.shape == a.initial_flat.shape and metrics.steps == 2
    assert a.loss(blocks[:0]) is None and a.loss(blocks) is not None
    assert a.blocks("chatterbot:ai").shape[1] == 32


def test_a_byzantine_client_attacks_the_pretraining_merge() -> None:
    from training.simulate import run_simulation

    honest = run_simulation(config_from_dict(_doc(simulation={"rounds": 1})))
    attacked = run_simulation(
        config_from_dict(_doc(simulation={"rounds": 1}, byzantine={"count": 1, "attack": "scaling"}))
    )

    # the scaled update (x10) moves the plain mean, so the merged model scores differently
    assert attacked.rounds[1].eval.union_loss != honest.rounds[1].eval.union_loss
