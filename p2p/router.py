"""py-libp2p's pubsub and gossipsub with :class:`p2p.guard.PeerGuard` wired in.

The guard acts at the points where py-libp2p gives a hook:

* :meth:`GuardedPubsub.push_msg` (every published message a peer sends us, before the seen-cache, the
  signature check and the topic validator): drops traffic of graylisted and non-member peers and what
  goes over a relay budget, so a flood costs a dictionary lookup per message, not a signature check;
* :meth:`GuardedPubsub.handle_subscription`: a peer's subscriptions are recorded, but it enters
  ``peer_topics`` (the view every router path picks peers from: mesh, fanout, gossip, replay of recent
  messages) only while the guard admits it on that topic; :meth:`GuardedPubsub.sync_admission`, run every
  heartbeat, removes graylisted peers and peers no longer members, and restores them when that ends;
* :meth:`GuardedPubsub.stream_handler`: the inbound pubsub streams of a peer are reset when it is
  graylisted, and a graylisted peer's new streams are refused;
* :meth:`GuardedPubsub._handle_new_peer`: a peer's outbound queue holds :data:`OUTBOUND_QUEUE` RPCs;
* :meth:`GuardedPubsub.notify_subscriptions`: validated messages go to a per-topic sink (the node's own
  queue) instead of py-libp2p's 32-message subscription queue, which drops messages when a burst fills it;
* :class:`GuardedGossipSub`: ignores control messages (GRAFT, IHAVE, IWANT…) of peers it does not
  admit, prunes them from the mesh and fanout each heartbeat, never sends them a message, and keeps no
  pending messages for them (py-libp2p queues each message for every connected peer not yet subscribed).

The topic validator (:class:`p2p.gossip.TopicValidator`) charges the signer's rate limit and reports its
rejections to the guard.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from p2p.guard import PeerGuard

log = logging.getLogger(__name__)

OUTBOUND_QUEUE = 1024
"""RPCs that may wait to be written to one peer. py-libp2p's 32 (go-libp2p's default) silently drops the
next RPC when full, for every peer at once when a burst arrives (each accepted message is forwarded and
announced with IDONTWANT to every mesh peer): an honest announcement published then reached nobody."""


class GuardedPubsub(Pubsub):
    """:class:`~libp2p.pubsub.pubsub.Pubsub` that consults ``guard`` before any work on a peer's traffic."""

    def __init__(self, host: IHost, router: GuardedGossipSub, guard: PeerGuard, **kwargs: Any) -> None:
        super().__init__(host, router, **kwargs)
        self.guard = guard
        self.recorded_topics: defaultdict[ID, set[str]] = defaultdict(set)
        self.inbound_streams: defaultdict[ID, set[INetStream]] = defaultdict(set)
        guard.on_graylisted.append(self._cut)
        self.sinks: dict[str, Callable[[rpc_pb2.Message], None]] = {}
        """Per topic, where validated messages go instead of py-libp2p's 32-message subscription queue."""

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        """Hand a validated message to its topic's sink (or to py-libp2p's queue for a topic without one)."""
        for topic in publish_message.topicIDs:
            if topic not in self.topic_ids:
                continue
            sink = self.sinks.get(topic)
            if sink is not None:
                sink(publish_message)
                continue
            try:
                self.subscribed_topics_send[topic].send_nowait(publish_message)
            except trio.WouldBlock:
                log.warning("subscription queue of topic %s is full; message dropped", topic)

    async def stream_handler(self, stream: INetStream) -> None:
        """Read a peer's pubsub stream, unless the peer is graylisted (then reset it at once)."""
        peer = stream.muxed_conn.peer_id
        if self.guard.is_graylisted(peer):
            self.guard.dropped["stream refused"] += 1
            await _reset(stream)
            return
        streams = self.inbound_streams[peer]
        streams.add(stream)
        try:
            await super().stream_handler(stream)
        finally:
            streams.discard(stream)
            if not streams:
                self.inbound_streams.pop(peer, None)

    async def _handle_new_peer(self, peer_id: ID) -> None:
        await super()._handle_new_peer(peer_id)
        queue = self.peer_queues.get(peer_id)
        inner = getattr(queue, "_queue", None)
        if inner is not None and getattr(inner, "max_size", OUTBOUND_QUEUE) < OUTBOUND_QUEUE:
            inner.max_size = OUTBOUND_QUEUE

    def _cut(self, peer: ID) -> None:
        """Reset the inbound pubsub streams of a peer that was just graylisted."""
        for stream in list(self.inbound_streams.get(peer, ())):
            if self.manager.is_running:
                self.manager.run_task(_reset, stream)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Drop a message the guard refuses, else hand it to py-libp2p (signature, validator, forwarding)."""
        if msg_forwarder != self.my_id and not self.guard.inbound(
            msg_forwarder, ID(msg.from_id), list(msg.topicIDs), seen=self._is_msg_seen(msg)
        ):
            return
        await super().push_msg(msg_forwarder, msg)

    def handle_subscription(self, origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        """Record a peer's (un)subscription; let it into ``peer_topics`` only if the guard admits it."""
        topic = sub_message.topicid
        if not sub_message.subscribe:
            self.recorded_topics.get(origin_id, set()).discard(topic)
            super().handle_subscription(origin_id, sub_message)
            return
        recorded = self.recorded_topics[origin_id]
        if topic not in recorded and len(recorded) >= self.max_subscriptions_per_peer:
            return
        recorded.add(topic)
        if topic in self.guard.topics and not self.guard.admits(origin_id, [topic]):
            return
        super().handle_subscription(origin_id, sub_message)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        self.recorded_topics.pop(peer_id, None)
        super()._handle_dead_peer(peer_id)

    def sync_admission(self) -> None:
        """Make ``peer_topics`` match the guard's verdicts (graylistings, membership changes)."""
        for peer, topics in list(self.recorded_topics.items()):
            if not topics:
                del self.recorded_topics[peer]
                continue
            for topic in [t for t in topics if t in self.guard.topics]:
                admitted = self.guard.admits(peer, [topic])
                in_view = peer in self.peer_topics.get(topic, ())
                if admitted and not in_view:
                    super().handle_subscription(peer, rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic))
                elif in_view and not admitted:
                    self._forget_subscription(peer, topic)


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception as exc:  # already closed or broken: nothing left to cut
            log.debug("resetting a pubsub stream: %r", exc)


class GuardedGossipSub(GossipSub):
    """GossipSub that never meshes with, gossips to or serves a peer the guard does not admit."""

    def __init__(self, guard: PeerGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    async def handle_rpc(self, rpc: rpc_pb2.RPC, sender_peer_id: ID) -> None:
        """Ignore the control messages of a peer the guard does not admit on any run."""
        if not self.guard.admits(sender_peer_id):
            self.guard.dropped["control"] += 1
            return
        await super().handle_rpc(rpc, sender_peer_id)

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        """Refuse (PRUNE) a GRAFT from a peer the guard does not admit on that topic."""
        if not self.guard.admits(sender_peer_id, [graft_msg.topicID]):
            await self.emit_prune(graft_msg.topicID, sender_peer_id, False, False)
            return
        await super().handle_graft(graft_msg, sender_peer_id)

    def mesh_heartbeat(self) -> tuple[defaultdict[ID, list[str]], defaultdict[ID, list[str]]]:
        """Tick the guard, resync admissions, maintain the mesh, then prune every peer not admitted."""
        self.guard.on_heartbeat()
        if isinstance(self.pubsub, GuardedPubsub):
            self.pubsub.sync_admission()
        graft, prune = super().mesh_heartbeat()
        for topic, peers in self.mesh.items():
            for peer in [p for p in peers if not self.guard.admits(p, [topic])]:
                peers.discard(peer)
                prune[peer].append(topic)
                if topic in graft.get(peer, []):
                    graft[peer].remove(topic)
        for topic, peers in self.fanout.items():
            peers.difference_update([p for p in peers if not self.guard.admits(p, [topic])])
        for peer in [p for p, topics in graft.items() if not topics]:
            del graft[peer]
        return graft, prune

    def _prune_pending_messages(self, peer_id: ID) -> None:
        # py-libp2p queues every message for a connected peer that has not subscribed yet and flushes the
        # queue once it does (or once our stream to it reopens): never for a peer the guard refuses.
        if not self.guard.admits(peer_id):
            self._pending_messages.pop(peer_id, None)
            return
        super()._prune_pending_messages(peer_id)

    async def flush_pending_messages(self, peer_id: ID) -> None:
        """Send a newly subscribed peer what it missed, unless the guard refuses it (then forget it)."""
        if not self.guard.admits(peer_id):
            self._pending_messages.pop(peer_id, None)
            return
        await super().flush_pending_messages(peer_id)

    def _get_peers_to_send(
        self,
        topic_ids: Iterable[str],
        msg_forwarder: ID,
        origin: ID,
        msg_id: bytes | None = None,
    ) -> Iterator[ID]:
        topics = list(topic_ids)
        for peer in super()._get_peers_to_send(topics, msg_forwarder, origin, msg_id):
            if self.guard.admits(peer, topics):
                yield peer
