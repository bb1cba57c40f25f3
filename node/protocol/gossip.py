"""Publishing this member's announcements on the run's gossip topic, where a failure never stops a step.

Gossip is an optimisation and a liveness signal: peers learn updates, votes and committee messages from
the chain or from later re-publications too, so :func:`publish` logs a failed publication
(``gossip.failed``) and returns.
"""

from __future__ import annotations

from node.protocol.context import NodeContext
from p2p.messages import AnyMessage


def publish(ctx: NodeContext, message: AnyMessage) -> None:
    """Publish ``message`` (a :mod:`p2p.messages` record with a ``round``) if this node has a p2p host."""
    if ctx.p2p is None:
        return
    try:
        ctx.p2p.publish(message)
    except Exception as exc:  # peers also find what it announces through the chain or a later publication
        ctx.log.event("gossip.failed", run=ctx.run_id, round=int(message.round), why=str(exc)[:200])
