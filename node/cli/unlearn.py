"""``fedchain unlearn``: file an unlearning request on chain, and show the requests and their votes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import typer

from node.cli.common import EXIT_USAGE, HOME, JSON, REGISTRY, RPC_URL, fail, load_home, read_client

app = typer.Typer(help="Unlearning: peers replay the run without a subject's updates and vote the result.")


@app.command("request")
def request(
    run: int = typer.Option(..., "--run", help="On-chain run id."),
    subject: str = typer.Option(
        ..., "--subject", help="Address of the member whose data is to be forgotten."
    ),
    from_round: int = typer.Option(..., "--from-round", help="First round whose updates are to be removed."),
    reason: str = typer.Option("", "--reason", help="Reason text; its sha256 goes on chain."),
    home: Path = HOME,
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    json_output: bool = JSON,
) -> None:
    """File a request (signed by this node's key: the subject itself or the run's governance).

    The subject is banned from the run at once; members replay and vote; a quorum fulfils it.
    """
    from eth_utils.address import is_address

    from ledger.errors import LedgerError
    from ledger.types import RoundId, RunId
    from node.errors import NodeError
    from node.protocol.runner import open_chain

    if not is_address(subject):
        fail(f"`--subject` must be an address (0x + 40 hex digits), got {subject!r}", EXIT_USAGE)
    if from_round < 0:
        fail(f"`--from-round` must be >= 0, got {from_round}", EXIT_USAGE)
    node_home, config = load_home(home, chain__rpc_url=rpc_url, chain__registry=registry)
    reason_hash = hashlib.sha256(reason.encode()).digest()
    try:
        chain = open_chain(node_home, config)
        request_id = chain.client.request_unlearning(RunId(run), subject, RoundId(from_round), reason_hash)
    except (LedgerError, NodeError, ValueError) as exc:
        fail(str(exc))
    out = {
        "request": int(request_id),
        "run": run,
        "subject": subject,
        "from_round": from_round,
        "reason_sha256": reason_hash.hex(),
    }
    if json_output:
        typer.echo(json.dumps(out))
    else:
        typer.echo(
            f"unlearning request {request_id} filed: run {run}, subject {subject} from round {from_round}; "
            f"members now replay and vote (see `fedchain unlearn status --run {run}`)"
        )


@app.command("status")
def status(
    run: int | None = typer.Option(None, "--run", help="Only this run's requests."),
    home: Path | None = typer.Option(None, "--home", help="Node home whose config names the chain."),
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    json_output: bool = JSON,
) -> None:
    """List unlearning requests with their status, quorum and agreed model (read-only; no key needed)."""
    from ledger.errors import LedgerError
    from node.unlearning.requests import request_rows

    if home is not None:
        _, config = load_home(home, chain__rpc_url=rpc_url, chain__registry=registry)
        rpc_url, registry = config.chain.rpc_url, config.chain.registry
    try:
        rows = request_rows(read_client(rpc_url or "http://127.0.0.1:8545", registry or ""), run)
    except (LedgerError, ValueError) as exc:
        fail(str(exc))
    if json_output:
        typer.echo(json.dumps({"requests": rows}))
        return
    if not rows:
        typer.echo("no unlearning requests" + (f" in run {run}" if run is not None else ""))
    for row in rows:
        result = f", model {row['result_sha256'][:16]}…" if row["result_sha256"] else ""
        typer.echo(
            f"request {row['request']} run {row['run']}: {row['subject']} from round {row['from_round']} "
            f"{row['status']} (quorum {row['quorum']} of {row['eligible']}){result}"
        )
