"""``fedchain --version``: the versions a peer must share with the other members of a run.

Three lines, each ``<what> <value>``:

- ``fedchain``: the installed package version;
- ``arithmetic``: :data:`training.merge.ARITHMETIC`, the consensus arithmetic version; peers on another one
  compute other merged bytes, so a node refuses such a run;
- ``runs-contract``: ``sha256:`` of the committed ``Runs`` artifact's *deployed* bytecode (the bytes of
  ``deployedBytecode`` in ``contracts/artifacts/Runs.json``, hex-decoded). ``Runs`` has no immutables, so
  this equals the sha256 of ``eth_getCode(<registry>)`` on any chain where the artifact was deployed.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

import typer

from node.exitcodes import EXIT_OK


def contract_code_sha256(name: str = "Runs") -> str:
    """Return the hex sha256 of contract ``name``'s committed deployed bytecode (hex-decoded bytes)."""
    from contracts import load_artifact

    code = load_artifact(name).deployed_bytecode
    return hashlib.sha256(bytes.fromhex(code.removeprefix("0x"))).hexdigest()


def package_version() -> str:
    """Return the installed ``fedchain`` distribution's version (``"unknown"`` when not installed)."""
    try:
        return metadata.version("fedchain")
    except metadata.PackageNotFoundError:
        return "unknown"


def version_lines() -> list[str]:
    """Return the lines ``fedchain --version`` prints."""
    from training.merge import ARITHMETIC

    return [
        f"fedchain {package_version()}",
        f"arithmetic {ARITHMETIC}",
        f"runs-contract sha256:{contract_code_sha256('Runs')}",
    ]


def print_version(value: bool) -> None:
    """Eager ``--version`` callback: print :func:`version_lines` and exit 0."""
    if value:
        for line in version_lines():
            typer.echo(line)
        raise typer.Exit(EXIT_OK)
