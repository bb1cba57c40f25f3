"""NoiseSession against py-libp2p's own Noise session, byte for byte, over an in-memory connection."""

from __future__ import annotations

import os
import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.io.exceptions import DecryptionFailedException, IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession
from noise.connection import Keypair, NoiseConnection  # type: ignore[import-untyped]

from p2p.noise import NoiseSession


class MemoryConn:
    """One direction of a connection: what is written is read back in the chunk sizes given."""

    def __init__(self, chunk_sizes: list[int] | None = None) -> None:
        self.wire = bytearray()
        self.sizes = chunk_sizes or [1 << 20]
        self.reads = 0

    async def write(self, data: bytes) -> None:
        self.wire += data

    async def read(self, n: int | None = None) -> bytes:
        size = self.sizes[self.reads % len(self.sizes)]
        self.reads += 1
        size = min(size, n or size, len(self.wire))
        data = bytes(self.wire[:size])
        del self.wire[:size]
        return data

    async def close(self) -> None:
        pass


def noise_pair() -> tuple[NoiseConnection, NoiseConnection]:
    """Two Noise_XX states that completed the handshake with each other."""
    name = b"Noise_XX_25519_ChaChaPoly_SHA256"
    initiator, responder = NoiseConnection.from_name(name), NoiseConnection.from_name(name)
    initiator.set_as_initiator()
    responder.set_as_responder()
    for state in (initiator, responder):
        state.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
        state.start_handshake()
    responder.read_message(initiator.write_message())
    initiator.read_message(responder.write_message())
    responder.read_message(initiator.write_message())
    return initiator, responder


def stock_session(conn: MemoryConn, state: NoiseConnection) -> SecureSession:
    key_pair = create_new_key_pair()
    peer = ID.from_pubkey(key_pair.public_key)
    return SecureSession(
        local_peer=peer,
        local_private_key=key_pair.private_key,
        remote_peer=peer,
        remote_permanent_pubkey=key_pair.public_key,
        is_initiator=True,
        conn=NoiseTransportReadWriter(conn, state),  # type: ignore[arg-type]
    )


async def read_all(session: SecureSession, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += await session.read(random.Random(len(out)).choice([12, 65_507, 100_000, size]))
    return bytes(out)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 200_000), min_size=1, max_size=6),
    chunks=st.lists(st.integers(1, 300_000), min_size=1, max_size=5),
)
def test_reads_what_py_libp2p_writes_in_any_fragmentation(sizes: list[int], chunks: list[int]) -> None:
    wire = MemoryConn(chunks)
    sender_state, receiver_state = noise_pair()
    sender = stock_session(wire, sender_state)
    receiver = NoiseSession(stock_session(wire, receiver_state))
    payload = os.urandom(sum(sizes))

    async def run() -> bytes:
        start = 0
        for size in sizes:
            await sender.write(payload[start : start + size])
            start += size
        return await read_all(receiver, len(payload))

    assert trio.run(run) == payload


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 200_000), min_size=1, max_size=6))
def test_py_libp2p_reads_what_it_writes(sizes: list[int]) -> None:
    wire = MemoryConn()
    sender_state, receiver_state = noise_pair()
    sender = NoiseSession(stock_session(wire, sender_state))
    receiver = stock_session(wire, receiver_state)
    payload = os.urandom(sum(sizes))

    async def run() -> bytes:
        start = 0
        for index, size in enumerate(sizes):
            piece = payload[start : start + size]
            if index % 2:
                await sender.write(piece)
            else:  # the yamux path: whole frames, one Noise message each
                await sender.write_messages([piece[i : i + 65_519] for i in range(0, len(piece), 65_519)])
            start += size
        return await read_all(receiver, len(payload))

    assert trio.run(run) == payload


def test_a_tampered_message_is_rejected() -> None:
    wire = MemoryConn()
    sender_state, receiver_state = noise_pair()
    sender = stock_session(wire, sender_state)
    receiver = NoiseSession(stock_session(wire, receiver_state))

    async def run() -> None:
        await sender.write(b"x" * 1000)
        wire.wire[500] ^= 1
        await receiver.read(1000)

    with pytest.raises(DecryptionFailedException):
        trio.run(run)


def test_a_connection_closed_inside_a_message_is_an_incomplete_read() -> None:
    wire = MemoryConn()
    sender_state, receiver_state = noise_pair()
    sender = stock_session(wire, sender_state)
    receiver = NoiseSession(stock_session(wire, receiver_state))

    async def run() -> None:
        await sender.write(b"y" * 1000)
        del wire.wire[700:]
        await receiver.read(1000)

    with pytest.raises(IncompleteReadError, match="inside a Noise message"):
        trio.run(run)


def test_a_clean_close_returns_what_was_read_then_raises() -> None:
    wire = MemoryConn()
    sender_state, receiver_state = noise_pair()
    sender = stock_session(wire, sender_state)
    receiver = NoiseSession(stock_session(wire, receiver_state))

    async def run() -> tuple[bytes, BaseException | None]:
        await sender.write(b"z" * 10)
        partial = await receiver.read(20)  # like py-libp2p: what arrived before the end
        try:
            await receiver.read(1)
        except IncompleteReadError as exc:
            return partial, exc
        return partial, None

    partial, error = trio.run(run)
    assert partial == b"z" * 10
    assert isinstance(error, IncompleteReadError) and error.is_clean_close


def test_byte_by_byte_socket_reads_reassemble_every_message() -> None:
    # Each read ends inside a length prefix or a body: the straddling-message path, at its edges.
    wire = MemoryConn([1, 2, 1, 3])
    sender_state, receiver_state = noise_pair()
    sender = stock_session(wire, sender_state)
    receiver = NoiseSession(stock_session(wire, receiver_state))
    pieces = [b"", b"a", os.urandom(300), os.urandom(65_519), os.urandom(70_000)]

    async def run() -> bytes:
        for piece in pieces:
            await sender.write(piece)
        return await read_all(receiver, sum(map(len, pieces)))

    assert trio.run(run) == b"".join(pieces)


def test_the_handshake_cipher_states_stay_in_step_with_the_session() -> None:
    # The session drives the AEAD itself; py-libp2p's CipherState counters must still say what was used.
    wire = MemoryConn()
    sender_state, receiver_state = noise_pair()
    sender = NoiseSession(stock_session(wire, sender_state))
    receiver = NoiseSession(stock_session(wire, receiver_state))

    async def run() -> bytes:
        await sender.write_messages([b"one", memoryview(b"two"), bytearray(b"three")])
        await sender.write(os.urandom(3 * 65_519 + 1))
        return await receiver.read(11)

    assert trio.run(run) == b"onetwothree"
    assert sender_state.noise_protocol.cipher_state_encrypt.n == 7
    assert receiver_state.noise_protocol.cipher_state_decrypt.n == 7
