"""FastYamux's receive loop fed with hand-built frames over an in-memory secure channel."""

from __future__ import annotations

import struct

import trio
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import (
    FLAG_ACK,
    FLAG_SYN,
    GO_AWAY_PROTOCOL_ERROR,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
)

from p2p.yamux import STREAM_WINDOW, FastYamux

HEADER = struct.Struct(YAMUX_HEADER_FORMAT)
PEER = ID(b"\x00\x04test")


class ScriptedConn:
    """A secure channel that delivers ``incoming`` and records what the muxer writes."""

    is_initiator = False

    def __init__(self, incoming: bytes) -> None:
        self.incoming = bytearray(incoming)
        self.written = bytearray()
        self.closed = False

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        size = len(self.incoming) if n is None else min(n, len(self.incoming))
        data = bytes(self.incoming[:size])
        del self.incoming[:size]
        return data

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close(self) -> None:
        self.closed = True


def frames(written: bytes | bytearray) -> list[tuple[int, int, int, int]]:
    """(type, flags, stream id, length) of every frame the muxer wrote (DATA bodies skipped)."""
    out, offset = [], 0
    while offset < len(written):
        _, typ, flags, sid, length = HEADER.unpack_from(written, offset)
        out.append((typ, flags, sid, length))
        offset += HEADER.size + (length if typ == TYPE_DATA else 0)
    return out


def run_muxer(incoming: bytes) -> tuple[FastYamux, ScriptedConn]:
    conn = ScriptedConn(incoming)
    muxer = FastYamux(conn, PEER, is_initiator=False)  # type: ignore[arg-type]

    async def main() -> None:
        with trio.fail_after(30):
            await muxer.handle_incoming()

    trio.run(main)
    return muxer, conn


def open_stream_then_send(total: int, chunk: int = 1 << 20) -> bytes:
    script = bytearray(HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0))
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        script += HEADER.pack(0, TYPE_DATA, 0, 1, size) + bytes(size)
        sent += size
    return bytes(script)


def test_accepting_a_stream_grants_the_full_window_in_the_ack() -> None:
    _, conn = run_muxer(open_stream_then_send(0))
    assert frames(conn.written)[0] == (TYPE_WINDOW_UPDATE, FLAG_ACK, 1, STREAM_WINDOW - 256 * 1024)


def test_a_peer_may_fill_the_window() -> None:
    _, conn = run_muxer(open_stream_then_send(STREAM_WINDOW))
    assert all(typ != TYPE_GO_AWAY for typ, *_ in frames(conn.written))
    assert conn.closed  # the scripted connection ended: a clean close


def test_a_peer_overrunning_the_window_is_a_protocol_error() -> None:
    muxer, conn = run_muxer(open_stream_then_send(STREAM_WINDOW + 1))
    assert (TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR) in frames(conn.written)
    assert conn.closed and not muxer.streams


def test_pings_are_answered_with_their_value() -> None:
    _, conn = run_muxer(HEADER.pack(0, TYPE_PING, FLAG_SYN, 0, 4242))
    assert frames(conn.written) == [(TYPE_PING, FLAG_ACK, 0, 4242)]


class ClosedConn(ScriptedConn):
    """A secure channel closed locally: reads deliver the script, every write fails as trio's streams do."""

    async def write(self, data: bytes) -> None:
        raise trio.ClosedResourceError("this stream was closed")


def test_a_stream_opened_after_a_local_close_ends_the_loop_quietly() -> None:
    # close() shuts the new-stream channel while the loop may hold a SYN it has read: handing the stream
    # over then raised trio.ClosedResourceError out of the muxer's task (and the node's nursery).
    conn = ScriptedConn(open_stream_then_send(0))
    muxer = FastYamux(conn, PEER, is_initiator=False)  # type: ignore[arg-type]
    muxer.new_stream_send_channel.close()

    async def main() -> None:
        with trio.fail_after(30):
            await muxer.handle_incoming()

    trio.run(main)
    assert conn.closed and muxer.event_closed.is_set() and not muxer.streams


def test_answers_to_a_closed_connection_end_the_loop_quietly() -> None:
    for script in (open_stream_then_send(0), HEADER.pack(0, TYPE_PING, FLAG_SYN, 0, 7)):
        conn = ClosedConn(script)
        muxer = FastYamux(conn, PEER, is_initiator=False)  # type: ignore[arg-type]

        async def main(muxer: FastYamux = muxer) -> None:
            with trio.fail_after(30):
                await muxer.handle_incoming()

        trio.run(main)
        assert conn.closed and muxer.event_closed.is_set()
