"""``fedchain simulate``: a whole federation in one process, to study algorithms, aggregators and attacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from node.exitcodes import EXIT_FAILURE, EXIT_USAGE


def _overrides(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _print_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.config.algorithm} / {result.config.aggregator} ({result.config.codec})")
    dpo = result.config.train.task == "dpo"
    scores = ("union DPO loss", "reward accuracy") if dpo else ("union loss", "perplexity", "exact match")
    cosine = result.config.train.lr_schedule == "cosine"
    for column in (
        "round",
        *scores,
        "train loss",
        *(("local lr",) if cosine else ()),
        "accepted",
        "rejected",
    ):
        table.add_column(column, justify="right")
    for r in result.rounds:
        if dpo:
            accuracy = r.eval.reward_accuracy
            shown = [f"{r.eval.union_loss:.4f}", "-" if accuracy is None else f"{accuracy:.1%}"]
        else:
            shown = [
                f"{r.eval.union_loss:.4f}",
                f"{r.eval.union_perplexity:.2f}",
                "-" if r.eval.exact_match is None else f"{r.eval.exact_match:.1%}",
            ]
        table.add_row(
            str(r.round),
            *shown,
            "-" if r.train_loss is None else f"{r.train_loss:.4f}",
            *((f"{r.lr:.3g}" if r.round and r.lr is not None else "-",) if cosine else ()),
            str(r.accepted) if r.round else "-",
            ", ".join(r.rejected) or "-",
        )
    console = Console()
    console.print(table)
    privacy = result.config.privacy
    if privacy is not None:
        console.print(
            f"client-level DP: clip_norm {privacy.clip_norm:g}, "
            f"noise_multiplier {privacy.noise_multiplier:g}: epsilon {result.final.epsilon} "
            f"at delta {privacy.delta:g} (largest over clients)"
        )
    if result.byzantine:
        console.print(f"Byzantine clients ({result.config.byzantine.attack}): {', '.join(result.byzantine)}")
    if result.baseline is not None:
        b = result.baseline
        verdict = "beats" if result.final.eval.union_loss < b.mean_union_loss else "does not beat"
        console.print(
            f"local-only baseline: mean union loss {b.mean_union_loss:.4f} "
            f"(best client {b.best_union_loss:.4f}); "
            f"federated {result.final.eval.union_loss:.4f} {verdict} it"
        )
    console.print(f"{result.seconds:.1f} s")


def simulate(
    config: Path = typer.Option(..., "--config", "-c", help="Simulation TOML file (see training/configs/)."),
    rounds: int | None = typer.Option(None, "--rounds", help="Override the number of rounds."),
    clients: int | None = typer.Option(None, "--clients", help="Override the number of clients."),
    algorithm: str | None = typer.Option(None, "--algorithm", help="Override the FL algorithm."),
    convention: str | None = typer.Option(
        None, "--convention", help="Algorithm formulas: openfedllm (the reference) or reddi."
    ),
    aggregator: str | None = typer.Option(None, "--aggregator", help="Override the aggregator."),
    codec: str | None = typer.Option(
        None, "--codec", help="Override the update codec (fp32, int8, int4, topk)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Override the simulation seed."),
    byzantine: int | None = typer.Option(None, "--byzantine", help="Number of Byzantine clients."),
    attack: str | None = typer.Option(None, "--attack", help="Attack of the Byzantine clients."),
    local_steps: int | None = typer.Option(None, "--local-steps", help="Override the local steps per round."),
    lr_schedule: str | None = typer.Option(
        None, "--lr-schedule", help="Local lr over rounds: constant, or cosine (the reference's decay)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="torch threads (1 is fastest for tiny models)."
    ),
    local_baseline: bool | None = typer.Option(
        None, "--local-baseline/--no-local-baseline", help="Also train every client alone (local-only)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Simulate N clients in one process: any algorithm, aggregator, codec, with optional Byzantine clients.

    Prints per-round held-out loss, perplexity and exact-match accuracy on the union of the clients'
    held-out data, and the local-only baseline when asked for. Exit code 2 on a bad config.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from training.errors import ConfigError, TrainingError
    from training.simconfig import load_config
    from training.simulate import run_simulation

    try:
        cfg = load_config(config)
        changes = _overrides(
            rounds=rounds,
            clients=clients,
            algorithm=algorithm,
            convention=convention,
            aggregator=aggregator,
            codec=codec,
            seed=seed,
            local_baseline=local_baseline,
            threads=threads,
        )
        changes.update(_overrides(**{"byzantine.count": byzantine, "byzantine.attack": attack}))
        changes.update(_overrides(**{"train.local_steps": local_steps, "train.lr_schedule": lr_schedule}))
        cfg = cfg.replace(**changes) if changes else cfg
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, transient=True, disable=json_output or not sys.stderr.isatty()) as bar:
            task = bar.add_task("simulating", total=cfg.rounds * cfg.clients)

            def progress(what: str, done: int, total: int) -> None:
                bar.update(task, description=what, completed=done, total=total)

            result = run_simulation(cfg, progress=progress)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except TrainingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILURE) from None

    if json_output:
        typer.echo(json.dumps(result.to_dict()))
    else:
        _print_table(result)
