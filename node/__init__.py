"""The fedchain node: joins the chain, p2p and training layers into the federated round protocol.

Modules
-------
cli
    The ``fedchain`` command-line interface (one sub-module per command group).
services
    Managed child processes (anvil, the IPFS daemon, node processes) with readiness polling and
    graceful-then-forced stop.
devnet
    The local development network: anvil + IPFS daemon on loopback, contracts deployed.
"""
