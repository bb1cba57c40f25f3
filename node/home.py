"""A node home folder: where one node keeps its config, key, state database, log, store and models.

Layout::

    <home>/config.toml     node configuration (node.config)
    <home>/key.json        encrypted keystore
    <home>/state.db        SQLite state (node.protocol.state)
    <home>/node.jsonl      structured event log (node.console.eventlog)
    <home>/store/          embedded content store, when [storage] store = "local"
    <home>/runs/<id>/      per-run files (SCAFFOLD client control variate)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.config import CONFIG_FILE, NodeConfig, load_config


@dataclass(frozen=True)
class NodeHome:
    """Paths inside a node home."""

    root: Path

    @property
    def config_path(self) -> Path:
        """The node configuration file."""
        return self.root / CONFIG_FILE

    @property
    def state_path(self) -> Path:
        """The SQLite state database."""
        return self.root / "state.db"

    @property
    def log_path(self) -> Path:
        """The JSON-lines event log."""
        return self.root / "node.jsonl"

    @property
    def store_path(self) -> Path:
        """The embedded content store's folder."""
        return self.root / "store"

    def resolve(self, relative: str) -> Path:
        """Return a config path made absolute against the home (absolute paths are kept)."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    def run_dir(self, run_id: int) -> Path:
        """Per-run folder (created on demand)."""
        path = self.root / "runs" / str(run_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load_config(self) -> NodeConfig:
        """Read ``config.toml`` of this home."""
        return load_config(self.config_path)
