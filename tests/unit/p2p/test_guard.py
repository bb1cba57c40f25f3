"""p2p.guard: token buckets, penalties, graylisting and membership, on a fake clock."""

from __future__ import annotations

import logging

import pytest
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2p.gossip import GossipConfig, TopicValidator, topic_for
from p2p.guard import GuardConfig, PeerGuard, TokenBucket
from p2p.identity import NodeIdentity
from p2p.messages import Heartbeat, encode

ME = NodeIdentity.from_private_key((9).to_bytes(32, "big"))
ALICE = NodeIdentity.from_private_key((1).to_bytes(32, "big"))
BOB = NodeIdentity.from_private_key((2).to_bytes(32, "big"))
SYBIL = NodeIdentity.from_private_key((3).to_bytes(32, "big"))
MEMBERS = {ME.address, ALICE.address, BOB.address}
TOPIC = topic_for("run-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock, **config: float) -> PeerGuard:
    g = PeerGuard(
        GuardConfig(**config),
        lambda run, address: run == "run-1" and address in MEMBERS,
        self_id=ME.peer_id,
        clock=clock,
    )
    g.add_topic(TOPIC, "run-1")
    return g


def heartbeat(sender: NodeIdentity, **fields: object) -> bytes:
    values: dict[str, object] = {"run": "run-1", "round": 5, "sender": sender.address, "phase": "idle"}
    values.update(fields)
    return encode(Heartbeat.model_validate(values))


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3.0, now=0.0)

    burst = [bucket.take(0.0) for _ in range(4)]
    after_half_a_second = [bucket.take(0.5), bucket.take(0.5)]
    after_ten_seconds = [bucket.take(10.5) for _ in range(4)]

    assert burst == [True, True, True, False]
    assert after_half_a_second == [True, False]
    assert after_ten_seconds == [True, True, True, False]  # refilled to the burst, not beyond


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("peer_rate", 0),
        ("peer_burst", 0.5),
        ("relay_rate", float("inf")),
        ("rate_penalty", -1),
        ("graylist_threshold", 0),
        ("penalty_decay", 1.0),
        ("graylist_s", 0),
    ],
)
def test_guard_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        GuardConfig(**{field: value})


def test_gossip_config_carries_the_guard_config() -> None:
    assert GossipConfig().guard == GuardConfig()
    assert GossipConfig(guard=GuardConfig(peer_rate=1.0)).guard.peer_rate == 1.0


def test_a_flooding_member_is_throttled_then_graylisted_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    g = guard(clock, peer_rate=5, peer_burst=20, graylist_threshold=10, graylist_s=60)

    with caplog.at_level(logging.WARNING, logger="p2p.guard"):
        accepted = [g.charge_origin(ALICE.peer_id) for _ in range(1000)]

    assert sum(accepted) == 20  # the burst; the clock did not move
    assert accepted[:20] == [True] * 20
    assert g.is_graylisted(ALICE.peer_id)
    assert not g.admits(ALICE.peer_id, [TOPIC])
    lines = [r for r in caplog.records if "graylisting peer" in r.getMessage()]
    assert len(lines) == 1
    assert ALICE.address in lines[0].getMessage() and "rate limit 10" in lines[0].getMessage()
    assert g.stats()["graylistings"][0]["address"] == ALICE.address  # type: ignore[index]


def test_a_member_at_its_rate_is_never_penalised() -> None:
    clock = Clock()
    g = guard(clock, peer_rate=5, peer_burst=20)

    results = []
    for _ in range(600):  # two minutes at 5 messages/s
        clock.now += 0.2
        results.append(g.charge_origin(ALICE.peer_id))

    assert all(results)
    assert g.penalty(ALICE.peer_id) == 0.0


def test_a_graylisted_peer_is_dropped_as_sender_and_as_origin() -> None:
    clock = Clock()
    g = guard(clock, graylist_threshold=1)
    g.penalize(ALICE.peer_id, 1.0, "test")

    assert not g.inbound(ALICE.peer_id, ALICE.peer_id, [TOPIC], seen=False)
    assert not g.inbound(BOB.peer_id, ALICE.peer_id, [TOPIC], seen=False)  # relayed by an honest member
    assert g.inbound(BOB.peer_id, BOB.peer_id, [TOPIC], seen=False)
    assert g.dropped == {"graylisted": 1, "graylisted origin": 1}
    assert g.penalty(BOB.peer_id) == 0.0  # relaying is not held against Bob


def test_penalties_decay_and_a_graylisting_ends_then_doubles_on_repeat() -> None:
    clock = Clock()
    g = guard(clock, graylist_threshold=10, penalty_decay=0.5, graylist_s=5, max_graylist_s=8)
    g.penalize(ALICE.peer_id, 8.0, "invalid")
    g.on_heartbeat()
    assert g.penalty(ALICE.peer_id) == 4.0
    g.penalize(ALICE.peer_id, 5.0, "invalid")
    assert not g.is_graylisted(ALICE.peer_id)

    g.penalize(ALICE.peer_id, 1.0, "invalid")  # 10 reached
    clock.now += 4.9
    assert g.on_heartbeat() == [] and g.is_graylisted(ALICE.peer_id)
    clock.now += 0.2
    assert g.on_heartbeat() == [ALICE.peer_id]
    assert g.admits(ALICE.peer_id, [TOPIC]) and g.penalty(ALICE.peer_id) == 0.0

    g.penalize(ALICE.peer_id, 10.0, "invalid")
    seconds = [entry["seconds"] for entry in g.stats()["graylistings"]]  # type: ignore[attr-defined]
    assert seconds == [5, 8]  # doubled, capped at max_graylist_s


def test_sybils_are_not_admitted_and_their_messages_not_relayed() -> None:
    clock = Clock()
    g = guard(clock)

    assert not g.admits(SYBIL.peer_id, [TOPIC])
    assert not g.inbound(SYBIL.peer_id, SYBIL.peer_id, [TOPIC], seen=False)
    assert not g.inbound(ALICE.peer_id, SYBIL.peer_id, [TOPIC], seen=False)  # a member relaying a Sybil
    assert g.dropped == {"non-member peer": 1, "non-member origin": 1}
    assert g.penalty(SYBIL.peer_id) == pytest.approx(0.1)  # a publishing Sybil is graylisted in time
    assert g.penalty(ALICE.peer_id) == pytest.approx(0.1)
    assert g.admits(ME.peer_id) and g.admits(ALICE.peer_id)


def test_membership_is_asked_per_run_topic() -> None:
    clock = Clock()
    g = guard(clock)
    g.add_topic(topic_for("run-2"), "run-2")  # nobody is a member of run-2

    assert g.admits(ALICE.peer_id, [TOPIC]) and g.admits(ALICE.peer_id)
    assert not g.admits(ALICE.peer_id, [topic_for("run-2")])
    assert g.inbound(ALICE.peer_id, ALICE.peer_id, ["/other/topic"], seen=False)  # not ours to judge


def test_duplicates_cost_no_relay_token_and_new_messages_over_the_relay_budget_are_dropped() -> None:
    clock = Clock()
    g = guard(clock, relay_rate=1, relay_burst=3, graylist_threshold=100)

    duplicates = [g.inbound(BOB.peer_id, ALICE.peer_id, [TOPIC], seen=True) for _ in range(50)]
    new = [g.inbound(BOB.peer_id, ALICE.peer_id, [TOPIC], seen=False) for _ in range(5)]

    assert all(duplicates)
    assert new == [True, True, True, False, False]
    assert g.penalty(BOB.peer_id) == 2.0 and g.dropped["relay rate"] == 2


def test_our_own_messages_are_never_limited() -> None:
    clock = Clock()
    g = guard(clock, peer_burst=1, relay_burst=1)

    assert all(g.charge_origin(ME.peer_id) for _ in range(100))
    assert all(g.inbound(ME.peer_id, ME.peer_id, [TOPIC], seen=False) for _ in range(100))
    g.penalize(ME.peer_id, 1e9, "test")
    assert not g.is_graylisted(ME.peer_id)


def test_validator_rejections_are_charged_to_the_sender_by_kind() -> None:
    clock = Clock()
    g = guard(clock, graylist_threshold=1000)

    g.rejected(BOB.peer_id, "malformed")
    g.rejected(BOB.peer_id, "stale round")
    g.rejected(BOB.peer_id, "rate limit")  # already charged to the signer

    assert g.penalty(BOB.peer_id) == pytest.approx(1.1)


def test_the_validator_charges_the_signer_only_for_new_valid_messages() -> None:
    clock = Clock()
    g = guard(clock, peer_rate=1, peer_burst=3, graylist_threshold=2)
    v = TopicValidator("run-1", g.is_member, lambda run: 5, GossipConfig(), guard=g)

    def push(forwarder: NodeIdentity, origin: NodeIdentity, data: bytes) -> bool:
        return v(
            forwarder.peer_id, rpc_pb2.Message(data=data, topicIDs=[TOPIC], from_id=origin.peer_id.to_bytes())
        )

    first = heartbeat(ALICE)
    assert push(ALICE, ALICE, first)
    replays = [push(BOB, ALICE, first) for _ in range(5)]  # Bob replays Alice's message
    stale = [push(BOB, ALICE, heartbeat(ALICE, round=1)) for _ in range(5)]
    later = [push(ALICE, ALICE, heartbeat(ALICE)) for _ in range(4)]

    assert not any(replays) and not any(stale)
    assert later == [True, True, False, False]  # Alice's burst of 3 was spent only by her own messages
    assert v.dropped["rate limit"] == 2 and g.is_graylisted(ALICE.peer_id)
    assert g.penalty(BOB.peer_id) == pytest.approx(1.0)  # 10 view-dependent rejections x 0.1
    assert not g.is_graylisted(BOB.peer_id)


def test_a_publishing_sybil_is_graylisted_and_listeners_hear_of_it_once() -> None:
    clock = Clock()
    g = guard(clock, view_penalty=0.5, graylist_threshold=10)
    heard: list[ID] = []
    g.on_graylisted.append(heard.append)

    results = [g.inbound(SYBIL.peer_id, SYBIL.peer_id, [TOPIC], seen=False) for _ in range(100)]

    assert not any(results)
    assert heard == [SYBIL.peer_id]
    assert g.dropped == {"non-member peer": 20, "graylisted": 80}


def test_a_failing_membership_oracle_admits_nobody_and_does_not_raise() -> None:
    def broken(run: str, address: str) -> bool:
        raise RuntimeError("chain index unavailable")

    g = PeerGuard(GuardConfig(), broken, self_id=ME.peer_id)
    g.add_topic(TOPIC, "run-1")

    assert not g.admits(ALICE.peer_id, [TOPIC])
    assert not g.inbound(ALICE.peer_id, ALICE.peer_id, [TOPIC], seen=False)
    assert g.admits(ME.peer_id)
