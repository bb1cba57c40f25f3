"""``fedchain demo``: CHAIN-ONLY PREVIEW of a federated run on a fresh local devnet.

Until the node's round state machine lands, the demo exercises the chain part only: it starts anvil,
deploys the contracts, creates a run, lets N dev accounts join, and for R rounds submits placeholder update
hashes and votes one placeholder merged hash from every account, so each round finalises on chain; then it
records the contributions, prints the on-chain state and stops the devnet. No model is trained yet.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import typer

PREVIEW_NOTE = "chain-only preview: placeholder update hashes, no training yet"


def _sha(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _fake_cid(digest: bytes) -> str:
    return "bafk-placeholder-" + digest.hex()[:32]


def run_chain_demo(nodes: int, rounds: int, model: str, progress: Any = None) -> dict[str, Any]:
    """Run the chain-only demo on a fresh devnet and return its on-chain summary."""
    from ledger.chain import connect, dev_accounts, mine
    from ledger.client import RunsClient
    from ledger.types import RoundId, RoundStatus, RunConfig, included_set_hash
    from node.devnet.anvil import AnvilConfig
    from node.devnet.harness import Devnet

    with (
        tempfile.TemporaryDirectory(prefix="fedchain-demo-") as tmp,
        Devnet(Path(tmp), AnvilConfig(), ipfs=False) as state,
    ):
        w3 = connect(state.rpc_url)
        accounts = dev_accounts("anvil", nodes + 1)
        governance = RunsClient(w3, state.runs_address, accounts[0])
        members = [RunsClient(w3, state.runs_address, a) for a in accounts[1:]]
        spec = json.dumps({"model": model, "nodes": nodes, "rounds": rounds, "preview": True}, sort_keys=True)
        run = governance.create_run(
            RunConfig(
                spec_sha256=_sha(spec),
                spec_cid=_fake_cid(_sha(spec)),
                submit_blocks=nodes + 5,
                vote_blocks=nodes + 5,
                min_updates=1,
            ),
            join_blocks=nodes + 3,  # create and the joins are mined one block each
        )
        for client in members:
            client.join(run)
        start = governance.round_info(run, RoundId(0)).start_block
        mine(w3, max(0, start - w3.eth.block_number))
        for r in range(rounds):
            included = []
            for i, client in enumerate(members):
                digest = _sha(f"run {run} round {r} node {i}")
                client.submit_update(run, RoundId(r), digest, _fake_cid(digest), num_samples=100 + i)
                included.append((client.account_address, digest))
            set_hash = included_set_hash(included)
            merged = _sha(f"run {run} round {r} merged")
            for client in members:  # every eligible member voted: voting opens early
                if governance.round_info(run, RoundId(r)).status != RoundStatus.OPEN:
                    break
                client.vote(run, RoundId(r), merged, _fake_cid(merged), set_hash)
            governance.record_contributions(run, RoundId(r), included)
            if progress is not None:
                progress()
        return _summary(governance, run, rounds, state.rpc_url, state.runs_address)


def _summary(client: Any, run: int, rounds: int, rpc_url: str, address: str) -> dict[str, Any]:
    info = client.run_info(run)
    rows = []
    for r in range(rounds):
        rd = client.round_info(run, r)
        result = client.round_result(run, r)
        rows.append(
            {
                "round": r,
                "status": rd.status.name.lower(),
                "contributors": [s.member for s in client.submissions(run, r)],
                "merged_sha256": result.merged_sha256.hex() if result else None,
                "merged_cid": result.merged_cid if result else None,
                "votes": result.votes if result else 0,
                "eligible": rd.eligible,
                "quorum": rd.quorum,
                "finalized_block": rd.closed_block if result else None,
            }
        )
    return {
        "note": PREVIEW_NOTE,
        "rpc_url": rpc_url,
        "runs_address": address,
        "run_id": run,
        "spec_sha256": info.spec_sha256.hex(),
        "quorum_bps": info.quorum_bps,
        "members": [
            {"address": m, "accepted_contributions": client.member_info(run, m).accepted_contributions}
            for m in client.members(run)
        ],
        "rounds": rows,
    }


def _print_tables(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]fedchain demo — {summary['note']}[/bold]")
    console.print(
        f"run {summary['run_id']} on {summary['rpc_url']} (Runs {summary['runs_address']}), "
        f"spec sha256 {summary['spec_sha256'][:16]}…, quorum {summary['quorum_bps']} bps"
    )
    table = Table(title="rounds (on chain)")
    for column in (
        "round",
        "status",
        "contributors",
        "merged sha256",
        "votes / eligible",
        "finalising block",
    ):
        table.add_column(column)
    for row in summary["rounds"]:
        table.add_row(
            str(row["round"]),
            row["status"],
            str(len(row["contributors"])),
            (row["merged_sha256"] or "-")[:16] + "…",
            f"{row['votes']} / {row['eligible']} (quorum {row['quorum']})",
            str(row["finalized_block"] or "-"),
        )
    console.print(table)
    members = Table(title="members")
    members.add_column("address")
    members.add_column("accepted contributions", justify="right")
    for m in summary["members"]:
        members.add_row(m["address"], str(m["accepted_contributions"]))
    console.print(members)


def demo(
    nodes: int = typer.Option(3, "--nodes", help="Number of member nodes (1..9)."),
    rounds: int = typer.Option(2, "--rounds", help="Number of rounds."),
    model: str = typer.Option(
        "tiny", "--model", help="Model of the run: smollm2 or tiny (unused in the preview)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
) -> None:
    """Chain-only preview: fresh devnet, a run, N members, R rounds of placeholder commits and votes.

    Starts anvil, deploys, creates a run, joins the dev accounts, finalises R rounds on chain with
    placeholder update hashes (no training yet), prints the on-chain state and stops the devnet.
    """
    from node.services import ServiceError

    if not 1 <= nodes <= 9:
        typer.echo(f"error: `--nodes` must be in [1, 9], got {nodes}", err=True)
        raise typer.Exit(2)
    if rounds < 1:
        typer.echo(f"error: `--rounds` must be >= 1, got {rounds}", err=True)
        raise typer.Exit(2)
    if model not in ("smollm2", "tiny"):
        typer.echo(f"error: `--model` must be smollm2 or tiny, got {model!r}", err=True)
        raise typer.Exit(2)
    from ledger.errors import LedgerError

    try:
        if json_output:
            summary = run_chain_demo(nodes, rounds, model)
            typer.echo(json.dumps(summary))
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(f"{PREVIEW_NOTE}: {rounds} rounds", total=rounds)
            summary = run_chain_demo(nodes, rounds, model, progress=lambda: bar.advance(task))
        _print_tables(summary)
    except (LedgerError, ServiceError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
