"""The local training loop shared by SFT and DPO, with the client side of FedProx and SCAFFOLD.

The loop starts from the adapter state currently in the model (the caller loads the round's global state
first), runs ``local_steps`` optimiser steps (or ``epochs`` passes), and returns the new trainable state,
the update ``delta = local - global`` and metrics. No state is copied inside the step loop.

FedProx adds ``mu/2 * ||w - w_global||^2`` to the loss, applied as its gradient ``mu * (w - w_global)``.

SCAFFOLD (Karimireddy et al. 2020, option II) corrects every step by ``c - c_i`` (server and client
control variates) and afterwards sets ``c_i+ = c_i - c + (w_global - w_local) / (K * lr)``. Where the
correction goes follows ``cfg.convention`` (:mod:`training.conventions`):

- ``"openfedllm"``: after every optimiser step, ``w -= lr * (c - c_i)``, outside gradient clipping and
  AdamW, as the OpenFedLLM reference's ``SCAFFOLD_Callback.on_step_end`` does;
- ``"reddi"``: ``c - c_i`` is added to the gradient before clipping and the optimiser.

With plain SGD and no clipping the two coincide (SCAFFOLD's analysis assumes SGD). The caller keeps ``c_i``
between rounds and sends ``control_delta = c_i+ - c_i`` with the update.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.adapters import check_state, snapshot, trainable_parameters
from training.config import TrainConfig
from training.errors import AdapterStateError, TrainingError

log = logging.getLogger(__name__)

LossFn = Callable[[Any, dict[str, Tensor]], Tensor]
"""``loss_fn(model, batch) -> scalar loss``; ``batch`` is on the model's device."""

ProgressFn = Callable[[int, int, float], None]
"""``progress(step, total_steps, loss)``, called after every optimiser step (1-based step)."""


@dataclass(frozen=True)
class TrainMetrics:
    """What one local training run did."""

    steps: int
    examples: int
    tokens: int
    mean_loss: float
    final_loss: float
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Input tokens (padding excluded) processed per second."""
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ScaffoldControls:
    """SCAFFOLD inputs: the server control variate ``c`` and this client's ``c_i`` (``None``: zeros)."""

    server: Mapping[str, Tensor]
    client: Mapping[str, Tensor] | None = None


@dataclass(frozen=True)
class ClientUpdate:
    """Result of local training: states and deltas are float32 CPU tensors, sorted by name."""

    state: dict[str, Tensor]
    delta: dict[str, Tensor]
    metrics: TrainMetrics
    control: dict[str, Tensor] | None = None
    control_delta: dict[str, Tensor] | None = None


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable adapter parameters."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scaffold_inputs(
    controls: ScaffoldControls | None, global_state: Mapping[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    if controls is None:
        raise TrainingError("`client_algorithm` is 'scaffold' but no SCAFFOLD controls were given")
    zeros = {k: torch.zeros_like(v) for k, v in global_state.items()}
    server = {k: v.to(torch.float32) for k, v in controls.server.items()}
    client = (
        zeros if controls.client is None else {k: v.to(torch.float32) for k, v in controls.client.items()}
    )
    for what, state in (("server control", server), ("client control", client)):
        try:
            check_state(global_state, state)
        except AdapterStateError as exc:
            raise AdapterStateError(f"SCAFFOLD {what}: {exc}") from exc
    return server, client


def train_local(
    model: Any,
    batches: Iterable[dict[str, Tensor]],
    loss_fn: LossFn,
    cfg: TrainConfig,
    *,
    total_steps: int,
    controls: ScaffoldControls | None = None,
    progress: ProgressFn | None = None,
) -> ClientUpdate:
    """Train the model's adapter on ``batches`` and return the update.

    Parameters
    ----------
    model
        A PEFT model holding the round's global adapter state.
    batches
        One padded batch (CPU tensors with ``attention_mask``) per optimiser step.
    loss_fn
        Task loss (see :data:`LossFn`).
    cfg
        Optimiser, FedProx ``prox_mu``, gradient clipping, seed and client algorithm.
    total_steps
        Number of batches ``batches`` yields (for progress and SCAFFOLD's ``K``).
    controls
        Required when ``cfg.client_algorithm == "scaffold"``.
    progress
        Optional per-step callback.
    """
    params_by_name = trainable_parameters(model)
    if not params_by_name:
        raise TrainingError("the model has no trainable adapter parameters; attach an adapter first")
    names, params = list(params_by_name), list(params_by_name.values())
    device = params[0].device
    global_state = snapshot(params_by_name)
    algo = cfg.client_algorithm
    anchor = [p.detach().clone() for p in params] if algo == "fedprox" else []
    server_c, client_c = _scaffold_inputs(controls, global_state) if algo == "scaffold" else ({}, {})
    correction = (
        [(server_c[n] - client_c[n]).to(device, p.dtype) for n, p in zip(names, params, strict=True)]
        if server_c
        else []
    )
    post_step = cfg.convention == "openfedllm"
    # The reference's `param -= lr * correction` after each step: the scaled correction is computed once.
    step_correction = [c * cfg.lr for c in correction] if post_step else []
    grad_correction = [] if post_step else correction

    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(params, cfg)
    losses: list[Tensor] = []
    tokens = examples = 0
    model.train()
    start = time.perf_counter()
    try:
        for step, batch in enumerate(batches, start=1):
            tokens += int(batch["attention_mask"].sum())
            examples += int(batch["attention_mask"].shape[0])
            on_device = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            loss = loss_fn(model, on_device)
            loss.backward()  # type: ignore[no-untyped-call]
            if anchor or grad_correction:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                grads = [p.grad for p in params if p.grad is not None]
                if anchor:
                    diffs = torch._foreach_sub([p.detach() for p in params], anchor)
                    torch._foreach_add_(grads, diffs, alpha=cfg.prox_mu)
                if grad_correction:
                    torch._foreach_add_(grads, grad_correction)  # type: ignore[call-overload,arg-type]
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step_correction:
                with torch.no_grad():
                    torch._foreach_sub_([p.data for p in params], step_correction)  # type: ignore[call-overload,arg-type]
            losses.append(loss.detach())
            if progress is not None:
                progress(step, total_steps, float(loss.detach()))
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so that `seconds` covers the queued kernels
    finally:
        model.eval()
    seconds = time.perf_counter() - start
    if not losses:
        raise TrainingError("local training got no batches")

    state = snapshot(params_by_name)
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        log.error("local training diverged after %d steps (%s has NaN/Inf)", len(losses), bad[0])
        raise TrainingError(f"local training diverged: {bad[0]!r} has NaN/Inf values; lower `lr`")
    delta = {k: state[k] - global_state[k] for k in state}
    loss_values = torch.stack(losses).float().cpu()
    metrics = TrainMetrics(
        steps=len(losses),
        examples=examples,
        tokens=tokens,
        mean_loss=float(loss_values.mean()),
        final_loss=float(loss_values[-1]),
        seconds=seconds,
    )
    log.info(
        "local %s training: %d steps, %d tokens, mean loss %.4f, %.0f tokens/s",
        algo,
        metrics.steps,
        metrics.tokens,
        metrics.mean_loss,
        metrics.tokens_per_s,
    )
    if algo != "scaffold":
        return ClientUpdate(state=state, delta=delta, metrics=metrics)
    if post_step:  # the reference: (w_global - w_local) / (K * lr) - (c - c_i)
        k_lr = len(losses) * cfg.lr
        new_c = {k: (-delta[k]) / k_lr - (server_c[k] - client_c[k]) for k in state}
    else:
        scale = 1.0 / (len(losses) * cfg.lr)
        new_c = {k: client_c[k] - server_c[k] - delta[k] * scale for k in state}
    control_delta = {k: new_c[k] - client_c[k] for k in state}
    return ClientUpdate(state=state, delta=delta, metrics=metrics, control=new_c, control_delta=control_delta)
