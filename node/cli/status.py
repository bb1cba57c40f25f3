"""``fedchain status``: a run's rounds, sets, votes, finalised hashes, contributions, unlearning."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.cli.common import JSON, REGISTRY, RPC_URL, fail, read_client


def status(
    run: int = typer.Option(..., "--run", help="On-chain run id."),
    home: Path | None = typer.Option(None, "--home", help="Node home whose config names the chain."),
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    json_output: bool = JSON,
) -> None:
    """Show run RUN as recorded on chain (read-only; no key needed)."""
    from ledger.errors import LedgerError
    from node.cli.common import load_home
    from node.status import run_status

    if home is not None:
        _, config = load_home(home, chain__rpc_url=rpc_url, chain__registry=registry)
        rpc_url, registry = config.chain.rpc_url, config.chain.registry
    try:
        report = run_status(read_client(rpc_url or "http://127.0.0.1:8545", registry or ""), run)
    except LedgerError as exc:
        fail(str(exc))
    if json_output:
        typer.echo(json.dumps(report))
        return
    typer.echo(
        f"run {run}: round {report['current_round']} open, {report['finalized_rounds']} finalised, "
        f"{len(report['members'])} members, {report['open_unlearning_requests']} open unlearning requests"
    )
    for r in report["rounds"]:
        merged = f" merged {r['merged_sha256'][:16]}… {r['merged_cid']}" if "merged_sha256" in r else ""
        typer.echo(
            f"  round {r['round']:>3} {r['status']:<9} updates {len(r['submissions'])} "
            f"votes {len(r['votes'])}/{r['quorum']}{merged}"
        )
    for m in report["members"]:
        typer.echo(
            f"  member {m['address']} submitted {m['submitted_rounds']} "
            f"accepted {m['accepted_contributions']}" + (" (banned)" if m["banned"] else "")
        )
