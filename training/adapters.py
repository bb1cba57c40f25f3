"""PEFT adapters and the adapter state that peers exchange.

The exchanged state is what ``peft.get_peft_model_state_dict`` returns, restricted to the tensors that
train, as float32 in sorted name order:

- FFA-LoRA (default): every ``lora_A`` is set from the run seed and a stable hash of its name, then frozen;
  ``lora_B`` starts at zero (so the initial weight update is zero) and is the only thing that trains and
  travels. Every peer rebuilds the same A, so averaging B averages the weight update BA exactly.
- standard LoRA: both factors train and travel (A still starts from the run-seeded init, so all peers share
  the round-0 model).
- prompt tuning: the soft prompt (``prompt_embeddings``), initialised from seeded vocabulary rows.
"""

from __future__ import annotations

import hashlib
import math
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from training.config import AdapterConfig
from training.errors import AdapterStateError

ADAPTER_NAME = "default"


def stable_seed(run_seed: int, name: str) -> int:
    """Return a 63-bit seed from the run seed and a name, equal in every process (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{run_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def attach_adapter(model: nn.Module, cfg: AdapterConfig, run_seed: int) -> Any:
    """Wrap ``model`` in a PEFT model with a deterministic adapter initialisation.

    Parameters
    ----------
    model
        A causal LM (its base parameters are frozen by PEFT).
    cfg
        Which adapter: LoRA (FFA or standard) or prompt tuning.
    run_seed
        The run's seed: all peers of a run get bit-identical initial adapters.

    Returns
    -------
    peft.PeftModel
        The wrapped model; only the exchanged tensors have ``requires_grad``.
    """
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    if cfg.method == "lora":
        peft_cfg: Any = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=cfg.r,
            lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # PEFT accepts floats
            lora_dropout=cfg.dropout,
            target_modules=list(cfg.target_modules),
        )
    else:
        peft_cfg = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    try:
        with warnings.catch_warnings():
            # PEFT 0.21 calls a transformers API deprecated in 5.x; not actionable here.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            peft_model = get_peft_model(model, peft_cfg)
    except ValueError as exc:
        raise AdapterStateError(f"cannot attach a {cfg.method} adapter: {exc}") from exc
    if cfg.method == "lora":
        _init_lora(peft_model, run_seed, freeze_a=cfg.lora_mode == "ffa")
    else:
        _init_prompt(peft_model, run_seed)
    return peft_model


@torch.no_grad()
def _init_lora(model: Any, run_seed: int, *, freeze_a: bool) -> None:
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not isinstance(lora_a, nn.ModuleDict) or ADAPTER_NAME not in lora_a:
            continue
        weight: Any = lora_a[ADAPTER_NAME].weight
        # Same bound as PEFT's default kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(int(weight.shape[1]))
        gen = torch.Generator().manual_seed(stable_seed(run_seed, f"{name}.lora_A"))
        init = (torch.rand(tuple(weight.shape), generator=gen, dtype=torch.float32) * 2 - 1) * bound
        weight.copy_(init)
        lora_b: Any = module.lora_B
        lora_b[ADAPTER_NAME].weight.zero_()
        weight.requires_grad_(not freeze_a)


@torch.no_grad()
def _init_prompt(model: Any, run_seed: int) -> None:
    embedding = model.prompt_encoder[ADAPTER_NAME].embedding.weight
    vocab = model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(stable_seed(run_seed, "prompt_embeddings"))
    rows = torch.randint(0, vocab.shape[0], (embedding.shape[0],), generator=gen)
    embedding.copy_(vocab[rows.to(vocab.device)].float())


_NAME_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], dict[str, nn.Parameter]]] = (
    weakref.WeakKeyDictionary()
)


def trainable_parameters(model: Any) -> dict[str, nn.Parameter]:
    """Return the parameters behind :func:`trainable_state`, by exchanged name, in sorted order.

    The name mapping comes from ``get_peft_model_state_dict`` (milliseconds on big models), so it is cached
    per model and recomputed whenever the set of trainable parameters changes.
    """
    from peft import get_peft_model_state_dict

    signature = tuple(id(p) for p in model.parameters() if p.requires_grad)
    cached = _NAME_CACHE.get(model)
    if cached is not None and cached[0] == signature:
        return dict(cached[1])
    config = model.peft_config[ADAPTER_NAME]
    if config.is_prompt_learning:
        # For a causal LM the saved prompt embedding is the whole embedding table (one submodule).
        mapping = {"prompt_embeddings": model.prompt_encoder[ADAPTER_NAME].embedding.weight}
    else:
        params = get_peft_model_state_dict(model, state_dict=model.state_dict(keep_vars=True))
        mapping = {
            key: value
            for key, value in sorted(params.items())
            if isinstance(value, nn.Parameter) and value.requires_grad
        }
    _NAME_CACHE[model] = (signature, mapping)
    return dict(mapping)


def trainable_state(model: Any) -> dict[str, Tensor]:
    """Return the exchanged adapter state: trainable PEFT tensors as float32 CPU copies, sorted by name."""
    return snapshot(trainable_parameters(model))


def snapshot(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Copy ``params`` into detached float32 CPU tensors (same names and order)."""
    return {k: p.detach().to("cpu", torch.float32, copy=True) for k, p in params.items()}


def check_state(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> None:
    """Raise :class:`AdapterStateError` unless ``state`` has exactly the names and shapes of ``expected``."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise AdapterStateError(f"adapter state names differ: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise AdapterStateError(
                f"adapter tensor {key!r} has shape {tuple(tensor.shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise AdapterStateError(f"adapter tensor {key!r} has NaN or Inf values")


@torch.no_grad()
def load_trainable_state(model: Any, state: Mapping[str, Tensor]) -> None:
    """Copy an exchanged state into the model's trainable adapter tensors (checked first, all or nothing)."""
    params = trainable_parameters(model)
    check_state(params, state)
    for key, param in params.items():
        param.copy_(state[key])
