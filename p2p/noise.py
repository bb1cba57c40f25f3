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

import trio
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.crypto.keys import KeyPair, PrivateKey
from libp2p.io.exceptions import DecryptionFailedException, IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_NOISE_MESSAGE_LEN, MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport
from libp2p.security.secure_session import SecureSession
from noise.state import CipherState  # type: ignore[import-untyped]

from p2p.buffers import ByteQueue

RECV_SIZE = 1 << 18
"""Most bytes asked of the socket per read (several Noise messages)."""
_LENGTH_SIZE = 2


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
        self._encrypter: CipherState = protocol.cipher_state_encrypt
        self._decrypter: CipherState = protocol.cipher_state_decrypt
        self._cipher = bytearray()  # received bytes not yet forming a whole Noise message
        self._plain = ByteQueue()  # decrypted bytes not yet read
        self._write_lock = trio.Lock()
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

    async def _receive(self) -> bool:
        """Read from the socket until one more Noise message is decrypted; ``False`` at a clean end."""
        before = len(self._plain)
        while not self._eof and len(self._plain) == before:
            chunk = await self._raw.read(RECV_SIZE)
            if not chunk:
                self._eof = True
                if self._cipher:
                    raise IncompleteReadError(
                        f"connection closed inside a Noise message ({len(self._cipher)} bytes buffered)",
                        expected_bytes=len(self._cipher) + 1,
                        received_bytes=len(self._cipher),
                    )
                break
            if self._cipher:
                self._cipher += chunk
                self._cipher = bytearray(self._decrypt_complete(self._cipher))
            else:
                self._cipher = bytearray(self._decrypt_complete(chunk))
        return len(self._plain) > before

    def _decrypt_complete(self, data: bytes | bytearray) -> memoryview:
        """Decrypt every whole Noise message at the start of ``data``; return the incomplete rest."""
        decrypt = self._decrypter.decrypt_with_ad
        end = len(data)
        offset = 0
        view = memoryview(data)
        while end - offset >= _LENGTH_SIZE:
            length = (data[offset] << 8) | data[offset + 1]
            start = offset + _LENGTH_SIZE
            if end - start < length:
                break
            try:
                message: bytes = decrypt(None, view[start : start + length])
            except Exception as exc:  # cryptography's InvalidTag: tampered or desynchronised stream
                raise DecryptionFailedException(f"Noise message failed authentication: {exc!r}") from exc
            self._plain.extend(message)
            offset = start + length
        return view[offset:]

    # ---- writing -----------------------------------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Encrypt ``data`` into as few Noise messages as fit and send them with one socket write."""
        async with self._write_lock:  # nonces must reach the wire in the order they were used
            await self._raw.write(self._seal(data))

    async def write_messages(self, messages: list[bytes]) -> None:
        """Send each of ``messages`` (at most :data:`MAX_PLAINTEXT_LENGTH` bytes) as one Noise message."""
        encrypt = self._encrypter.encrypt_with_ad
        async with self._write_lock:
            parts: list[bytes] = []
            for message in messages:
                if len(message) > MAX_PLAINTEXT_LENGTH:
                    raise ValueError(f"Noise message of {len(message)} bytes over {MAX_PLAINTEXT_LENGTH}")
                sealed = encrypt(None, message)
                parts.append(len(sealed).to_bytes(_LENGTH_SIZE, "big"))
                parts.append(sealed)
            await self._raw.write(b"".join(parts))

    def _seal(self, data: bytes) -> bytes:
        encrypt = self._encrypter.encrypt_with_ad
        if len(data) <= MAX_PLAINTEXT_LENGTH:
            sealed: bytes = encrypt(None, data)
            return len(sealed).to_bytes(_LENGTH_SIZE, "big") + sealed
        parts: list[bytes] = []
        with memoryview(data) as view:
            for start in range(0, len(data), MAX_PLAINTEXT_LENGTH):
                sealed = encrypt(None, view[start : start + MAX_PLAINTEXT_LENGTH])
                parts.append(len(sealed).to_bytes(_LENGTH_SIZE, "big"))
                parts.append(sealed)
        return b"".join(parts)


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
