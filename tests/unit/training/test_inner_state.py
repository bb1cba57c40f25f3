"""A member's inner AdamW state: captured after local pre-training steps, resumed the next round (also
through its safetensors file, bit for bit), a warm-up counted across rounds, and files that cannot be used
refused with the file and the reason."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from training.config import TrainConfig
from training.inner_state import InnerState, InnerStateError, load, make_inner_optimizer, read_header, save
from training.pretrain import (
    build_model,
    flat_params,
    load_flat,
    load_pretrain_tokenizer,
    local_update,
    train_blocks,
)
from training.text import pack_blocks, tokenize_documents

TEXT = " ".join(f"the {w} sat on the mat and the dog ran to the {w}." for w in ("cat", "bird", "fox") * 30)
CFG = TrainConfig(task="pretrain", lr=0.01, local_steps=2, batch_size=4, max_len=32, seed=3)


@pytest.fixture(scope="module")
def setup() -> tuple[torch.nn.Module, torch.Tensor]:
    tokenizer = load_pretrain_tokenizer("tiny-llama")
    return build_model("tiny-llama", tokenizer, seed=0), pack_blocks(
        tokenize_documents([TEXT], tokenizer), 32
    )


def test_a_resumed_state_continues_the_optimiser_bit_for_bit_through_its_file(
    setup: tuple[torch.nn.Module, torch.Tensor], tmp_path: Path, torch_one_thread: None
) -> None:
    model, blocks = setup
    start, spec = flat_params(model)
    params = [p for _, p in sorted(model.named_parameters())]
    # one AdamW kept in memory over two calls: what resuming must reproduce
    opt = make_inner_optimizer(params, CFG, None)
    train_blocks(model, blocks, CFG, optimizer=opt)
    train_blocks(model, blocks, replace(CFG, seed=4), optimizer=opt)
    want = flat_params(model)[0]
    load_flat(model, start, spec)

    _, first = local_update(model, blocks, CFG)
    assert first.inner_state is not None and first.inner_state.step == 2
    save(tmp_path / "s.safetensors", first.inner_state, spec, extra={"run": 1, "round": 0})
    resumed = load(tmp_path / "s.safetensors", spec, expect={"run": 1, "round": 0})
    _, second = local_update(model, blocks, replace(CFG, seed=4), inner_state=resumed)
    got = flat_params(model)[0]
    load_flat(model, start, spec)
    _, fresh = local_update(model, blocks, CFG)
    _, fresh2 = local_update(model, blocks, replace(CFG, seed=4))
    reset = flat_params(model)[0]
    load_flat(model, start, spec)

    assert torch.equal(resumed.exp_avg, first.inner_state.exp_avg)
    assert torch.equal(got, want)
    assert second.inner_state is not None and second.inner_state.step == 4
    assert fresh2.inner_state is not None and fresh2.inner_state.step == 2
    assert not torch.equal(reset, want)  # a new AdamW every round is another training


def test_warm_up_counts_the_steps_of_earlier_rounds(
    setup: tuple[torch.nn.Module, torch.Tensor], torch_one_thread: None
) -> None:
    model, blocks = setup
    start, spec = flat_params(model)
    params = [p for _, p in sorted(model.named_parameters())]
    seen: list[float] = []
    opt = make_inner_optimizer(params, CFG, None)
    step = opt.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        seen.append(float(opt.param_groups[0]["lr"]))
        return step(*args, **kwargs)

    opt.step = recording_step  # type: ignore[method-assign]
    train_blocks(model, blocks, CFG, optimizer=opt, warmup_steps=4)
    train_blocks(model, blocks, CFG, optimizer=opt, warmup_steps=4)
    load_flat(model, start, spec)

    assert seen == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert opt.param_groups[0]["lr"] == 0.01  # the group's rate is left as it was


def _state(numel: int) -> InnerState:
    return InnerState(3, torch.full((numel,), 0.5), torch.full((numel,), 0.25))


def test_files_that_cannot_be_used_are_refused_naming_file_and_reason(
    setup: tuple[torch.nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, _ = setup
    _, spec = flat_params(model)
    good = save(tmp_path / "good.safetensors", _state(spec.numel), spec, extra={"run": 5})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"exp_avg": torch.zeros(3)}, str(plain))
    other = replace(spec, names=(*spec.names[:-1], spec.names[-1] + "_x"))
    header = read_header(good)
    bad = _state(spec.numel)
    bad.exp_avg_sq[0] = float("nan")
    nan = save(tmp_path / "nan.safetensors", bad, spec)
    cases = [
        (garbage, spec, None, "garbage.safetensors: not a safetensors file"),
        (plain, spec, None, "plain.safetensors: no `fedchain` header"),
        (good, other, None, "good.safetensors: header `layout` is"),
        (good, spec, {"run": 6}, "good.safetensors: header `run` is 5, expected 6"),
        (nan, spec, None, "nan.safetensors: `exp_avg_sq` has NaN or Inf values"),
    ]

    assert header["format"] == "fedchain-inner-adamw/1" and header["step"] == 3 and header["run"] == 5
    assert torch.equal(load(good, spec, expect={"run": 5}).exp_avg, _state(spec.numel).exp_avg)
    for path, layout, expect, message in cases:
        with pytest.raises(InnerStateError, match=message.replace("`", ".")):
            load(path, layout, expect=expect)
