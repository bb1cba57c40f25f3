"""``fedchain demo``: a whole federated run on a fresh local devnet (logic in :mod:`node.devnet.demo`).

Starts anvil + IPFS, deploys, creates a run, starts N node processes each with its own chatterbot
category, waits for R finalised rounds, prints the rounds, the merged model's and each node's local-only
model's held-out loss and token F1 on the node's own data and on the other members' data, and the audit,
and stops everything it started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from node.exitcodes import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_MISMATCH, EXIT_USAGE


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]fedchain demo[/bold]: run {summary['run_id']} ({summary['model']}, {summary['nodes']} nodes) "
        f"on {summary['rpc_url']} (Runs {summary['runs_address']}), {summary['run_seconds']} s"
    )
    rounds = Table(title="rounds (on chain)")
    for column in ("round", "status", "contributors", "merged CID", "votes / eligible", "finalising block"):
        rounds.add_column(column)
    for row in summary["rounds"]:
        rounds.add_row(
            str(row["round"]),
            row["status"] + ("" if row["nodes_agree"] else " (nodes differ!)"),
            ", ".join(row["contributors"]),
            str(row["merged_cid"] or "-"),
            f"{row['votes']} / {row['eligible']}",
            str(row["finalized_block"] or "-"),
        )
    console.print(rounds)
    for which, title in (
        ("", "each node's own held-out data"),
        ("others_", "the other members' held-out data"),
    ):
        table = Table(title=f"merged (federated) vs local-only on {title}: loss (lower is better), token F1")
        for column in ("node", "data", "examples", "initial loss", "merged loss", "local-only loss",
                       "merged F1", "local-only F1", "lower loss"):  # fmt: skip
            table.add_column(column)
        for row in summary["losses"]:
            merged, local = row[f"merged_{which}loss"], row[f"local_only_{which}loss"]
            winner = "-" if merged is None or local is None else "merged" if merged < local else "local-only"
            table.add_row(
                row["node"],
                ", ".join(row["others"]) if which else row["data"],
                str(row["others_held_out"] if which else row["held_out"]),
                _fmt(row[f"initial_{which}loss"]),
                _fmt(merged),
                f"{_fmt(local)} ({row['local_steps']} steps)",
                _fmt(row[f"merged_{which}f1"]),
                _fmt(row[f"local_only_{which}f1"]),
                winner,
            )
        console.print(table)
    console.print(summary["comparison"]["note"])
    audit = summary["audit"]
    verdict = "[green]PASSED[/green]" if audit["ok"] else "[red]FAILED[/red]"
    console.print(
        f"audit {verdict}: {audit['recomputed_equal']} of {audit['rounds_recomputed']} finalised rounds "
        "recomputed from the chain and the IPFS artifacts to the same hash"
    )
    for mismatch in audit["mismatches"]:
        console.print(f"  MISMATCH {mismatch}")
    if summary.get("report"):
        console.print(f"run report: {summary['report']} (open it in a browser; it needs no network)")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def demo(
    nodes: int = typer.Option(3, "--nodes", help="Number of member nodes (>= 1; memory permitting)."),
    rounds: int = typer.Option(3, "--rounds", help="Number of rounds to finalise."),
    model: str = typer.Option("smollm2", "--model", help="Model of the run: smollm2 or tiny."),
    seed: int | None = typer.Option(
        None, "--seed", help="Run seed (adapter init, members' training), replacing the demo spec's."
    ),
    report: Path = typer.Option(
        Path(".fedchain/demo-report.html"), "--report", help="Where to write the run's HTML report."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Run a whole federated run on a fresh devnet: N nodes, R rounds on chain, losses, an audit.

    Starts anvil (1 s blocks) and an IPFS daemon in a temporary folder, deploys the contracts, creates a run
    from node/specs/demo-<model>.toml, starts N `fedchain node` processes each with its own chatterbot
    category, waits until R rounds are finalised, then prints the rounds, the held-out loss and token F1 of
    the merged model vs each node's local-only model on the node's own data and on the other members'
    data, and the audit, and writes the run report (`fedchain report`) to --report. Every process it
    started is stopped at the end.
    """
    from node.devnet.cluster import check_capacity
    from node.devnet.demo import DemoConfig, DemoError, run_demo
    from node.devnet.services import ServiceError
    from node.errors import NodeError

    try:
        config = DemoConfig(nodes=nodes, rounds=rounds, model=model, seed=seed, report=report)
        check_capacity(config.nodes, config.node_memory_mib)
    except ValueError as exc:
        message = str(exc).replace("`nodes`", "`--nodes`").replace("`size`", "`--nodes`")
        for name in ("rounds", "model", "seed"):
            message = message.replace(f"`{name}`", f"`--{name}`")
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(EXIT_USAGE) from exc
    from ledger.errors import LedgerError

    try:
        summary = run_demo(config) if json_output else _run_with_progress(config)
    except KeyboardInterrupt:
        typer.echo("interrupted: every process the demo started was stopped", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (DemoError, LedgerError, ServiceError, NodeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from exc
    if json_output:
        typer.echo(json.dumps(summary))
    else:
        _print_summary(summary)
    if not summary["audit"]["ok"]:
        raise typer.Exit(EXIT_MISMATCH)


def _run_with_progress(config: Any) -> dict[str, Any]:
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from node.devnet.demo import DemoProgress, run_demo

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn())  # fmt: skip
    task = bar.add_task("starting", total=config.rounds)
    lines = Text()

    with Live(Group(bar, lines), refresh_per_second=4, transient=True) as live:

        def show(p: DemoProgress) -> None:
            bar.update(task, description=p.stage, completed=p.finalized)
            lines.plain = "\n".join(f"  node{i}: {phase}" for i, phase in enumerate(p.phases))
            live.refresh()

        return run_demo(config, show)
