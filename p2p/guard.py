"""Abuse control of the gossip layer: per-peer rate limits, a penalty score, graylisting, membership.

py-libp2p 0.8.1's gossipsub gives no effective protection against a flooding member or non-member
(Sybil) peers: its peer scorer ships with zero weights and ``-inf`` thresholds (so it never acts), and its
spam limit counts messages per *forwarder* only after they were validated and delivered to our own
subscribers, so it neither saves the validation work nor keeps the flood from our handlers, throttles an
honest relay that forwards other members' messages, and also silently stops forwarding our own messages
beyond the limit. :class:`PeerGuard` is fedchain's replacement; :mod:`p2p.router` wires it into the
router and pubsub:

* **Membership.** A peer whose libp2p identity (its Ethereum key) is not a member of a topic's run is
  *not admitted* on that topic: what it publishes or forwards is dropped before the signature check and
  never forwarded, its subscriptions and control messages are ignored (so it is never in our mesh, never
  gossiped to, never sent a message), and messages that originate from it are dropped whoever relays them.
  Each message it sends us adds ``view_penalty`` to its penalty (a member's early messages may arrive before
  the node knows the member list), so a publishing Sybil is soon graylisted as well.
* **Rate limits.** Token buckets per peer: every new, valid message a member *signs* costs a token of its
  origin bucket (``peer_rate`` per second, ``peer_burst`` deep); every not-yet-seen message a directly
  connected peer *sends us* costs a token of its relay bucket (``relay_rate``, ``relay_burst``: an honest
  relay forwards every member's messages). A message over either budget is dropped and penalised.
* **Penalties and graylisting.** Each violation adds points to the responsible peer's penalty (over a rate
  limit: ``rate_penalty``, on the signer for its own messages and on the sender for relayed ones; a message
  no honest relay forwards, i.e. malformed, oversized, forged sender, wrong run: ``invalid_penalty`` on the
  sender; one that an honest relay may forward when views differ, i.e. stale round, clock skew, replay,
  unknown member: ``view_penalty``). The penalty decays by ``penalty_decay`` every heartbeat. When it
  reaches ``graylist_threshold`` the peer is graylisted for ``graylist_s`` (doubled at each repeat, at most
  ``max_graylist_s``): all its traffic is dropped and nothing is forwarded to it, as for a non-member, and
  its inbound pubsub streams are reset and refused while it lasts (a flood then costs us no parsing at all;
  a py-libp2p peer reopens its stream with backoff of at most 10 s once the graylisting ended). Each
  graylisting is logged once, with the penalty's reasons.

Everything here is plain bookkeeping driven by the caller's clock, so it is tested without a network.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from libp2p.peer.id import ID

from p2p.errors import IdentityError
from p2p.identity import address_from_peer_id

log = logging.getLogger(__name__)

IsMember = Callable[[str, str], bool]

INVALID_REASONS = frozenset(
    {"oversized", "malformed", "wrong run", "sender mismatch", "unusable origin peer id"}
)
"""Validator rejections that an honest relay never forwards (it runs the same checks): ``invalid_penalty``."""


@dataclass(frozen=True)
class GuardConfig:
    """Rate limits, penalties and graylisting of :class:`PeerGuard` (frozen, validated on construction).

    Attributes
    ----------
    peer_rate, peer_burst
        Token bucket of new valid messages per signing member: ``peer_rate`` per second sustained, bursts of
        ``peer_burst``. A member publishes a few messages per round (update, vote, phase heartbeats).
    relay_rate, relay_burst
        Token bucket of not-yet-seen messages per directly connected peer (it relays every member's).
    rate_penalty
        Penalty points per message over a rate limit.
    invalid_penalty
        Points per message that no honest relay forwards (malformed, oversized, forged sender, wrong run).
    view_penalty
        Points per message an honest relay may forward when its view differs from ours (stale round, clock
        skew, replay, an origin we do not know as a member).
    graylist_threshold
        Penalty at which a peer is graylisted.
    penalty_decay
        Factor applied to every penalty once per heartbeat (0.9: a penalty halves in about 7 heartbeats).
    graylist_s, max_graylist_s
        Length of a first graylisting, doubled at each repeat up to ``max_graylist_s``.
    """

    peer_rate: float = 5.0
    peer_burst: float = 20.0
    relay_rate: float = 50.0
    relay_burst: float = 200.0
    rate_penalty: float = 1.0
    invalid_penalty: float = 1.0
    view_penalty: float = 0.1
    graylist_threshold: float = 10.0
    penalty_decay: float = 0.9
    graylist_s: float = 60.0
    max_graylist_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("peer_rate", "peer_burst", "relay_rate", "relay_burst", "graylist_threshold"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
        for name in ("rate_penalty", "invalid_penalty", "view_penalty"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
        if self.peer_burst < 1 or self.relay_burst < 1:
            raise ValueError(
                f"`peer_burst` and `relay_burst` must be >= 1, got {self.peer_burst}, {self.relay_burst}"
            )
        if not 0 <= self.penalty_decay < 1:
            raise ValueError(f"`penalty_decay` must be in [0, 1), got {self.penalty_decay}")
        if not 0 < self.graylist_s <= self.max_graylist_s:
            raise ValueError(
                "`graylist_s` must be > 0 and <= `max_graylist_s`, got "
                f"{self.graylist_s}, {self.max_graylist_s}"
            )


@dataclass
class TokenBucket:
    """A token bucket: ``rate`` tokens per second up to ``burst``; :meth:`take` spends one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        """Return a bucket holding ``burst`` tokens at time ``now``."""
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> bool:
        """Refill for the time since the last call, then spend one token; ``False`` if none was left."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Graylisting:
    """One graylisting of a peer (kept after it ends, for stats)."""

    peer: str
    address: str | None
    heartbeat: int
    at: float
    wall_ms: int
    seconds: float
    reasons: dict[str, int]


@dataclass
class _PeerState:
    penalty: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)
    origin: TokenBucket | None = None
    relay: TokenBucket | None = None
    graylisted_until: float | None = None
    graylistings: int = 0
    first_throttled_ms: int | None = None


class PeerGuard:
    """Per-peer admission, rate limits and penalties of one node's gossip (see the module docstring).

    Parameters
    ----------
    config
        Limits and penalties.
    is_member
        ``is_member(run_id, address)``, the node's membership oracle (answers from memory).
    self_id
        This node's peer id: its own messages are never limited.
    clock
        Monotonic seconds (injectable for tests).
    wall_ms
        Wall-clock milliseconds, only for reporting.
    """

    def __init__(
        self,
        config: GuardConfig,
        is_member: IsMember,
        self_id: ID | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.config = config
        self.is_member = is_member
        self.self_id = self_id
        self.clock = clock
        self.wall_ms = wall_ms
        self.topics: dict[str, str] = {}
        self.heartbeats = 0
        self.dropped: Counter[str] = Counter()
        self.history: list[Graylisting] = []
        self._peers: dict[ID, _PeerState] = {}
        self._noted: set[ID] = set()
        self.on_graylisted: list[Callable[[ID], None]] = []
        """Called with each newly graylisted peer (:mod:`p2p.router` closes its streams)."""

    # ---- membership ---------------------------------------------------------------------------------

    def add_topic(self, topic: str, run_id: str) -> None:
        """Guard ``topic`` as the topic of run ``run_id``."""
        self.topics[topic] = run_id

    def address_of(self, peer: ID) -> str | None:
        """Return the Ethereum address of a peer id, ``None`` if it embeds no secp256k1 key."""
        try:
            return address_from_peer_id(peer)
        except IdentityError:
            return None

    def is_member_peer(self, peer: ID, topics: Iterable[str] | None = None) -> bool:
        """Whether ``peer`` is a member of the run of any of ``topics`` (of any guarded run if ``None``)."""
        if peer == self.self_id:
            return True
        address = self.address_of(peer)
        if address is None:
            return False
        runs = (
            self.topics.values() if topics is None else [self.topics[t] for t in topics if t in self.topics]
        )
        try:
            return any(self.is_member(run, address) for run in runs)
        except Exception:  # the caller's oracle failed: admit nobody rather than take the router down
            log.exception("membership oracle failed for %s", address)
            return False

    def is_graylisted(self, peer: ID) -> bool:
        """Whether ``peer`` is graylisted now."""
        state = self._peers.get(peer)
        return state is not None and state.graylisted_until is not None

    def admits(self, peer: ID, topics: Iterable[str] | None = None) -> bool:
        """Whether we take traffic from and send traffic to ``peer`` (on ``topics``, or on any run)."""
        if peer == self.self_id:
            return True
        if self.is_graylisted(peer):
            return False
        if self.is_member_peer(peer, topics):
            return True
        if peer not in self._noted and len(self._noted) < 65536:
            self._noted.add(peer)
            # debug only: before the node knows the member list, every member is refused once too
            log.debug("not admitting gossip of non-member peer %s (%s)", peer, self.address_of(peer))
        return False

    # ---- traffic ------------------------------------------------------------------------------------

    def inbound(self, forwarder: ID, origin: ID, topics: Iterable[str], seen: bool) -> bool:
        """Decide on one published message that ``forwarder`` sent us, before its signature is checked.

        Drops (``False``) a message from a graylisted or non-admitted forwarder, from a graylisted or
        non-member origin, or over the forwarder's relay budget. ``seen`` messages (duplicates, which pubsub
        drops cheaply) cost no token.
        """
        if forwarder == self.self_id:
            return True
        topics = [t for t in topics if t in self.topics]
        if not topics:
            return True  # not a run topic: pubsub ignores topics we did not subscribe to
        if self.is_graylisted(forwarder):
            self.dropped["graylisted"] += 1
            return False
        if not self.admits(forwarder, topics):
            self.dropped["non-member peer"] += 1
            self.penalize(forwarder, self.config.view_penalty, "non-member peer")
            return False
        if origin != forwarder and origin != self.self_id:
            if self.is_graylisted(origin):
                self.dropped["graylisted origin"] += 1
                return False
            if not self.is_member_peer(origin, topics):
                self.dropped["non-member origin"] += 1
                self.penalize(forwarder, self.config.view_penalty, "non-member origin")
                return False
        if seen:
            return True
        state = self._state(forwarder)
        now = self.clock()
        if state.relay is None:
            state.relay = TokenBucket.full(self.config.relay_rate, self.config.relay_burst, now)
        if not state.relay.take(now):
            self.dropped["relay rate"] += 1
            self._throttled(state)
            self.penalize(forwarder, self.config.rate_penalty, "relay rate")
            return False
        return True

    def charge_origin(self, origin: ID) -> bool:
        """Spend a token of the signer's bucket for a new valid message; ``False`` (and a penalty) if over."""
        if origin == self.self_id:
            return True
        state = self._state(origin)
        now = self.clock()
        if state.origin is None:
            state.origin = TokenBucket.full(self.config.peer_rate, self.config.peer_burst, now)
        if state.origin.take(now):
            return True
        self.dropped["rate limit"] += 1
        self._throttled(state)
        self.penalize(origin, self.config.rate_penalty, "rate limit")
        return False

    def rejected(self, forwarder: ID, reason: str) -> None:
        """Account a validator rejection (``reason`` as the validator names it) to the sending peer."""
        if forwarder == self.self_id or reason == "rate limit":
            return  # the rate limit already penalised the signer
        points = self.config.invalid_penalty if reason in INVALID_REASONS else self.config.view_penalty
        self.penalize(forwarder, points, reason)

    def penalize(self, peer: ID, points: float, reason: str) -> None:
        """Add ``points`` to ``peer``'s penalty; graylist it when the penalty reaches the threshold."""
        if peer == self.self_id or points <= 0:
            return
        state = self._state(peer)
        if state.graylisted_until is not None:
            return
        state.penalty += points
        state.reasons[reason] += 1
        if state.penalty >= self.config.graylist_threshold:
            self._graylist(peer, state)

    # ---- time ---------------------------------------------------------------------------------------

    def on_heartbeat(self) -> list[ID]:
        """Decay penalties and end expired graylistings; returns the peers whose graylisting ended."""
        self.heartbeats += 1
        now = self.clock()
        ended: list[ID] = []
        for peer, state in list(self._peers.items()):
            if state.graylisted_until is not None:
                if now >= state.graylisted_until:
                    state.graylisted_until = None
                    state.penalty = 0.0
                    state.reasons.clear()
                    state.origin = state.relay = None  # full buckets again
                    ended.append(peer)
                    log.info("graylisting of peer %s (%s) ended", peer, self.address_of(peer))
                continue
            state.penalty *= self.config.penalty_decay
            if state.penalty < 1e-3 and state.graylistings == 0 and self._idle(state, now):
                del self._peers[peer]  # forget peers with nothing on record (bounded memory)
        return ended

    def graylisted(self) -> list[ID]:
        """Peers graylisted now."""
        return [peer for peer, state in self._peers.items() if state.graylisted_until is not None]

    def penalty(self, peer: ID) -> float:
        """``peer``'s current penalty (0 if unknown)."""
        state = self._peers.get(peer)
        return state.penalty if state is not None else 0.0

    def stats(self) -> dict[str, object]:
        """Counters and the graylisting history, as plain JSON-able data."""
        return {
            "heartbeats": self.heartbeats,
            "dropped": dict(self.dropped),
            "graylisted": [str(peer) for peer in self.graylisted()],
            "graylistings": [
                {
                    "peer": g.peer,
                    "address": g.address,
                    "heartbeat": g.heartbeat,
                    "wall_ms": g.wall_ms,
                    "seconds": g.seconds,
                    "reasons": g.reasons,
                }
                for g in self.history[-100:]
            ],
            "first_throttled_ms": {
                str(peer): state.first_throttled_ms
                for peer, state in self._peers.items()
                if state.first_throttled_ms is not None
            },
        }

    # ---- internals ----------------------------------------------------------------------------------

    def _state(self, peer: ID) -> _PeerState:
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _PeerState()
        return state

    def _idle(self, state: _PeerState, now: float) -> bool:
        full = all(
            bucket is None or bucket.tokens + (now - bucket.stamp) * bucket.rate >= bucket.burst
            for bucket in (state.origin, state.relay)
        )
        return full and state.first_throttled_ms is None

    def _throttled(self, state: _PeerState) -> None:
        if state.first_throttled_ms is None:
            state.first_throttled_ms = self.wall_ms()

    def _graylist(self, peer: ID, state: _PeerState) -> None:
        seconds = min(self.config.graylist_s * 2**state.graylistings, self.config.max_graylist_s)
        state.graylistings += 1
        state.graylisted_until = self.clock() + seconds
        address = self.address_of(peer)
        reasons = dict(state.reasons)
        self.history.append(
            Graylisting(str(peer), address, self.heartbeats, self.clock(), self.wall_ms(), seconds, reasons)
        )
        if len(self.history) > 1000:
            del self.history[:-1000]
        summary = ", ".join(f"{reason} {count}" for reason, count in state.reasons.most_common())
        for callback in list(self.on_graylisted):
            try:
                callback(peer)
            except Exception:  # a failing listener must not stop the accounting
                log.exception("graylisting listener failed for %s", peer)
        log.warning(
            "graylisting peer %s (%s) for %g s: penalty %.1f (%s)",
            peer,
            address,
            seconds,
            state.penalty,
            summary,
        )
