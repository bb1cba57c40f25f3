"""Noise transport sessions that move bulk data in large socket reads and writes (same wire format).

py-libp2p's Noise session (``SecureSession`` over ``NoiseTransportReadWriter``) handles every Noise message
on its own: each one costs two ``read_exactly`` calls down through three wrappers and a lock to the socket
(a 2-byte length, then the body), a ``BytesIO`` refill, and on the way out a separate socket write per
message. A yamux frame of 64 KiB does not fit one Noise message (65519 bytes of plaintext at most), so it
also becomes two messages and two writes. At tens of microseconds per step that caps a stream at tens of
MB/s whatever the cipher can do (ChaCha20-Poly1305 runs at ~1 GB/s here).

:class:`NoiseSession` keeps the handshake (py-libp2p's XX pattern, unchanged) and replaces only the
transport phase: it reads the socket in chunks of up to :data:`RECV_SIZE`, decrypts every complete Noise
message in them into one plaintext buffer, and encrypts a whole write (a batch of yamux frames) into
consecutive Noise messages sent with one socket write. The bytes on the wire are exactly what any libp2p
Noise implementation sends and expects: ``u16 length | ChaCha20-Poly1305 ciphertext`` with the counter
nonce, at most 65535 bytes per message.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.crypto.keys import KeyPair, PrivateKey
from libp2p.io.exceptions import DecryptionFailedException, IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_NOISE_MESSAGE_LEN, MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport
from libp2p.security.secure_session import SecureSession
from noise.exceptions import NoiseMaxNonceError  # type: ignore[import-untyped]
from noise.state import CipherState  # type: ignore[import-untyped]

from p2p.buffers import ByteQueue

Message = bytes | bytearray | memoryview
"""Plaintext of one Noise message."""
RECV_SIZE = 1 << 18
"""Most bytes asked of the socket per read (several Noise messages)."""
_LENGTH_SIZE = 2
_TAG_SIZE = MAX_NOISE_MESSAGE_LEN - MAX_PLAINTEXT_LENGTH
_NONCE_PREFIX = bytes(4)
_MAX_NONCE = (1 << 64) - 1  # the Noise spec reserves 2^64-1


class Traffic:
    """Ciphertext bytes this process read from and wrote to the sockets of all its Noise sessions."""

    received: int = 0
    sent: int = 0


TRAFFIC = Traffic()
"""The process's totals (``bench/gossip_abuse.py`` reads them through ``peer_process``'s ``stats``)."""


class _Direction:
    """One direction's ChaCha20-Poly1305 key and counter nonce, used directly (no per-message wrappers).

    ``noise.state.CipherState`` costs three Python calls and a nonce formatting per message; this calls
    ``cryptography``'s AEAD once per message, and can write ciphertext straight into a caller's buffer.
    """

    __slots__ = ("aead", "nonce", "state")

    def __init__(self, state: CipherState) -> None:
        aead = getattr(state.cipher, "cipher", None)
        if not isinstance(aead, ChaCha20Poly1305):
            raise TypeError(f"expected a ChaChaPoly Noise cipher, got {type(aead).__name__}")
        self.aead = aead
        self.state = state  # kept in step, so the CipherState still tells the truth
        self.nonce: int = state.n

    def claim(self, count: int) -> int:
        """Reserve ``count`` consecutive nonces; return the first."""
        first = self.nonce
        if first + count >= _MAX_NONCE:
            raise NoiseMaxNonceError("Noise nonce space exhausted; the connection must be re-established")
        self.nonce = self.state.n = first + count
        return first


def _nonce(n: int) -> bytes:
    return _NONCE_PREFIX + n.to_bytes(8, "little")


def seal_messages(
    aead: ChaCha20Poly1305, first_nonce: int, messages: Sequence[Message], out: bytearray
) -> memoryview:
    """Encrypt each message (nonces from ``first_nonce`` on) as ``u16 length | ciphertext`` into ``out``.

    ``out`` is grown if it is too small (never shrunk); returns a view of the bytes written.
    """
    size = sum(len(m) for m in messages) + len(messages) * (_LENGTH_SIZE + _TAG_SIZE)
    if len(out) < size:
        out.extend(bytes(size - len(out)))
    view = memoryview(out)
    pos = 0
    encrypt_into = aead.encrypt_into
    for n, message in enumerate(messages, first_nonce):
        sealed_size = len(message) + _TAG_SIZE
        out[pos] = sealed_size >> 8
        out[pos + 1] = sealed_size & 0xFF
        pos += _LENGTH_SIZE
        encrypt_into(_NONCE_PREFIX + n.to_bytes(8, "little"), message, None, view[pos : pos + sealed_size])
        pos += sealed_size
    return view[:size]


class NoiseSession(SecureSession):
    """The transport phase of a Noise session, buffered (drop-in for py-libp2p's ``SecureSession``).

    Parameters
    ----------
    session
        The session py-libp2p's handshake returned; its keys, peer ids and cipher states are taken over.
    """

    def __init__(self, session: SecureSession) -> None:
        rw = session.conn
        if not isinstance(rw, NoiseTransportReadWriter):
            raise TypeError(f"expected a Noise transport session, got {type(rw).__name__}")
        super().__init__(
            local_peer=session.local_peer,
            local_private_key=session.local_private_key,
            remote_peer=session.remote_peer,
            remote_permanent_pubkey=session.remote_permanent_pubkey,
            is_initiator=session.is_initiator,
            conn=rw,
        )
        self._raw: IRawConnection = rw.read_writer.read_write_closer  # type: ignore[assignment]
        protocol = rw.noise_state.noise_protocol
        self._encrypter = _Direction(protocol.cipher_state_encrypt)
        self._decrypter = _Direction(protocol.cipher_state_decrypt)
        self._cipher = bytearray()  # received bytes of a Noise message not yet complete
        self._plain = ByteQueue()  # decrypted bytes not yet read
        self._write_lock = trio.Lock()
        self._scratch = bytearray()  # ciphertext of the write in progress (reused, see write_messages)
        self._eof = False

    # ---- reading -----------------------------------------------------------------------------------------

    async def read(self, n: int | None = None) -> bytes:
        """Read ``n`` bytes (fewer only at end of stream), or with ``n=None`` whatever is decrypted."""
        if n == 0:
            return b""
        want = 1 if n is None else n
        while len(self._plain) < want and await self._receive():
            pass
        if not self._plain:
            raise IncompleteReadError(
                f"Noise session closed by the peer (wanted {want} bytes)", expected_bytes=want
            )
        return self._plain.take(len(self._plain) if n is None else n)

    def read_buffered(self, n: int) -> bytes | None:
        """Return the next ``n`` bytes if they are already decrypted, else ``None`` (reads nothing)."""
        return self._plain.take(n) if len(self._plain) >= n else None

    def read_buffered_view(self, n: int) -> bytes | memoryview | None:
        """Like :meth:`read_buffered`, but a read-only view when the bytes lie in one decrypted message."""
        return self._plain.take_view(n) if len(self._plain) >= n else None

    async def _receive(self) -> bool:
        """Read from the socket until one more Noise message is decrypted; ``False`` at a clean end."""
        before = len(self._plain)
        while not self._eof and len(self._plain) == before:
            chunk = await self._raw.read(RECV_SIZE)
            TRAFFIC.received += len(chunk)
            if not chunk:
                self._eof = True
                if self._cipher:
                    raise IncompleteReadError(
                        f"connection closed inside a Noise message ({len(self._cipher)} bytes buffered)",
                        expected_bytes=len(self._cipher) + 1,
                        received_bytes=len(self._cipher),
                    )
                break
            self._absorb(chunk)
        return len(self._plain) > before

    def _absorb(self, chunk: bytes) -> None:
        """Decrypt every Noise message that ``chunk`` completes; keep an incomplete tail for the next."""
        with memoryview(chunk) as view:
            offset = self._complete_pending(view)
            end = len(chunk)
            decrypt = self._decrypt
            while end - offset >= _LENGTH_SIZE:
                length = (chunk[offset] << 8) | chunk[offset + 1]
                start = offset + _LENGTH_SIZE
                if end - start < length:
                    break
                decrypt(view[start : start + length])
                offset = start + length
            if offset < end:
                self._cipher += view[offset:]  # less than one message: the only bytes copied here

    def _complete_pending(self, view: memoryview) -> int:
        """Finish the message begun in an earlier chunk with the head of ``view``; return bytes used."""
        pending = self._cipher
        if not pending:
            return 0
        used = 0
        if len(pending) < _LENGTH_SIZE:
            used = min(_LENGTH_SIZE - len(pending), len(view))
            pending += view[:used]
            if len(pending) < _LENGTH_SIZE:
                return used
        need = _LENGTH_SIZE + ((pending[0] << 8) | pending[1]) - len(pending)
        take = min(need, len(view) - used)
        pending += view[used : used + take]
        if take == need:
            self._decrypt(memoryview(pending)[_LENGTH_SIZE:])
            self._cipher = bytearray()
        return used + take

    def _decrypt(self, message: memoryview) -> None:
        direction = self._decrypter
        n = direction.nonce
        if n >= _MAX_NONCE:
            raise NoiseMaxNonceError("Noise nonce space exhausted; the connection must be re-established")
        try:
            plain = direction.aead.decrypt(_nonce(n), message, None)
        except Exception as exc:  # cryptography's InvalidTag: tampered or desynchronised stream
            raise DecryptionFailedException(f"Noise message failed authentication: {exc!r}") from exc
        direction.nonce = direction.state.n = n + 1
        self._plain.extend(plain)

    # ---- writing -----------------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Encrypt ``data`` into as few Noise messages as fit and send them with one socket write."""
        if len(data) <= MAX_PLAINTEXT_LENGTH:
            await self.write_messages([data])
            return
        with memoryview(data) as view:
            step = MAX_PLAINTEXT_LENGTH
            await self.write_messages([view[i : i + step] for i in range(0, len(data), step)])

    async def write_messages(self, messages: Sequence[Message]) -> None:
        """Send each of ``messages`` (at most :data:`MAX_PLAINTEXT_LENGTH` bytes) as one Noise message."""
        for message in messages:
            if len(message) > MAX_PLAINTEXT_LENGTH:
                raise ValueError(f"Noise message of {len(message)} bytes over {MAX_PLAINTEXT_LENGTH}")
        async with self._write_lock:  # nonces must reach the wire in the order they were used
            first = self._encrypter.claim(len(messages))
            # The scratch buffer is reused: the socket write below has taken every byte when it returns.
            with seal_messages(self._encrypter.aead, first, messages, self._scratch) as sealed:
                await self._raw.write(sealed)  # type: ignore[arg-type]
                TRAFFIC.sent += len(sealed)


if MAX_NOISE_MESSAGE_LEN != MAX_PLAINTEXT_LENGTH + 16:  # pragma: no cover - guards a py-libp2p upgrade
    raise ImportError("py-libp2p changed its Noise message limits; review p2p.noise")


class NoiseTransport(Transport):
    """py-libp2p's Noise transport (XX handshake, unchanged) whose sessions are :class:`NoiseSession`."""

    def __init__(self, libp2p_keypair: KeyPair, noise_privkey: PrivateKey) -> None:
        super().__init__(libp2p_keypair, noise_privkey)

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        """Run the responder handshake, then return a buffered session."""
        return _buffered(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        """Run the initiator handshake, then return a buffered session."""
        return _buffered(await super().secure_outbound(conn, peer_id))


def _buffered(session: ISecureConn) -> ISecureConn:
    if isinstance(session, SecureSession) and isinstance(session.conn, NoiseTransportReadWriter):
        return NoiseSession(session)
    return session
