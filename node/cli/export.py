"""``fedchain export``: a finalised merged adapter as a PEFT folder."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.cli.common import EXIT_MISMATCH, HOME, JSON, REGISTRY, RPC_URL, fail, load_home, read_client


def export(
    run: int = typer.Option(..., "--run", help="On-chain run id."),
    round: int | None = typer.Option(None, "--round", help="Round to export (default: latest finalised)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the PEFT adapter to."),
    home: Path = HOME,
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    json_output: bool = JSON,
) -> None:
    """Write the merged adapter of a finalised round as a standard PEFT folder (hash-checked first)."""
    from ledger.errors import LedgerError
    from node.errors import NodeError, RunMismatchError
    from node.protocol.retrieval import Fetcher
    from node.protocol.runner import open_stores
    from node.protocol.state import NodeState
    from p2p.errors import P2PError

    node_home, config = load_home(home, chain__rpc_url=rpc_url, chain__registry=registry)
    try:
        client = read_client(config.chain.rpc_url, config.chain.registry)
        own, ipfs = open_stores(node_home, config)
        state = NodeState(node_home.state_path)
        try:
            from node.export import export_adapter

            def view_key() -> bytes:  # only an encrypted merged state needs the node's key decrypted
                from node.protocol.runner import open_chain

                return bytes(open_chain(node_home, config).account.key)

            report = export_adapter(client, Fetcher(own, state, ipfs=ipfs), run, round, out, view_key)
        finally:
            state.close()
    except RunMismatchError as exc:
        fail(str(exc), EXIT_MISMATCH)
    except (LedgerError, NodeError, P2PError, ValueError) as exc:
        fail(str(exc))
    if json_output:
        typer.echo(json.dumps(report))
    else:
        typer.echo(
            f"exported round {report['round']} of run {run} ({report['merged_sha256'][:16]}…) to {out}"
        )
