"""``fedchain node start``: join a run and take part in its rounds until they are finalised."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from node.cli.common import EXIT_USAGE, HOME, REGISTRY, RPC_URL, fail, load_home

app = typer.Typer(help="Run a fedchain node (one OS process per member).")


@app.command("start")
def start(
    run: int = typer.Option(..., "--run", help="On-chain run id."),
    data: str = typer.Option(
        ..., "--data", help="Local data: JSONL file, chatterbot:<category> or synthetic:<skill>[:<n>]."
    ),
    home: Path = HOME,
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    store: str | None = typer.Option(None, "--store", help="Override storage.store of config.toml."),
    ipfs_api: str | None = typer.Option(None, "--ipfs-api", help="Override storage.ipfs_api of config.toml."),
    listen_port: int | None = typer.Option(
        None, "--listen-port", help="Override p2p.listen_port of config.toml."
    ),
    bootstrap: list[str] = typer.Option([], "--bootstrap", help="Member multiaddr to dial (repeatable)."),
    eval_data: list[str] = typer.Option(
        [],
        "--eval-data",
        help="Data of another member's distribution to score models on, never trained on (repeatable; "
        "replaces training.eval_sources of config.toml; same forms as --data).",
    ),
    threads: int | None = typer.Option(None, "--threads", help="Override training.threads of config.toml."),
    quiet: bool = typer.Option(
        False, "--quiet", help="No terminal output (the JSON log file is still written)."
    ),
    json_log: bool = typer.Option(False, "--json-log", help="Print the JSON event lines on stdout."),
    progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        help="Live progress display on stderr (header, training and transfer bars, waiting reason); "
        "default: on when stdout and stderr are terminals, else one line per event.",
        show_default=False,
    ),
    byzantine: str | None = typer.Option(
        None,
        "--byzantine",
        help="Testing only: act as a Byzantine member, ATTACK[:STRENGTH] from training.attacks "
        "(sign_flip, scaling, gaussian_noise, alie, ipm, label_flip).",
    ),
) -> None:
    """Join run RUN and loop over its rounds: train, store, commit, announce, fetch, merge, vote, adopt.

    Safe to kill at any point: restarted with the same command it resumes from its state and the chain.
    """
    from node.protocol.runner import run_node

    attack: tuple[str, float | None] | None = None
    if byzantine:
        from training.attacks import ATTACKS

        name, _, strength = byzantine.partition(":")
        if name not in ATTACKS:
            fail(f"--byzantine must name one of {', '.join(sorted(ATTACKS))}, got {name!r}", EXIT_USAGE)
        try:
            attack = (name, float(strength) if strength else None)
        except ValueError:
            fail(f"--byzantine strength must be a number, got {strength!r}", EXIT_USAGE)

    node_home, config = load_home(
        home,
        chain__rpc_url=rpc_url,
        chain__registry=registry,
        storage__store=store,
        storage__ipfs_api=ipfs_api,
        p2p__listen_port=listen_port,
        p2p__bootstrap=list(bootstrap) or None,
        training__eval_sources=[_absolute(s) for s in eval_data] or None,
        training__threads=threads,
    )

    from node.console.progress import choose_console

    console = choose_console(
        quiet=quiet, json_log=json_log, progress=progress, stdout=sys.stdout, stderr=sys.stderr
    )
    raise typer.Exit(run_node(node_home, config, run, data, console=console, byzantine=attack))


def _absolute(source: str) -> str:
    """Resolve a JSONL path given on the command line against the working directory, not the node home."""
    from node.protocol.scoring import resolve_source

    return resolve_source(source, Path.cwd())
