"""The node configuration: one TOML file per node home, every field documented in the file itself.

``fedchain init`` writes ``config.toml`` with :func:`render_toml` (each key preceded by its help text);
``fedchain node start`` reads it with :func:`load_config`; command-line flags override single fields.
Secrets never live in the file: the keystore passphrase comes from a file path or an environment variable.
Paths in the file are relative to the node home.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.errors import NodeError
from p2p.config import P2PConfig
from training.tomlconfig import build_section, check_tables, load_toml

CONFIG_FILE = "config.toml"
MAX_CONFIRMATIONS = 10_000
"""Deepest ``[chain] confirmations`` accepted (far beyond any chain's finality; a typo guard)."""


class NodeConfigError(NodeError, ValueError):
    """The node configuration is malformed; the message names the table and key."""


@dataclass(frozen=True)
class IdentityConfig:
    """The node's key: one secp256k1 key for chain transactions and the libp2p identity."""

    keystore: str = field(
        default="key.json", metadata={"help": "encrypted keystore (v3 JSON), home-relative"}
    )
    passphrase_file: str = field(
        default="passphrase",
        metadata={"help": "file holding the keystore passphrase ('' to use the env var)"},
    )
    passphrase_env: str = field(
        default="FEDCHAIN_PASSPHRASE",
        metadata={"help": "environment variable read when passphrase_file is ''"},
    )

    def __post_init__(self) -> None:
        if not self.keystore:
            raise NodeConfigError("`keystore` must not be empty")
        if not self.passphrase_file and not self.passphrase_env:
            raise NodeConfigError("set `passphrase_file` or `passphrase_env`")


@dataclass(frozen=True)
class ChainConfig:
    """Where the ``Runs`` registry lives."""

    rpc_url: str = field(default="http://127.0.0.1:8545", metadata={"help": "EVM JSON-RPC URL (or 'py-evm')"})
    registry: str = field(default="", metadata={"help": "address of the deployed Runs contract"})
    poll_interval_s: float = field(
        default=1.0,
        metadata={
            "help": "longest wait between two round steps (gossip and new blocks wake the node sooner)"
        },
    )
    head_poll_s: float = field(
        default=0.1,
        metadata={
            "help": "seconds between head-block checks while waiting once a block may be due (the node "
            "learns the block interval and checks less often before; raise it on metered RPC endpoints)"
        },
    )
    idle_poll_s: float = field(
        default=30.0,
        metadata={
            "help": "longest wait between two round steps while this member owes the round nothing until "
            "the chain or gossip changes (committee runs: outside the committee, its commit delivered)"
        },
    )
    confirmations: int = field(
        default=0,
        metadata={
            "help": "act only on chain state this many blocks deep (0 on a devnet; docs/operations.md "
            "gives values for L1s and L2s); transactions still go to the latest block"
        },
    )
    proposal_timeout_blocks: int = field(
        default=2,
        metadata={
            "help": "committee runs: blocks each fallback leader waits for a better-ranked leader's proposal"
        },
    )
    finalize_grace_blocks: int = field(
        default=2,
        metadata={
            "help": "committee runs: blocks a committee member with a quorum of votes waits per member "
            "ahead of it (the proposer first) before sending the finalisation itself"
        },
    )
    spot_checks: int = field(
        default=0,
        metadata={
            "help": "committee runs, members outside the committee: included updates fetched and checked "
            "against the manifest per round (0: none)"
        },
    )

    def __post_init__(self) -> None:
        for name in ("proposal_timeout_blocks", "finalize_grace_blocks", "spot_checks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000:
                raise NodeConfigError(f"`{name}` must be an integer in [0, 1000], got {value!r}")
        if self.proposal_timeout_blocks < 1:
            raise NodeConfigError(
                f"`proposal_timeout_blocks` must be >= 1, got {self.proposal_timeout_blocks}"
            )
        if not self.rpc_url.startswith(("http://", "https://")) and self.rpc_url != "py-evm":
            raise NodeConfigError(f"`rpc_url` must be an http(s):// URL or 'py-evm', got {self.rpc_url!r}")
        if self.registry and not (self.registry.startswith("0x") and len(self.registry) == 42):
            raise NodeConfigError(f"`registry` must be a 0x-prefixed 20-byte address, got {self.registry!r}")
        if not 0.05 <= self.poll_interval_s <= 60:
            raise NodeConfigError(f"`poll_interval_s` must be in [0.05, 60], got {self.poll_interval_s!r}")
        if not self.poll_interval_s <= self.idle_poll_s <= 600:
            raise NodeConfigError(
                f"`idle_poll_s` must be in [poll_interval_s, 600], got {self.idle_poll_s!r}"
            )
        if not 0.01 <= self.head_poll_s <= 60:
            raise NodeConfigError(f"`head_poll_s` must be in [0.01, 60], got {self.head_poll_s!r}")
        c = self.confirmations
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= MAX_CONFIRMATIONS:
            raise NodeConfigError(
                f"`confirmations` must be an integer in [0, {MAX_CONFIRMATIONS}], got {self.confirmations!r}"
            )


@dataclass(frozen=True)
class StorageConfig:
    """Where the node keeps (pins) updates, merged models and run specs."""

    store: str = field(
        default="local",
        metadata={
            "help": "'local' (home/store) or 'ipfs:/ip4/127.0.0.1/tcp/5001/http' (an IPFS daemon's API)"
        },
    )
    ipfs_api: str = field(
        default="", metadata={"help": "IPFS API multiaddr tried last when fetching artifacts ('' for none)"}
    )

    def __post_init__(self) -> None:
        if self.store != "local" and not self.store.startswith(("ipfs:", "local:", "/")):
            raise NodeConfigError(
                f"`store` must be 'local', 'local:<dir>' or 'ipfs:<multiaddr>', got {self.store!r}"
            )


NODE_P2P_DEFAULTS: dict[str, Any] = {"fetch_timeout_s": 30.0}
"""The ``[p2p]`` defaults that differ from :class:`p2p.config.P2PConfig`'s: a peer that does not deliver an
artifact within 30 s is passed over for the next source (another peer, then IPFS)."""


def _p2p_key(name: str) -> Any:
    """Return the ``[p2p]`` key ``name``: P2PConfig's field, its help, its default (or the node's)."""
    source = next(f for f in dataclasses.fields(P2PConfig) if f.name == name)
    return field(default=NODE_P2P_DEFAULTS.get(name, source.default), metadata=dict(source.metadata))


@dataclass(frozen=True)
class P2PSection:
    """The libp2p host (loopback by default).

    The keys are fields of :class:`p2p.config.P2PConfig` (same names and help; defaults from it except
    :data:`NODE_P2P_DEFAULTS`); :meth:`p2p_config` is the host configuration they give.
    """

    listen_host: str = _p2p_key("listen_host")
    listen_port: int = _p2p_key("listen_port")
    bootstrap: tuple[str, ...] = _p2p_key("bootstrap")
    fetch_timeout_s: float = _p2p_key("fetch_timeout_s")

    def __post_init__(self) -> None:
        # the checks a config file gets on loading; P2PConfig checks the bootstrap multiaddrs when the node
        # starts its host (building one here would load libp2p for every command that reads the config)
        try:
            ipaddress.IPv4Address(self.listen_host)
        except ValueError as exc:
            raise NodeConfigError(f"`listen_host` must be an IPv4 address, got {self.listen_host!r}") from exc
        if not 0 <= self.listen_port <= 65535:
            raise NodeConfigError(f"`listen_port` must be in [0, 65535], got {self.listen_port!r}")
        if self.fetch_timeout_s <= 0:
            raise NodeConfigError(f"`fetch_timeout_s` must be > 0, got {self.fetch_timeout_s!r}")

    def p2p_config(self) -> P2PConfig:
        """Return the p2p host configuration of these keys (P2PConfig's defaults for the others)."""
        return P2PConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class TrainingSection:
    """Local training and evaluation on this node's machine."""

    device: str = field(default="cpu", metadata={"help": "torch device for the model"})
    threads: int = field(default=1, metadata={"help": "torch threads (0: torch's default)"})
    held_out_fraction: float = field(
        default=0.2, metadata={"help": "share of local data kept for evaluation"}
    )
    max_examples: int = field(default=0, metadata={"help": "use at most this many local examples (0: all)"})
    evaluate: bool = field(default=True, metadata={"help": "score local and merged models on held-out data"})
    eval_sources: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "data of the other members' distributions, scored whole and never trained on: JSONL "
            "paths (home-relative), chatterbot:<category>, synthetic:<skill>[:<n>]"
        },
    )
    eval_max_examples: int = field(
        default=16, metadata={"help": "score at most this many examples of each eval source (0: all)"}
    )
    eval_answers: int = field(
        default=8,
        metadata={
            "help": "greedy answers scored by token F1 on the held-out split and eval sources (0: none)"
        },
    )
    epsilon_budget: float = field(
        default=0.0,
        metadata={
            "help": "this member's own DP budget, applied with the run's [privacy] epsilon_budget (the "
            "smaller wins; 0: the run's only)"
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.eval_sources, tuple | list) or any(
            not isinstance(s, str) or not s.strip() for s in self.eval_sources
        ):
            raise NodeConfigError(
                f"`eval_sources` must be a list of non-empty strings, got {self.eval_sources!r}"
            )
        if self.eval_max_examples < 0:
            raise NodeConfigError(f"`eval_max_examples` must be >= 0, got {self.eval_max_examples!r}")
        if self.eval_answers < 0:
            raise NodeConfigError(f"`eval_answers` must be >= 0, got {self.eval_answers!r}")
        if self.threads < 0:
            raise NodeConfigError(f"`threads` must be >= 0, got {self.threads!r}")
        if not 0.0 <= self.held_out_fraction < 1.0:
            raise NodeConfigError(f"`held_out_fraction` must be in [0, 1), got {self.held_out_fraction!r}")
        if self.max_examples < 0:
            raise NodeConfigError(f"`max_examples` must be >= 0, got {self.max_examples!r}")
        budget = self.epsilon_budget
        if isinstance(budget, bool) or not isinstance(budget, int | float) or not 0 <= budget < math.inf:
            raise NodeConfigError(f"`epsilon_budget` must be a finite number >= 0, got {budget!r}")


@dataclass(frozen=True)
class NodeConfig:
    """A node's whole configuration (one table per section)."""

    identity: IdentityConfig = field(default_factory=IdentityConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    p2p: P2PSection = field(default_factory=P2PSection)
    training: TrainingSection = field(default_factory=TrainingSection)

    def replace(self, **changes: Any) -> NodeConfig:
        """Return a copy with ``"section.key"`` fields changed (CLI overrides), validated again."""
        tables = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}
        for key, value in changes.items():
            section, _, name = key.partition(".")
            if section not in tables or name not in tables[section]:
                raise NodeConfigError(f"unknown config key {key!r}")
            tables[section][name] = value
        return config_from_dict(tables)


_SECTIONS: dict[str, type[Any]] = {
    "identity": IdentityConfig,
    "chain": ChainConfig,
    "storage": StorageConfig,
    "p2p": P2PSection,
    "training": TrainingSection,
}


def config_from_dict(doc: Mapping[str, Any]) -> NodeConfig:
    """Build a :class:`NodeConfig` from parsed TOML tables."""
    check_tables(doc, _SECTIONS, error=NodeConfigError)
    sections = {
        name: build_section(cls, doc.get(name, {}), name, error=NodeConfigError)
        for name, cls in _SECTIONS.items()
    }
    return NodeConfig(**sections)


def load_config(path: str | Path) -> NodeConfig:
    """Read a node config TOML file.

    Raises
    ------
    NodeConfigError
        If the file cannot be read or parsed or a value is wrong (the message names the file and key).
    """
    return load_toml(path, config_from_dict, what="node config", error=NodeConfigError)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(config: NodeConfig) -> str:
    """Return the config as TOML with every key documented by a comment (what ``fedchain init`` writes)."""
    lines = [
        "# fedchain node configuration. Paths are relative to this file's folder (the node home).",
        "# Command-line flags of `fedchain node start` override single keys.",
    ]
    for name in _SECTIONS:
        section = getattr(config, name)
        lines += ["", f"[{name}]", f"# {(type(section).__doc__ or name).splitlines()[0]}"]
        for f in dataclasses.fields(section):
            lines.append(f"# {f.metadata.get('help', f.name)}")
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
    return "\n".join(lines) + "\n"
