"""The run specification: everything every member of a run must agree on, stored as an artifact.

A run spec is written as TOML by whoever creates the run (``fedchain run create --spec run.toml``)::

    [run]                      # name, rounds, algorithm, aggregator, codec, max_norm, seed, max_samples,
                               # arithmetic (defaults to this version's), clients_per_round
    [aggregator_params]        # the aggregator's keyword parameters (e.g. f = 1)
    [server]                   # server optimiser overrides (server_lr, beta1, beta2, tau)
    [chain]                    # quorum_bps, submit_blocks, vote_blocks, min_updates, admission, join_blocks,
                               # committee_size (0: every member verifies; k: a committee of k, docs/scale.md)
    [model]                    # training.config.ModelConfig (name_or_path, dtype; device is per node)
    [adapter]                  # training.config.AdapterConfig
    [train]                    # training.config.TrainConfig (local training of every member): task =
                               # "sft" or "dpo" (preference pairs, dpo_beta; reference: the base model)
                               # or "pretrain" (every parameter of a model built from [model]'s config,
                               # on plain text; no [adapter] table; training.pretrain)
    [privacy]                  # training.privacy.PrivacyConfig: client-level DP (clip_norm, noise_multiplier,
                               # delta, epsilon_budget); no table: no DP (docs/privacy.md)

Its canonical bytes (:meth:`RunSpec.canonical_bytes`: sorted-key compact JSON) are stored in the content
store; their sha256 and CID go into ``createRun``. Every node fetches the spec by CID from the chain's run
record, checks the sha256 and parses it strictly with :meth:`RunSpec.from_bytes`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from node.errors import NodeError
from p2p.errors import EnvelopeError
from training.algorithms import ALGORITHMS
from training.config import AdapterConfig, ModelConfig, TrainConfig
from training.conventions import CONVENTIONS, DEFAULT_CONVENTION, Convention
from training.errors import TrainingError
from training.privacy import PrivacyConfig, PrivacyError, check_norm_bound
from training.tomlconfig import build_section, check_tables, load_toml

SPEC_FORMAT = "fedchain-runspec/1"
MAX_SPEC_BYTES = 1 << 16
MAX_COMMITTEE_WINDOW = 255
"""Longest ``submit_blocks + vote_blocks`` of a committee run (``blockhash`` reaches 256 blocks back)."""


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
    committee_size: int = field(
        default=0,
        metadata={
            "help": "0: every member verifies every round; k > 0: a committee of k members drawn per round "
            "verifies and signs, the others adopt its result (docs/scale.md)"
        },
    )

    def __post_init__(self) -> None:
        k = self.committee_size
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < 2**32:
            raise RunSpecError(f"`committee_size` must be an integer in [0, 2**32), got {k!r}")
        if k > 0 and self.submit_blocks + self.vote_blocks > MAX_COMMITTEE_WINDOW:
            raise RunSpecError(
                f"a committee run (`committee_size` = {k}) needs `submit_blocks` + `vote_blocks` <= "
                f"{MAX_COMMITTEE_WINDOW} (the committee is drawn from the start block's hash, which the "
                f"chain keeps for 256 blocks), got {self.submit_blocks} + {self.vote_blocks}"
            )
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
    convention
        Which published formulas the algorithm follows (:mod:`training.conventions`, docs/algorithms.md):
        ``"openfedllm"`` (default, the OpenFedLLM reference) or ``"reddi"`` (Reddi et al. 2021). It goes
        into the merge and into every member's local training (``[train]`` may not set another one).
    aggregator, aggregator_params
        Robust aggregator (``training.aggregate.AGGREGATORS``) and its parameters.
    codec
        Update codec (``training.codec.CODECS``): ``fp32``, ``int8``, ``int4`` (blockwise) or ``topk`` (the
        largest values, with error feedback at every member; docs/specification.md).
    codec_block, topk_fraction
        The codec's parameter: int4's values per float32 scale (default 64), top-k's share of values an update
        carries (default 0.01). Written out in runs of that codec only; other codecs refuse them.
    max_norm
        Updates with a larger L2 norm are rejected by every peer (``None``: no bound).
    max_samples
        Largest sample count a member may claim (bounds its weight).
    weighting
        Aggregation weights: ``"samples"`` (default) weighs each update by the ``num_samples`` its member
        committed, self-reported and unchecked; ``"equal"`` weighs every accepted update 1
        (:data:`training.merge.WEIGHTINGS`).
    seed
        Run seed: adapter initialisation and every member's local training seeds derive from it.
    server
        Server optimiser overrides.
    artifacts
        ``"public"`` (default): updates are stored in the clear. ``"members"``: every update is an envelope
        (:mod:`p2p.envelope`) that only the run's members and ``auditors`` can open (docs/privacy.md).
    encrypt_merged
        With ``artifacts = "members"``, merged states are envelopes too (deterministic, so that every honest
        member stores and votes the same CID).
    auditors
        Extra readers of a ``members`` run: secp256k1 public keys (hex, 33 or 65 bytes). An address is not
        enough: encryption needs the key itself, and an address is only its hash.
    clients_per_round
        Client sampling: how many of a round's eligible members are selected to train and submit
        (:mod:`node.protocol.sampling`, docs/sampling.md); ``None`` (the default): every eligible member.
    base_model_sha256, initial_sha256, adapter_sha256
        The run's starting point on record, written by ``fedchain run create``: the base model's file digest
        (:func:`training.models.model_digest`), the state hash of round 0's model state and the state hash
        of every adapter tensor at initialisation, the frozen LoRA ``A`` matrices included (both from
        ``seed`` and ``[adapter]``; a merged state holds only what trains). A node whose own differ refuses
        the run
        (:meth:`node.protocol.model.ModelRuntime.check_recorded`); ``None`` in specs written before the keys.
    arithmetic
        Version of the consensus arithmetic (:data:`training.merge.ARITHMETIC`). A node whose own version
        differs refuses the spec: it would compute other merged bytes than its peers.
    chain, model, adapter, train
        The sections above.
    privacy
        Client-level differential privacy of every member's update (:mod:`training.privacy`); ``None``
        (no ``[privacy]`` table): none.
    """

    name: str = "fedchain-run"
    rounds: int = 3
    algorithm: str = "fedavg"
    convention: Convention = field(default_factory=lambda: _default_convention())
    aggregator: str = "mean"
    aggregator_params: Mapping[str, Any] = field(default_factory=dict)
    codec: str = "fp32"
    codec_block: int | None = field(
        default=None, metadata={"help": "int4 runs: values per float32 scale (default 64)"}
    )
    topk_fraction: float | None = field(
        default=None,
        metadata={"help": "topk runs: share of the update's values sent, in (0, 1] (default 0.01)"},
    )
    max_norm: float | None = None
    max_samples: int = 1_000_000
    weighting: str = field(
        default="samples", metadata={"help": "samples (self-reported num_samples) or equal"}
    )
    seed: int = 0
    server: Mapping[str, float] = field(default_factory=dict)
    clients_per_round: int | None = None
    artifacts: str = field(default="public", metadata={"help": "public, or members (encrypted updates)"})
    encrypt_merged: bool = False
    auditors: tuple[str, ...] = ()
    arithmetic: str = field(default_factory=lambda: _own_arithmetic())
    base_model_sha256: str | None = field(
        default=None, metadata={"help": "digest of the base model's files (written by run create)"}
    )
    initial_sha256: str | None = field(
        default=None, metadata={"help": "state hash of round 0's model (written by run create)"}
    )
    adapter_sha256: str | None = field(
        default=None, metadata={"help": "state hash of every initial adapter tensor, frozen A included"}
    )
    chain: ChainParams = field(default_factory=ChainParams)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(name_or_path="tiny-llama"))
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "aggregator_params", MappingProxyType(dict(self.aggregator_params)))
        object.__setattr__(self, "server", MappingProxyType(dict(self.server)))
        if not self.name or len(self.name) > 200:
            raise RunSpecError(f"`name` must be 1-200 characters, got {self.name!r:.40}")
        if not 1 <= self.rounds <= 100_000:
            raise RunSpecError(f"`rounds` must be in [1, 100000], got {self.rounds!r}")
        if self.algorithm not in ALGORITHMS:
            raise RunSpecError(f"`algorithm` must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        _check_convention(self.convention)
        if self.train.convention != self.convention:  # one convention per run, training included
            object.__setattr__(self, "train", dataclasses.replace(self.train, convention=self.convention))
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise RunSpecError(f"`max_norm` must be > 0, got {self.max_norm!r}")
        if not 0 <= self.seed < 2**63:
            raise RunSpecError(f"`seed` must be in [0, 2**63), got {self.seed!r}")
        k = self.clients_per_round
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < 2**32):
            raise RunSpecError(f"`clients_per_round` must be an integer in [1, 2**32), got {k!r}")
        _check_confidentiality(self)
        _check_privacy(self)
        _check_pretrain(self)
        if self.chain.committee_size and (k is not None or self.artifacts != "public"):
            raise RunSpecError(
                "[chain] `committee_size` cannot be combined with `clients_per_round` or "
                '`artifacts = "members"` (committee rounds do not implement them)'
            )
        if self.arithmetic != _own_arithmetic():
            raise RunSpecError(
                f"the run uses consensus arithmetic {self.arithmetic!r}, this fedchain computes "
                f"{_own_arithmetic()!r}: its merged models would not match the other members'; "
                "join with the fedchain version the run was created with"
            )
        _resolve_defaults(self)
        _resolve_codec(self)
        for name in ("base_model_sha256", "initial_sha256", "adapter_sha256"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
            ):
                raise RunSpecError(f"`{name}` must be 64 lower-case hex digits (a sha256), got {value!r:.80}")
        try:
            self.merge_spec()
        except TrainingError as exc:
            raise RunSpecError(str(exc)) from exc

    @property
    def scaffold(self) -> bool:
        """Whether the run exchanges SCAFFOLD control variates."""
        return ALGORITHMS[self.algorithm].control_variates

    def merge_spec(self) -> Any:
        """Return the :class:`training.merge.MergeSpec` of this run."""
        from training.merge import MergeSpec

        algorithm = ALGORITHMS[self.algorithm]
        return MergeSpec(
            aggregator=self.aggregator,
            aggregator_params=self.aggregator_params,
            server_optimizer=algorithm.server_optimizer,
            server_params=self.server,
            codec=self.codec,
            codec_params=self.codec_params(),
            max_norm=self.max_norm,
            scaffold=algorithm.control_variates,
            max_samples=self.max_samples,
            convention=self.convention,
            weighting=self.weighting,
        )

    def codec_params(self) -> Any:
        """Return the :class:`training.compress.CodecParams` of this run (defaults for unused ones)."""
        from training.compress import INT4_BLOCK, TOPK_FRACTION, CodecParams

        block = INT4_BLOCK if self.codec_block is None else self.codec_block
        fraction = TOPK_FRACTION if self.topk_fraction is None else self.topk_fraction
        return CodecParams(block=block, topk_fraction=fraction)

    def train_config(self, seed: int, round: int | None = None) -> TrainConfig:
        """Local training config for one member's round, with the run's client algorithm and ``seed``.

        With ``round`` (the chain's round number, 0-based), ``[train] lr_schedule`` is applied over the
        run's ``rounds`` (:meth:`training.config.TrainConfig.for_round`); without it, ``lr`` is the first
        round's rate.
        """
        client = ALGORITHMS[self.algorithm].client
        out = dataclasses.replace(self.train, client_algorithm=client, seed=seed, convention=self.convention)
        return out if round is None else out.for_round(round, self.rounds)

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
        if top["clients_per_round"] is None:  # unsampled runs keep the bytes they had before the key
            del top["clients_per_round"]
        if top["train"]["lr_schedule"] == "constant":  # constant-lr runs keep the bytes they had before
            del top["train"]["lr_schedule"]
            if top["train"]["min_lr"] == TrainConfig.min_lr:
                del top["train"]["min_lr"]
        if top["chain"]["committee_size"] == 0:  # ordinary runs keep the bytes they had before the key
            del top["chain"]["committee_size"]
        for name in ("codec_block", "topk_fraction"):
            if top[name] is None:  # fp32 and int8 runs keep the bytes they had before the keys
                del top[name]
        for name in ("base_model_sha256", "initial_sha256", "adapter_sha256"):
            if top[name] is None:  # not on record (a spec written before the keys, or not yet created)
                del top[name]
        if self.train.task == "pretrain":  # no adapter: every parameter trains
            del top["adapter"]
        if self.privacy is None:  # runs without DP keep the bytes they had before the table
            del top["privacy"]
        else:
            top["privacy"] = dataclasses.asdict(self.privacy)
        for name, default in (("artifacts", "public"), ("encrypt_merged", False), ("auditors", [])):
            if top[name] == default:  # public runs keep the bytes they had before the keys
                del top[name]
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


def _default_convention() -> Convention:
    return DEFAULT_CONVENTION


def _check_convention(value: object) -> None:
    if value not in CONVENTIONS:
        raise RunSpecError(f"`convention` must be one of {', '.join(CONVENTIONS)}, got {value!r}")


def _resolve_defaults(spec: RunSpec) -> None:
    """Write the defaults that change merged bytes into ``spec``: its canonical form states every one.

    ``server`` gets every hyper-parameter the algorithm's server optimiser reads
    (``training.server_opt.USED_PARAMS``) and ``aggregator_params`` every keyword parameter of the
    aggregator, with the default for each one the creator left out; unknown keys are errors.
    """
    from training.aggregate import AGGREGATORS
    from training.server_opt import USED_PARAMS, make_config

    if spec.algorithm in ALGORITHMS:
        optimizer = ALGORITHMS[spec.algorithm].server_optimizer
        try:
            config = make_config(optimizer, **dict(spec.server))
        except (TrainingError, TypeError, ValueError) as exc:
            raise RunSpecError(f"[server] {exc}") from exc
        server = {name: getattr(config, name) for name in USED_PARAMS[optimizer]}
        object.__setattr__(spec, "server", MappingProxyType({**server, **dict(spec.server)}))
    if spec.aggregator not in AGGREGATORS:
        return  # merge_spec() names the unknown aggregator
    params = {p.name: p for p in inspect.signature(AGGREGATORS[spec.aggregator]).parameters.values()}
    keyword = {n: p for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    given = dict(spec.aggregator_params)
    unknown = sorted(set(given) - set(keyword))
    if unknown:
        known = ", ".join(sorted(keyword)) or "none"
        raise RunSpecError(
            f"[aggregator_params] {unknown[0]!r} is not a parameter of `{spec.aggregator}` "
            f"(it takes: {known})"
        )
    missing = sorted(n for n, p in keyword.items() if p.default is inspect.Parameter.empty and n not in given)
    if missing:
        raise RunSpecError(f"[aggregator_params] `{spec.aggregator}` needs {missing[0]!r}")
    resolved = {n: given.get(n, p.default) for n, p in keyword.items()}
    object.__setattr__(spec, "aggregator_params", MappingProxyType(dict(sorted(resolved.items()))))


def _resolve_codec(spec: RunSpec) -> None:
    """Write the codec's parameter into ``spec`` (it changes merged bytes); refuse another codec's."""
    from training.compress import INT4_BLOCK, TOPK_FRACTION

    for name, codec, default in (
        ("codec_block", "int4", INT4_BLOCK),
        ("topk_fraction", "topk", TOPK_FRACTION),
    ):
        value = getattr(spec, name)
        if value is not None and spec.codec != codec:
            raise RunSpecError(
                f"`{name}` is a parameter of codec {codec!r}, but the run's codec is {spec.codec!r}"
            )
        if value is None and spec.codec == codec:
            object.__setattr__(spec, name, default)
    if (
        spec.topk_fraction is not None
        and isinstance(spec.topk_fraction, int)
        and not isinstance(spec.topk_fraction, bool)
    ):
        object.__setattr__(spec, "topk_fraction", float(spec.topk_fraction))  # TOML 1 and 1.0: one spec


def _check_confidentiality(spec: RunSpec) -> None:
    from p2p.envelope import MAX_READERS, public_key_bytes

    if spec.artifacts not in ("public", "members"):
        raise RunSpecError(f"`artifacts` must be 'public' or 'members', got {spec.artifacts!r}")
    if not isinstance(spec.encrypt_merged, bool):
        raise RunSpecError(f"`encrypt_merged` must be true or false, got {spec.encrypt_merged!r}")
    if spec.encrypt_merged and spec.artifacts != "members":
        raise RunSpecError('`encrypt_merged` needs `artifacts = "members"`')
    auditors = spec.auditors
    if isinstance(auditors, str) or not isinstance(auditors, list | tuple):
        raise RunSpecError(f"`auditors` must be a list of public keys, got {type(auditors).__name__}")
    if auditors and spec.artifacts != "members":
        raise RunSpecError('`auditors` name readers of encrypted artifacts: set `artifacts = "members"`')
    if len(auditors) > MAX_READERS // 2:
        raise RunSpecError(f"`auditors` may name at most {MAX_READERS // 2} keys, got {len(auditors)}")
    keys = []
    for i, key in enumerate(auditors):
        if not isinstance(key, str):
            raise RunSpecError(f"`auditors[{i}]` must be a hex public key, got {type(key).__name__}")
        if len(key) == 42 and key.lower().startswith("0x"):
            raise RunSpecError(
                f"`auditors[{i}]` is an address ({key}); encryption needs the public key itself "
                "(an address is only its hash): give the 33- or 65-byte secp256k1 key in hex"
            )
        try:
            keys.append(public_key_bytes(key).hex())
        except EnvelopeError as exc:
            raise RunSpecError(f"`auditors[{i}]`: {exc}") from exc
    object.__setattr__(spec, "auditors", tuple(sorted(set(keys))))


def _check_pretrain(spec: RunSpec) -> None:
    """Refuse a pre-training run without a model config, with other local steps or other tasks' fields."""
    from training.pretrain import check_model_name, check_pretrain_tables

    if spec.train.task != "pretrain":
        return
    try:
        check_model_name(spec.model.name_or_path)
        check_pretrain_tables(None, spec.train)
    except TrainingError as exc:
        raise RunSpecError(str(exc)) from exc
    if spec.scaffold or spec.algorithm == "fedprox":
        raise RunSpecError(
            f"`algorithm` {spec.algorithm!r} does not apply to [train] task = 'pretrain' (its local steps "
            "are plain AdamW); use diloco, fedavg, fedavgm, fedadagrad, fedyogi or fedadam"
        )
    if spec.privacy is not None:
        raise RunSpecError("[privacy] is not implemented for [train] task = 'pretrain'; remove the table")
    if spec.model.dtype != "float32":
        raise RunSpecError(
            f"[model] `dtype` must be 'float32' for task = 'pretrain', got {spec.model.dtype!r}"
        )


def _check_privacy(spec: RunSpec) -> None:
    """DP needs every exchanged tensor privatised, and a norm bound that admits noised updates."""
    if spec.privacy is None:
        return
    if not isinstance(spec.privacy, PrivacyConfig):
        raise RunSpecError(f"[privacy] must be a table, got {type(spec.privacy).__name__}")
    if spec.scaffold:
        raise RunSpecError(
            f"[privacy] cannot be used with `algorithm = {spec.algorithm!r}`: its control-variate deltas are "
            "computed from the same data and are not privatised; choose another algorithm"
        )
    try:  # the full check needs the update's dimension d (ModelRuntime); d >= 1 gives a first bound
        check_norm_bound(spec.privacy, spec.max_norm, 1)
    except PrivacyError as exc:
        raise RunSpecError(f"[privacy] {exc}") from exc


def _from_tables(doc: Mapping[str, Any], *, sections_at_top: bool) -> RunSpec:
    """Build a spec from TOML tables (``[run]`` + sections) or the canonical JSON (all at top level)."""
    sections = ("aggregator_params", "server", "chain", "model", "adapter", "train", "privacy")
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
    train = doc.get("train", {})
    if isinstance(train, Mapping) and "convention" in train:
        run_convention = top.get("convention", _default_convention())
        if train["convention"] != run_convention:
            raise RunSpecError(
                f"[train] `convention` is {train['convention']!r} but the run's is {run_convention!r}: "
                "set it once, as [run] `convention`"
            )
    top["train"] = build_section(TrainConfig, train, "train", error=RunSpecError)
    if top["train"].task == "pretrain" and doc.get("adapter"):  # every parameter trains: no adapter
        from training.pretrain import check_pretrain_tables

        try:
            check_pretrain_tables(doc["adapter"], top["train"])
        except TrainingError as exc:
            raise RunSpecError(str(exc)) from exc
    if "privacy" in doc:
        top["privacy"] = build_section(PrivacyConfig, doc["privacy"], "privacy", error=RunSpecError)
    return build_section(RunSpec, top, "run", error=RunSpecError)
