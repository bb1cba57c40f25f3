"""The fedchain node: joins the chain, p2p and training layers into the federated round protocol.

Subpackages
-----------
protocol
    The round protocol: the run loop, one step of the round state machine, submit, vote, committee rounds,
    artifact fetching, the node's context and durable state, sampling, privacy spend, the model.
unlearning
    Honouring unlearning requests, and recomputing a run's models (shared with the audit).
audit
    Checking a run from only the chain and the artifacts, and the HTML run report built on it.
console
    The event log and its listener interface, the live terminal view, a run's status.
devnet
    The local network (anvil, IPFS, emulated WAN), managed child processes, a cluster of node processes
    and the ``fedchain demo``.
cli
    The ``fedchain`` command-line interface (one sub-module per command group).

Modules
-------
config, home, runspec
    The node's TOML configuration, its home folder, and the run specification every member agrees on.
confidential
    Sealing and opening the artifacts of an ``artifacts = "members"`` run.
export
    A finalised merged adapter as a standard PEFT folder.
errors, exitcodes
    ``NodeError`` and its subclasses; the exit codes of ``fedchain`` and the node process.

Imports
-------
Modules import at their top, except what would make a start slow: torch (most of ``training``), web3
(``ledger.client``, ``ledger.chain``), libp2p (``p2p.host``), the secp256k1 and envelope libraries, rich and
matplotlib are imported inside the function that needs them in the modules that ``import node.cli``
(``fedchain --help``) or a node's start up to its join passes through, and each ``fedchain`` command imports
what it runs inside the command. ``python -X importtime -c "import node.cli"`` loads none of them.
"""
