"""The local development network: anvil and an IPFS daemon with the contracts deployed, and its state folder.

Modules: ``anvil`` (the anvil service on a free port), ``ipfs`` (the js-ipfs daemon), ``harness``
(``devnet up/down`` with a state folder), ``wan`` (network namespaces joined by emulated WAN links),
``relay`` (the link emulator process), ``forward`` (a loopback TCP forward into a namespace) and
``wan_devnet`` (anvil and IPFS inside a namespace of an emulated network).
"""
