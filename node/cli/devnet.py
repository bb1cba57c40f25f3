"""``fedchain devnet``: a local development network (anvil, IPFS daemon, deployed contracts) on loopback."""

from __future__ import annotations

import typer

app = typer.Typer(help="Start and stop a local devnet (anvil + IPFS daemon on 127.0.0.1, contracts deployed).")
