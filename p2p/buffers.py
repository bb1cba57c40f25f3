"""A byte queue for receive paths: appending and reading never move the bytes already queued.

A ``bytearray`` used as a FIFO (append at the end, ``del buf[:n]`` at the front) copies its whole content
whenever it grows past its 12.5% over-allocation or shrinks below half of it; with megabytes queued, as
in a yamux stream with a 16 MiB window, that is several copies of every byte. :class:`ByteQueue` keeps
the received chunks as they are and copies only what a read returns (nothing when a read takes exactly
one whole chunk); :meth:`ByteQueue.take_view` and :meth:`ByteQueue.extend_frozen` let a yamux frame body
travel from the decrypted Noise message to the stream's queue as a view, copied once when the stream is
read; :meth:`ByteQueue.take_into` copies straight into a caller's buffer (a blob's final bytes).
"""

from __future__ import annotations

from collections import deque


class ByteQueue:
    """FIFO of bytes with ``bytearray``'s ``len``/truth/``extend``/``clear`` and a :meth:`take` read."""

    __slots__ = ("_chunks", "_offset", "_size")

    def __init__(self) -> None:
        self._chunks: deque[bytes | memoryview] = deque()
        self._offset = 0  # bytes of ``self._chunks[0]`` already taken
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (kept as is if it is ``bytes``, so the caller must not mutate it)."""
        if data:
            self._chunks.append(data if type(data) is bytes else bytes(data))
            self._size += len(data)

    def extend_frozen(self, data: bytes | memoryview) -> None:
        """Queue ``data`` without copying it; a memoryview must be a view of immutable ``bytes``."""
        if data:
            self._chunks.append(data)
            self._size += len(data)

    def clear(self) -> None:
        """Drop everything queued."""
        self._chunks.clear()
        self._offset = 0
        self._size = 0

    def take(self, n: int) -> bytes:
        """Remove and return the first ``min(n, len(self))`` bytes."""
        head = self._chunks[0] if self._chunks else b""
        if type(head) is bytes and 0 < n <= len(head) - self._offset:  # the common case, sliced directly
            offset = self._offset
            end = offset + n
            self._size -= n
            if end == len(head):
                self._chunks.popleft()
                self._offset = 0
                return head if offset == 0 else head[offset:]
            self._offset = end
            return head[offset:end]
        data = self.take_view(n)
        return data if type(data) is bytes else bytes(data)

    def take_view(self, n: int) -> bytes | memoryview:
        """Like :meth:`take`, but bytes lying inside one queued chunk come back as a read-only view of it."""
        n = min(n, self._size)
        if n <= 0:
            return b""
        chunks = self._chunks
        self._size -= n
        head, offset = chunks[0], self._offset
        if len(head) - offset >= n:
            if offset == 0 and len(head) == n:
                chunks.popleft()
                return head
            end = offset + n
            if end == len(head):
                chunks.popleft()
                end = 0
            self._offset = end
            return memoryview(head)[offset : offset + n].toreadonly()
        parts = []
        while n:
            head, offset = chunks[0], self._offset
            size = min(n, len(head) - offset)
            parts.append(memoryview(head)[offset : offset + size] if size < len(head) else head)
            n -= size
            if offset + size == len(head):
                chunks.popleft()
                self._offset = 0
            else:
                self._offset = offset + size
        return b"".join(parts)

    def take_into(self, out: memoryview) -> int:
        """Move the first ``min(len(out), len(self))`` bytes into ``out``; return how many.

        One copy per queued chunk, into the caller's buffer: no joined intermediate ``bytes``.
        """
        n = min(len(out), self._size)
        chunks = self._chunks
        done = 0
        while done < n:
            head, offset = chunks[0], self._offset
            size = min(n - done, len(head) - offset)
            out[done : done + size] = memoryview(head)[offset : offset + size]
            done += size
            if offset + size == len(head):
                chunks.popleft()
                self._offset = 0
            else:
                self._offset = offset + size
        self._size -= n
        return n
