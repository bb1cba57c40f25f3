"""Options and helpers shared by the node commands (``run``, ``node``, ``status``, ``export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

from node.exitcodes import EXIT_FAILURE, EXIT_MISMATCH, EXIT_USAGE

__all__ = ["EXIT_FAILURE", "EXIT_MISMATCH", "EXIT_USAGE", "fail", "load_home", "read_client"]

HOME = typer.Option(Path(".fedchain"), "--home", help="Node home folder (see `fedchain init`).")
RPC_URL = typer.Option(None, "--rpc-url", help="Override chain.rpc_url of config.toml.")
REGISTRY = typer.Option(
    None, "--registry", help="Override chain.registry of config.toml (Runs contract address)."
)
JSON = typer.Option(False, "--json", help="Print one JSON object.")


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print an error to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_home(home: Path, **overrides: Any) -> tuple[Any, Any]:
    """Return ``(NodeHome, NodeConfig)`` with the non-``None`` ``section.key`` overrides applied."""
    from node.config import NodeConfigError
    from node.home import NodeHome

    node_home = NodeHome(home)
    if not node_home.config_path.exists():
        fail(
            f"{node_home.config_path} not found: create the node home with `fedchain init --home {home}`",
            EXIT_USAGE,
        )
    try:
        config = node_home.load_config()
        changes = {k.replace("__", "."): v for k, v in overrides.items() if v is not None}
        return node_home, config.replace(**changes) if changes else config
    except NodeConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def read_client(rpc_url: str, registry: str) -> Any:
    """Return a read-only ``RunsClient``."""
    from ledger.chain import connect
    from ledger.client import RunsClient

    if not registry:
        fail("no registry address: pass --registry or set [chain] registry", EXIT_USAGE)
    return RunsClient(connect(rpc_url), registry)
