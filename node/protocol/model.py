"""The node's model: the run's base model with its run-seeded adapter, local data, training and evaluation.

Every member loads the same base model (``[model] name_or_path`` of the run spec; ``tiny-llama`` is built
deterministically from a fixed seed) and attaches the adapter with the run seed, so round 0 starts from
bit-identical adapter parameters on every peer (checked: the initial state hash is logged).

Local data (``--data``): a JSONL file (any format of ``training.data``), ``chatterbot:<category>`` or
``synthetic:<skill>[:<n>]``; a seeded held-out split is kept for evaluation. A DPO run (``[train] task =
"dpo"``) needs preference pairs: a preference JSONL file (``prompt``/``chosen``/``rejected``) or
``synthetic:<skill>[:<n>]`` (the right answer chosen, a wrong one rejected); chatterbot has none.

``hf:<path>[?<field>=<column>&...&split=<name>]`` reads a local Hugging Face dataset (a ``save_to_disk``
folder, ``.parquet``, ``.json`` or ``.jsonl``; :mod:`training.datasets.hf`) for either task, e.g.
``hf:data/qa.parquet?instruction=question&response=answer``; nothing is downloaded.
DPO rounds are trained with :func:`training.dpo.train_dpo` and scored by held-out DPO loss and reward
accuracy (:func:`training.dpo.evaluate_dpo`).

A pre-training run (``[train] task = "pretrain"``) builds its model from the config named by ``[model]
name_or_path`` with the run seed (:class:`training.pretrain.PretrainModel`; every parameter trains and is
exchanged) and reads plain text: a UTF-8 file, a ``save_to_disk`` folder with a ``text`` column, or
``chatterbot:<category>``, packed into blocks of ``[train] max_len`` tokens (the last
``held_out_fraction`` of them held out). Its ``base_model_sha256`` is
:func:`training.pretrain.config_digest` (there are no base weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from node.errors import NodeError
from node.runspec import RunSpec, RunSpecError
from training.adapters import attach_adapter, load_trainable_state, snapshot, trainable_state
from training.client import ScaffoldControls
from training.determinism import state_sha256
from training.errors import TrainingError
from training.flat import flatten
from training.merge import ModelState, initial_state, state_hash
from training.models import load_model, model_digest
from training.pretrain import PretrainModel, load_pretrain_tokenizer
from training.privacy import PrivacyError, check_norm_bound
from training.text import source_blocks

ProgressFn = Callable[[int, int, float], None]


class DataSourceError(NodeError, ValueError):
    """A ``--data`` source cannot be read or has too few examples."""


@dataclass(frozen=True)
class LocalData:
    """The node's examples: what it trains on and what it evaluates on.

    ``train`` and ``held_out`` hold :class:`training.data.Example` for ``task == "sft"`` and
    :class:`training.data.PreferencePair` for ``task == "dpo"``; for ``task == "pretrain"`` they are
    ``[n, max_len]`` token-block tensors.
    """

    source: str
    train: list[Any]
    held_out: list[Any]
    task: str = "sft"


def parse_hf_source(source: str) -> tuple[str, dict[str, str], str | None]:
    """Split ``hf:<path>?<field>=<column>&...&split=<name>`` into (path, column mapping, split).

    Raises
    ------
    DataSourceError
        If the query part is not ``key=value`` pairs or repeats a key.
    """
    body = source.removeprefix("hf:")
    path, _, query = body.partition("?")
    if not path:
        raise DataSourceError(f"data {source!r}: `hf:` needs a local path")
    columns: dict[str, str] = {}
    split = None
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key or not value:
            raise DataSourceError(f"data {source!r}: {part!r} is not <field>=<column>")
        if key in columns or (key == "split" and split is not None):
            raise DataSourceError(f"data {source!r}: {key!r} given twice")
        if key == "split":
            split = value
        else:
            columns[key] = value
    return path, columns, split


def _load_hf(source: str, task: str) -> list[Any]:
    from training.datasets.hf import load_hf_records

    path, columns, split = parse_hf_source(source)
    return load_hf_records(path, task=task, columns=columns, split=split)


def _load_preferences(source: str, seed: int) -> list[Any]:
    if source.startswith("chatterbot:"):
        raise DataSourceError(
            f"data {source!r}: chatterbot has no preference pairs, and the run's [train] `task` is 'dpo'; "
            "give a preference JSONL file (prompt/chosen/rejected) or synthetic:<skill>"
        )
    if source.startswith("synthetic:"):
        from training.datasets.synthetic import synthetic_preferences

        parts = source.split(":")
        return list(synthetic_preferences(parts[1], int(parts[2]) if len(parts) > 2 else 64, seed))
    from training.data import load_preference_jsonl

    return list(load_preference_jsonl(Path(source)))


def _load_text_blocks(
    source: str, *, held_out_fraction: float, max_examples: int, model: str | None, block_size: int
) -> LocalData:
    if model is None:
        raise DataSourceError("a pre-training run's data needs the run's [model] to tokenise it")
    try:
        blocks = source_blocks(source, load_pretrain_tokenizer(model), block_size)
    except TrainingError as exc:
        raise DataSourceError(f"cannot load data {source!r}: {exc}") from exc
    if max_examples and blocks.shape[0] > max_examples:
        blocks = blocks[:max_examples]
    held = int(round(blocks.shape[0] * held_out_fraction))
    if blocks.shape[0] - held < 1:
        raise DataSourceError(f"data {source!r} has {blocks.shape[0]} blocks of text: none left to train on")
    train: Any = blocks[: blocks.shape[0] - held]  # tensors, not lists, for task "pretrain" (class docstring)
    held_out: Any = blocks[blocks.shape[0] - held :]
    return LocalData(source, train, held_out, "pretrain")


def load_local_data(
    source: str,
    *,
    held_out_fraction: float,
    max_examples: int,
    seed: int,
    task: str = "sft",
    model: str | None = None,
    block_size: int = 256,
) -> LocalData:
    """Load ``source`` (JSONL path, ``hf:<path>``, ``chatterbot:<c>``, ``synthetic:<skill>[:<n>]``), split it.

    ``task`` is the run's ``[train] task``: ``"dpo"`` loads preference pairs, ``"pretrain"`` token blocks
    of ``block_size`` tokens from plain text with ``model``'s tokenizer (see the module docstring).

    Raises
    ------
    DataSourceError
        If the source is unknown, unreadable, has no data for ``task``, or leaves no training example.
    """
    from training.data import split_held_out

    if task == "pretrain":
        return _load_text_blocks(
            source,
            held_out_fraction=held_out_fraction,
            max_examples=max_examples,
            model=model,
            block_size=block_size,
        )
    if task not in ("sft", "dpo"):
        raise DataSourceError(f"`task` must be 'sft', 'dpo' or 'pretrain', got {task!r}")
    examples: list[Any]
    try:
        if source.startswith("hf:"):
            examples = _load_hf(source, task)
        elif task == "dpo":
            examples = _load_preferences(source, seed)
        elif source.startswith("chatterbot:"):
            from training.datasets.chatterbot import load_chatterbot_category

            examples = load_chatterbot_category(source.split(":", 1)[1])
        elif source.startswith("synthetic:"):
            from training.datasets.synthetic import synthetic_task

            parts = source.split(":")
            count = int(parts[2]) if len(parts) > 2 else 64
            examples = synthetic_task(parts[1], count, seed)
        else:
            from training.data import load_sft_jsonl

            examples = load_sft_jsonl(Path(source))
    except DataSourceError:
        raise
    except (TrainingError, OSError, KeyError, ValueError) as exc:
        raise DataSourceError(f"cannot load data {source!r}: {exc}") from exc
    if max_examples and len(examples) > max_examples:
        examples = random.Random(seed).sample(examples, max_examples)
    train, held = split_held_out(examples, held_out_fraction, seed)
    if not train:
        raise DataSourceError(f"data {source!r} has {len(examples)} examples: none left to train on")
    return LocalData(source, train, held, task)


def member_seed(run_seed: int, round: int, address: str) -> int:
    """Seed of one member's local training in one round (stable across processes and restarts)."""
    digest = hashlib.sha256(f"{run_seed}:{round}:{address.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True)
class TrainResult:
    """One local training run: the flat delta, SCAFFOLD's control delta and new client control, metrics."""

    delta: Tensor
    control_delta: Tensor | None
    client_control: dict[str, Tensor] | None
    mean_loss: float
    steps: int
    seconds: float
    inner_state: Any = None
    """Pre-training: the member's AdamW state after training (:mod:`node.protocol.inner_state`)."""


class ModelRuntime:
    """The loaded base model with the run's adapter, trained and evaluated in this process.

    Parameters
    ----------
    spec
        The run spec (model, adapter, seed, local training).
    device
        torch device.
    threads
        torch intra-op threads (0: leave torch's default).
    """

    def __init__(self, spec: RunSpec, *, device: str = "cpu", threads: int = 1) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.spec = spec
        self.pretrain: Any = None
        """The :class:`training.pretrain.PretrainModel` of a ``task = "pretrain"`` run, else ``None``."""
        if spec.train.task == "pretrain":
            self.pretrain = PretrainModel(
                spec.model.name_or_path, spec.seed, max_len=spec.train.max_len, device=device
            )
            self.model = self.pretrain.model
            self.tokenizer = self.pretrain.tokenizer
            self.base_model_sha256 = self.pretrain.base_digest
            self.initial_flat, self.flat_spec = self.pretrain.initial_flat, self.pretrain.flat_spec
            return
        model, self.tokenizer = load_model(spec.model.name_or_path, spec.model.dtype, device)
        self.base_model_sha256 = model_digest(spec.model.name_or_path)
        """This process's base model file digest (what ``base_model_sha256`` records)."""
        self.model = attach_adapter(model, spec.adapter, spec.seed)
        self.initial_flat, self.flat_spec = flatten(trainable_state(self.model))
        if spec.privacy is not None:  # the run's norm bound must admit noised updates of this dimension
            try:
                check_norm_bound(spec.privacy, spec.max_norm, self.initial_flat.numel())
            except PrivacyError as exc:
                raise RunSpecError(f"[privacy] {exc}") from exc

    def initial_state(self) -> ModelState:
        """Round-0 state: the run-seeded adapter init with zero server state."""
        return initial_state(self.spec.merge_spec(), self.initial_flat, self.flat_spec)

    def adapter_sha256(self) -> str:
        """State hash of every adapter tensor as initialised (frozen ones included): ``adapter_sha256``.

        A pre-training run has no adapter: it is the state hash of every initial parameter by name.
        """
        from peft import get_peft_model_state_dict

        if self.pretrain is not None:
            return state_sha256(self.flat_spec.unflatten(self.initial_flat))

        return state_sha256(snapshot(get_peft_model_state_dict(self.model)))

    def recorded_start(self) -> dict[str, str]:
        """Return the values ``fedchain run create`` records for this model, adapter and seed."""
        return {
            "base_model_sha256": self.base_model_sha256,
            "initial_sha256": state_hash(self.initial_state()),
            "adapter_sha256": self.adapter_sha256(),
        }

    def check_recorded(self) -> bool:
        """Refuse a run whose recorded base model or round-0 state is not this process's.

        Returns ``False`` (after a warning) for a spec written before those keys existed: nothing to check.

        Raises
        ------
        RunSpecError
            Naming both hashes, if ``base_model_sha256`` or ``initial_sha256`` differs from what this
            process computes: its merges would start from another model than the other members'.
        """
        spec = self.spec
        if spec.base_model_sha256 is None or spec.initial_sha256 is None or spec.adapter_sha256 is None:
            logging.getLogger(__name__).warning(
                "the run spec does not record base_model_sha256, initial_sha256 and adapter_sha256 (written "
                "before they existed): the base model and round 0's state are not checked"
            )
            return False
        if spec.base_model_sha256 != self.base_model_sha256:
            raise RunSpecError(
                f"[model] {spec.model.name_or_path!r} here has file digest {self.base_model_sha256}, the run "
                f"records base_model_sha256 = {spec.base_model_sha256}: not the run's base model"
            )
        local = self.recorded_start()
        for name, what in (("initial_sha256", "round 0's state"), ("adapter_sha256", "the initial adapter")):
            if local[name] != getattr(spec, name):
                raise RunSpecError(
                    f"{what} here hashes to {local[name]}, the run records {name} = {getattr(spec, name)}: "
                    "another adapter initialisation than the run's"
                )
        return True

    def load(self, state: ModelState) -> None:
        """Put ``state``'s adapter parameters (a pre-training run: all parameters) into the model."""
        if self.pretrain is not None:
            self.pretrain.load(state.params)
            return

        load_trainable_state(self.model, state.adapter_state())

    def train(
        self,
        state: ModelState,
        examples: list[Any],
        *,
        seed: int,
        client_control: dict[str, Tensor] | None = None,
        progress: ProgressFn | None = None,
        round: int | None = None,
        inner_state: Any = None,
    ) -> TrainResult:
        """Train locally from ``state`` with the run's client algorithm (the model keeps the result).

        ``examples`` are SFT examples, or preference pairs when the run's ``[train] task`` is ``"dpo"``.
        ``round`` (the chain's round number) applies the run's ``[train] lr_schedule``; without it every
        call trains at ``[train] lr``. ``inner_state`` (pre-training) resumes the member's AdamW state
        (:class:`training.inner_state.InnerState`); the result carries the new one.
        """
        from training.dpo import train_dpo
        from training.sft import train_sft

        if self.pretrain is not None:  # local AdamW steps on token blocks; delta = end - start
            cfg = self.spec.train_config(seed, round)
            delta, metrics = self.pretrain.train(state.params, examples, cfg, inner_state)
            return TrainResult(
                delta, None, None, metrics.mean_loss, metrics.steps, metrics.seconds, metrics.inner_state
            )
        self.load(state)
        controls = None
        if state.control is not None:
            controls = ScaffoldControls(server=self.flat_spec.unflatten(state.control), client=client_control)
        train_fn = train_dpo if self.spec.train.task == "dpo" else train_sft
        update = train_fn(
            self.model,
            self.tokenizer,
            examples,
            self.spec.train_config(seed, round),
            controls=controls,
            progress=progress,
        )
        control_delta = flatten(update.control_delta)[0] if update.control_delta is not None else None
        return TrainResult(
            delta=flatten(update.delta)[0],
            control_delta=control_delta,
            client_control=update.control,
            mean_loss=update.metrics.mean_loss,
            steps=update.metrics.steps,
            seconds=update.metrics.seconds,
        )

    def evaluate(self, examples: list[Any]) -> float | None:
        """Held-out loss of the adapter currently in the model (``None`` without examples).

        For a DPO run this is the held-out DPO loss (see :meth:`scores`).
        """
        scores = self.scores(examples)
        return None if scores is None else scores["loss"]

    def scores(self, examples: list[Any]) -> dict[str, float] | None:
        """Held-out scores of the adapter in the model: ``loss``, and for DPO also ``reward_accuracy``.

        SFT: mean per-token loss of the responses. DPO: mean DPO loss against the base model and the
        fraction of pairs whose chosen reward beats the rejected one. ``None`` without examples.
        """
        from training.dpo import evaluate_dpo
        from training.evaluate import evaluate_loss

        if len(examples) == 0:
            return None
        if self.pretrain is not None:  # mean next-token loss over the held-out blocks
            loss = self.pretrain.loss(examples)
            return None if loss is None else {"loss": loss}
        train = self.spec.train
        if train.task == "dpo":
            result = evaluate_dpo(
                self.model,
                self.tokenizer,
                examples,
                beta=train.dpo_beta,
                max_len=train.max_len,
                template=train.template,
            )
            return {"loss": result.loss, "reward_accuracy": result.reward_accuracy}
        loss = evaluate_loss(
            self.model, self.tokenizer, examples, max_len=train.max_len, template=train.template
        )
        return {"loss": loss.loss}

    def encode_update(self, result: TrainResult, *, run: str, round: int) -> bytes:
        """Encode the update with the run's codec (``control_delta`` attached for SCAFFOLD), no residual."""
        return self.encode_with_feedback(result, None, run=run, round=round)[0]

    def encode_with_feedback(
        self, result: TrainResult, residual: Tensor | None, *, run: str, round: int
    ) -> tuple[bytes, Tensor | None]:
        """Encode the update; for a ``topk`` run also return the new error-feedback residual.

        ``residual`` is what this member's previous update did not carry (``None``: zero); the other codecs
        ignore it and return ``None`` (:func:`training.codec.encode_with_feedback`).
        """
        from training.codec import encode_with_feedback

        extra = {"control_delta": result.control_delta} if result.control_delta is not None else None
        return encode_with_feedback(
            result.delta,
            residual,
            self.flat_spec,
            run=run,
            round=round,
            codec=self.spec.codec,  # type: ignore[arg-type]  # validated by RunSpec
            extra=extra,
            params=self.spec.codec_params(),
        )


def record_start(spec: RunSpec) -> RunSpec:
    """Return ``spec`` with its starting point on record, as ``fedchain run create`` stores it.

    Loads the base model, attaches the run-seeded adapter, and fills ``base_model_sha256`` (the model's
    file digest), ``initial_sha256`` (round 0's state hash) and ``adapter_sha256`` (every initial adapter
    tensor, frozen ones included). A value the creator already wrote must be
    the one computed here.

    Raises
    ------
    RunSpecError
        If a value given in the spec differs from the computed one (naming both).
    """
    computed = ModelRuntime(spec).recorded_start()
    for name, value in computed.items():
        given = getattr(spec, name)
        if given is not None and given != value:
            raise RunSpecError(f"`{name}` is {given} in the spec, but this model and seed give {value}")
    return dataclasses.replace(
        spec,
        base_model_sha256=computed["base_model_sha256"],
        initial_sha256=computed["initial_sha256"],
        adapter_sha256=computed["adapter_sha256"],
    )
