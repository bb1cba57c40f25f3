"""The local development network and what runs on it: anvil, IPFS, emulated WAN, node clusters, the demo.

Modules
-------
services
    Managed child processes: start, wait until ready by polling, stop gracefully then by force.
launcher
    A pre-imported fork server of ``fedchain`` commands, and the managed process of a forked child.
anvil, ipfs
    The anvil service on a free port; the js-ipfs daemon.
harness
    ``fedchain devnet up/down``: anvil and IPFS with the contracts deployed, and their state folder.
wan, relay, forward, wan_devnet
    Network namespaces joined by emulated WAN links, the link emulator process, a loopback TCP forward
    into a namespace, and anvil and IPFS inside a namespace of an emulated network.
cluster
    :class:`~node.devnet.cluster.LocalCluster`: N ``fedchain node`` processes on loopback over a devnet.
demo
    The ``fedchain demo``: a whole federated run on a fresh devnet, from nothing to an audit that passes.
"""
