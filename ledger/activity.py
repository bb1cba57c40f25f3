"""What happened to one run in a range of blocks, in one ``eth_getLogs`` request.

A waiting node must notice when its run changes: a member joined, a round opened, an update was committed,
a round was finalised or failed. Reading the open round on every block costs an ``eth_call`` per block
whose answer is the same almost every time. :func:`activity_filter` asks instead for the run's logs of
those events only (the events' first topics as one OR-list, the run id as the second topic, as every
``Runs`` event of a run carries it); the answer is empty in most blocks and names the event and round
otherwise (:class:`RunActivity`). The filter and the decoding are pure functions;
:meth:`ledger.client.RunsClient.run_activity` sends the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.abi import collapse_if_tuple
from eth_utils.crypto import keccak

from contracts import load_artifact
from ledger.errors import LedgerError

ACTIVITY_EVENTS = ("MemberJoined", "RoundOpened", "UpdateSubmitted", "RoundFinalized", "RoundFailed")
"""The events that change what a waiting member of a run may do next.

``MergeVoted`` is left out (a vote that finalises emits ``RoundFinalized``; the others arrive by gossip),
and so is ``ContributionAccepted`` (one per included member: bookkeeping no step waits for)."""

_ROUND_EVENTS = frozenset({"RoundOpened", "UpdateSubmitted", "RoundFinalized", "RoundFailed"})


def _signature(event: Mapping[str, Any]) -> str:
    return f"{event['name']}({','.join(collapse_if_tuple(i) for i in event['inputs'])})"


_BY_TOPIC = {
    "0x" + keccak(text=_signature(ev)).hex(): str(ev["name"])
    for ev in load_artifact("Runs").abi
    if ev.get("type") == "event" and ev.get("name") in ACTIVITY_EVENTS
}
if len(_BY_TOPIC) != len(ACTIVITY_EVENTS):
    raise LedgerError(f"the Runs ABI lacks one of {ACTIVITY_EVENTS}")


@dataclass(frozen=True)
class RunActivity:
    """One log of :data:`ACTIVITY_EVENTS`: the event, its block and, for round events, the round."""

    event: str
    block_number: int
    round: int | None


def _topic_of(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def activity_filter(address: str, run: int, from_block: int, to_block: int) -> dict[str, Any]:
    """Return the ``eth_getLogs`` filter of run ``run``'s :data:`ACTIVITY_EVENTS` logs in ``from..to``."""
    if from_block < 0 or to_block < from_block:
        raise LedgerError(f"block range {from_block}..{to_block} is empty or negative")
    return {
        "address": address,
        "fromBlock": hex(from_block),
        "toBlock": hex(to_block),
        "topics": [sorted(_BY_TOPIC), _topic_of(run)],
    }


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)


def _number(value: Any) -> int:
    return value if isinstance(value, int) else int(str(value), 16)


def decode_activity(entries: Sequence[Mapping[str, Any]], run: int) -> list[RunActivity]:
    """Decode ``eth_getLogs`` entries of :func:`activity_filter` (hex strings or web3's bytes), chain order.

    Raises
    ------
    LedgerError
        An entry that is not one of the filter's events of run ``run`` (an endpoint fault).
    """
    out: list[RunActivity] = []
    for entry in entries:
        try:
            topics = [_hex(t).lower() for t in entry["topics"]]
            name = _BY_TOPIC.get(topics[0]) if topics else None
            if name is None or len(topics) < 2 or int(topics[1], 16) != run:
                raise ValueError(f"topics {topics[:2]} are not an activity event of run {run}")
            rnd = int(topics[2], 16) if name in _ROUND_EVENTS else None
            out.append(RunActivity(name, _number(entry["blockNumber"]), rnd))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LedgerError(f"eth_getLogs run activity: cannot decode a log: {exc}") from exc
    return out


class BlockClock:
    """When to ask for the head next: rarely while the next block cannot be there yet, often once it may be.

    A waiting node polls the head to notice new blocks. Polling every ``fast_s`` seconds costs a request per
    ``fast_s`` whatever the block time (ten a second, nine of ten answering the same head on a 1 s chain).
    The clock learns the block interval from the heads it was shown (the median over the last
    ``samples`` changes, timed on the local monotonic clock) and, after a new head, waits until shortly
    before the next one is due (``lead`` of the interval early, at most ``lead_max_s``) before polling every
    ``fast_s`` again, and never waits more than ``max_delay_s`` (blocks that come only with transactions,
    as on an automining devnet, have no interval to learn). Until it has seen two head changes it answers
    ``fast_s``.

    Parameters
    ----------
    fast_s
        Seconds between polls once a block may be due (``[chain] head_poll_s``).
    lead, lead_max_s
        How early, as a share of the interval and at most in seconds, polling speeds up again.
    max_delay_s
        Longest wait between two polls.
    samples
        Head changes the interval is learned from.
    """

    def __init__(
        self,
        fast_s: float,
        *,
        lead: float = 0.2,
        lead_max_s: float = 1.0,
        max_delay_s: float = 2.0,
        samples: int = 8,
    ) -> None:
        if fast_s <= 0 or not 0 < lead < 1 or lead_max_s <= 0 or max_delay_s < fast_s or samples < 1:
            raise LedgerError(
                "BlockClock needs fast_s > 0, 0 < lead < 1, lead_max_s > 0, max_delay_s >= fast_s and "
                f"samples >= 1, got {fast_s}, {lead}, {lead_max_s}, {max_delay_s}, {samples}"
            )
        self.fast_s = fast_s
        self.max_delay_s = max_delay_s
        self.lead = lead
        self.lead_max_s = lead_max_s
        self._samples = samples
        self._intervals: list[float] = []
        self._head: int | None = None
        self._changed_at = 0.0

    @property
    def interval(self) -> float | None:
        """The learned seconds per block (``None`` before two head changes)."""
        if not self._intervals:
            return None
        ordered = sorted(self._intervals)
        return ordered[len(ordered) // 2]

    def seen(self, head: int, now: float) -> None:
        """Record that the head was ``head`` at monotonic time ``now``."""
        if self._head is not None and head > self._head:
            if self._changed_at > 0:
                self._intervals.append((now - self._changed_at) / (head - self._head))
                del self._intervals[: -self._samples]
            self._changed_at = now
        elif self._head is not None and head < self._head:
            self._changed_at = 0.0  # a reorganisation to a shorter chain: time the next change afresh
        self._head = head

    def delay(self, now: float) -> float:
        """Seconds to wait at ``now`` before the next poll (``fast_s`` to ``max_delay_s``)."""
        interval = self.interval
        if interval is None or self._changed_at <= 0:
            return self.fast_s
        due = self._changed_at + interval - min(self.lead * interval, self.lead_max_s)
        return min(self.max_delay_s, max(self.fast_s, due - now))
