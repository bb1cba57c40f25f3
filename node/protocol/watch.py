"""What a waiting node reads from the chain: proportional to what happens on it, not to the time it waits.

Between two steps the loop (:func:`node.protocol.runner.wait_for_news`) watches the chain. It polls the
head on the pace of a :class:`ledger.activity.BlockClock` (often only when a block may be due), and on each
new head it asks for the run's activity logs since the last block it looked at (one ``eth_getLogs`` that is
empty in most blocks, :meth:`ledger.client.RunsClient.run_activity`) instead of reading the open round
again. The round is read again, by a step, only when:

* a log of the run appeared (a member joined, a round opened, an update was committed, a round was
  finalised or failed),
* the head crossed one of the open round's window boundaries (known from the round the last step read),
* the head went back (a reorganisation),
* this member is in the open round's committee (its proposal and finalisation deadlines count blocks),
* gossip woke the loop, or the wait's upper bound passed: ``[chain] poll_interval_s``, or
  ``[chain] idle_poll_s`` while the last step said this member owes the round nothing until the chain
  changes (:attr:`ChainWatch.idle`: a member outside a committee whose commit every committee member
  accepted).

The upper bound also covers what logs cannot show: a reorganisation that replaced blocks already looked at
with ones holding other logs is seen at the next step, which reads the state itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.activity import BlockClock
from ledger.rpc import CALLS, MethodCalls


@dataclass
class ChainWatch:
    """The loop's view of the chain between two steps (memory only: rebuilt by the next step)."""

    clock: BlockClock | None = None
    """Paces the head polls (made from ``[chain] head_poll_s`` on first use)."""
    info: Any = None
    """The open round as the last step read it (its windows give the phase at any later head)."""
    scanned: int = -1
    """The last block whose activity logs are known (the last step's confirmed head, or a later scan)."""
    head: int = -1
    """The newest head seen."""
    idle: bool = False
    """The last step said this member owes the round nothing until the chain or gossip changes."""
    members_due: bool = True
    """A member joined since the member list was last read."""
    rpc_mark: dict[str, MethodCalls] = field(default_factory=CALLS.snapshot)
    """:data:`ledger.rpc.CALLS` when the last round was settled (each round's requests are logged)."""

    def head_clock(self, fast_s: float) -> BlockClock:
        """Return the head-poll pacer, made on first use with ``fast_s`` between polls near a due block."""
        if self.clock is None:
            self.clock = BlockClock(fast_s)
        return self.clock

    def stepped(self, info: Any, confirmed: int) -> None:
        """Note what a step read: the open round ``info``, and ``confirmed``, the block deep enough then.

        The next scan starts at ``confirmed`` itself: the step read the round just before the head, and a
        block mined in between may hold a log the round did not show yet.
        """
        self.info = info
        self.scanned = confirmed - 1

    def rpc_since_mark(self) -> dict[str, list[int]]:
        """JSON-RPC requests since the last call, as ``{method: [calls, sent bytes, received bytes]}``."""
        calls = CALLS.since(self.rpc_mark)
        self.rpc_mark = CALLS.snapshot()
        return {m: [c.calls, c.sent, c.received] for m, c in calls.items()}


def changed_since_step(ctx: Any, head: int, key: Any) -> bool:
    """Whether stepping again at ``head`` can lead anywhere (module docstring); at most one chain read.

    ``key(info, head)`` is the step's watch key of the open round (``node.protocol.round._watch_key``);
    ``ctx.loop.watched`` the key the last step saw.
    """
    watch: ChainWatch = ctx.loop.watch
    info = watch.info
    previous, watch.head = watch.head, head
    if ctx.loop.watched is None or info is None or head < previous:
        return True
    book = ctx.loop.committee
    if book is not None and getattr(book, "round", None) == ctx.loop.current_round and book.in_committee:
        return True
    if key(info, head) != ctx.loop.watched:  # a window boundary (the status and submissions are the step's)
        return True
    last, activity = ctx.client.run_activity(ctx.run_id, watch.scanned + 1, head)
    watch.scanned = max(watch.scanned, last)
    if any(a.event == "MemberJoined" for a in activity):
        watch.members_due = True
    return bool(activity)
