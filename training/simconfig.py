"""Configuration of an in-process federated simulation, read from one TOML file.

Layout of the file (every table and key is optional; defaults below)::

    [simulation]          # SimulationConfig: clients, rounds, algorithm, aggregator, codec, seed, ...
    [simulation.aggregator_params]   # keyword parameters of the aggregator, e.g. trim_ratio = 0.2
    [server]              # server optimiser overrides: server_lr, beta1, beta2, tau
    [byzantine]           # ByzantineConfig: count or fraction, attack, strength
    [data]                # DataConfig: source, examples_per_client, categories, paths, held_out_fraction
    [model]               # training.config.ModelConfig
    [adapter]             # training.config.AdapterConfig
    [train]               # training.config.TrainConfig (the local training of one client in one round)
    [privacy]             # training.privacy.PrivacyConfig: client-level DP as in a run spec (no table: none)

A wrong key or value raises :class:`~training.errors.ConfigError` naming the table and the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.config import AdapterConfig, ModelConfig, TrainConfig
from training.conventions import DEFAULT_CONVENTION, Convention, check_convention
from training.errors import ConfigError
from training.privacy import PrivacyConfig
from training.tomlconfig import build_section, check_tables, load_toml

if TYPE_CHECKING:
    from training.compress import CodecParams

DataSource = Literal["synthetic", "chatterbot", "jsonl", "hf", "text"]
Codec = Literal["fp32", "int8", "int4", "topk"]


@dataclass(frozen=True)
class DataConfig:
    """Where the clients' data comes from and how much of it is held out.

    Attributes
    ----------
    source
        ``"synthetic"`` (one seeded single-answer skill per client), ``"chatterbot"`` (one English
        chatterbot-corpus category per client) or ``"jsonl"`` (one SFT JSONL file per client, ``paths``).
        ``"hf"``: one local Hugging Face dataset per client (``paths``: a ``save_to_disk`` folder,
        ``.parquet``, ``.json`` or ``.jsonl``; :mod:`training.datasets.hf`), with ``columns`` and ``split``.
        ``"text"`` (``[train] task = "pretrain"``): one plain UTF-8 text file or ``save_to_disk`` folder with
        a ``text`` column per client (``paths``; :mod:`training.text`); pre-training also takes
        ``"chatterbot"`` (each category's conversations as text).
        With ``[train] task = "dpo"`` the clients hold preference pairs instead: synthetic pairs (the right
        answer chosen, a wrong one rejected), preference JSONL files or datasets; chatterbot has none.
    examples_per_client
        Synthetic: examples generated per client; chatterbot/jsonl: cap on examples kept per client
        (0 keeps all).
    categories
        Chatterbot categories, one per client; empty takes the first ``clients`` categories by name.
        Synthetic: each client's skill (``training.datasets.synthetic.SKILLS``); empty cycles through them.
    paths
        JSONL files or datasets, one per client (``source = "jsonl"`` or ``"hf"``).
    columns
        ``"hf"``: record field -> dataset column, e.g. ``{instruction = "question", response = "answer"}``
        (SFT fields ``instruction``, ``input``, ``response``; DPO fields ``prompt``, ``chosen``,
        ``rejected``); unmapped fields use the column of their own name.
    split
        ``"hf"``: the split of a ``save_to_disk`` ``DatasetDict`` folder (default ``train``).
    held_out_fraction
        Share of each client's examples held out for evaluation.
    max_eval_examples
        Cap on held-out examples per client (keeps evaluation cheap); 0 keeps all.
    exact_match
        Also measure exact-match accuracy by greedy decoding; ``None`` does so for synthetic data only
        (the tasks with a single right answer).
    """

    source: DataSource = field(default="synthetic", metadata={"help": "synthetic, chatterbot or jsonl"})
    examples_per_client: int = field(default=32, metadata={"help": "examples per client (or cap)"})
    categories: tuple[str, ...] = field(default=(), metadata={"help": "chatterbot categories / skills"})
    paths: tuple[str, ...] = field(default=(), metadata={"help": "JSONL file or dataset per client"})
    columns: Mapping[str, str] = field(default_factory=dict, metadata={"help": "field -> column (hf)"})
    split: str | None = field(default=None, metadata={"help": "save_to_disk split (hf)"})
    held_out_fraction: float = field(default=0.25, metadata={"help": "share held out per client"})
    max_eval_examples: int = field(default=16, metadata={"help": "held-out cap per client"})
    exact_match: bool | None = field(default=None, metadata={"help": "measure exact-match accuracy"})

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "chatterbot", "jsonl", "hf", "text"):
            raise ConfigError(
                f"`source` must be one of synthetic, chatterbot, jsonl, hf, text, got {self.source!r}"
            )
        if self.examples_per_client < 0 or (self.source == "synthetic" and self.examples_per_client < 2):
            raise ConfigError(f"`examples_per_client` must be >= 2, got {self.examples_per_client!r}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ConfigError(f"`held_out_fraction` must be in (0, 1), got {self.held_out_fraction!r}")
        if self.max_eval_examples < 0:
            raise ConfigError(f"`max_eval_examples` must be >= 0, got {self.max_eval_examples!r}")
        if self.source in ("jsonl", "hf", "text") and not self.paths:
            raise ConfigError(f"`paths` must list one file per client when `source` is {self.source!r}")
        if not isinstance(self.columns, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.columns.items()
        ):
            raise ConfigError(f"`columns` must map field names to column names, got {self.columns!r}")
        if self.columns and self.source != "hf":
            raise ConfigError(f"`columns` applies to `source` 'hf' only, not {self.source!r}")


@dataclass(frozen=True)
class ByzantineConfig:
    """Which clients are Byzantine and what they do.

    Attributes
    ----------
    count
        Number of Byzantine clients; ``fraction`` is used instead when ``count`` is 0.
    fraction
        Share of the clients that are Byzantine, rounded to the nearest integer.
    attack
        A name in :data:`training.attacks.ATTACKS`.
    strength
        The attack's parameter (scale factor, noise multiplier, ALIE's z, IPM's epsilon); ``None`` uses the
        attack's default.
    """

    count: int = field(default=0, metadata={"help": "number of Byzantine clients"})
    fraction: float = field(default=0.0, metadata={"help": "share of Byzantine clients"})
    attack: str = field(default="sign_flip", metadata={"help": "attack name"})
    strength: float | None = field(default=None, metadata={"help": "attack parameter"})

    def __post_init__(self) -> None:
        from training.attacks import ATTACKS

        if self.count < 0:
            raise ConfigError(f"`count` must be >= 0, got {self.count!r}")
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigError(f"`fraction` must be in [0, 1), got {self.fraction!r}")
        if self.attack not in ATTACKS:
            raise ConfigError(f"`attack` must be one of {', '.join(sorted(ATTACKS))}, got {self.attack!r}")

    def resolve(self, clients: int) -> int:
        """Return the number of Byzantine clients among ``clients``."""
        return self.count if self.count else round(self.fraction * clients)


@dataclass(frozen=True)
class SimulationConfig:
    """One simulated federation: ``clients`` in one process, ``rounds`` of the chosen algorithm.

    Attributes
    ----------
    clients, rounds
        Federation size and number of rounds.
    clients_per_round
        Client sampling: how many clients train each round, drawn by :func:`training.sampling.sample_clients`
        (the network's rule, docs/sampling.md); ``None`` (the default): every client.
    algorithm
        A name in :data:`training.algorithms.ALGORITHMS` (fedavg, fedprox, scaffold, fedavgm, fedadagrad,
        fedyogi, fedadam); it picks the client algorithm and the server optimiser.
    convention
        Which formulas the algorithm follows (:mod:`training.conventions`): ``"openfedllm"`` (default) or
        ``"reddi"``; it also sets ``[train] convention`` (SCAFFOLD's local correction).
    aggregator, aggregator_params
        A name in :data:`training.aggregate.AGGREGATORS` and its keyword parameters.
    codec
        Update codec every update goes through (``"fp32"``, ``"int8"``, ``"int4"`` or ``"topk"``), exactly as
        on the network; ``topk`` clients keep an error-feedback residual (:mod:`training.compress`).
    codec_block, topk_fraction
        int4's values per scale and top-k's share of values sent (:class:`training.compress.CodecParams`).
    error_feedback
        Whether ``topk`` clients keep their residual (what they did not send) for the next round, as every
        node does; ``false`` drops it (to measure what error feedback is worth).
    max_update_norm
        Norm bound the decoder enforces (updates above it are rejected); ``None`` for none.
    server
        Server optimiser overrides (``server_lr``, ``beta1``, ``beta2``, ``tau``).
    local_baseline
        Also train every client alone for ``rounds * local_steps`` steps and evaluate it on the union of
        held-out data.
    seed
        Seeds data, adapter initialisation, Byzantine selection and attacks.
    threads
        torch intra-op threads while simulating; ``None`` leaves torch's default. Small models on a busy
        machine run many times faster with 1 (thread contention dominates their tiny kernels).
    """

    clients: int = field(default=4, metadata={"help": "number of clients"})
    rounds: int = field(default=3, metadata={"help": "federated rounds"})
    clients_per_round: int | None = field(
        default=None, metadata={"help": "clients sampled to train each round (unset: all)"}
    )
    algorithm: str = field(default="fedavg", metadata={"help": "FL algorithm"})
    convention: Convention = field(default=DEFAULT_CONVENTION, metadata={"help": "openfedllm or reddi"})
    aggregator: str = field(default="mean", metadata={"help": "robust aggregator"})
    aggregator_params: Mapping[str, Any] = field(default_factory=dict, metadata={"help": "its parameters"})
    codec: Codec = field(default="fp32", metadata={"help": "fp32, int8, int4 or topk"})
    codec_block: int = field(default=64, metadata={"help": "int4: values per float32 scale"})
    topk_fraction: float = field(default=0.01, metadata={"help": "topk: share of the values sent, in (0, 1]"})
    error_feedback: bool = field(
        default=True, metadata={"help": "topk: keep what was not sent (as nodes do)"}
    )
    max_update_norm: float | None = field(default=None, metadata={"help": "decoder norm bound"})
    local_baseline: bool = field(default=False, metadata={"help": "also run local-only training"})
    seed: int = field(default=0, metadata={"help": "simulation seed"})
    threads: int | None = field(default=None, metadata={"help": "torch threads (None: default)"})
    server: Mapping[str, float] = field(default_factory=dict, metadata={"help": "server optimiser overrides"})
    byzantine: ByzantineConfig = field(default_factory=ByzantineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="tiny-llama"))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig | None = None
    """Client-level DP of every client's update (:mod:`training.privacy`, the run spec's ``[privacy]``)."""

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ConfigError(f"`clients` must be >= 1, got {self.clients!r}")
        if self.rounds < 1:
            raise ConfigError(f"`rounds` must be >= 1, got {self.rounds!r}")
        k = self.clients_per_round
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"`clients_per_round` must be an integer >= 1, got {k!r}")
        if k is not None and k > self.clients:
            raise ConfigError(
                f"`clients_per_round` is {k}, above the federation's `clients` = {self.clients}"
            )
        if self.codec not in ("fp32", "int8", "int4", "topk"):
            raise ConfigError(f"`codec` must be one of fp32, int8, int4, topk, got {self.codec!r}")
        self.codec_params()  # checks `codec_block` and `topk_fraction`
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"`threads` must be >= 1 or unset, got {self.threads!r}")
        if self.max_update_norm is not None and not self.max_update_norm > 0:
            raise ConfigError(f"`max_update_norm` must be > 0, got {self.max_update_norm!r}")
        bad = self.byzantine.resolve(self.clients)
        if bad >= self.clients:
            raise ConfigError(
                f"`byzantine` makes {bad} of {self.clients} clients Byzantine; at least one must be honest"
            )
        if self.data.source in ("jsonl", "hf", "text") and len(self.data.paths) != self.clients:
            raise ConfigError(f"`paths` lists {len(self.data.paths)} files for {self.clients} clients")
        if self.data.categories and len(self.data.categories) != self.clients:
            raise ConfigError(
                f"`categories` lists {len(self.data.categories)} names for {self.clients} clients"
            )
        if self.train.task == "dpo" and self.data.source == "chatterbot":
            raise ConfigError(
                "[data] `source` 'chatterbot' has no preference pairs for [train] `task` 'dpo'; "
                "use 'synthetic' or preference files"
            )
        _check_privacy(self)
        _check_task_source(self)
        _check_known("algorithm", self.algorithm, "training.algorithms", "ALGORITHMS")
        _check_known("aggregator", self.aggregator, "training.aggregate", "AGGREGATORS")
        check_convention(self.convention)
        if self.train.convention != self.convention:  # one convention per simulation, training included
            object.__setattr__(self, "train", dataclasses.replace(self.train, convention=self.convention))

    def codec_params(self) -> CodecParams:
        """Return the int4 block size and top-k fraction of every update (``CodecParams``).

        Raises
        ------
        ConfigError
            If ``codec_block`` or ``topk_fraction`` is out of range.
        """
        from training.compress import CodecParams
        from training.errors import TrainingError

        try:
            return CodecParams(block=self.codec_block, topk_fraction=self.topk_fraction)
        except TrainingError as exc:
            raise ConfigError(str(exc)) from exc

    @property
    def num_byzantine(self) -> int:
        """Number of Byzantine clients."""
        return self.byzantine.resolve(self.clients)

    def replace(self, **changes: Any) -> SimulationConfig:
        """Return a copy with top-level fields changed; ``"section.field"`` keys change a nested field."""
        nested: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in changes.items():
            if "." in key:
                section, name = key.split(".", 1)
                nested.setdefault(section, {})[name] = value
            else:
                top[key] = value
        for section, values in nested.items():
            current = getattr(self, section, None)
            if not dataclasses.is_dataclass(current) or isinstance(current, type):
                raise ConfigError(f"unknown section `{section}`")
            table = {**dataclasses.asdict(current), **values}
            top[section] = build_section(type(current), table, section, error=ConfigError)
        return dataclasses.replace(self, **top)


def _check_privacy(cfg: SimulationConfig) -> None:
    """As in a run spec: SCAFFOLD's control deltas are not privatised; the norm bound must admit noise."""
    from training.privacy import PrivacyError, check_norm_bound

    if cfg.privacy is None:
        return
    if not isinstance(cfg.privacy, PrivacyConfig):
        raise ConfigError(f"[privacy] must be a table, got {type(cfg.privacy).__name__}")
    if cfg.privacy.epsilon_budget is not None:
        raise ConfigError(
            "[privacy] `epsilon_budget` is not applied by the simulation (it reports each round's epsilon); "
            "leave it out"
        )
    if cfg.algorithm == "scaffold":
        raise ConfigError(
            "[privacy] cannot be used with `algorithm = 'scaffold'`: its control-variate deltas are computed "
            "from the same data and are not privatised; choose another algorithm"
        )
    try:  # the full check, with the update's dimension, runs when the model is loaded
        check_norm_bound(cfg.privacy, cfg.max_update_norm, 1)
    except PrivacyError as exc:
        raise ConfigError(f"[privacy] {str(exc).replace('`max_norm`', '`max_update_norm`')}") from exc


def _check_task_source(cfg: SimulationConfig) -> None:
    """Pre-training reads plain text from a model config; the other tasks read examples."""
    if cfg.train.task != "pretrain":
        if cfg.data.source == "text":
            raise ConfigError(
                f"[data] `source` 'text' is plain text for [train] task = 'pretrain', not {cfg.train.task!r}"
            )
        return
    from training.pretrain import check_model_name, check_pretrain_tables

    if cfg.data.source not in ("text", "chatterbot"):
        raise ConfigError(
            f"[data] `source` {cfg.data.source!r} has no plain text for [train] task = 'pretrain'; "
            "use 'text' (files in `paths`) or 'chatterbot'"
        )
    if cfg.privacy is not None:
        raise ConfigError("[privacy] is not implemented for [train] task = 'pretrain'; remove the table")
    check_model_name(cfg.model.name_or_path)
    check_pretrain_tables(None, cfg.train)
    from training.algorithms import ALGORITHMS

    if cfg.algorithm in ALGORITHMS and ALGORITHMS[cfg.algorithm].client != "local":
        raise ConfigError(
            f"`algorithm` {cfg.algorithm!r} does not apply to [train] task = 'pretrain' (its local steps are "
            "plain AdamW); use diloco, fedavg, fedavgm, fedadagrad, fedyogi or fedadam"
        )


def _check_known(name: str, value: str, module: str, registry: str) -> None:
    import importlib

    try:
        known = getattr(importlib.import_module(module), registry)
    except (ImportError, AttributeError):  # the registry is not importable: checked again at run time
        return
    if value not in known:
        raise ConfigError(f"`{name}` must be one of {', '.join(sorted(known))}, got {value!r}")


def config_from_dict(doc: Mapping[str, Any]) -> SimulationConfig:
    """Build a :class:`SimulationConfig` from a parsed TOML document (layout in the module docstring)."""
    known = ("adapter", "byzantine", "data", "model", "privacy", "server", "simulation", "train")
    check_tables(doc, known, error=ConfigError)
    sim = dict(doc.get("simulation", {}))
    sim["server"] = dict(doc.get("server", {}))
    for key in sorted(sim["server"]):
        if key not in ("server_lr", "beta1", "beta2", "tau"):
            raise ConfigError(f"[server] unknown key {key}; known: beta1, beta2, server_lr, tau")
    sections = {
        "byzantine": ByzantineConfig,
        "data": DataConfig,
        "adapter": AdapterConfig,
        "train": TrainConfig,
    }
    train = doc.get("train", {})
    if isinstance(train, Mapping) and "convention" in train:
        own = sim.get("convention", DEFAULT_CONVENTION)
        if train["convention"] != own:
            raise ConfigError(
                f"[train] `convention` is {train['convention']!r} but [simulation] `convention` is {own!r}: "
                "set it once, in [simulation]"
            )
    for name, cls in sections.items():
        sim[name] = build_section(cls, doc.get(name, {}), name, error=ConfigError)
    model = {"name_or_path": "tiny-llama", **doc.get("model", {})}
    sim["model"] = build_section(ModelConfig, model, "model", error=ConfigError)
    if sim["train"].task == "pretrain":  # every parameter trains: an [adapter] table is a mistake
        from training.pretrain import check_pretrain_tables

        check_pretrain_tables(doc.get("adapter") or None, sim["train"])
    if "privacy" in doc:
        sim["privacy"] = build_section(PrivacyConfig, doc["privacy"], "privacy", error=ConfigError)
    return build_section(SimulationConfig, sim, "simulation", error=ConfigError)


def load_config(path: str | Path) -> SimulationConfig:
    """Read a simulation TOML file.

    Raises
    ------
    ConfigError
        If the file cannot be read or parsed, or a table, key or value is wrong (the message names it).
    """
    return load_toml(path, config_from_dict, what="simulation config", error=ConfigError)
