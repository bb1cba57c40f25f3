from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.errors import MessageError
from p2p.messages import (
    MAX_MESSAGE_BYTES,
    MAX_PROVIDERS,
    CommitAnnouncement,
    CommitteeVoteAnnouncement,
    Heartbeat,
    ProposalAnnouncement,
    UpdateAnnouncement,
    VoteAnnouncement,
    decode,
    encode,
)

SENDER = "0x" + "ab" * 20
PEER = "16Uiu2HAm4Ms862Gnqafssgvik4JJ1LuqWMcKNipq4nm2UaoLRbeP"
CID = "bafybeibpxmdkdzzpscuubma2rys2qkjbn5brxel7kfc2zr652r2vi3crpq"


def full_update() -> UpdateAnnouncement:
    return UpdateAnnouncement(
        run="run-1",
        round=3,
        sender=SENDER,
        sha256="0" * 64,
        cid=CID,
        size=2**40,
        providers=(PEER,) * MAX_PROVIDERS,
    )


VALID = [
    full_update(),
    VoteAnnouncement(
        run="run-1",
        round=3,
        sender=SENDER,
        merged_sha256="1" * 64,
        merged_cid=CID,
        included_set_hash="2" * 64,
    ),
    Heartbeat(run="run-1", round=0, sender=SENDER, phase="training"),
    CommitAnnouncement(
        run="run-1",
        round=3,
        sender=SENDER,
        index=2**32 - 1,
        sha256="0" * 64,
        cid=CID,
        num_samples=2**64 - 1,
        size=2**40,
        signature="ab" * 65,
        providers=(PEER, PEER),
    ),
    ProposalAnnouncement(
        run="run-1",
        round=3,
        sender=SENDER,
        rank=1,
        manifest_cid=CID,
        manifest_sha256="3" * 64,
        commits=31,
        providers=(PEER, PEER),
    ),
    CommitteeVoteAnnouncement(
        run="run-1",
        round=3,
        sender=SENDER,
        index=7,
        merged_sha256="1" * 64,
        merged_cid=CID,
        included_set_hash="2" * 64,
        manifest_cid=CID,
        included_bitmap=("f" * 64, "f" * 64),
        signature="cd" * 65,
    ),
]


@pytest.mark.parametrize("message", VALID, ids=lambda m: m.type)
def test_every_message_type_round_trips_within_1_kib(message: UpdateAnnouncement) -> None:
    data = encode(message)

    assert len(data) <= MAX_MESSAGE_BYTES
    assert decode(data) == message


def test_each_message_gets_a_fresh_nonce() -> None:
    a = Heartbeat(run="r", round=0, sender=SENDER, phase="idle")
    b = Heartbeat(run="r", round=0, sender=SENDER, phase="idle")

    assert a.nonce != b.nonce


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"v": 2}, "v"),
        ({"round": "3"}, "round"),  # no coercion from strings
        ({"round": -1}, "round"),
        ({"size": 3.0}, "size"),
        ({"sha256": "AB" * 32}, "sha256"),  # lower-case hex only
        ({"sender": "0x1234"}, "sender"),
        ({"type": "unknown"}, "type"),
        ({"extra": 1}, "extra"),
        ({"providers": [PEER] * (MAX_PROVIDERS + 1)}, "providers"),
    ],
)
def test_schema_violations_are_rejected_naming_the_field(change: dict[str, object], field: str) -> None:
    raw = json.loads(encode(full_update().model_copy(update={"providers": (PEER,)})))
    raw.update(change)

    with pytest.raises(MessageError) as info:
        decode(json.dumps(raw).encode())

    assert field in str(info.value) or "discriminator" in str(info.value)


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(MessageError, match="over the 1024-byte cap"):
        decode(b" " * (MAX_MESSAGE_BYTES + 1))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * MAX_MESSAGE_BYTES))
def test_random_bytes_never_raise_anything_but_message_error(data: bytes) -> None:
    with contextlib.suppress(MessageError):
        decode(data)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([encode(m) for m in VALID]),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_valid_encodings_never_raise_anything_but_message_error(
    data: bytes, edits: list[tuple[int, int]]
) -> None:
    mutated = bytearray(data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    with contextlib.suppress(MessageError):
        decode(bytes(mutated))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    )
)
def test_arbitrary_json_values_never_raise_anything_but_message_error(value: object) -> None:
    with contextlib.suppress(MessageError):
        decode(json.dumps(value).encode())


@pytest.mark.parametrize(
    ("index", "change", "field"),
    [
        (3, {"signature": "ab" * 64}, "signature"),
        (3, {"signature": "AB" * 65}, "signature"),
        (3, {"index": -1}, "index"),
        (3, {"providers": [PEER] * 3}, "providers"),
        (4, {"rank": "0"}, "rank"),
        (5, {"included_bitmap": ["f" * 64] * 3}, "included_bitmap"),
        (5, {"included_bitmap": ["f" * 63]}, "included_bitmap"),
    ],
)
def test_committee_messages_are_strict(index: int, change: dict[str, object], field: str) -> None:
    doc = json.loads(encode(VALID[index]))
    doc.update(change)

    with pytest.raises(MessageError, match=field):
        decode(json.dumps(doc).encode())
