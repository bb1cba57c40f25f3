"""A member's inner AdamW state, kept across pre-training rounds (DiLoCo keeps each worker's optimiser).

In a ``task = "pretrain"`` run every member runs ``local_steps`` AdamW steps per round. DiLoCo keeps each
worker's inner optimiser state (the moments and the step count) from one outer step to the next instead of
starting a new AdamW every round. That state is the member's own, never exchanged and not part of consensus:
:class:`InnerState` holds it as flat float32 vectors in the model's sorted parameter order
(:func:`training.flat.flatten`), :func:`capture` reads it from an AdamW and :func:`make_inner_optimizer`
builds the next round's AdamW from it (with the round's learning rate).

On disk (:func:`save` / :func:`load`) it is one safetensors file: tensors ``exp_avg`` and ``exp_avg_sq``, and
in the safetensors header's metadata one key ``fedchain`` holding a JSON object: ``format``
(:data:`INNER_STATE_FORMAT`), ``optimizer`` (``"adamw"``), ``step``, ``numel``, ``layout`` (the sha256 of the
parameter names and shapes, :func:`layout_digest`) and whatever the caller adds (a node writes its run and
round). :func:`load` refuses a file that is not that, or that belongs to another layout or run, with an
:class:`InnerStateError` naming the file and the reason; the caller then starts a fresh optimiser.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.errors import TrainingError
from training.flat import FlatSpec

INNER_STATE_FORMAT = "fedchain-inner-adamw/1"
"""The ``format`` of the JSON header of an inner-state file."""

_META_KEY = "fedchain"


class InnerStateError(TrainingError, ValueError):
    """An inner-state file cannot be used (unreadable, another format, layout or run)."""


@dataclass(frozen=True)
class InnerState:
    """AdamW's state over every parameter: the step count and both moments, flat in sorted name order."""

    step: int
    exp_avg: Tensor
    exp_avg_sq: Tensor

    def __post_init__(self) -> None:
        if self.step < 0:
            raise InnerStateError(f"`step` must be >= 0, got {self.step}")
        for name in ("exp_avg", "exp_avg_sq"):
            value: Tensor = getattr(self, name)
            if value.dim() != 1 or value.dtype != torch.float32:
                raise InnerStateError(
                    f"`{name}` must be a flat float32 vector, got {value.dtype} {tuple(value.shape)}"
                )
        if self.exp_avg.numel() != self.exp_avg_sq.numel():
            raise InnerStateError(
                f"`exp_avg` has {self.exp_avg.numel()} values, `exp_avg_sq` {self.exp_avg_sq.numel()}"
            )


def layout_digest(spec: FlatSpec) -> str:
    """Hex sha256 of the parameter names and shapes (in order): which model an inner state belongs to."""
    text = json.dumps(
        [[n, list(s)] for n, s in zip(spec.names, spec.shapes, strict=True)], separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def capture(optimizer: torch.optim.Optimizer, params: Sequence[Tensor]) -> InnerState | None:
    """Read an AdamW's state over ``params`` (sorted name order) as an :class:`InnerState`.

    ``None`` if the optimiser is not AdamW or has not stepped (SGD without momentum keeps nothing).
    """
    if not isinstance(optimizer, torch.optim.AdamW):
        return None
    states = [optimizer.state.get(p) for p in params]
    if any(not s for s in states):
        return None
    steps = {int(float(s["step"])) for s in states if s is not None}
    if len(steps) != 1:
        raise InnerStateError(f"AdamW parameters are at different steps: {sorted(steps)}")
    return InnerState(
        step=steps.pop(),
        exp_avg=torch.cat([s["exp_avg"].detach().reshape(-1).float().cpu() for s in states if s is not None]),
        exp_avg_sq=torch.cat(
            [s["exp_avg_sq"].detach().reshape(-1).float().cpu() for s in states if s is not None]
        ),
    )


def make_inner_optimizer(
    params: Sequence[torch.nn.Parameter], cfg: Any, state: InnerState | None
) -> torch.optim.Optimizer:
    """Make the round's optimiser (:func:`training.client.make_optimizer`, ``cfg.lr``), resuming ``state``.

    ``state`` must cover ``params`` (sorted name order) exactly; it is copied, not aliased.

    Raises
    ------
    InnerStateError
        If ``state`` has another number of values than ``params``, or the optimiser is not AdamW.
    """
    from training.client import make_optimizer

    opt = make_optimizer(list(params), cfg)
    if state is None:
        return opt
    if not isinstance(opt, torch.optim.AdamW):
        raise InnerStateError(f"an inner state is AdamW's; `optimizer` is {cfg.optimizer!r}")
    numel = sum(p.numel() for p in params)
    if state.exp_avg.numel() != numel:
        raise InnerStateError(f"inner state has {state.exp_avg.numel()} values, the model {numel}")
    offset = 0
    for p in params:
        n = p.numel()
        opt.state[p] = {
            "step": torch.tensor(float(state.step)),
            "exp_avg": state.exp_avg[offset : offset + n].reshape(p.shape).to(p.device, copy=True),
            "exp_avg_sq": state.exp_avg_sq[offset : offset + n].reshape(p.shape).to(p.device, copy=True),
        }
        offset += n
    return opt


def save(path: str | Path, state: InnerState, spec: FlatSpec, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``state`` to ``path`` (safetensors + JSON header, module docstring), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    header = {
        **dict(extra or {}),
        "format": INNER_STATE_FORMAT,
        "optimizer": "adamw",
        "step": state.step,
        "numel": spec.numel,
        "layout": layout_digest(spec),
    }
    tensors = {"exp_avg": state.exp_avg.contiguous(), "exp_avg_sq": state.exp_avg_sq.contiguous()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(header, sort_keys=True)})
    os.replace(tmp, path)
    return path


def read_header(path: str | Path) -> dict[str, Any]:
    """Return the JSON header of an inner-state file (:class:`InnerStateError` if there is none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors_rust.SafetensorError derives from Exception only
        raise InnerStateError(f"{path}: not a safetensors file: {exc}") from exc
    if _META_KEY not in meta:
        raise InnerStateError(f"{path}: no `{_META_KEY}` header: not an inner-state file")
    try:
        header = json.loads(meta[_META_KEY])
    except ValueError as exc:
        raise InnerStateError(f"{path}: header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise InnerStateError(f"{path}: header is not a JSON object")
    return header


def load(path: str | Path, spec: FlatSpec, expect: Mapping[str, Any] | None = None) -> InnerState:
    """Read an inner state written by :func:`save` for the layout ``spec``.

    ``expect`` names header values that must match (a node passes its run).

    Raises
    ------
    InnerStateError
        Naming ``path`` and the reason: not safetensors, no or malformed header, another format,
        optimiser, layout or ``expect`` value, missing or misshapen tensors, non-finite values or negative
        second moments.
    """
    from safetensors.torch import load_file

    header = read_header(path)
    wanted = {
        "format": INNER_STATE_FORMAT,
        "optimizer": "adamw",
        "numel": spec.numel,
        "layout": layout_digest(spec),
    }
    for key, value in {**wanted, **dict(expect or {})}.items():
        if header.get(key) != value:
            raise InnerStateError(f"{path}: header `{key}` is {header.get(key)!r}, expected {value!r}")
    step = header.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise InnerStateError(f"{path}: header `step` must be an integer >= 0, got {step!r}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors_rust.SafetensorError derives from Exception only
        raise InnerStateError(f"{path}: cannot read tensors: {exc}") from exc
    if set(tensors) != {"exp_avg", "exp_avg_sq"}:
        raise InnerStateError(f"{path}: tensors {sorted(tensors)}, expected ['exp_avg', 'exp_avg_sq']")
    for name, value in tensors.items():
        if value.dtype != torch.float32 or tuple(value.shape) != (spec.numel,):
            raise InnerStateError(
                f"{path}: `{name}` is {value.dtype} {tuple(value.shape)}, expected float32 ({spec.numel},)"
            )
        if not bool(torch.isfinite(value).all()):
            raise InnerStateError(f"{path}: `{name}` has NaN or Inf values")
    if bool((tensors["exp_avg_sq"] < 0).any()):
        raise InnerStateError(f"{path}: `exp_avg_sq` has negative values")
    return InnerState(step, tensors["exp_avg"], tensors["exp_avg_sq"])
