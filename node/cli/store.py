"""``fedchain store``: put, get, pin and list content-addressed blobs (embedded store or IPFS daemon).

The store is chosen by ``--ipfs-api ADDR`` (an IPFS daemon's API multiaddr; also ``$FEDCHAIN_IPFS_API``)
or ``--store DIR`` (an embedded store); the default is the embedded store in ``$FEDCHAIN_HOME/store``
(``~/.fedchain/store`` when ``FEDCHAIN_HOME`` is unset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from node.exitcodes import EXIT_FAILURE, EXIT_USAGE

if TYPE_CHECKING:
    from p2p.storage import Cid, FileStore

app = typer.Typer(help="Put and get content-addressed blobs (embedded store or an IPFS daemon).")

_IPFS_API = typer.Option(
    None,
    "--ipfs-api",
    envvar="FEDCHAIN_IPFS_API",
    help="IPFS daemon API multiaddr, e.g. /ip4/127.0.0.1/tcp/5001/http.",
)
_STORE_DIR = typer.Option(None, "--store", help="Embedded store directory (default: $FEDCHAIN_HOME/store).")
_JSON = typer.Option(False, "--json", help="Print one JSON object instead of text.")


def default_store_dir() -> Path:
    """Return the embedded store's default directory: ``$FEDCHAIN_HOME/store`` or ``~/.fedchain/store``."""
    home = os.environ.get("FEDCHAIN_HOME")
    return (Path(home) if home else Path.home() / ".fedchain") / "store"


def _open(ipfs_api: str | None, store_dir: Path | None) -> FileStore:
    from p2p.storage import open_store

    if ipfs_api and store_dir:
        _fail("give either --ipfs-api or --store, not both", EXIT_USAGE)
    try:
        return open_store(f"ipfs:{ipfs_api}" if ipfs_api else (store_dir or default_store_dir()))
    except (ValueError, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _storage_errors(action: str) -> Iterator[None]:
    """Turn a storage error raised in the block into ``error: <action>: <message>`` and an exit code.

    A malformed CID is a usage error (exit 2); any other storage or I/O failure exits 1.
    """
    from p2p.errors import StorageError
    from p2p.storage import InvalidCidError

    try:
        yield
    except InvalidCidError as exc:
        _fail(f"{action}: {exc}", EXIT_USAGE)
    except (StorageError, OSError) as exc:
        _fail(f"{action}: {exc}")


def _cid(text: str) -> Cid:
    from p2p.storage import InvalidCidError, normalize_cid

    try:
        return normalize_cid(text)
    except InvalidCidError as exc:
        _fail(f"{text!r} is not a CID: {exc}", EXIT_USAGE)


def _open_with_cid(cid_text: str, ipfs_api: str | None, store_dir: Path | None) -> tuple[Cid, FileStore]:
    """Parse ``cid_text`` (a malformed CID fails before any store is opened), then open the store."""
    cid = _cid(cid_text)
    return cid, _open(ipfs_api, store_dir)


def _emit(as_json: bool, payload: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(payload) if as_json else text)


@app.command("put")
def put(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="File to store."),
    ipfs_api: str | None = _IPFS_API,
    store_dir: Path | None = _STORE_DIR,
    pin: bool = typer.Option(True, "--pin/--no-pin", help="Pin the content so garbage collection keeps it."),
    as_json: bool = _JSON,
) -> None:
    """Store FILE and print its CID."""
    from rich.console import Console

    store = _open(ipfs_api, store_dir)
    with Console(stderr=True).status(f"storing {file.name} ({file.stat().st_size} bytes)", spinner="dots"):
        with _storage_errors("put"):
            cid = store.put_file(file)
        if pin:
            with _storage_errors("pin"):
                store.pin(cid)
    _emit(as_json, {"cid": cid, "size": file.stat().st_size, "pinned": pin, "store": repr(store)}, cid)


@app.command("get")
def get(
    cid_text: str = typer.Argument(..., metavar="CID", help="CID of the content."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (replaced atomically)."),
    max_size: int | None = typer.Option(None, "--max-size", min=0, help="Refuse content larger than this."),
    ipfs_api: str | None = _IPFS_API,
    store_dir: Path | None = _STORE_DIR,
    as_json: bool = _JSON,
) -> None:
    """Fetch CID, verify it, and write it to --output."""
    cid, store = _open_with_cid(cid_text, ipfs_api, store_dir)
    with _storage_errors("get"):
        size = store.get_file(cid, output, max_size=max_size)
    _emit(as_json, {"cid": cid, "size": size, "output": str(output)}, f"{size} bytes written to {output}")


@app.command("pin")
def pin(
    cid_text: str = typer.Argument(..., metavar="CID", help="CID to pin."),
    ipfs_api: str | None = _IPFS_API,
    store_dir: Path | None = _STORE_DIR,
    as_json: bool = _JSON,
) -> None:
    """Pin CID so that garbage collection keeps it."""
    cid, store = _open_with_cid(cid_text, ipfs_api, store_dir)
    with _storage_errors("pin"):
        store.pin(cid)
    _emit(as_json, {"cid": cid, "pinned": True}, f"pinned {cid}")


@app.command("unpin")
def unpin(
    cid_text: str = typer.Argument(..., metavar="CID", help="CID to unpin."),
    ipfs_api: str | None = _IPFS_API,
    store_dir: Path | None = _STORE_DIR,
    as_json: bool = _JSON,
) -> None:
    """Unpin CID (it stays until garbage collection)."""
    cid, store = _open_with_cid(cid_text, ipfs_api, store_dir)
    with _storage_errors("unpin"):
        store.unpin(cid)
    _emit(as_json, {"cid": cid, "pinned": False}, f"unpinned {cid}")


@app.command("ls")
def ls(
    ipfs_api: str | None = _IPFS_API,
    store_dir: Path | None = _STORE_DIR,
    as_json: bool = _JSON,
) -> None:
    """List pinned CIDs."""
    store = _open(ipfs_api, store_dir)
    with _storage_errors("ls"):
        cids = list(store.list())
    _emit(as_json, {"pins": cids}, "\n".join(cids))


@app.command("cid")
def cid(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="File to name."),
    as_json: bool = _JSON,
) -> None:
    """Print FILE's CID without storing it (the CID any fedchain store or IPFS daemon gives it)."""
    from p2p.storage.cid import compute_file_cid

    value = compute_file_cid(file)
    _emit(as_json, {"cid": value, "size": file.stat().st_size}, value)
