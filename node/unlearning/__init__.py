"""Unlearning: honouring a member's request to have its contributions removed (docs/unlearning.md).

Modules
-------
requests
    The node's hook after every step: replay, vote, exclude the subject, unpin, start from the result.
replay
    Recomputing a run's models from the chain and the stored artifacts (rounds and unlearning replays),
    shared with the audit.
"""
