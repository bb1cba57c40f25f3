"""p2p.router: the guard's verdicts inside py-libp2p's pubsub and gossipsub (hosts built, not started)."""

from __future__ import annotations

import time

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import SUBSCRIPTION_CHANNEL_SIZE, Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from p2p.gossip import GossipConfig, build_router, message_id, topic_for
from p2p.guard import GuardConfig, PeerGuard
from p2p.host import build_host
from p2p.identity import NodeIdentity
from p2p.router import OUTBOUND_QUEUE, GuardedGossipSub, GuardedPubsub

ME = NodeIdentity.from_private_key((9).to_bytes(32, "big"))
ALICE = NodeIdentity.from_private_key((1).to_bytes(32, "big"))
BOB = NodeIdentity.from_private_key((2).to_bytes(32, "big"))
SYBIL = NodeIdentity.from_private_key((3).to_bytes(32, "big"))
MEMBERS = {ME.address, ALICE.address, BOB.address}
TOPIC = topic_for("run-1")


def guarded(**config: float) -> tuple[GuardedPubsub, GuardedGossipSub, PeerGuard]:
    guard = PeerGuard(GuardConfig(**config), lambda run, a: a in MEMBERS, self_id=ME.peer_id)
    guard.add_topic(TOPIC, "run-1")
    router = build_router(GossipConfig(), guard)
    pubsub = GuardedPubsub(
        build_host(ME.key_pair, "/ip4/127.0.0.1/tcp/0"), router, guard, msg_id_constructor=message_id
    )
    router.attach(pubsub)
    return pubsub, router, guard


def test_a_sybils_subscription_is_recorded_but_never_enters_peer_topics() -> None:
    pubsub, _, _ = guarded()

    pubsub.handle_subscription(SYBIL.peer_id, rpc_pb2.RPC.SubOpts(subscribe=True, topicid=TOPIC))

    assert TOPIC in pubsub.recorded_topics[SYBIL.peer_id]
    assert SYBIL.peer_id not in pubsub.peer_topics.get(TOPIC, set())


def test_a_graylisted_member_leaves_peer_topics_the_mesh_and_every_send_list() -> None:
    pubsub, router, guard = guarded(graylist_threshold=1)
    for identity in (ALICE, BOB, SYBIL):
        pubsub.recorded_topics[identity.peer_id].add(TOPIC)
    pubsub.peer_topics[TOPIC] = {ALICE.peer_id, BOB.peer_id}
    router.mesh[TOPIC] = {ALICE.peer_id, BOB.peer_id, SYBIL.peer_id}  # e.g. grafted before a ban
    guard.penalize(ALICE.peer_id, 1.0, "test")

    sends = set(router._get_peers_to_send([TOPIC], msg_forwarder=ME.peer_id, origin=ME.peer_id))
    graft, prune = router.mesh_heartbeat()

    assert sends == {BOB.peer_id}
    assert pubsub.peer_topics[TOPIC] == {BOB.peer_id}
    assert router.mesh[TOPIC] == {BOB.peer_id}
    assert prune[ALICE.peer_id] == [TOPIC] and prune[SYBIL.peer_id] == [TOPIC]
    assert ALICE.peer_id not in graft and SYBIL.peer_id not in graft


def test_validated_messages_go_to_the_sink_not_to_the_32_message_queue() -> None:
    pubsub, _, _ = guarded()
    send, receive = trio.open_memory_channel[rpc_pb2.Message](SUBSCRIPTION_CHANNEL_SIZE)
    pubsub.subscribed_topics_send[TOPIC] = send  # what Pubsub.subscribe sets up
    pubsub.subscribed_topics_receive[TOPIC] = receive  # type: ignore[assignment]
    messages = [rpc_pb2.Message(data=bytes([i]), topicIDs=[TOPIC]) for i in range(100)]

    for message in messages:
        pubsub.notify_subscriptions(message)
    queued = receive.statistics().current_buffer_used
    sunk: list[rpc_pb2.Message] = []
    pubsub.sinks[TOPIC] = sunk.append
    for message in messages:
        pubsub.notify_subscriptions(message)

    assert queued == SUBSCRIPTION_CHANNEL_SIZE  # py-libp2p's queue drops the rest of a burst
    assert sunk == messages


def test_no_message_is_kept_pending_for_a_refused_peer() -> None:
    _, router, _ = guarded()
    message = rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"x", topicIDs=[TOPIC])])
    for identity in (SYBIL, BOB):
        router._pending_messages[identity.peer_id].append((time.time(), message))

    router._prune_pending_messages(SYBIL.peer_id)
    router._prune_pending_messages(BOB.peer_id)
    trio.run(router.flush_pending_messages, SYBIL.peer_id)

    assert SYBIL.peer_id not in router._pending_messages  # would be sent to it once its stream reopens
    assert len(router._pending_messages[BOB.peer_id]) == 1


def test_a_new_peers_outbound_queue_holds_a_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    pubsub, _, _ = guarded()

    async def register(self: Pubsub, peer_id: ID) -> None:  # what py-libp2p does once the stream is open
        self.peer_queues[peer_id] = RpcQueue()

    monkeypatch.setattr(Pubsub, "_handle_new_peer", register)
    trio.run(pubsub._handle_new_peer, BOB.peer_id)
    queue = pubsub.peer_queues[BOB.peer_id]
    pushed = [queue.push(rpc_pb2.RPC()) for _ in range(OUTBOUND_QUEUE + 1)]

    assert pushed.count(True) == OUTBOUND_QUEUE > 32  # py-libp2p's default drops the 33rd
