"""A yamux muxer for bulk transfers: py-libp2p's ``Yamux`` with a lean frame loop, batching and big windows.

Same protocol (``/yamux/1.0.0``, the hashicorp spec), same frames on the wire; what changes is how much
Python runs per frame. py-libp2p 0.8.1's yamux was measured at ~20 MB/s between two loopback hosts, and
most of that time was spent *waiting*, not computing:

- a writer whose send window is exhausted polls it every 10 ms (``trio.sleep(0.01)``), and the receive
  window only grows past its initial 256 KiB when window updates come less than 4 RTT apart, so on a busy
  machine a stream moves 256 KiB per 10 ms poll: ~25 MB/s;
- every 64 KiB frame goes through two locks, a header pack, a ``header + chunk`` copy, a debug log line
  formatted whether or not debug logging is on, and its own secure-channel write; every received frame
  through a lock, a dozen formatted debug lines and an ``os.environ`` lookup.

:class:`FastYamux` grants each stream a 16 MiB receive window (go-yamux's maximum) up front, in the SYN or
ACK frame as the spec allows, and returns credit when half of it has been read; a writer waiting for
window sleeps on an event that the window update wakes. A write is cut into the usual <= 64 KiB DATA
frames but up to :data:`WRITE_BATCH` bytes of them go down in one secure-channel write (one socket write
with :class:`p2p.noise.NoiseSession`). The receive loop is a compact rewrite of ``Yamux.handle_incoming``
with the same semantics (SYN/ACK/FIN/RST on DATA and WINDOW_UPDATE, PING, GO_AWAY), except that a peer
overrunning its receive window is a protocol error here, as in go-yamux.
"""

from __future__ import annotations

import logging
import struct
from typing import cast

import trio
from libp2p.abc import IHost, IMuxedConn, ISecureConn
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IncompleteReadError, IOException
from libp2p.io.utils import read_exactly
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamError, MuxedStreamReset
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_NORMAL,
    GO_AWAY_PROTOCOL_ERROR,
    HEADER_SIZE,
    MAX_WINDOW_SIZE,
    PROTOCOL_ID,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

from p2p.buffers import ByteQueue
from p2p.noise import NoiseSession

log = logging.getLogger(__name__)

STREAM_WINDOW = MAX_WINDOW_SIZE
"""Receive window granted to every stream (16 MiB, go-yamux's ``MaxStreamWindowSize``)."""
FRAME_PAYLOAD = MAX_PLAINTEXT_LENGTH - HEADER_SIZE
"""Largest DATA payload we send per frame: header and payload fill exactly one Noise message (65519
bytes), where py-libp2p's 64 KiB frames straddle two. Any size up to the window is valid yamux."""
WRITE_BATCH = 1 << 20
"""Most bytes of DATA frames handed to the secure channel in one write."""
WINDOW_WAIT_S = 5.0
"""How long a writer waits for the peer to grant window before failing (py-libp2p's value)."""
DATA_READ_TIMEOUT_S = 60.0
"""How long the body of a DATA frame may take to arrive once its header has (py-libp2p's default)."""
_HEADER = struct.Struct(YAMUX_HEADER_FORMAT)
_CLOSED = (trio.ClosedResourceError, trio.BrokenResourceError, IOException, OSError)
"""What answering a frame (ACK, RST, PING) or handing a new stream over raises once the connection closed."""


class FastYamuxStream(YamuxStream):
    """A yamux stream with a 16 MiB receive window, batched writes and event-driven window waits."""

    def __init__(self, stream_id: int, conn: Yamux, is_initiator: bool) -> None:
        super().__init__(stream_id, conn, is_initiator)
        self.recv_window = STREAM_WINDOW
        self.target_recv_window = STREAM_WINDOW
        self._unacked = 0  # bytes read by the application and not yet returned to the peer as window
        self._send_lock = trio.Lock()  # one write's frames stay together
        self._window_changed = trio.Event()

    def wake_writer(self) -> None:
        """Wake a writer waiting for window (called on window updates, resets and closes)."""
        self._window_changed.set()

    async def write(self, data: bytes) -> None:
        """Send ``data`` in DATA frames, waiting for window as needed."""
        if self.send_closed:
            raise MuxedStreamError("Stream is closed for sending")
        total = len(data)
        sent = 0
        pack = _HEADER.pack
        async with self._send_lock:
            with memoryview(data) as view:
                while sent < total:
                    if self.send_closed:
                        raise MuxedStreamError("Stream is closed for sending")
                    if self.closed:
                        raise MuxedStreamError("Stream is closed")
                    if self.send_window <= 0:
                        await self._wait_for_window()
                        continue
                    end = sent + min(self.send_window, total - sent, WRITE_BATCH)
                    frames: list[bytes] = []
                    self.send_window -= end - sent
                    while sent < end:
                        size = min(FRAME_PAYLOAD, end - sent)
                        frames.append(pack(0, TYPE_DATA, 0, self.stream_id, size) + view[sent : sent + size])
                        sent += size
                    await self._write_frames(frames)

    async def _write_frames(self, frames: list[bytes]) -> None:
        conn = self.conn
        if isinstance(conn, FastYamux):
            await conn.write_frames(frames)
        else:
            await conn._write_frame(b"".join(frames))

    async def _wait_for_window(self) -> None:
        with trio.move_on_after(WINDOW_WAIT_S) as scope:
            while self.send_window <= 0 and not (self.closed or self.send_closed):
                self._window_changed = trio.Event()
                # The timeout re-checks the flags should a close path not wake us (e.g. py-libp2p's own).
                with trio.move_on_after(0.5):
                    await self._window_changed.wait()
        if scope.cancelled_caught:
            raise MuxedStreamError(f"Timed out waiting for window update after {WINDOW_WAIT_S:g} seconds.")

    async def read(self, n: int | None = -1) -> bytes:
        """Return up to ``n`` buffered bytes (all of them for ``n`` of ``-1``/``None``), waiting for some.

        Raises
        ------
        MuxedStreamReset
            If the peer reset the stream.
        MuxedStreamEOF
            If the peer closed its side and everything it sent has been read.
        """
        if n == 0:
            return b""
        buffer = await self._readable()
        data = buffer.take(len(buffer) if n is None or n < 0 else n)
        await self._consumed(len(data), buffer)
        return data

    async def read_into(self, out: memoryview) -> int:
        """Copy up to ``len(out)`` buffered bytes into ``out``, waiting for some; return how many.

        The bytes go from the decrypted frames straight into ``out`` (one copy), where :meth:`read` joins
        them into new ``bytes`` that the caller then copies again. Raises as :meth:`read` does.
        """
        if not len(out):
            return 0
        buffer = await self._readable()
        n = buffer.take_into(out)
        await self._consumed(n, buffer)
        return n

    async def _readable(self) -> ByteQueue:
        """Wait until the stream has buffered bytes and return its queue; raise at reset or end."""
        conn, sid = self.conn, self.stream_id
        while True:
            buffer = cast("ByteQueue | None", conn.stream_buffers.get(sid))  # see FastYamux._register
            if self.reset_received:
                raise MuxedStreamReset("Stream was reset")
            if buffer:
                return buffer
            if buffer is None:
                raise MuxedStreamEOF("Stream buffer closed")
            if self.recv_closed:
                raise MuxedStreamEOF("Stream is closed for receiving")
            if conn.event_shutting_down.is_set():
                raise MuxedStreamEOF("Connection shut down")
            event = conn.stream_events.get(sid)
            if event is None:
                raise MuxedStreamEOF("Stream was removed during read")
            await event.wait()
            if conn.stream_events.get(sid) is event:
                conn.stream_events[sid] = trio.Event()

    async def _consumed(self, n: int, buffer: ByteQueue) -> None:
        await self._return_window(n)
        if self.closed and not buffer:
            await self.conn._finalize_stream(self, fully_closed=True)

    async def _return_window(self, consumed: int) -> None:
        """Give read bytes back to the peer as window once half the window has been read (go-yamux)."""
        self._unacked += consumed
        if self._unacked < STREAM_WINDOW // 2 or self.recv_closed or self.closed:
            return
        increment, self._unacked = self._unacked, 0
        self.recv_window += increment
        await self.send_window_update(increment)

    async def reset(self) -> None:
        """Reset the stream in both directions (and wake a writer waiting for window)."""
        await super().reset()
        self.wake_writer()


class FastYamux(Yamux):
    """py-libp2p's ``Yamux`` connection with :class:`FastYamuxStream` streams and a lean receive loop."""

    async def open_stream(self) -> YamuxStream:
        """Open an outbound stream; its SYN also grants the peer the full receive window."""
        await self.stream_backlog_semaphore.acquire()
        async with self.streams_lock:
            if self.event_shutting_down.is_set():
                self.stream_backlog_semaphore.release()
                raise MuxedStreamError("Connection is shutting down")
            stream_id = self.next_stream_id
            self.next_stream_id += 2
            stream = FastYamuxStream(stream_id, self, True)
            stream._owns_backlog_slot = True
            self._register(stream)
        try:
            await self._write_frame(
                _HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_SYN, stream_id, STREAM_WINDOW - DEFAULT_WINDOW_SIZE)
            )
        except Exception as exc:
            self.stream_backlog_semaphore.release()
            stream._backlog_slot_released = True
            async with self.streams_lock:
                self._forget(stream_id)
            raise MuxedStreamError(f"Failed to send SYN: {exc}") from exc
        return stream

    async def _write_frame(self, data: bytes) -> None:
        """Write frames to the secure channel, one writer at a time (no per-frame debug formatting)."""
        async with self._write_lock:
            await self.secured_conn.write(data)
        await trio.lowlevel.checkpoint()

    async def write_frames(self, frames: list[bytes]) -> None:
        """Write whole frames in one go; over a :class:`NoiseSession`, one Noise message per frame."""
        conn = self.secured_conn
        async with self._write_lock:
            if isinstance(conn, NoiseSession):
                await conn.write_messages(frames)
            else:
                await conn.write(b"".join(frames))
        await trio.lowlevel.checkpoint()

    async def _read_body(self, length: int) -> bytes | memoryview:
        conn = self.secured_conn
        # Usually a view of the decrypted Noise message (one frame per message): queued without a copy.
        data = conn.read_buffered_view(length) if isinstance(conn, NoiseSession) else None
        if data is not None:
            return data
        with trio.fail_after(DATA_READ_TIMEOUT_S):
            return await self._read(length)

    def _read_buffered(self, n: int) -> bytes | None:
        conn = self.secured_conn
        return conn.read_buffered(n) if isinstance(conn, NoiseSession) else None

    async def _read(self, n: int) -> bytes:
        data = self._read_buffered(n)
        if data is not None:  # most frames: already decrypted with the previous socket read
            return data
        # Secure sessions return all ``n`` bytes unless the connection ends: no read_exactly copies.
        data = await self.secured_conn.read(n)
        if len(data) < n:
            data += await read_exactly(self.secured_conn, n - len(data))
        return data

    async def close(self, error_code: int = GO_AWAY_NORMAL) -> None:
        """Close the connection (GO_AWAY) and wake every writer waiting for window."""
        streams = list(self.streams.values())
        await super().close(error_code)
        _wake(streams)

    async def _cleanup_on_error(self) -> None:
        streams = list(self.streams.values())
        await super()._cleanup_on_error()
        _wake(streams)

    # ---- receiving ---------------------------------------------------------------------------------------
    # Handlers below run without awaiting between looking a stream up and updating it, so they need no
    # ``streams_lock``: trio switches tasks only at an await.

    async def handle_incoming(self) -> None:
        """Read frames until the connection ends, and dispatch them (replaces py-libp2p's loop)."""
        while not self.event_shutting_down.is_set():
            try:
                header = await self._read(HEADER_SIZE)
            except IncompleteReadError as exc:
                if exc.is_clean_close:
                    log.debug("yamux connection to %s closed by the peer", self.peer_id)
                else:
                    log.warning("yamux connection to %s ended inside a frame header: %s", self.peer_id, exc)
                break
            except Exception as exc:  # connection reset, decryption failure, closed locally
                log.debug("yamux connection to %s: reading a header failed: %r", self.peer_id, exc)
                break
            _version, typ, flags, stream_id, length = _HEADER.unpack(header)
            body: bytes | memoryview = b""
            if typ == TYPE_DATA and length:
                if length > STREAM_WINDOW:
                    log.warning("yamux peer %s sent a DATA frame of %d bytes", self.peer_id, length)
                    await self._go_away(GO_AWAY_PROTOCOL_ERROR)
                    break
                try:
                    body = await self._read_body(length)
                except Exception as exc:  # trio.TooSlowError (60 s), a broken or closed connection
                    log.warning("yamux connection to %s: reading a DATA body failed: %r", self.peer_id, exc)
                    break
            try:
                if typ in (TYPE_DATA, TYPE_WINDOW_UPDATE):
                    if flags & FLAG_SYN:
                        await self._on_syn(typ, flags, stream_id, length, body)
                    elif not self._on_stream_frame(typ, flags, stream_id, length, body):
                        await self._go_away(GO_AWAY_PROTOCOL_ERROR)
                        break
                elif typ == TYPE_PING:
                    await self._on_ping(flags, length)
                elif typ == TYPE_GO_AWAY:
                    log.debug("yamux peer %s sent GO_AWAY (code %d)", self.peer_id, length)
                    break
                else:
                    log.debug("yamux peer %s sent a frame of unknown type %d; ignored", self.peer_id, typ)
            except _CLOSED as exc:
                # The connection was closed locally while this frame was handled (``close`` shuts the
                # new-stream channel and the secure channel while the loop may sit in an answer's write):
                # the connection is over, as for a failed read, not an error of the muxer's task.
                log.debug("yamux connection to %s closed while handling a frame: %r", self.peer_id, exc)
                break
        await self._cleanup_on_error()

    async def _on_syn(
        self, typ: int, flags: int, stream_id: int, length: int, body: bytes | memoryview
    ) -> None:
        if stream_id in self.streams:
            log.debug("yamux peer %s opened stream %d twice; resetting it", self.peer_id, stream_id)
            await self._write_frame(_HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))
            return
        stream = FastYamuxStream(stream_id, self, False)
        self._register(stream)
        if typ == TYPE_WINDOW_UPDATE:
            stream.send_window += length
        elif body:
            self._queue(stream_id).extend_frozen(body)
            stream.recv_window -= len(body)
        self._apply_flags(stream, flags & ~FLAG_SYN)
        if not flags & FLAG_RST:
            delta = STREAM_WINDOW - DEFAULT_WINDOW_SIZE
            await self._write_frame(_HEADER.pack(0, TYPE_WINDOW_UPDATE, FLAG_ACK, stream_id, delta))
        await self.new_stream_send_channel.send(stream)

    def _on_stream_frame(
        self, typ: int, flags: int, stream_id: int, length: int, body: bytes | memoryview
    ) -> bool:
        """Apply a DATA or WINDOW_UPDATE frame to its stream; ``False`` if the peer broke the protocol."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return True  # a frame for a stream already closed and forgotten here
        if typ == TYPE_DATA:
            if body:
                if len(body) > stream.recv_window:
                    log.warning(
                        "yamux peer %s overran stream %d's window (%d > %d bytes)",
                        self.peer_id,
                        stream_id,
                        len(body),
                        stream.recv_window,
                    )
                    return False
                stream.recv_window -= len(body)
                self._queue(stream_id).extend_frozen(body)
        elif length:
            stream.send_window += length
            if isinstance(stream, FastYamuxStream):
                stream.wake_writer()
        self._apply_flags(stream, flags)
        return True

    def _apply_flags(self, stream: YamuxStream, flags: int) -> None:
        if flags & FLAG_FIN:
            stream.recv_closed = True
            if stream.send_closed:
                stream.closed = True
        if flags & FLAG_RST:
            stream.closed = True
            stream.reset_received = True
        if isinstance(stream, FastYamuxStream) and flags & (FLAG_FIN | FLAG_RST):
            stream.wake_writer()
        event = self.stream_events.get(stream.stream_id)
        if event is not None:
            event.set()
        if stream.closed:
            self._finalize_stream_locked(stream, fully_closed=True)

    async def _on_ping(self, flags: int, value: int) -> None:
        if flags & FLAG_SYN:
            await self._write_frame(_HEADER.pack(0, TYPE_PING, FLAG_ACK, 0, value))
        elif flags & FLAG_ACK:
            rtt = trio.current_time() - self._ping_sent_time
            self._rtt = rtt if self._rtt == 0.0 else (self._rtt + rtt) / 2
            self._ping_event.set()

    async def _go_away(self, code: int) -> None:
        try:
            await self._write_frame(_HEADER.pack(0, TYPE_GO_AWAY, 0, 0, code))
        except Exception as exc:  # the connection may already be gone
            log.debug("yamux GO_AWAY to %s not sent: %r", self.peer_id, exc)

    def _register(self, stream: FastYamuxStream) -> None:
        self.streams[stream.stream_id] = stream
        self.stream_buffers[stream.stream_id] = ByteQueue()  # type: ignore[assignment]
        self.stream_events[stream.stream_id] = trio.Event()

    def _queue(self, stream_id: int) -> ByteQueue:
        return cast("ByteQueue", self.stream_buffers[stream_id])  # see _register

    def _forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self.stream_buffers.pop(stream_id, None)
        self.stream_events.pop(stream_id, None)


def _wake(streams: list[YamuxStream]) -> None:
    for stream in streams:
        if isinstance(stream, FastYamuxStream):
            stream.wake_writer()


class MuxerSelector(MuxerMultistream):
    """Negotiates the muxer and builds the *configured* class for it.

    py-libp2p 0.8.1's ``MuxerMultistream.new_conn`` constructs its own ``Yamux`` whenever ``/yamux/1.0.0``
    is negotiated, whatever class ``muxer_opt`` registered for it (upstream bug), so :class:`FastYamux`
    would never be used without this.
    """

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        """Negotiate a muxer on ``conn`` and wrap the connection in the class registered for it."""
        protocol, transport_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        return self._annotate_connection(transport_class(conn, peer_id), conn, protocol)


def use_fast_yamux(host: IHost) -> None:
    """Make ``host`` multiplex every new connection with :class:`FastYamux` (yamux is its only muxer)."""
    upgrader = host.get_network().upgrader  # type: ignore[attr-defined]
    upgrader.muxer_multistream = MuxerSelector({TProtocol(PROTOCOL_ID): FastYamux})
