"""The round protocol: one node's part in a run, from joining to the last finalised round (docs/concepts.md).

Modules
-------
runner
    Starting a node for one run (chain, store, p2p host, spec, join, model) and looping over its rounds.
round
    One re-entrant step of the round state machine: settle earlier rounds, then submit, vote or close.
submit
    The submit phase: train from the round's base state, store and pin the update, commit and announce it.
vote
    The vote phase: fetch the round's on-chain update set, merge it, store the result and vote for it.
committee, committee_round
    Committee rounds (docs/scale.md): the protocol as pure functions, and the node's step in such a run.
waiting
    Logging why this member waits (``round.waiting``), once per change; shared by both steps.
gossip
    Publishing this member's announcements on the run's topic; a failure is logged, never raised.
retrieval
    Artifact retrieval in a fixed order (own store, peers, IPFS), every blob checked against its hashes.
context
    :class:`~node.protocol.context.NodeContext`: what one node process uses to take part in one run.
state
    The node's durable SQLite state, written before the action it enables (restart safety).
confirm
    A member's own transactions under chain reorganisations: still on chain, or dropped and due again.
history
    A run's history as the chain records it, and the lineage rule: which model each round starts from.
sampling
    Client sampling: which of a round's eligible members train and submit (docs/sampling.md).
privacy
    This member's differential-privacy spend in a run: the ledger in the state database, budget decisions.
model
    The run's base model with its run-seeded adapter, the local data, training and evaluation.
scoring
    A model scored on this node's held-out split and on other members' data (what federation buys).
"""
