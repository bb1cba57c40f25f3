"""The fedchain node: joins the chain, p2p and training layers into the federated round protocol.

Modules
-------
cli
    The ``fedchain`` command-line interface (one sub-module per command group).
config, home, runspec
    The node's TOML configuration, its home folder, and the run specification every member agrees on.
runner, context, round, submit, vote
    The round state machine (DESIGN.md "A round"): train, store, commit, announce, fetch, merge, vote, adopt.
state, logging
    Durable SQLite state (restart safety) and the JSON-lines event log.
progress, progress_state
    The live terminal view of ``fedchain node start`` (training and transfer bars, waiting reason).
model, fetch
    The run's base model with its adapter and local data; artifact retrieval (own store, peers, IPFS).
history, replay, unlearn
    The run's on-chain history and lineage rule, recomputation of models, and unlearning requests.
audit, audit_report
    Recomputing and checking every round and unlearning result from only the chain and the artifacts.
status, export
    A run's state for ``fedchain status``; the merged adapter as a PEFT folder.
cluster, demo, devnet, services
    Local multi-process harness, the ``fedchain demo``, the devnet (anvil + IPFS), managed child processes.
errors
    ``NodeError`` and its subclasses.
"""
