"""``fedchain audit``: rebuild every round and unlearning result of a registry's runs, check every hash."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from node.cli.common import JSON, fail
from node.exitcodes import EXIT_FAILURE, EXIT_MISMATCH, EXIT_UNAVAILABLE, EXIT_USAGE


def _rpc_url(rpc_url: str | None, rpc: str | None) -> str:
    """Return the chain URL from ``--rpc-url`` or its deprecated spelling ``--rpc`` (with a warning)."""
    if rpc is not None:
        typer.echo("warning: --rpc is deprecated, use --rpc-url", err=True)
        if rpc_url is not None and rpc_url != rpc:
            fail(f"--rpc-url {rpc_url} and --rpc {rpc} disagree: give --rpc-url only", EXIT_USAGE)
        rpc_url = rpc
    if not rpc_url:
        fail("missing option --rpc-url: the chain's JSON-RPC URL, e.g. http://127.0.0.1:8545", EXIT_USAGE)
    return rpc_url


def audit(
    rpc_url: str | None = typer.Option(
        None, "--rpc-url", help="JSON-RPC URL of the chain, e.g. http://127.0.0.1:8545. [required]"
    ),
    registry: str = typer.Option(..., "--registry", help="Address of the Runs contract."),
    ipfs_api: str = typer.Option(
        ..., "--ipfs-api", help="IPFS HTTP API multiaddr (/ip4/127.0.0.1/tcp/5001/http) or a store folder."
    ),
    run: int | None = typer.Option(None, "--run", help="Audit only this run (default: every run)."),
    view_key: Path | None = typer.Option(
        None,
        "--view-key",
        help="Keystore or hex key file of a member or named auditor, to open a members-only run's artifacts.",
    ),
    view_key_passphrase_file: Path | None = typer.Option(
        None, "--view-key-passphrase-file", help="File holding the view keystore's passphrase."
    ),
    view_key_passphrase_env: str | None = typer.Option(
        None, "--view-key-passphrase-env", help="Environment variable holding the view keystore's passphrase."
    ),
    verify_source: bool = typer.Option(
        False,
        "--verify-source",
        help="Also verify the registry's source with Sourcify's library (recompiles it with solcjs, ~20 s).",
    ),
    json_output: bool = JSON,
    rpc: str | None = typer.Option(None, "--rpc", hidden=True, help="Deprecated spelling of --rpc-url."),
) -> None:
    """Recompute every finalised round and fulfilled unlearning request from the chain and the artifacts.

    First the registry itself: its runtime code must be the committed ``Runs`` artifact's, byte for byte
    (with ``--verify-source`` also a perfect Sourcify match of the committed sources).

    Exit 0 when everything matches, 3 when anything does not (each mismatch is named), 4 when nothing
    disagrees but an included update is unavailable from the store (its round is not recomputed), 1 on an
    outage. Every round's votes are checked: eligible voters, one vote each, the eligible count, quorum.
    In a members-only run without ``--view-key`` only what needs no plaintext is checked (ciphertext
    hashes, availability, votes, included sets); what was not is listed as ``not checked``.
    """
    from ledger.chain import connect
    from ledger.client import RunsClient
    from ledger.errors import LedgerError
    from node.audit.auditor import audit_registry, runspec_setup_loader
    from node.errors import NodeError
    from p2p.errors import P2PError
    from p2p.storage import open_store

    rpc_url = _rpc_url(rpc_url, rpc)
    try:
        client = RunsClient(connect(rpc_url), registry)
        store = open_store(
            ipfs_api if ipfs_api.startswith(("/", "ipfs:", "local:", ".")) else f"ipfs:{ipfs_api}"
        )
    except (LedgerError, P2PError, ValueError) as exc:
        fail(str(exc), EXIT_USAGE)
    key = None
    if view_key is not None:
        from node.confidential import ConfidentialError, load_view_key

        try:
            key = load_view_key(view_key, view_key_passphrase_file, view_key_passphrase_env)
        except ConfidentialError as exc:
            fail(str(exc), EXIT_USAGE)
    from contracts.verify import VerificationError, deployed_code_matches, verify_deployment

    registry_check: dict[str, object] = {"address": registry}
    try:
        registry_check["code_matches_artifact"] = deployed_code_matches(client.w3, registry)
    except (ValueError, OSError) as exc:
        fail(f"cannot read the registry's code at {registry}: {exc}", EXIT_FAILURE)
    if verify_source:
        try:
            result = verify_deployment(rpc_url, int(client.w3.eth.chain_id), registry)
            registry_check["sourcify"] = {
                "runtime_match": result.runtime_match,
                "compiler": result.compiler,
                "perfect": result.perfect,
            }
        except VerificationError as exc:
            registry_check["sourcify"] = {"runtime_match": None, "error": str(exc), "perfect": False}
    registry_ok = bool(registry_check["code_matches_artifact"]) and (
        not verify_source or bool(registry_check["sourcify"]["perfect"])  # type: ignore[index]
    )
    try:
        reports = audit_registry(client, store, runspec_setup_loader(key), run)
    except (LedgerError, NodeError, P2PError) as exc:
        fail(f"audit could not read the chain or the artifacts: {exc}", EXIT_FAILURE)
    ok = registry_ok and all(report.ok for report in reports)
    if json_output:
        out = {"ok": ok, "registry": registry_check, "runs": [report.to_json() for report in reports]}
        typer.echo(json.dumps(out))
    else:
        code_line = "is" if registry_check["code_matches_artifact"] else "is NOT"
        typer.echo(f"registry {registry}: its code {code_line} the committed Runs artifact")
        if verify_source:
            sourcify = registry_check["sourcify"]
            typer.echo(f"  Sourcify verification: {sourcify}")
        for report in reports:
            finalised = sum(1 for row in report.rounds if row.status == "finalized")
            fulfilled = sum(1 for row in report.requests if row.status == "fulfilled")
            verdict = "OK" if report.ok else f"{len(report.mismatches)} MISMATCH(ES)"
            if report.unavailable:
                verdict += f", {len(report.unavailable)} UNAVAILABLE update(s)"
            sealed = len(report.unchecked) - len({u.round for u in report.unavailable})
            if sealed > 0:
                verdict += f", {sealed} not checked (encrypted; give --view-key)"
            completed = f", completed ({report.completion['rounds']} rounds)" if report.completion else ""
            typer.echo(
                f"run {report.run}: {finalised} finalised rounds recomputed{completed}, "
                f"{fulfilled} fulfilled unlearning requests replayed — {verdict}"
            )
            for row in report.rounds:
                if row.status == "finalized":
                    same = "=" if row.recomputed_sha256 == row.merged_sha256 else "≠"
                    failed = [name for name, passed in row.vote_checks.items() if not passed]
                    votes = (
                        f"; votes FAIL {', '.join(failed)}"
                        if failed
                        else "; votes ok" * bool(row.vote_checks)
                    )
                    recomputed = "unavailable" if row.unavailable else f"{str(row.recomputed_sha256)[:16]}…"
                    dissent = sum(1 for late in row.late_votes if not late["agrees"])
                    late = f"; {len(row.late_votes)} late ({dissent} dissenting)" if row.late_votes else ""
                    typer.echo(
                        f"  round {row.round:>3} from {row.base}: {len(row.included)} included, merged "
                        f"{str(row.merged_sha256)[:16]}… {same} recomputed {recomputed}{votes}{late}"
                    )
            for req in report.requests:
                typer.echo(
                    f"  unlearning {req.request} ({req.subject} from round {req.from_round}): {req.status}"
                    + (f", replayed rounds {req.replayed_rounds}" if req.status == "fulfilled" else "")
                )
            for m in report.members:
                typer.echo(
                    f"  member {m.member}: submitted {m.submitted_on_chain} (events {m.submitted_events}), "
                    f"accepted {m.accepted_on_chain} (recomputed {m.accepted_recomputed}), "
                    f"included in rounds {m.included_rounds}" + (" [banned]" if m.banned else "")
                )
            for mismatch in report.mismatches:
                typer.echo(f"  MISMATCH {mismatch.describe()}")
            for gone in report.unavailable:
                typer.echo(
                    f"  UNAVAILABLE round {gone.round}: update of {gone.member} at {gone.cid}: {gone.detail}"
                )
            for note in report.notes:
                typer.echo(f"  note: {note}")
            for item in report.unchecked:
                typer.echo(f"  not checked: {item}")
    if not ok:
        raise typer.Exit(EXIT_MISMATCH)
    if any(report.unavailable for report in reports):
        raise typer.Exit(EXIT_UNAVAILABLE)
