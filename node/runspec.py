"""The run specification: everything every member of a run must agree on, stored as an artifact.

A run spec is written as TOML by whoever creates the run (``fedchain run create --spec run.toml``)::

    [run]                      # name, rounds, algorithm, aggregator, codec, max_norm, seed, max_samples,
                               # arithmetic (defaults to this version's)
    [aggregator_params]        # the aggregator's keyword parameters (e.g. f = 1)
    [server]                   # server optimiser overrides (server_lr, beta1, beta2, tau)
    [chain]                    # quorum_bps, submit_blocks, vote_blocks, min_updates, admission, join_blocks
    [model]                    # training.config.ModelConfig (name_or_path, dtype; device is per node)
    [adapter]                  # training.config.AdapterConfig
    [train]                    # training.config.TrainConfig (local training of every member)

Its canonical bytes (:meth:`RunSpec.canonical_bytes`: sorted-key compact JSON) are stored in the content
store; their sha256 and CID go into ``createRun``. Every node fetches the spec by CID from the chain's run
record, checks the sha256 and parses it strictly with :meth:`RunSpec.from_bytes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from node.errors import NodeError
from training.config import AdapterConfig, ModelConfig, TrainConfig
from training.tomlconfig import build_section, check_tables, load_toml

SPEC_FORMAT = "fedchain-runspec/1"
MAX_SPEC_BYTES = 1 << 16


class RunSpecError(NodeError, ValueError):
    """A run spec is malformed or a value is out of range; the message names the table and key."""


@dataclass(frozen=True)
class ChainParams:
    """How the run is timed and decided on chain (see ``ledger.types.RunConfig``)."""

    quorum_bps: int = field(default=6_666, metadata={"help": "quorum in basis points (2/3)"})
    submit_blocks: int = field(default=30, metadata={"help": "submit window length in blocks"})
    vote_blocks: int = field(default=30, metadata={"help": "vote window length in blocks"})
    min_updates: int = field(default=1, metadata={"help": "fewest updates a round needs to be voted on"})
    admission: str = field(default="open", metadata={"help": "open or allowlist"})
    join_blocks: int = field(default=20, metadata={"help": "blocks between run creation and round 0"})

    def __post_init__(self) -> None:
        if not 1 <= self.quorum_bps <= 10_000:
            raise RunSpecError(f"`quorum_bps` must be in [1, 10000], got {self.quorum_bps!r}")
        for name in ("submit_blocks", "vote_blocks", "join_blocks"):
            if not 1 <= getattr(self, name) < 2**32:
                raise RunSpecError(f"`{name}` must be in [1, 2**32), got {getattr(self, name)!r}")
        if not 0 <= self.min_updates < 2**32:
            raise RunSpecError(f"`min_updates` must be in [0, 2**32), got {self.min_updates!r}")
        if self.admission not in ("open", "allowlist"):
            raise RunSpecError(f"`admission` must be 'open' or 'allowlist', got {self.admission!r}")


@dataclass(frozen=True)
class RunSpec:
    """A run: model, adapter, local training, FL algorithm, aggregation, codec and chain windows.

    Attributes
    ----------
    name
        Human-readable name.
    rounds
        Number of rounds to finalise; nodes stop after that many finalised rounds.
    algorithm
        FL algorithm (``training.algorithms.ALGORITHMS``): picks the client algorithm and server optimiser.
    aggregator, aggregator_params
        Robust aggregator (``training.aggregate.AGGREGATORS``) and its parameters.
    codec
        Update codec, ``fp32`` or ``int8``.
    max_norm
        Updates with a larger L2 norm are rejected by every peer (``None``: no bound).
    max_samples
        Largest sample count a member may claim (bounds its weight).
    seed
        Run seed: adapter initialisation and every member's local training seeds derive from it.
    server
        Server optimiser overrides.
    arithmetic
        Version of the consensus arithmetic (:data:`training.merge.ARITHMETIC`). A node whose own version
        differs refuses the spec: it would compute other merged bytes than its peers.
    chain, model, adapter, train
        The sections above.
    """

    name: str = "fedchain-run"
    rounds: int = 3
    algorithm: str = "fedavg"
    aggregator: str = "mean"
    aggregator_params: Mapping[str, Any] = field(default_factory=dict)
    codec: str = "fp32"
    max_norm: float | None = None
    max_samples: int = 1_000_000
    seed: int = 0
    server: Mapping[str, float] = field(default_factory=dict)
    arithmetic: str = field(default_factory=lambda: _own_arithmetic())
    chain: ChainParams = field(default_factory=ChainParams)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="tiny-llama"))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        from training.algorithms import ALGORITHMS
        from training.errors import TrainingError

        object.__setattr__(self, "aggregator_params", MappingProxyType(dict(self.aggregator_params)))
        object.__setattr__(self, "server", MappingProxyType(dict(self.server)))
        if not self.name or len(self.name) > 200:
            raise RunSpecError(f"`name` must be 1-200 characters, got {self.name!r:.40}")
        if not 1 <= self.rounds <= 100_000:
            raise RunSpecError(f"`rounds` must be in [1, 100000], got {self.rounds!r}")
        if self.algorithm not in ALGORITHMS:
            raise RunSpecError(f"`algorithm` must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise RunSpecError(f"`max_norm` must be > 0, got {self.max_norm!r}")
        if not 0 <= self.seed < 2**63:
            raise RunSpecError(f"`seed` must be in [0, 2**63), got {self.seed!r}")
        if self.arithmetic != _own_arithmetic():
            raise RunSpecError(
                f"the run uses consensus arithmetic {self.arithmetic!r}, this fedchain computes "
                f"{_own_arithmetic()!r}: its merged models would not match the other members'; "
                "join with the fedchain version the run was created with"
            )
        if self.train.task != "sft":
            raise RunSpecError(f"[train] `task` must be 'sft' for node runs, got {self.train.task!r}")
        try:
            self.merge_spec()
        except TrainingError as exc:
            raise RunSpecError(str(exc)) from exc

    @property
    def scaffold(self) -> bool:
        """Whether the run exchanges SCAFFOLD control variates."""
        from training.algorithms import ALGORITHMS

        return ALGORITHMS[self.algorithm].control_variates

    def merge_spec(self) -> Any:
        """Return the :class:`training.merge.MergeSpec` of this run."""
        from training.algorithms import ALGORITHMS
        from training.merge import MergeSpec

        algorithm = ALGORITHMS[self.algorithm]
        return MergeSpec(
            aggregator=self.aggregator,
            aggregator_params=self.aggregator_params,
            server_optimizer=algorithm.server_optimizer,
            server_params=self.server,
            codec=self.codec,
            max_norm=self.max_norm,
            scaffold=algorithm.control_variates,
            max_samples=self.max_samples,
        )

    def train_config(self, seed: int) -> TrainConfig:
        """Local training config for one member's round, with the run's client algorithm and ``seed``."""
        from training.algorithms import ALGORITHMS

        client = ALGORITHMS[self.algorithm].client
        return dataclasses.replace(self.train, client_algorithm=client, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain JSON-ready data (the canonical layout, with a ``format`` tag)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value

        top = {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for section in ("chain", "model", "adapter", "train"):
            top[section] = plain(dataclasses.asdict(getattr(self, section)))
        top["format"] = SPEC_FORMAT
        return top

    def canonical_bytes(self) -> bytes:
        """Sorted-key compact JSON of :meth:`to_dict`: what is stored and hashed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    def sha256(self) -> bytes:
        """sha256 of :meth:`canonical_bytes` (32 bytes; ``specSha256`` on chain)."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> RunSpec:
        """Parse canonical bytes fetched from the store (strict; untrusted input).

        Raises
        ------
        RunSpecError
            If the bytes are too large, not JSON, of another format, or any value is wrong.
        """
        if len(data) > MAX_SPEC_BYTES:
            raise RunSpecError(f"run spec is {len(data)} bytes, over the {MAX_SPEC_BYTES}-byte cap")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunSpecError(f"run spec is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.pop("format", None) != SPEC_FORMAT:
            raise RunSpecError(f"run spec must be a JSON object with format {SPEC_FORMAT!r}")
        from training.merge import LEGACY_ARITHMETIC

        doc.setdefault("arithmetic", LEGACY_ARITHMETIC)  # written before the key existed
        return _from_tables(doc, sections_at_top=True)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunSpec:
        """Read a run spec TOML file (layout in the module docstring).

        Raises
        ------
        RunSpecError
            If the file cannot be read or parsed or a value is wrong (the message names the file and key).
        """
        return load_toml(
            path, lambda doc: _from_tables(doc, sections_at_top=False), what="run spec", error=RunSpecError
        )


def _own_arithmetic() -> str:
    from training.merge import ARITHMETIC

    return ARITHMETIC


def _from_tables(doc: Mapping[str, Any], *, sections_at_top: bool) -> RunSpec:
    """Build a spec from TOML tables (``[run]`` + sections) or the canonical JSON (all at top level)."""
    sections = ("aggregator_params", "server", "chain", "model", "adapter", "train")
    if sections_at_top:
        top = {k: v for k, v in doc.items() if k not in sections}
    else:
        check_tables(doc, sorted({"run", *sections}), error=RunSpecError)
        run = doc.get("run", {})
        if not isinstance(run, Mapping):
            raise RunSpecError(f"[run] must be a table, got {type(run).__name__}")
        top = dict(run)
    for name in ("aggregator_params", "server"):
        value = doc.get(name, {})
        if not isinstance(value, Mapping):
            raise RunSpecError(f"[{name}] must be a table")
        top[name] = dict(value)
    model_table = doc.get("model", {})
    if not isinstance(model_table, Mapping):
        raise RunSpecError(f"[model] must be a table, got {type(model_table).__name__}")
    model = {"name_or_path": "tiny-llama", **model_table}
    top["chain"] = build_section(ChainParams, doc.get("chain", {}), "chain", error=RunSpecError)
    top["model"] = build_section(ModelConfig, model, "model", error=RunSpecError)
    top["adapter"] = build_section(AdapterConfig, doc.get("adapter", {}), "adapter", error=RunSpecError)
    top["train"] = build_section(TrainConfig, doc.get("train", {}), "train", error=RunSpecError)
    return build_section(RunSpec, top, "run", error=RunSpecError)
