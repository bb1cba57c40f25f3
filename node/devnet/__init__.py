"""The local development network: anvil on loopback with the contracts deployed, and its state folder.

Modules: ``anvil`` (the anvil service on a free port), ``harness`` (``devnet up/down`` with a state folder).
The IPFS daemon joins this harness with the p2p layer.
"""
