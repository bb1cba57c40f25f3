"""Gossip topic per run, its validator, and the gossipsub parameters.

:class:`TopicValidator` is the trust boundary of the gossip layer: libp2p runs it on every message (ours
included) after checking the gossipsub signature (strict signing) and before any subscription handler sees
the message. A message is dropped — counted by reason and logged — when it is oversized or malformed, for
another run, claims a sender address that is not the signing key's, comes from a non-member, names a round
outside the freshness window, carries a timestamp too far from our clock, or replays a (sender, nonce) pair
already accepted. It also charges the signer's rate limit and reports every rejection to the node's
:class:`~p2p.guard.PeerGuard` (rate limits, penalties, graylisting, membership of directly connected peers;
wired into the router by :mod:`p2p.router`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2p.errors import IdentityError, MessageError
from p2p.guard import GuardConfig, PeerGuard
from p2p.identity import address_from_peer_id, normalize_address
from p2p.messages import MAX_MESSAGE_BYTES, AnyMessage, decode
from p2p.router import GuardedGossipSub

log = logging.getLogger(__name__)

GOSSIPSUB_PROTOCOLS = [TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")]

IsMember = Callable[[str, str], bool]
"""``is_member(run_id, address) -> bool``: whether an address may speak on a run's topic."""
CurrentRound = Callable[[str], int]
"""``current_round(run_id) -> int``: the round this node believes the run is in."""


def topic_for(run_id: str) -> str:
    """Return the gossip topic of a run (one topic per run)."""
    return f"/fedchain/run/{run_id}/v1"


def message_id(msg: rpc_pb2.Message) -> bytes:
    """Content-addressed gossipsub message id.

    The default (origin + seqno) restarts its counter from the wall clock when a node restarts, so a
    restarted node could reuse ids that peers still remember as seen; hashing the payload (which carries
    a random nonce) cannot collide that way.
    """
    return hashlib.sha256(msg.from_id + b"\x00" + msg.data).digest()


@dataclass(frozen=True)
class GossipConfig:
    """Gossipsub parameters, set explicitly rather than taken from py-libp2p's defaults.

    Attributes
    ----------
    degree, degree_low, degree_high
        Mesh degree D and its bounds. Runs have a handful to a few dozen members; D=6 (the libp2p
        standard) gives a diameter of 2-3 hops for such sizes, which keeps delivery well under a second.
    heartbeat_interval
        Seconds between mesh maintenance rounds. py-libp2p's default is 120 s, far too slow to repair
        the mesh after a member restarts; 1 s is the go-libp2p value.
    guard
        Per-peer rate limits, penalties and graylisting (:class:`~p2p.guard.GuardConfig`). They replace
        py-libp2p's own spam limit, which is off: it counts per forwarder after validation and local delivery,
        so it throttles honest relays and our own publishing without sparing us the flood.
    round_tolerance
        Rounds accepted on either side of ``current_round(run)``: a neighbour may be one round ahead or
        behind at a boundary; anything older is stale.
    max_clock_skew_s
        Messages whose ``ts_ms`` is further than this from our clock are dropped; this also bounds how
        long a replay must be remembered.
    seen_capacity
        Size of the LRU of accepted (sender, nonce) pairs used to drop replays.
    """

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    guard: GuardConfig = field(default_factory=GuardConfig)
    round_tolerance: int = 1
    max_clock_skew_s: float = 300.0
    seen_capacity: int = 8192

    def __post_init__(self) -> None:
        if not 0 < self.degree_low <= self.degree <= self.degree_high:
            raise ValueError(
                "`degree_low` <= `degree` <= `degree_high` must hold with `degree_low` > 0, got "
                f"{self.degree_low}, {self.degree}, {self.degree_high}"
            )
        if self.heartbeat_interval < 1:
            raise ValueError(f"`heartbeat_interval` must be >= 1 s, got {self.heartbeat_interval}")
        if self.round_tolerance < 0:
            raise ValueError(f"`round_tolerance` must be >= 0, got {self.round_tolerance}")
        if self.max_clock_skew_s <= 0:
            raise ValueError(f"`max_clock_skew_s` must be > 0, got {self.max_clock_skew_s}")
        if self.seen_capacity < 1:
            raise ValueError(f"`seen_capacity` must be >= 1, got {self.seen_capacity}")


def build_router(config: GossipConfig, guard: PeerGuard) -> GuardedGossipSub:
    """Build the gossipsub router with the parameters of ``config``, guarded by ``guard``."""
    return GuardedGossipSub(
        guard,
        protocols=GOSSIPSUB_PROTOCOLS,
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_initial_delay=0.1,
        heartbeat_interval=config.heartbeat_interval,
        # Peer exchange would hand out addresses of non-members; members come from the chain instead.
        do_px=False,
        # Short prune backoff so a restarted member is grafted back quickly.
        prune_back_off=10,
        # Replaced by the guard's limits (see `GossipConfig.guard`).
        spam_protection_enabled=False,
        # Eclipse protection demands meshes spanning >= 3 distinct IPs; membership (on chain) already
        # decides who may join, and devnets and tests run every member on 127.0.0.1.
        eclipse_protection_enabled=False,
    )


@dataclass
class TopicValidator:
    """Validates every message on one run's topic before any handler sees it.

    Parameters
    ----------
    run_id
        The run whose topic this validator guards.
    is_member
        Membership oracle provided by the caller (the node asks the chain; ``p2p`` does not import ledger).
    current_round
        Round oracle provided by the caller.
    config
        Freshness, clock-skew and replay-window settings.
    clock
        Wall clock in seconds (injectable for tests).
    guard
        The node's peer guard: charged one token of the signer's rate limit per accepted message and told
        every rejection (``None``: no rate limit, as in unit tests of the other rules).
    """

    run_id: str
    is_member: IsMember
    current_round: CurrentRound
    config: GossipConfig = field(default_factory=GossipConfig)
    clock: Callable[[], float] = time.time
    guard: PeerGuard | None = None
    dropped: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    _seen: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    def check(self, origin: ID, data: bytes) -> AnyMessage:
        """Return the decoded message if it passes every rule, else raise :class:`MessageError`."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise MessageError(f"oversized: {len(data)} bytes > {MAX_MESSAGE_BYTES}")
        msg = decode(data)
        if msg.run != self.run_id:
            raise MessageError(f"wrong run: {msg.run!r} on the topic of {self.run_id!r}")
        try:
            signer = address_from_peer_id(origin)
        except IdentityError as exc:
            raise MessageError(f"unusable origin peer id: {exc}") from exc
        if normalize_address(msg.sender) != signer:
            raise MessageError(f"sender mismatch: claims {msg.sender}, signed by {signer}")
        if not self.is_member(self.run_id, signer):
            raise MessageError(f"non-member: {signer}")
        current = self.current_round(self.run_id)
        if abs(msg.round - current) > self.config.round_tolerance:
            raise MessageError(f"stale round: {msg.round}, current {current} ± {self.config.round_tolerance}")
        skew = abs(msg.ts_ms / 1000.0 - self.clock())
        if skew > self.config.max_clock_skew_s:
            raise MessageError(f"timestamp: {skew:.0f} s away from our clock")
        key = (signer, msg.nonce)
        if key in self._seen:
            raise MessageError(f"replay: nonce {msg.nonce} from {signer}")
        if self.guard is not None and not self.guard.charge_origin(origin):
            rate = self.guard.config.peer_rate
            raise MessageError(f"rate limit: {signer} over {rate:g} messages/s")
        self._seen[key] = None
        if len(self._seen) > self.config.seen_capacity:
            self._seen.popitem(last=False)
        return msg

    def __call__(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Run as libp2p's synchronous topic validator: ``True`` accepts, ``False`` drops."""
        return self.admit(forwarder, ID(msg.from_id), msg.data)

    def admit(self, forwarder: ID, origin: ID, data: bytes) -> bool:
        """Check one message signed by ``origin`` and received from ``forwarder``; count and log a rejection.

        The gossip path (:meth:`__call__`) and the direct-message protocol (:mod:`p2p.direct`, where the
        origin is the stream's authenticated peer) both come here.
        """
        try:
            self.check(origin, data)
        except MessageError as exc:
            reason = str(exc).split(":", 1)[0]  # every rejection message starts with "<reason>:"
            self.dropped[reason] += 1
            if self.guard is not None:
                self.guard.rejected(forwarder, reason)
            # over the rate limit: one line per graylisting (p2p.guard), not one per message of a flood
            level = logging.DEBUG if reason == "rate limit" else logging.WARNING
            log.log(level, "dropped gossip message on run %s from %s: %s", self.run_id, forwarder, exc)
            return False
        except Exception as exc:  # never let a bug in a check take the pubsub loop down
            self.dropped["error"] += 1
            log.exception("validator error on run %s from %s: %s", self.run_id, forwarder, exc)
            return False
        self.accepted += 1
        return True
