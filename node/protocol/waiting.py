"""What a waiting member logs: the reason it waits, once per change (``round.waiting``).

Shared by the ordinary round step (:mod:`node.protocol.round`) and the committee step
(:mod:`node.protocol.committee_round`); the loop sleeps between steps.
"""

from __future__ import annotations

from node.protocol.context import NodeContext


def wait(ctx: NodeContext, round: int, why: str) -> None:
    """Log ``why`` this member waits in ``round`` when it differs from the last reason logged."""
    if ctx.state.wait_reason(ctx.run_id, round) != why:
        ctx.state.set_wait_reason(ctx.run_id, round, why)
        ctx.log.event("round.waiting", run=ctx.run_id, round=round, why=why)
