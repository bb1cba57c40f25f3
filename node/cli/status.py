"""``fedchain status``: a run's rounds, sets, votes, finalised hashes, contributions, unlearning.

With ``--home`` of a member of a run with ``[privacy]``, also every member's (epsilon, delta) from its updates
on chain and this node's own spend from its state database (:mod:`node.protocol.privacy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from node.cli.common import JSON, REGISTRY, RPC_URL, fail, load_home, read_client


def status(
    run: int = typer.Option(..., "--run", help="On-chain run id."),
    home: Path | None = typer.Option(None, "--home", help="Node home whose config names the chain."),
    rpc_url: str | None = RPC_URL,
    registry: str | None = REGISTRY,
    json_output: bool = JSON,
) -> None:
    """Show run RUN as recorded on chain (read-only; no key needed)."""
    from ledger.errors import LedgerError
    from node.console.status import run_status

    own = None
    if home is not None:
        node_home, config = load_home(home, chain__rpc_url=rpc_url, chain__registry=registry)
        rpc_url, registry = config.chain.rpc_url, config.chain.registry
        own = _own_privacy(node_home.state_path, run)
    try:
        client = read_client(rpc_url or "http://127.0.0.1:8545", registry or "")
        report = run_status(client, run, privacy=own[0] if own else None)
    except LedgerError as exc:
        fail(str(exc))
    if own is not None:
        report["privacy"] = own[1]
    if json_output:
        typer.echo(json.dumps(report))
        return
    where = (
        f"completed after {report['finalized_rounds']} rounds (last round {report['current_round']})"
        if report["status"] == "completed"
        else f"round {report['current_round']} open, {report['finalized_rounds']} finalised"
    )
    typer.echo(
        f"run {run}: {where}, "
        f"{len(report['members'])} members, {report['open_unlearning_requests']} open unlearning requests"
    )
    for r in report["rounds"]:
        merged = f" merged {r['merged_sha256'][:16]}… {r['merged_cid']}" if "merged_sha256" in r else ""
        typer.echo(
            f"  round {r['round']:>3} {r['status']:<9} updates {len(r['submissions'])} "
            f"votes {len(r['votes'])}/{r['quorum']}{merged}"
        )
    for m in report["members"]:
        spent = f" epsilon {m['privacy']['epsilon']:.3f}" if "privacy" in m else ""
        typer.echo(
            f"  member {m['address']} submitted {m['submitted_rounds']} "
            f"accepted {m['accepted_contributions']}{spent}" + (" (banned)" if m["banned"] else "")
        )
    if "privacy" in report:
        p = report["privacy"]
        budget = f", budget {p['budget']:g}" if p["budget"] is not None else ""
        typer.echo(
            f"  privacy: this node released {p['releases']} update(s): "
            f"epsilon {p['epsilon']:.3f} at delta {p['delta']:g}{budget}"
        )


def _own_privacy(state_path: Path, run: int) -> tuple[Any, dict[str, Any]] | None:
    """Return the run's privacy config and this node's own spend, from the node's state database (if any)."""
    from node.protocol.privacy import read_ledger
    from node.protocol.state import NodeState
    from training.privacy import PrivacyConfig, epsilon_spent

    if not state_path.exists():
        return None
    state = NodeState(state_path)
    try:
        ledger = read_ledger(state, run)
    finally:
        state.close()
    if ledger is None:
        return None
    privacy = PrivacyConfig(**ledger["config"])
    releases = len(ledger["releases"])
    budgets = [b for b in (privacy.epsilon_budget, ledger.get("member_budget")) if b is not None]
    return privacy, {
        "epsilon": round(epsilon_spent(privacy, releases), 4),
        "delta": privacy.delta,
        "releases": releases,
        "budget": min(budgets) if budgets else None,
        "config": ledger["config"],
    }
