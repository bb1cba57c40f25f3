from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2

from p2p.errors import MessageError
from p2p.gossip import GossipConfig, TopicValidator, topic_for
from p2p.identity import NodeIdentity
from p2p.messages import Heartbeat, encode

ALICE = NodeIdentity.from_private_key((1).to_bytes(32, "big"))
BOB = NodeIdentity.from_private_key((2).to_bytes(32, "big"))
MALLORY = NodeIdentity.from_private_key((3).to_bytes(32, "big"))
MEMBERS = {ALICE.address, BOB.address}


def validator(current_round: int = 5, **config: float) -> TopicValidator:
    return TopicValidator(
        "run-1",
        lambda run, addr: run == "run-1" and addr in MEMBERS,
        lambda run: current_round,
        GossipConfig(**config),
    )


def heartbeat(sender: NodeIdentity, **fields: object) -> bytes:
    values: dict[str, object] = {"run": "run-1", "round": 5, "sender": sender.address, "phase": "idle"}
    values.update(fields)
    return encode(Heartbeat.model_validate(values))


def pubsub_message(origin: NodeIdentity, data: bytes) -> rpc_pb2.Message:
    return rpc_pb2.Message(data=data, topicIDs=[topic_for("run-1")], from_id=origin.peer_id.to_bytes())


def test_a_member_message_passes() -> None:
    v = validator()

    message = v.check(ALICE.peer_id, heartbeat(ALICE))

    assert message.sender == ALICE.address


@pytest.mark.parametrize(
    ("origin", "data", "reason"),
    [
        (MALLORY, heartbeat(MALLORY), "non-member"),
        (MALLORY, heartbeat(ALICE), "sender mismatch"),  # signed by Mallory, claims to be Alice
        (ALICE, heartbeat(ALICE, run="run-2"), "wrong run"),
        (ALICE, heartbeat(ALICE, round=3), "stale round"),
        (ALICE, heartbeat(ALICE, round=7), "stale round"),
        (ALICE, heartbeat(ALICE, ts_ms=int((time.time() - 3600) * 1000)), "timestamp"),
        (ALICE, b"{}", "malformed"),
        (ALICE, b"x" * 2000, "oversized"),
    ],
)
def test_rule_violations_are_dropped_and_counted(origin: NodeIdentity, data: bytes, reason: str) -> None:
    v = validator()

    accepted = v(origin.peer_id, pubsub_message(origin, data))

    assert accepted is False
    assert v.accepted == 0
    assert any(key.startswith(reason) for key in v.dropped), v.dropped
    with pytest.raises(MessageError, match=reason):
        v.check(origin.peer_id, data)


def test_a_replayed_message_is_dropped() -> None:
    v = validator()
    data = heartbeat(BOB)

    first = v(BOB.peer_id, pubsub_message(BOB, data))
    second = v(ALICE.peer_id, pubsub_message(BOB, data))  # relayed again by someone else

    assert (first, second) == (True, False)
    assert v.dropped == {"replay": 1}


def test_round_tolerance_window() -> None:
    v = validator(current_round=5, round_tolerance=2)

    assert v.check(ALICE.peer_id, heartbeat(ALICE, round=3)).round == 3
    with pytest.raises(MessageError, match="stale round"):
        v.check(ALICE.peer_id, heartbeat(ALICE, round=2))


def test_replay_window_is_bounded() -> None:
    v = validator(seen_capacity=2)
    first = heartbeat(ALICE)
    v.check(ALICE.peer_id, first)
    v.check(ALICE.peer_id, heartbeat(ALICE))
    v.check(ALICE.peer_id, heartbeat(ALICE))

    assert len(v._seen) == 2


def test_a_non_secp256k1_origin_is_dropped() -> None:
    v = validator()

    assert v(ID(b"\x00\x04abcd"), rpc_pb2.Message(data=heartbeat(ALICE), from_id=b"\x00\x04abcd")) is False


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("degree", 2),
        ("heartbeat_interval", 0),
        ("seen_capacity", 0),
    ],
)
def test_gossip_config_rejects_bad_values_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"`{field}`"):
        GossipConfig(**{field: value})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1500))
def test_the_validator_hook_never_raises_on_random_payloads(data: bytes) -> None:
    v = validator()

    accepted = v(ALICE.peer_id, pubsub_message(ALICE, data))

    assert accepted is False
    assert sum(v.dropped.values()) == 1
    assert "error" not in v.dropped  # rejected by a rule, not by an unexpected exception


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6))
def test_the_validator_hook_never_raises_on_mutated_messages(edits: list[tuple[int, int]]) -> None:
    v = validator()
    mutated = bytearray(heartbeat(ALICE))
    for position, value in edits:
        mutated[position % len(mutated)] = value

    accepted = v(ALICE.peer_id, pubsub_message(ALICE, bytes(mutated)))

    assert accepted is (v.accepted == 1)
    assert v.accepted + sum(v.dropped.values()) == 1
    assert "error" not in v.dropped
