"""Pre-training (``task = "pretrain"``): a causal LM from a config, all parameters trained, DiLoCo-style.

A pre-training run starts from a freshly initialised model, not from pretrained weights. The model comes from
a named config (:data:`PRETRAIN_CONFIGS`: ``"tiny-llama"``, the 2-layer Llama of the tests, and
``"llama-30m"``, a 30M-parameter Llama for benchmarks; both use the tiny Llama's byte-level BPE tokenizer),
or from a local folder holding a ``config.json`` (and its tokenizer), whose weights are ignored.

Initial weights (:func:`init_params`) are seeded per tensor from ``(seed, name)`` and drawn from integers, so
every peer builds the same bytes on any CPU: a uniform distribution with standard deviation
``initializer_range`` (the variance of Llama's normal init) for every matrix and embedding, the padding
token's embedding row zero, RMSNorm weights one.

The exchanged state is every parameter of the model, flattened by :func:`training.flat.flatten` (sorted
names, float32). Each member runs ``local_steps`` AdamW steps on packed token blocks of its own text
(:func:`train_blocks`) and sends ``delta = end - start``, the negated DiLoCo pseudo-gradient; the outer step
is the ``diloco`` server optimiser (:mod:`training.server_opt`). As in DiLoCo, a member's AdamW state is
kept from one round to its next (:mod:`training.inner_state`; :func:`local_update` takes and returns it).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from training.config import TrainConfig
from training.errors import ConfigError, ModelLoadError, TrainingError
from training.flat import FlatSpec, flatten
from training.inner_state import InnerState, capture, make_inner_optimizer

log = logging.getLogger(__name__)

_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
PRETRAIN_CONFIGS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        "tiny-llama": MappingProxyType(_TINY),
        "llama-30m": MappingProxyType(
            {
                "hidden_size": 512,
                "intermediate_size": 1536,
                "num_hidden_layers": 8,
                "num_attention_heads": 8,
                "num_key_value_heads": 8,
            }
        ),
    }
)
"""Named Llama shapes for pre-training (vocabulary: the tiny Llama's 1000-token tokenizer)."""

PRETRAIN_TRAIN_DEFAULTS_ONLY = ("dpo_beta", "template", "prox_mu")
"""``[train]`` fields of other tasks: a pre-training spec must leave them at their defaults."""


def check_model_name(name_or_path: str) -> None:
    """Raise :class:`ConfigError` unless ``name_or_path`` is a named config or a folder with a config."""
    if name_or_path in PRETRAIN_CONFIGS:
        return
    if (Path(name_or_path) / "config.json").is_file():
        return
    raise ConfigError(
        f"[model] `name_or_path` {name_or_path!r} is not a pre-training model config: use one of "
        f"{', '.join(PRETRAIN_CONFIGS)} or a folder with a config.json"
    )


def check_pretrain_tables(adapter: Mapping[str, Any] | None, train: TrainConfig) -> None:
    """Refuse the fields of other tasks in a ``task = "pretrain"`` config, naming the first one.

    ``adapter`` is the ``[adapter]`` table as written (``None`` or empty: none); every parameter trains, so
    any adapter key is an error, as are DPO / FedProx / template fields changed from their defaults.
    """
    if adapter:
        first = sorted(adapter)[0]
        raise ConfigError(
            f"[adapter] `{first}` does not apply to [train] task = 'pretrain' (every parameter trains, "
            "no adapter): remove the [adapter] table"
        )
    defaults = TrainConfig()
    for name in PRETRAIN_TRAIN_DEFAULTS_ONLY:
        if getattr(train, name) != getattr(defaults, name):
            raise ConfigError(f"[train] `{name}` does not apply to task = 'pretrain'; remove it")
    if train.client_algorithm != "local":
        raise ConfigError(
            f"task = 'pretrain' trains with plain local AdamW steps, not {train.client_algorithm!r}; use the "
            "algorithms diloco, fedavg, fedavgm, fedadagrad, fedyogi or fedadam"
        )


def load_pretrain_tokenizer(name_or_path: str, cache_dir: Path | None = None) -> Any:
    """Load the tokenizer of a pre-training model: the tiny Llama's for named configs, else the folder's."""
    from training.models import TINY_ALIAS, load_tokenizer

    check_model_name(name_or_path)
    return load_tokenizer(TINY_ALIAS if name_or_path in PRETRAIN_CONFIGS else name_or_path, cache_dir)


def model_config(name_or_path: str, tokenizer: Any, max_len: int = 512) -> Any:
    """Return the ``transformers`` config of a pre-training model (named, or a folder's ``config.json``)."""
    from transformers import AutoConfig, LlamaConfig

    check_model_name(name_or_path)
    if name_or_path not in PRETRAIN_CONFIGS:
        try:
            return AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read model config {name_or_path!r}: {exc}") from exc
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, max_len),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **dict(PRETRAIN_CONFIGS[name_or_path]),  # type: ignore[arg-type]
    )


def _tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"fedchain-pretrain-init:{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def init_params(model: torch.nn.Module, seed: int, std: float) -> None:
    """Overwrite every parameter of ``model`` with the run-seeded initialisation (module docstring).

    Uniform on ``[-a, a]`` with ``a = std * sqrt(3)``: integers ``k`` in ``[0, 2**24)`` from a torch
    generator seeded by :func:`_tensor_seed`, mapped by ``((k - 2**23) + 0.5) / 2**23 * a`` in float64 (each
    operation correctly rounded), rounded once to float32. Names ending in ``norm.weight`` get ones.
    """
    half = 1 << 23
    bound = std * math.sqrt(3.0)
    pad = getattr(getattr(model, "config", None), "pad_token_id", None)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            gen = torch.Generator().manual_seed(_tensor_seed(seed, name))
            k = torch.randint(0, 2 * half, tuple(param.shape), generator=gen, dtype=torch.int64)
            values = ((k - half).to(torch.float64) + 0.5) / float(half) * bound
            param.copy_(values.to(torch.float32))
            if name.endswith("embed_tokens.weight") and pad is not None and 0 <= pad < param.shape[0]:
                param[pad].zero_()


def build_model(name_or_path: str, tokenizer: Any, seed: int, *, max_len: int = 512) -> torch.nn.Module:
    """Build a float32 causal LM from its config with :func:`init_params` weights, all of them trainable."""
    from transformers import AutoModelForCausalLM

    config = model_config(name_or_path, tokenizer, max_len)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    init_params(model, seed, float(getattr(config, "initializer_range", 0.02)))
    model.requires_grad_(True)
    model.eval()
    out: torch.nn.Module = model
    return out


def model_params(model: torch.nn.Module) -> dict[str, Tensor]:
    """Every parameter by name (the exchanged state of a pre-training run)."""
    return dict(model.named_parameters())


def flat_params(model: torch.nn.Module) -> tuple[Tensor, FlatSpec]:
    """Return the model's parameters as one float32 vector in sorted name order, and its layout."""
    return flatten({k: v.detach().cpu() for k, v in model_params(model).items()})


def load_flat(model: torch.nn.Module, vec: Tensor, spec: FlatSpec) -> None:
    """Copy a flat parameter vector into the model (names and shapes checked by ``spec.unflatten``)."""
    params = model_params(model)
    state = spec.unflatten(vec)
    if set(state) != set(params):
        raise TrainingError(f"flat state has {len(state)} tensors, the model {len(params)}: layouts differ")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


@dataclass(frozen=True)
class PretrainMetrics:
    """What one member's local pre-training did."""

    steps: int
    tokens: int
    mean_loss: float
    final_loss: float
    seconds: float
    inner_state: InnerState | None = None
    """The AdamW state after the steps (:mod:`training.inner_state`), to resume the next round from."""


def batch_order(num_blocks: int, steps: int, batch_size: int, seed: int) -> list[Tensor]:
    """Block indices of each step: seeded permutations of the blocks, concatenated as needed."""
    gen = torch.Generator().manual_seed(seed)
    need = steps * batch_size
    order: list[Tensor] = []
    have = 0
    while have < need:
        order.append(torch.randperm(num_blocks, generator=gen))
        have += num_blocks
    flat = torch.cat(order)[:need]
    return list(flat.reshape(steps, batch_size))


def train_blocks(
    model: torch.nn.Module,
    blocks: Tensor,
    cfg: TrainConfig,
    *,
    steps: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    warmup_steps: int = 0,
) -> PretrainMetrics:
    """Run ``steps`` (default ``cfg.local_steps``) AdamW steps of next-token loss on ``blocks``, in place.

    Each step takes ``cfg.batch_size`` blocks in the order of :func:`batch_order` (seeded by ``cfg.seed``);
    gradients are clipped to ``cfg.max_grad_norm``. A new AdamW (``cfg.lr``, ``cfg.weight_decay``) is made
    unless ``optimizer`` is given (resumed from an inner state, or kept by a caller across calls).
    ``warmup_steps`` > 0 ramps the rate linearly: the optimiser's ``k``-th step overall (counted by its
    state, so across rounds when the state is kept) runs at ``cfg.lr * min(1, k / warmup_steps)``. The
    returned metrics carry the optimiser's state (:func:`training.inner_state.capture`).

    Raises
    ------
    TrainingError
        If the loss or the parameters become NaN or Inf.
    """
    steps = steps if steps is not None else (cfg.local_steps or max(1, blocks.shape[0] // cfg.batch_size))
    params = [p for _, p in sorted(model.named_parameters())]
    opt = optimizer or make_inner_optimizer(params, cfg, None)
    first = capture(opt, params)
    done = first.step if first is not None else 0
    base_lr = [float(g["lr"]) for g in opt.param_groups]
    device = params[0].device
    losses: list[Tensor] = []
    torch.manual_seed(cfg.seed)
    model.train()
    start = time.perf_counter()
    try:
        for i, rows in enumerate(batch_order(blocks.shape[0], steps, cfg.batch_size, cfg.seed)):
            if warmup_steps > 0:
                scale = min(1.0, (done + i + 1) / warmup_steps)
                for group, lr in zip(opt.param_groups, base_lr, strict=True):
                    group["lr"] = lr * scale
            ids = blocks[rows].to(device)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
    finally:
        model.eval()
        for group, lr in zip(opt.param_groups, base_lr, strict=True):
            group["lr"] = lr
    values = torch.stack(losses).float().cpu()
    if not bool(torch.isfinite(values).all()) or not all(bool(torch.isfinite(p).all()) for p in params):
        raise TrainingError("local pre-training diverged (NaN/Inf loss or weights); lower `lr`")
    seconds = time.perf_counter() - start
    metrics = PretrainMetrics(
        steps,
        steps * cfg.batch_size * blocks.shape[1],
        float(values.mean()),
        float(values[-1]),
        seconds,
        capture(opt, params),
    )
    log.info("local pre-training: %d steps, mean loss %.4f, %.1f s", steps, metrics.mean_loss, seconds)
    return metrics


def local_update(
    model: torch.nn.Module,
    blocks: Tensor,
    cfg: TrainConfig,
    *,
    inner_state: InnerState | None = None,
    warmup_steps: int = 0,
) -> tuple[Tensor, PretrainMetrics]:
    """Train from the parameters now in ``model`` and return ``delta = end - start`` (flat) and metrics.

    ``inner_state`` resumes the member's AdamW from its previous round (``None``: a new one); the metrics'
    ``inner_state`` is the state to pass next round. The model is left at the end parameters; the caller
    loads the global state again for the next member.
    """
    start, _ = flat_params(model)
    params = [p for _, p in sorted(model.named_parameters())]
    opt = make_inner_optimizer(params, cfg, inner_state)
    metrics = train_blocks(model, blocks, cfg, optimizer=opt, warmup_steps=warmup_steps)
    end, _ = flat_params(model)
    return end - start, metrics


@torch.no_grad()
def block_loss(model: torch.nn.Module, blocks: Tensor, batch_size: int = 8) -> tuple[float, int]:
    """Mean next-token loss over ``blocks`` and the number of predicted tokens (for token weighting)."""
    if blocks.shape[0] == 0:
        raise TrainingError("no held-out blocks to evaluate")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for i in range(0, blocks.shape[0], batch_size):
        ids = blocks[i : i + batch_size].to(device)
        n = ids.shape[0] * (ids.shape[1] - 1)
        total += float(model(input_ids=ids, labels=ids).loss) * n
        count += n
    return total / count, count


def perplexity(loss: float) -> float:
    """``exp(loss)``, capped to stay finite."""
    return math.exp(min(loss, 80.0))


def export_pretrained(model: torch.nn.Module, tokenizer: Any, folder: str | Path) -> Path:
    """Write the model (with the parameters now in it) and tokenizer as a ``save_pretrained`` folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # type: ignore[operator]
    tokenizer.save_pretrained(folder)
    return folder


def split_blocks(blocks: Tensor, held_out_fraction: float, *, where: str) -> tuple[Tensor, Tensor]:
    """Split ``blocks``: the first train, the last ``held_out_fraction`` (at least one) are held out."""
    n = blocks.shape[0]
    held = max(1, int(round(n * held_out_fraction)))
    if n - held < 1:
        raise ConfigError(f"{where}: {n} blocks of text, too few to train and hold out; add text")
    return blocks[: n - held], blocks[n - held :]


def config_digest(config: Any, tokenizer: Any) -> str:
    """Hex sha256 naming a pre-training model's starting point: its config and its tokenizer's vocabulary.

    What a pre-training run records as ``base_model_sha256`` (there are no base weights): the sha256 of the
    compact sorted-key JSON of ``{"config": config.to_dict() without "transformers_version", "vocab": the
    tokenizer's token -> id map}``.
    """
    import json

    body = {k: v for k, v in config.to_dict().items() if k != "transformers_version"}
    doc = {"config": body, "vocab": dict(sorted(tokenizer.get_vocab().items()))}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class PretrainModel:
    """A pre-training model in one process: built from its config with the run seed, trained, scored.

    What a node's model runtime holds for ``task = "pretrain"``: ``model`` (a plain causal LM),
    ``tokenizer``, the round-0 flat parameters ``initial_flat`` with their layout ``flat_spec``, and
    ``base_digest`` (:func:`config_digest`).
    """

    def __init__(self, name_or_path: str, seed: int, *, max_len: int, device: str = "cpu") -> None:
        self.tokenizer = load_pretrain_tokenizer(name_or_path)
        self.model = build_model(name_or_path, self.tokenizer, seed, max_len=max_len).to(device)
        self.initial_flat, self.flat_spec = flat_params(self.model)
        self.base_digest = config_digest(self.model.config, self.tokenizer)
        self.max_len = max_len

    def load(self, params: Tensor) -> None:
        """Put flat parameters into the model."""
        load_flat(self.model, params, self.flat_spec)

    def train(
        self, params: Tensor, blocks: Tensor, cfg: TrainConfig, inner_state: InnerState | None = None
    ) -> tuple[Tensor, PretrainMetrics]:
        """Train ``cfg.local_steps`` steps from ``params``; return ``delta = end - start`` and metrics.

        ``inner_state`` resumes this member's AdamW (:func:`local_update`); the metrics carry the new one.
        """
        self.load(params)
        return local_update(self.model, blocks, cfg, inner_state=inner_state)

    def loss(self, blocks: Tensor) -> float | None:
        """Mean next-token loss of the model as it is on ``blocks`` (``None`` without blocks)."""
        if blocks.shape[0] == 0:
            return None
        return block_loss(self.model, blocks)[0]

    def blocks(self, source: str) -> Tensor:
        """Packed ``max_len`` blocks of a text source (see :func:`training.text.source_blocks`)."""
        from training.text import source_blocks

        return source_blocks(source, self.tokenizer, self.max_len)
