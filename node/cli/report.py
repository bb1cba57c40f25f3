"""``fedchain report``: one self-contained HTML page of a run, from the chain, the artifacts and node logs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.cli.common import EXIT_FAILURE, EXIT_MISMATCH, EXIT_USAGE, JSON, fail


def report(
    rpc_url: str = typer.Option(
        ..., "--rpc-url", help="JSON-RPC URL of the chain, e.g. http://127.0.0.1:8545."
    ),
    registry: str = typer.Option(..., "--registry", help="Address of the Runs contract."),
    ipfs_api: str = typer.Option(
        ..., "--ipfs-api", help="IPFS HTTP API multiaddr (/ip4/127.0.0.1/tcp/5001/http) or a store folder."
    ),
    run: int = typer.Option(..., "--run", help="The run to report on."),
    out: Path = typer.Option(Path("report.html"), "--out", help="Where to write the page."),
    node_log: list[Path] = typer.Option(
        [], "--node-log", help="A node's event log (<home>/node.jsonl) for losses and timings; repeatable."
    ),
    view_key: Path | None = typer.Option(
        None,
        "--view-key",
        help="Keystore or hex key file to open a members-only run's artifacts for the audit.",
    ),
    view_key_passphrase_file: Path | None = typer.Option(
        None, "--view-key-passphrase-file", help="File holding the view keystore's passphrase."
    ),
    json_output: bool = JSON,
) -> None:
    """Write a run report: timeline, contributors, votes with dissent, losses, timings, unlearning, audit.

    The page is built like the audit, from the chain and the artifacts only (the audit runs as part of it);
    held-out losses and phase timings come from node logs given with ``--node-log``, each attributed to the
    member whose update hashes it logged. It loads nothing from the network and opens offline. Exit 0 when
    the audit passes, 3 when it finds a mismatch (the page shows each one), 1 when the chain cannot be read.
    """
    from ledger.chain import connect
    from ledger.client import RunsClient
    from ledger.errors import LedgerError
    from node.audit.auditor import audit_run, runspec_setup_loader
    from node.audit.report import collect, render_html
    from node.errors import NodeError
    from p2p.errors import P2PError
    from p2p.storage import open_store

    try:
        client = RunsClient(connect(rpc_url), registry)
        store = open_store(
            ipfs_api if ipfs_api.startswith(("/", "ipfs:", "local:", ".")) else f"ipfs:{ipfs_api}"
        )
    except (LedgerError, P2PError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    for path in node_log:
        if not path.is_file():
            fail(f"--node-log {path}: no such file (a node's log is <home>/node.jsonl)", EXIT_USAGE)
    key = None
    if view_key is not None:
        from node.confidential import ConfidentialError, load_view_key

        try:
            key = load_view_key(view_key, view_key_passphrase_file, None)
        except ConfidentialError as exc:
            fail(str(exc), EXIT_USAGE)
    try:
        audit = audit_run(client, run, store, runspec_setup_loader(key))
        data = collect(client, run, audit, node_log, registry=registry)
    except (LedgerError, NodeError, P2PError) as exc:
        fail(f"report could not read the chain or the artifacts: {exc}", EXIT_FAILURE)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(data), encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc}", EXIT_FAILURE)
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "path": str(out.resolve()),
                    "run": run,
                    "audit_ok": audit.ok,
                    "rounds": len(data.history.rounds),
                    "mismatches": len(audit.mismatches),
                }
            )
        )
    else:
        verdict = "audit passed" if audit.ok else f"audit FAILED ({len(audit.mismatches)} mismatches)"
        typer.echo(f"report of run {run} written to {out} ({verdict})")
    if not audit.ok:
        raise typer.Exit(EXIT_MISMATCH)
