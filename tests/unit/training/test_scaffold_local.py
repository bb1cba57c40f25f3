"""SCAFFOLD's local correction on the tiny model: after each optimiser step (openfedllm) or in the gradient
(reddi), checked against the same loop written out by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.adapters import attach_adapter, snapshot, trainable_parameters, trainable_state
from training.client import ScaffoldControls
from training.config import AdapterConfig, TrainConfig
from training.datasets.synthetic import synthetic_task
from training.datasets.tokenize import encode_sft, pad_id_of
from training.models import load_model
from training.sft import sft_batches, sft_loss, train_sft

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DATA = synthetic_task("capitals", 24, seed=0)
STEPS, LR = 4, 0.01


def _fresh(tiny_model_dir: Path) -> Any:
    return attach_adapter(load_model(str(tiny_model_dir))[0], AdapterConfig(), run_seed=0)


def _cfg(convention: str, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "lr": LR,
        "optimizer": "adamw",
        "local_steps": STEPS,
        "batch_size": 8,
        "max_len": 64,
        "max_grad_norm": 0.5,
        "client_algorithm": "scaffold",
        "convention": convention,
    }
    return TrainConfig(**{**base, **overrides})


def _controls(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    state = trainable_state(model)
    gen = torch.Generator().manual_seed(3)
    server = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in state.items()}
    client = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in state.items()}
    return server, client


def _by_hand(model: Any, tokenizer: Any, cfg: TrainConfig, correction: dict[str, torch.Tensor]) -> dict:
    """AdamW with clipping on the task loss, then ``w -= lr * (c - c_i)`` after every step (the reference's
    ``SCAFFOLD_Callback.on_step_end``)."""
    params = trainable_parameters(model)
    encoded = [encode_sft(e, tokenizer, cfg.max_len) for e in DATA]
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for batch in sft_batches(encoded, pad_id_of(tokenizer), cfg):
        sft_loss(model, batch).backward()  # type: ignore[no-untyped-call]
        assert cfg.max_grad_norm is not None
        torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, p in params.items():
                p -= cfg.lr * correction[name]
    model.eval()
    return snapshot(params)


def test_openfedllm_applies_the_correction_after_each_optimiser_step(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = _fresh(tiny_model_dir)
    server, client = _controls(model)
    global_state = trainable_state(model)
    correction = {k: server[k] - client[k] for k in server}
    expected = _by_hand(_fresh(tiny_model_dir), tiny_tokenizer, _cfg("openfedllm"), correction)

    update = train_sft(
        model, tiny_tokenizer, DATA, _cfg("openfedllm"), controls=ScaffoldControls(server, client)
    )

    assert update.control is not None and update.control_delta is not None
    for k, want in expected.items():
        assert torch.equal(update.state[k], want), k
        # the reference's c_i+ = (w_global - w_local) / (K * lr) - (c - c_i)
        new_c = (global_state[k].double() - want.double()) / (STEPS * LR) - correction[k].double()
        assert torch.allclose(update.control[k].double(), new_c, rtol=1e-5, atol=1e-6)
        assert torch.allclose(update.control_delta[k], update.control[k] - client[k])


def test_reddi_puts_the_correction_into_the_gradient_instead(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = _fresh(tiny_model_dir)
    server, client = _controls(model)
    controls = ScaffoldControls(server, client)

    post_step = train_sft(model, tiny_tokenizer, DATA, _cfg("openfedllm"), controls=controls)
    in_gradient = train_sft(_fresh(tiny_model_dir), tiny_tokenizer, DATA, _cfg("reddi"), controls=controls)

    # Under AdamW the two placements give different models; both moved away from the global one.
    gap = max(float((post_step.state[k] - in_gradient.state[k]).abs().max()) for k in server)
    assert gap > 1e-4
    assert all(float(in_gradient.delta[k].abs().max()) > 0 for k in server)


def test_with_plain_sgd_and_no_clipping_the_two_placements_agree(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = _fresh(tiny_model_dir)
    server, client = _controls(model)
    controls = ScaffoldControls(server, client)
    sgd = {"optimizer": "sgd", "max_grad_norm": None, "lr": 0.5}

    post_step = train_sft(model, tiny_tokenizer, DATA, _cfg("openfedllm", **sgd), controls=controls)
    in_gradient = train_sft(
        _fresh(tiny_model_dir), tiny_tokenizer, DATA, _cfg("reddi", **sgd), controls=controls
    )

    for k in server:  # w - lr g - lr (c - c_i) either way, up to float32 rounding
        assert torch.allclose(post_step.state[k], in_gradient.state[k], atol=1e-5)
