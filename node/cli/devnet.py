"""``fedchain devnet``: a local development network (anvil, contracts, IPFS daemon) on loopback.

``up`` starts anvil and a js-ipfs daemon on 127.0.0.1 and free ports in the background, deploys the
contracts and records the state in the devnet folder (``.devnet/`` by default); ``down`` stops both;
``status`` shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

from node.exitcodes import EXIT_FAILURE

app = typer.Typer(
    help="Start and stop a local devnet: anvil (contracts deployed) and an IPFS daemon on 127.0.0.1."
)

_DIR = typer.Option(Path(".devnet"), "--dir", help="Devnet folder: state.json, logs, IPFS repo.")
_JSON = typer.Option(False, "--json", help="Print one JSON object instead of text.")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_FAILURE)


def _print_state(state: object, as_json: bool) -> None:
    from node.devnet.harness import DevnetState

    if not isinstance(state, DevnetState):  # pragma: no cover - internal misuse
        raise TypeError(state)
    if as_json:
        typer.echo(json.dumps(state.to_json()))
        return
    typer.echo(f"rpc url     {state.rpc_url}")
    typer.echo(f"chain id    {state.chain_id}")
    typer.echo(f"Runs        {state.runs_address} (deployed in block {state.deploy_block})")
    typer.echo(f"anvil pid   {state.anvil_pid}, log {state.log_path}")
    if state.ipfs_api is not None:
        typer.echo(f"ipfs api    {state.ipfs_api} (pid {state.ipfs_pid}, log {state.ipfs_log_path})")
    typer.echo(f"mnemonic    {state.mnemonic}  (public dev accounts, funded; never use on a real chain)")
    for i, address in enumerate(state.accounts):
        typer.echo(f"account {i:<3} {address}")


@app.command("up")
def up(
    folder: Path = _DIR,
    accounts: int = typer.Option(10, "--accounts", help="Number of funded dev accounts (>= 1)."),
    block_time: float | None = typer.Option(
        None, "--block-time", help="Seconds per block (default: automine)."
    ),
    ipfs: bool = typer.Option(True, "--ipfs/--no-ipfs", help="Also start the local IPFS daemon."),
    json_output: bool = _JSON,
) -> None:
    """Start anvil and IPFS on 127.0.0.1 (free ports), deploy the contracts, print addresses and accounts."""
    from node.devnet.anvil import AnvilConfig
    from node.devnet.harness import devnet_up
    from node.devnet.services import ServiceError

    try:
        config = AnvilConfig(accounts=accounts, block_time=block_time)
        state = devnet_up(folder, config, ipfs=ipfs)
    except (ServiceError, ValueError) as exc:
        _fail(str(exc))
    _print_state(state, json_output)


@app.command("down")
def down(folder: Path = _DIR, json_output: bool = _JSON) -> None:
    """Stop the devnet recorded in the devnet folder."""
    from node.devnet.harness import devnet_down
    from node.devnet.services import ServiceError

    try:
        state = devnet_down(folder)
    except ServiceError as exc:
        _fail(str(exc))
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "stopped": state is not None,
                    "anvil_pid": state.anvil_pid if state else None,
                    "ipfs_pid": state.ipfs_pid if state else None,
                }
            )
        )
    elif state is None:
        typer.echo(f"no devnet recorded in {folder}")
    else:
        typer.echo(f"stopped anvil (pid {state.anvil_pid}) at {state.rpc_url}")
        if state.ipfs_pid is not None:
            typer.echo(f"stopped ipfs (pid {state.ipfs_pid}) at {state.ipfs_api}")


@app.command("status")
def status(folder: Path = _DIR, json_output: bool = _JSON) -> None:
    """Show the devnet recorded in the devnet folder (exit code 1 if none is running)."""
    from node.devnet.harness import read_state
    from node.devnet.services import ServiceError, pid_alive

    try:
        state = read_state(folder)
    except ServiceError as exc:
        _fail(str(exc))
    if state is None or not pid_alive(state.anvil_pid):
        _fail(f"no devnet running from {folder}")
    if state.ipfs_pid is not None and not pid_alive(state.ipfs_pid):
        _fail(f"the devnet's IPFS daemon (pid {state.ipfs_pid}) is not running; see {state.ipfs_log_path}")
    _print_state(state, json_output)
