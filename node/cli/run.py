"""``fedchain run create``: store a run spec as an artifact and create the run on chain."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.cli.common import EXIT_USAGE, HOME, JSON, REGISTRY, RPC_URL, fail, load_home

app = typer.Typer(help="Create runs: the spec is stored (CID) and its sha256 + CID go on chain.")


@app.command("create")
def create(
    spec_path: Path = typer.Option(
        ..., "--spec", help="Run spec TOML (keys: docs/configuration.md; examples: node/specs/)."
    ),
    home: Path = HOME,
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    json_output: bool = JSON,
) -> None:
    """Store the run spec, create the run on chain (signed by this node's key) and print its id."""
    from ledger.errors import LedgerError
    from ledger.types import Admission, RoundId, RunConfig
    from node.errors import NodeError
    from node.protocol.model import record_start
    from node.protocol.runner import open_chain, open_stores
    from node.runspec import RunSpec, RunSpecError
    from p2p.errors import P2PError
    from training.errors import TrainingError

    node_home, config = load_home(home, chain__rpc_url=rpc_url, chain__registry=registry)
    try:
        spec = record_start(RunSpec.from_toml(spec_path))
    except (RunSpecError, TrainingError) as exc:
        fail(str(exc), EXIT_USAGE)
    data = spec.canonical_bytes()
    try:
        chain = open_chain(node_home, config, latest=True)  # reads back the run it creates
        own, ipfs = open_stores(node_home, config)
        cid = own.put(data)
        own.pin(cid)
        if ipfs is not None:
            ipfs.put(data)
            ipfs.pin(cid)
        params = spec.chain
        run_config = RunConfig(
            spec_sha256=spec.sha256(),
            spec_cid=cid,
            quorum_bps=params.quorum_bps,
            submit_blocks=params.submit_blocks,
            vote_blocks=params.vote_blocks,
            min_updates=params.min_updates,
            admission=Admission.ALLOWLIST if params.admission == "allowlist" else Admission.OPEN,
            committee_size=params.committee_size,
            rounds=spec.rounds,
        )
        run_id = chain.client.create_run(run_config, join_blocks=params.join_blocks)
        start = chain.client.round_info(run_id, RoundId(0)).start_block
    except (LedgerError, NodeError, P2PError, ValueError) as exc:
        fail(str(exc))
    out = {
        "run_id": int(run_id),
        "spec_sha256": spec.sha256().hex(),
        "spec_cid": cid,
        "start_block": start,
        "name": spec.name,
        "rounds": spec.rounds,
    }
    if json_output:
        typer.echo(json.dumps(out))
    else:
        typer.echo(
            f"run {run_id} created: spec {cid} (sha256 {spec.sha256().hex()[:16]}…), round 0 at block {start}"
        )
