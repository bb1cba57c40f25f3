"""The ``fedchain`` command-line interface.

One sub-module per command group, each exposing a Typer ``app`` (or a single command function) that is
registered below. Heavy libraries (torch, web3, libp2p) are imported inside the commands, so that
``fedchain --help`` stays fast.

Exit codes: :mod:`node.exitcodes` (0 success, 1 a failure the message explains, 2 bad usage or
configuration, 3 a consensus or audit mismatch, 130 interrupted).
"""

from __future__ import annotations

import logging
import os

import typer

from node.cli import audit as audit_cli
from node.cli import demo as demo_cli
from node.cli import devnet
from node.cli import export as export_cli
from node.cli import init as init_cli
from node.cli import node as node_cli
from node.cli import report as report_cli
from node.cli import run as run_cli
from node.cli import simulate as simulate_cli
from node.cli import status as status_cli
from node.cli import store as store_cli
from node.cli import unlearn as unlearn_cli
from node.cli import version as version_cli

app = typer.Typer(
    name="fedchain",
    help="Decentralised federated fine-tuning of LLMs: PEFT adapters, libp2p, IPFS and on-chain consensus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(devnet.app, name="devnet")
app.command("demo")(demo_cli.demo)
app.command("simulate")(simulate_cli.simulate)
app.add_typer(store_cli.app, name="store")
app.command("init")(init_cli.init)
app.add_typer(run_cli.app, name="run")
app.add_typer(node_cli.app, name="node")
app.command("status")(status_cli.status)
app.command("export")(export_cli.export)
app.command("audit")(audit_cli.audit)
app.command("report")(report_cli.report)
app.add_typer(unlearn_cli.app, name="unlearn")


@app.callback()
def _root(
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More log output (-v info, -vv debug)."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=version_cli.print_version,
        help="Print fedchain's version, the consensus arithmetic version and the Runs contract's code hash.",
    ),
) -> None:
    """Decentralised federated fine-tuning of LLMs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    """Entry point of the ``fedchain`` console script."""
    app()
