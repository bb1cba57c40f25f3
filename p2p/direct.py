"""The direct-message stream protocol ``/fedchain/direct/1.0.0``: one gossip message to one chosen peer.

Gossip reaches every member of a run. Some messages matter to a few members only: in a committee run a
member's signed commit is used by the round's k committee members, and gossiping it to all N members
makes every member's traffic grow with N. Such a message is sent over this protocol to each member that
needs it instead.

Wire format (big-endian)::

    request   u16 length | length bytes of an encoded message (p2p.messages, at most MAX_MESSAGE_BYTES)
    response  u8 status

The receiver runs the same checks as on the gossip path (:meth:`p2p.gossip.TopicValidator.check`, with the
stream's Noise-authenticated remote peer as the message's origin), then answers ``OK`` (checked and queued
for the handlers), ``REFUSED`` (failed a check, or for a run this node has not joined) or ``ERROR``. A
length over the cap is refused before any of the message is read.
"""

from __future__ import annotations

import contextlib
import enum
import struct

from libp2p.abc import IHost
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.blob import Stream, read_exactly
from p2p.errors import BlobProtocolError, MessageError, P2PError
from p2p.messages import MAX_MESSAGE_BYTES

DIRECT_PROTOCOL = TProtocol("/fedchain/direct/1.0.0")
_LENGTH = struct.Struct(">H")


class DirectStatus(enum.IntEnum):
    """Response status of the direct-message protocol."""

    OK = 0
    REFUSED = 1
    ERROR = 2


class DirectError(P2PError):
    """A direct message was not delivered (stream failure, or the receiver refused it)."""


class DirectRefusedError(DirectError):
    """The receiver checked the message and refused it: sending it again cannot help."""


def encode_request(data: bytes) -> bytes:
    """Frame an encoded message; raises :class:`MessageError` if it is empty or over the cap."""
    if not 0 < len(data) <= MAX_MESSAGE_BYTES:
        raise MessageError(f"a direct message has 1..{MAX_MESSAGE_BYTES} bytes, got {len(data)}")
    return _LENGTH.pack(len(data)) + data


async def read_request(stream: Stream) -> bytes:
    """Read one framed message; raises :class:`BlobProtocolError` on a bad length or a short stream."""
    (n,) = _LENGTH.unpack(await read_exactly(stream, _LENGTH.size))
    if not 0 < n <= MAX_MESSAGE_BYTES:
        raise BlobProtocolError(f"direct message length {n} not in 1..{MAX_MESSAGE_BYTES}")
    return await read_exactly(stream, n)


async def send_to_peer(host: IHost, peer: str, data: bytes) -> None:
    """Send one encoded message to ``peer`` and wait for its answer (no timeout here; the caller bounds it).

    Raises
    ------
    DirectError
        If the stream fails or the peer does not answer ``OK`` (:class:`DirectRefusedError` if it
        answered ``REFUSED``).
    """
    frame = encode_request(data)
    try:
        stream = await host.new_stream(ID.from_base58(peer), [DIRECT_PROTOCOL])
    except Exception as exc:  # no connection, protocol not supported, dial failure
        raise DirectError(f"cannot open a direct stream to {peer}: {exc!r}") from exc
    try:
        await stream.write(frame)
        status = (await read_exactly(stream, 1))[0]
    except Exception as exc:  # StreamReset/StreamEOF and the like
        raise DirectError(f"direct stream to {peer} broke: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):  # closing a stream the peer already reset is no error for us
            await stream.close()
    if status == DirectStatus.REFUSED:
        raise DirectRefusedError(f"{peer} refused the message")
    if status != DirectStatus.OK:
        raise DirectError(f"{peer} answered status {status}")
