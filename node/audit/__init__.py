"""The audit of a run from only the chain and the artifacts, and the run report built on it (docs/audit.md).

Modules
-------
auditor
    :func:`~node.audit.auditor.audit_run`: recompute every model of a run and check every hash.
votes
    The checks of a round's votes from the events alone: who voted, how often, and quorum.
committee
    The checks of a committee round: its manifest, its bitmap and its committee's signatures.
records
    The records an audit produces (per round, per unlearning request, per member) and their JSON form.
report
    The run report: one self-contained HTML page from the chain, the artifacts and node logs.
"""
