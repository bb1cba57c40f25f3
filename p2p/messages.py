"""Gossip message schemas: versioned, strict, at most 1 KiB, encoded as compact JSON.

Everything on the gossip topic is untrusted input, so decoding is strict (pydantic strict mode, no extra
fields, no type coercion, bounded string lengths and integer ranges) and any failure raises
:class:`~p2p.errors.MessageError`. Weights never ride gossip: an announcement names an artifact by
sha256 and CID, and peers fetch it over the blob stream.

Every message carries the sender's address, a random nonce and the sender's wall-clock time in
milliseconds; the topic validator (:mod:`p2p.gossip`) uses them for replay protection and freshness, and
the benchmark uses ``ts_ms`` to measure delivery latency.
"""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from p2p.errors import MessageError

WIRE_VERSION = 1
"""Version of the wire format; a node rejects messages of any other version."""

MAX_MESSAGE_BYTES = 1024
"""Upper bound on one encoded gossip message (announcements only; weights travel over blob streams)."""

MAX_PROVIDERS = 8
"""At most this many provider peer ids per update announcement (keeps the message under 1 KiB)."""

RunId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,66}$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
CidStr = Annotated[str, StringConstraints(pattern=r"^b[a-z2-7]{20,120}$")]
PeerIdStr = Annotated[str, StringConstraints(pattern=r"^[1-9A-HJ-NP-Za-km-z]{40,60}$")]
Nonce = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Round = Annotated[int, Field(ge=0, lt=2**63)]
Phase = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,31}$")]
"""A round phase name as the node's state machine calls it (``training``, ``voting``…)."""


class _Message(BaseModel):
    """Fields shared by every message type."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    v: Literal[1] = 1  # WIRE_VERSION
    run: RunId
    round: Round
    sender: Address
    nonce: Nonce = Field(default_factory=lambda: secrets.token_hex(8))
    ts_ms: Annotated[int, Field(ge=0, lt=2**53)] = Field(default_factory=lambda: time.time_ns() // 1_000_000)


class UpdateAnnouncement(_Message):
    """A member stored its update for ``round`` under ``cid`` and can serve it (as can ``providers``)."""

    type: Literal["update"] = "update"
    sha256: Sha256Hex
    cid: CidStr
    size: Annotated[int, Field(ge=0, le=2**40)]
    providers: Annotated[tuple[PeerIdStr, ...], Field(max_length=MAX_PROVIDERS)] = ()


class VoteAnnouncement(_Message):
    """A member voted the merged model of ``round``: its hash, CID, and the hash of the included set."""

    type: Literal["vote"] = "vote"
    merged_sha256: Sha256Hex
    merged_cid: CidStr
    included_set_hash: Sha256Hex


MAX_COMMITTEE_PROVIDERS = 2
"""At most this many provider peer ids on a commit or proposal (their signature fields are large)."""

MAX_BITMAP_WORDS = 2
"""At most this many 256-bit words of an included-set bitmap on a committee vote (512 member indices)."""

MemberIndex = Annotated[int, Field(ge=0, lt=2**32)]
Signature65Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{130}$")]
"""A 65-byte ``r || s || v`` secp256k1 signature in lowercase hex."""
Word256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""One 256-bit bitmap word as 64 lowercase hex digits (big-endian)."""


class CommitAnnouncement(_Message):
    """Committee runs: member ``index`` signed an EIP-712 ``UpdateCommit`` of its update (no transaction).

    The signature is over ``(run, round, sha256, keccak256(cid), num_samples)``; the committee checks it
    against the member's address, and the leader copies the commit into the round's manifest.
    """

    type: Literal["commit"] = "commit"
    index: MemberIndex
    sha256: Sha256Hex
    cid: CidStr
    num_samples: Annotated[int, Field(ge=0, lt=2**64)]
    size: Annotated[int, Field(ge=0, le=2**40)]
    signature: Signature65Hex
    providers: Annotated[tuple[PeerIdStr, ...], Field(max_length=MAX_COMMITTEE_PROVIDERS)] = ()


class ProposalAnnouncement(_Message):
    """Committee runs: the committee member of leader ``rank`` proposes the round's manifest (by CID)."""

    type: Literal["proposal"] = "proposal"
    rank: MemberIndex
    manifest_cid: CidStr
    manifest_sha256: Sha256Hex
    commits: MemberIndex
    providers: Annotated[tuple[PeerIdStr, ...], Field(max_length=MAX_COMMITTEE_PROVIDERS)] = ()


class CommitteeVoteAnnouncement(_Message):
    """Committee runs: committee member ``index`` signed an EIP-712 ``CommitteeVote`` on this result."""

    type: Literal["committee_vote"] = "committee_vote"
    index: MemberIndex
    merged_sha256: Sha256Hex
    merged_cid: CidStr
    included_set_hash: Sha256Hex
    manifest_cid: CidStr
    included_bitmap: Annotated[tuple[Word256Hex, ...], Field(max_length=MAX_BITMAP_WORDS)]
    signature: Signature65Hex


class Heartbeat(_Message):
    """A member's liveness and round progress."""

    type: Literal["heartbeat"] = "heartbeat"
    phase: Phase


AnyMessage = (
    UpdateAnnouncement
    | VoteAnnouncement
    | Heartbeat
    | CommitAnnouncement
    | ProposalAnnouncement
    | CommitteeVoteAnnouncement
)
"""Any gossip message."""
Message = Annotated[AnyMessage, Field(discriminator="type")]
_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(Message)


def encode(message: AnyMessage) -> bytes:
    """Encode a message as compact JSON, refusing to produce more than :data:`MAX_MESSAGE_BYTES`."""
    data = message.model_dump_json().encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"encoded {message.type} message is {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes) -> AnyMessage:
    """Decode and strictly validate one gossip message.

    Raises
    ------
    MessageError
        If ``data`` is over :data:`MAX_MESSAGE_BYTES`, not JSON, of an unknown version or type, or any field
        is missing, extra, of the wrong type or out of range.
    """
    if not isinstance(data, bytes | bytearray):
        raise MessageError(f"a message must be bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message is {len(data)} bytes, over the {MAX_MESSAGE_BYTES}-byte cap")
    try:
        return _ADAPTER.validate_json(bytes(data), strict=True)
    except ValidationError as exc:
        raise MessageError(f"malformed message: {_summary(exc)}") from exc
    except (ValueError, RecursionError) as exc:  # defensive: the JSON parser's own limits
        raise MessageError(f"malformed message: {exc}") from exc


def _summary(exc: ValidationError) -> str:
    """First few validation errors as ``field: reason`` (no input echo, which may be attacker-controlled)."""
    parts: list[str] = []
    for err in exc.errors(include_input=False)[:3]:
        loc: tuple[Any, ...] = err.get("loc", ())
        parts.append(f"{'.'.join(str(p) for p in loc) or '<root>'}: {err.get('msg', '?')}")
    return "; ".join(parts)
