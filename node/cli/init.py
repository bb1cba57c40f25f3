"""``fedchain init``: a new node home with an encrypted key and a documented ``config.toml``.

The key is new, or imported from a file holding a hex private key (``--import-key-file``). The keystore
passphrase comes from ``--passphrase-file`` or ``--passphrase-env``; with neither, a random passphrase is
written to ``<home>/passphrase`` (mode 0600) for development use. Prints the address and the libp2p peer id.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import NoReturn

import typer

from node.exitcodes import EXIT_USAGE


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def init(
    home: Path = typer.Option(Path(".fedchain"), "--home", help="Node home folder to create."),
    import_key_file: Path | None = typer.Option(
        None, "--import-key-file", help="File holding a hex secp256k1 private key to import (else a new key)."
    ),
    passphrase_file: Path | None = typer.Option(
        None, "--passphrase-file", help="File holding the keystore passphrase."
    ),
    passphrase_env: str | None = typer.Option(
        None, "--passphrase-env", help="Environment variable holding the keystore passphrase."
    ),
    rpc_url: str = typer.Option("http://127.0.0.1:8545", "--rpc-url", help="EVM JSON-RPC URL."),
    registry: str = typer.Option("", "--registry", help="Address of the deployed Runs contract."),
    store: str = typer.Option("local", "--store", help="'local' or 'ipfs:<multiaddr>' of an IPFS API."),
    ipfs_api: str = typer.Option("", "--ipfs-api", help="IPFS API multiaddr used as the last fetch source."),
    listen_host: str = typer.Option("127.0.0.1", "--listen-host", help="IPv4 address libp2p listens on."),
    listen_port: int = typer.Option(0, "--listen-port", help="libp2p TCP port (0: any)."),
    bootstrap: list[str] = typer.Option(
        [], "--bootstrap", help="Multiaddr of a member to dial (repeatable)."
    ),
    kdf_iterations: int = typer.Option(
        0,
        "--kdf-iterations",
        help="Keystore KDF work factor (0: eth-account's default; lower only for tests).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Create a node home: encrypted key, config.toml (every field documented); print address and peer id."""
    from eth_account import Account

    from ledger.errors import KeystoreError
    from ledger.keys import PassphraseSource, save_keystore
    from node.config import IdentityConfig, NodeConfig, NodeConfigError, render_toml
    from node.home import NodeHome
    from p2p.identity import NodeIdentity

    node_home = NodeHome(home)
    if node_home.config_path.exists():
        _fail(f"{node_home.config_path} already exists; refusing to overwrite a node home")
    if passphrase_file is not None and passphrase_env is not None:
        _fail("give at most one of --passphrase-file and --passphrase-env")
    home.mkdir(parents=True, exist_ok=True)
    if passphrase_env is not None:
        identity = IdentityConfig(passphrase_file="", passphrase_env=passphrase_env)
        source = PassphraseSource(env=passphrase_env)
    else:
        path = passphrase_file if passphrase_file is not None else home / "passphrase"
        if passphrase_file is None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(16) + "\n")
        identity = IdentityConfig(passphrase_file=str(path.resolve()) if passphrase_file else "passphrase")
        source = PassphraseSource(file=path)
    try:
        if import_key_file is not None:
            account = Account.from_key(import_key_file.read_text().strip())
        else:
            account = Account.create()
        config = NodeConfig(identity=identity).replace(
            **{
                "chain.rpc_url": rpc_url,
                "chain.registry": registry,
                "storage.store": store,
                "storage.ipfs_api": ipfs_api,
                "p2p.listen_host": listen_host,
                "p2p.listen_port": listen_port,
                "p2p.bootstrap": list(bootstrap),
            }
        )
        address = save_keystore(
            account, node_home.resolve(identity.keystore), source, kdf_iterations=kdf_iterations or None
        )
    except (KeystoreError, NodeConfigError, OSError, ValueError) as exc:
        _fail(str(exc))
    node_home.config_path.write_text(render_toml(config), encoding="utf-8")
    peer_id = NodeIdentity.from_private_key(bytes(account.key)).peer_id.to_base58()
    out = {"home": str(home), "address": address, "peer_id": peer_id, "config": str(node_home.config_path)}
    if json_output:
        typer.echo(json.dumps(out))
    else:
        typer.echo(
            f"home     {home}\naddress  {address}\npeer id  {peer_id}\nconfig   {node_home.config_path}"
        )
