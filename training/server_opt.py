"""Server optimisers that every peer applies to the agreed aggregate (FedAvg, FedAvgM, FedAdagrad, ...).

The five: FedAvg, FedAvgM, FedAdagrad, FedYogi, FedAdam, each under two conventions
(:mod:`training.conventions`; formulas side by side in ``docs/algorithms.md``). ``delta`` is the aggregated
update, ``lr`` the server learning rate, ``first`` the optimiser's first step.

``"openfedllm"`` (the OpenFedLLM reference, ``federated_learning/fed_global.py``):

- ``fedavg``: ``x <- x + lr * delta`` (``lr = 1``: the sample-weighted average of the client models)
- ``fedavgm``: ``m <- delta`` if ``first`` else ``beta1 * m + (1 - beta1) * delta``; ``x <- x + lr * m``
  (the reference has no server lr: the default ``lr = 1`` is exactly its ``x + m``)
- ``fedadagrad``: ``m <- delta``; ``v <- v + m^2``
- ``fedyogi``: ``m`` as FedAvgM; ``v <- v - (1 - beta2) m^2 sign(v - m^2)``
- ``fedadam``: ``m`` as FedAvgM; ``v <- beta2 v + (1 - beta2) m^2``
- adaptive ones: ``x <- x + lr * m / (sqrt(v) + tau)``, ``v`` starting at ``tau^2``, and ``delta`` the
  *unweighted* mean of the client updates (:func:`unweighted`; the merge passes equal weights).

``diloco`` (DiLoCo's outer optimiser, Douillard et al. 2023: SGD with Nesterov momentum, lr 0.7, momentum
0.9), the same under both conventions. DiLoCo writes it on the pseudo-gradient ``g = start - end``:
``b <- beta1 * b + g``; ``x <- x - lr * (g + beta1 * b)`` (PyTorch's ``SGD(nesterov=True)``). Updates here are
``delta = end - start = -g``, so the step is written with ``m = -b``:

- ``diloco``: ``m <- beta1 * m + delta``; ``x <- x + lr * (delta + beta1 * m)``

Negation is exact and commutes with every correctly rounded operation, so this gives the very bytes of
DiLoCo's form applied to ``g``.

``first`` is recognised from the state: the momentum ``m`` is still exactly its initial zero (it is the
reference's ``round_idx == 0`` unless every earlier aggregate was exactly zero, and it does not count rounds
that merged nothing).

``"reddi"`` (Reddi et al. 2021, "Adaptive Federated Optimization"), on the sample-weighted mean:

- ``fedavg``: ``x <- x + lr * delta``
- ``fedavgm``: ``m <- beta1 * m + delta``; ``x <- x + lr * m`` (Hsu et al. 2019)
- ``fedadagrad``, ``fedyogi``, ``fedadam``: ``m <- beta1 * m + (1 - beta1) * delta``; ``v`` is updated with
  ``v + delta^2`` (Adagrad), ``v - (1 - beta2) delta^2 sign(v - delta^2)`` (Yogi) or
  ``beta2 v + (1 - beta2) delta^2`` (Adam), from ``v = 0``; ``x <- x + lr * m / (sqrt(v) + tau)``. No bias
  correction.

Bit-exact: each step is a chain of separate elementwise float64 operations (multiply, add, subtract, divide,
sqrt, sign), each correctly rounded, with no fused multiply-add (``alpha=``, ``addcmul``, ``lerp`` are never
used), then one rounding to float32. Elementwise operations do not depend on threads or the instruction set,
so every peer gets the same bytes. The state (``m``, ``v`` as float32 tensors) is part of the model state that
peers hash (:func:`training.determinism.state_sha256`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

from training.conventions import DEFAULT_CONVENTION, check_convention
from training.errors import ConfigError

ServerState = dict[str, Tensor]

Step = Callable[["Tensor", "Tensor", ServerState, "ServerOptConfig", bool], tuple["Tensor", ServerState]]
"""One optimiser step on float64 ``(x, delta, state, cfg, fresh)`` of a block of coordinates (state as
stored, float32; ``fresh``: the whole stored ``m`` is zero, decided once over every coordinate)."""

STEP_BLOCK = 1 << 20
"""Coordinates :func:`server_step` computes at a time: every step is element-wise, so the float64
temporaries are a block's, not the whole state's, and the bytes do not depend on the block size."""
"""Flat float32 state tensors of a server optimiser by name (``m``, ``v``); empty for FedAvg."""


@dataclass(frozen=True)
class ServerOptConfig:
    """Hyper-parameters of a server optimiser (see the module docstring for where each is used)."""

    server_lr: float = field(default=1.0, metadata={"help": "server learning rate (eta)"})
    beta1: float = field(default=0.9, metadata={"help": "first-moment decay (momentum)"})
    beta2: float = field(default=0.99, metadata={"help": "second-moment decay (Yogi, Adam)"})
    tau: float = field(default=1e-3, metadata={"help": "adaptivity epsilon added to sqrt(v)"})

    def __post_init__(self) -> None:
        if not self.server_lr > 0.0:
            raise ConfigError(f"`server_lr` must be > 0, got {self.server_lr!r}")
        if not 0.0 <= self.beta1 < 1.0:
            raise ConfigError(f"`beta1` must be in [0, 1), got {self.beta1!r}")
        if not 0.0 <= self.beta2 < 1.0:
            raise ConfigError(f"`beta2` must be in [0, 1), got {self.beta2!r}")
        if not self.tau > 0.0:
            raise ConfigError(f"`tau` must be > 0, got {self.tau!r}")


DEFAULTS: dict[str, ServerOptConfig] = {
    "fedavg": ServerOptConfig(server_lr=1.0),
    "fedavgm": ServerOptConfig(server_lr=1.0, beta1=0.9),
    "fedadagrad": ServerOptConfig(server_lr=0.1, beta1=0.0, tau=1e-3),
    "fedyogi": ServerOptConfig(server_lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3),
    "fedadam": ServerOptConfig(server_lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3),
    "diloco": ServerOptConfig(server_lr=0.7, beta1=0.9),
}
"""Default hyper-parameters of each optimiser under both conventions (Reddi et al.'s suggested ranges; the
OpenFedLLM reference's, e.g. ``server_lr = 1e-3`` for the adaptive ones, are listed in docs/algorithms.md)."""

USED_PARAMS: dict[str, tuple[str, ...]] = {
    "fedavg": ("server_lr",),
    "fedavgm": ("server_lr", "beta1"),
    "fedadagrad": ("server_lr", "beta1", "tau"),
    "fedyogi": ("server_lr", "beta1", "beta2", "tau"),
    "fedadam": ("server_lr", "beta1", "beta2", "tau"),
    "diloco": ("server_lr", "beta1"),
}
"""The hyper-parameters each optimiser's step and initial state read (under both conventions): what a run
spec states explicitly (``node.runspec`` writes their resolved values into the canonical spec)."""

_STATE_NAMES: dict[str, tuple[str, ...]] = {
    "fedavg": (),
    "fedavgm": ("m",),
    "fedadagrad": ("m", "v"),
    "fedyogi": ("m", "v"),
    "fedadam": ("m", "v"),
    "diloco": ("m",),
}


def _check_name(name: str) -> None:
    if name not in SERVER_OPTIMIZERS:
        raise ConfigError(f"unknown server optimiser {name!r}; known: {', '.join(sorted(SERVER_OPTIMIZERS))}")


def make_config(name: str, **overrides: Any) -> ServerOptConfig:
    """Return ``name``'s default config with ``overrides`` (``server_lr``, ``beta1``, ``beta2``, ``tau``)."""
    _check_name(name)
    known = {f.name for f in fields(ServerOptConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown server optimiser option(s) {unknown}; known: {sorted(known)}")
    return replace(DEFAULTS[name], **{k: float(v) for k, v in overrides.items()})


ADAPTIVE: tuple[str, ...] = ("fedadagrad", "fedyogi", "fedadam")
"""The adaptive optimisers (state ``m`` and ``v``)."""


def unweighted(name: str, convention: str) -> bool:
    """Whether optimiser ``name`` aggregates the unweighted client mean under ``convention``.

    True for the reference's FedAdagrad / FedYogi / FedAdam (``openfedllm``); otherwise updates are weighted
    by their sample counts.
    """
    return check_convention(convention) == "openfedllm" and name in ADAPTIVE


def init_state(
    name: str, d: int, cfg: ServerOptConfig | None = None, *, convention: str = DEFAULT_CONVENTION
) -> ServerState:
    """Return the initial state of optimiser ``name`` for ``d`` parameters.

    Zeros, except that the adaptive optimisers of the ``openfedllm`` convention start ``v`` at ``tau**2``
    (``cfg.tau``; without ``cfg``, ``name``'s default).
    """
    _check_name(name)
    state = {key: torch.zeros(d, dtype=torch.float32) for key in _STATE_NAMES[name]}
    if check_convention(convention) == "openfedllm" and name in ADAPTIVE:
        tau = (cfg or DEFAULTS[name]).tau
        state["v"] = torch.full((d,), tau * tau, dtype=torch.float64).to(torch.float32)
    return state


def _momentum(state: ServerState, delta: Tensor, beta1: float, dampen: bool) -> Tensor:
    """``beta1 * m + (1 - beta1) * delta`` (or ``+ delta`` without dampening), float64, unfused."""
    m = state["m"].to(torch.float64) * beta1
    return m + (delta * (1.0 - beta1) if dampen else delta)


def _fedavg(
    x: Tensor, delta: Tensor, state: ServerState, cfg: ServerOptConfig, fresh: bool
) -> tuple[Tensor, ServerState]:
    return x + delta * cfg.server_lr, {}


def _fedavgm(
    x: Tensor, delta: Tensor, state: ServerState, cfg: ServerOptConfig, fresh: bool
) -> tuple[Tensor, ServerState]:
    m = _momentum(state, delta, cfg.beta1, dampen=False)
    return x + m * cfg.server_lr, {"m": m}


def _diloco(
    x: Tensor, delta: Tensor, state: ServerState, cfg: ServerOptConfig, fresh: bool
) -> tuple[Tensor, ServerState]:
    """Nesterov momentum SGD on ``-delta`` (DiLoCo's outer step), unfused float64."""
    m = _momentum(state, delta, cfg.beta1, dampen=False)
    return x + (delta + m * cfg.beta1) * cfg.server_lr, {"m": m}


def _second_moment(kind: str, v: Tensor, sq: Tensor, beta2: float) -> Tensor:
    """Update ``v`` from the squared term ``sq``: Adagrad's sum, Yogi's signed step or Adam's average."""
    if kind == "adagrad":
        return v + sq
    if kind == "yogi":
        return v - sq * (1.0 - beta2) * torch.sign(v - sq)
    return v * beta2 + sq * (1.0 - beta2)


def _adaptive(kind: str) -> Step:
    def step(
        x: Tensor, delta: Tensor, state: ServerState, cfg: ServerOptConfig, fresh: bool
    ) -> tuple[Tensor, ServerState]:
        m = _momentum(state, delta, cfg.beta1, dampen=True)
        v = state["v"].to(torch.float64)
        sq = delta * delta
        v = _second_moment(kind, v, sq, cfg.beta2)
        return x + m / (torch.sqrt(v) + cfg.tau) * cfg.server_lr, {"m": m, "v": v}

    return step


def _reference_momentum(state: ServerState, delta: Tensor, beta1: float, fresh: bool) -> Tensor:
    """Return the reference's ``m``: ``delta`` on the first step (``fresh``), else ``b1 m + (1-b1) delta``."""
    if fresh:
        return delta
    return state["m"].to(torch.float64) * beta1 + delta * (1.0 - beta1)


def _reference_fedavgm(
    x: Tensor, delta: Tensor, state: ServerState, cfg: ServerOptConfig, fresh: bool
) -> tuple[Tensor, ServerState]:
    m = _reference_momentum(state, delta, cfg.beta1, fresh)
    return x + m * cfg.server_lr, {"m": m}


def _reference_adaptive(kind: str) -> Step:
    def step(
        x: Tensor, delta: Tensor, state: ServerState, cfg: ServerOptConfig, fresh: bool
    ) -> tuple[Tensor, ServerState]:
        m = delta if kind == "adagrad" else _reference_momentum(state, delta, cfg.beta1, fresh)
        v = state["v"].to(torch.float64)
        sq = m * m
        v = _second_moment(kind, v, sq, cfg.beta2)
        return x + m / (torch.sqrt(v) + cfg.tau) * cfg.server_lr, {"m": m, "v": v}

    return step


SERVER_OPTIMIZERS: dict[str, Step] = {
    "fedavg": _fedavg,
    "fedavgm": _fedavgm,
    "fedadagrad": _adaptive("adagrad"),
    "fedyogi": _adaptive("yogi"),
    "fedadam": _adaptive("adam"),
    "diloco": _diloco,
}
"""Server optimiser steps by name under the ``reddi`` convention; use :func:`server_step`."""

OPENFEDLLM_STEPS: dict[str, Step] = {
    "fedavg": _fedavg,
    "fedavgm": _reference_fedavgm,
    "fedadagrad": _reference_adaptive("adagrad"),
    "fedyogi": _reference_adaptive("yogi"),
    "fedadam": _reference_adaptive("adam"),
    "diloco": _diloco,
}
"""The same optimisers under the ``openfedllm`` convention (same names, same state tensors)."""


def server_step(
    name: str,
    params: Tensor,
    aggregate_delta: Tensor,
    state: ServerState,
    cfg: ServerOptConfig,
    *,
    convention: str = DEFAULT_CONVENTION,
    block: int = STEP_BLOCK,
) -> tuple[Tensor, ServerState]:
    """Apply one step of optimiser ``name`` under ``convention``; return new float32 params and state.

    Inputs are not modified. Start ``state`` from :func:`init_state` with the same convention. The step
    runs ``block`` coordinates at a time (:data:`STEP_BLOCK`; any size gives the same bytes).

    Raises
    ------
    ConfigError
        If the name or convention is unknown, shapes differ, the state lacks a tensor, or a value is not
        finite.
    """
    _check_name(name)
    steps = OPENFEDLLM_STEPS if check_convention(convention) == "openfedllm" else SERVER_OPTIMIZERS
    d = params.shape[0] if params.dim() == 1 else -1
    if d < 0 or aggregate_delta.shape != (d,):
        raise ConfigError(
            f"params and aggregate_delta must be 1-D of one length, got {tuple(params.shape)} and "
            f"{tuple(aggregate_delta.shape)}"
        )
    for key in _STATE_NAMES[name]:
        if key not in state or state[key].shape != (d,):
            raise ConfigError(f"{name} state needs a tensor {key!r} of shape ({d},)")
    if not bool(torch.isfinite(aggregate_delta).all()):
        raise ConfigError("aggregate_delta contains NaN or Inf")
    if not isinstance(block, int) or block < 1:
        raise ConfigError(f"`block` must be a positive integer, got {block!r}")
    step = steps[name]
    fresh = "m" in state and not bool(state["m"].any())
    out = torch.empty(d, dtype=torch.float32)
    new_state: ServerState = {}
    for start in range(0, max(d, 1), block):
        end = min(start + block, d)
        x, part = step(
            params[start:end].to(torch.float64),
            aggregate_delta[start:end].to(torch.float64),
            {k: v[start:end] for k, v in state.items()},
            cfg,
            fresh,
        )
        out[start:end] = x
        for key, value in part.items():
            new_state.setdefault(key, torch.empty(d, dtype=torch.float32))[start:end] = value
    out.masked_fill_(out == 0, 0.0)
    return out, new_state
