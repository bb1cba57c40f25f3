"""Our Noise sessions and yamux muxer against themselves and against stock py-libp2p, over real loopback TCP.

Two hosts run in one trio loop. The stock host is built the way py-libp2p builds one (its Noise
``SecureSession`` and its own ``Yamux``), so a transfer between it and ``build_host`` shows that the wire
format did not change: what we send, an unmodified libp2p peer reads, and the other way round.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.secp256k1 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as StockNoise
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p.blob import read_exactly_into
from p2p.errors import BlobProtocolError
from p2p.host import build_host
from p2p.noise import NoiseSession
from p2p.yamux import FastYamux

pytestmark = pytest.mark.integration
LOOPBACK = "/ip4/127.0.0.1/tcp/0"
ECHO = TProtocol("/fedchain/test/echo/1.0.0")
SINK = TProtocol("/fedchain/test/sink/1.0.0")


def stock_host() -> IHost:
    key_pair = create_new_key_pair()
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: StockNoise(key_pair, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[multiaddr.Multiaddr(LOOPBACK)],
        enable_mDNS=False,
    )


def fast_host() -> IHost:
    return build_host(create_new_key_pair(), LOOPBACK)


@asynccontextmanager
async def connected(server: IHost, client: IHost) -> AsyncIterator[None]:
    listen = [multiaddr.Multiaddr(LOOPBACK)]
    async with server.run(listen_addrs=listen), client.run(listen_addrs=listen):
        addr = f"{server.get_addrs()[0]}/p2p/{server.get_id().to_base58()}"
        await client.connect(info_from_p2p_addr(multiaddr.Multiaddr(addr)))
        yield


async def read_exactly(stream: INetStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(min(n - len(buf), 300_000))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


async def echo(stream: INetStream) -> None:
    """Read a 4-byte length, then that many bytes, and write them back in uneven pieces."""
    size = int.from_bytes(await read_exactly(stream, 4), "big")
    data = await read_exactly(stream, size)
    rng = random.Random(size)
    start = 0
    while start < len(data):
        end = start + rng.choice([1, 17, 65_507, 65_536, 200_000, 1 << 20])
        await stream.write(data[start:end])
        start = end
    await stream.close()


async def round_trip(client: IHost, server: IHost, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    stream = await client.new_stream(server.get_id(), [ECHO])
    await stream.write(size.to_bytes(4, "big") + data)
    back = await read_exactly(stream, size)
    await stream.close()
    assert back == data, f"echo of {size} bytes came back as {len(back)} different bytes"
    return back


def run(test: Callable[[], Awaitable[None]], limit: float = 120) -> None:
    async def bounded() -> None:
        with trio.fail_after(limit):
            await test()

    trio.run(bounded)


@pytest.mark.parametrize(
    ("make_server", "make_client"),
    [(stock_host, fast_host), (fast_host, stock_host)],
    ids=["fast-client-to-stock-server", "stock-client-to-fast-server"],
)
def test_interoperates_with_stock_py_libp2p(
    make_server: Callable[[], IHost], make_client: Callable[[], IHost]
) -> None:
    server, client = make_server(), make_client()
    server.set_stream_handler(ECHO, echo)

    async def test() -> None:
        async with connected(server, client):
            for seed, size in enumerate([0, 1, 65_507, 65_519, 3 << 20]):
                await round_trip(client, server, size, seed)

    run(test)


def test_fast_hosts_use_the_fast_session_and_muxer() -> None:
    server, client = fast_host(), fast_host()
    server.set_stream_handler(ECHO, echo)

    async def test() -> None:
        async with connected(server, client):
            await round_trip(client, server, 10, 0)
            for host in (server, client):
                (conn,) = host.get_network().get_connections((client if host is server else server).get_id())
                muxed = conn.muxed_conn
                assert isinstance(muxed, FastYamux)
                assert isinstance(muxed.secured_conn, NoiseSession)

    run(test)


def test_stock_hosts_are_what_the_interop_test_compares_against() -> None:
    server, client = stock_host(), stock_host()
    server.set_stream_handler(ECHO, echo)

    async def test() -> None:
        async with connected(server, client):
            await round_trip(client, server, 10, 0)
            (conn,) = client.get_network().get_connections(server.get_id())
            assert type(conn.muxed_conn) is Yamux
            assert type(conn.muxed_conn.secured_conn) is SecureSession

    run(test)


def test_parallel_streams_past_the_window_keep_their_bytes_apart() -> None:
    """Several 20 MiB streams at once, each past the 16 MiB window, with a slow reader on one of them."""
    server, client = fast_host(), fast_host()
    size = 20 << 20
    received: dict[int, bytes] = {}

    async def sink(stream: INetStream) -> None:
        index = int.from_bytes(await read_exactly(stream, 1), "big")
        if index == 0:
            await trio.sleep(0.5)  # the writer must wait for window, then resume
        received[index] = await read_exactly(stream, size)
        await stream.write(b"ok")
        await stream.close()

    server.set_stream_handler(SINK, sink)
    payloads = [random.Random(i).randbytes(size) for i in range(3)]

    async def send(index: int) -> None:
        stream = await client.new_stream(server.get_id(), [SINK])
        await stream.write(bytes([index]) + payloads[index])
        assert await read_exactly(stream, 2) == b"ok"
        await stream.close()

    async def test() -> None:
        async with connected(server, client), trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(send, index)

    run(test)
    assert sorted(received) == [0, 1, 2]
    for index, payload in enumerate(payloads):
        assert received[index] == payload, f"stream {index} delivered different bytes"


@pytest.mark.parametrize("make_server", [fast_host, stock_host], ids=["fast-sender", "stock-sender"])
def test_blob_reads_fill_a_buffer_in_place_and_report_short_streams(
    make_server: Callable[[], IHost],
) -> None:
    """``read_exactly_into`` (the blob fetcher's read) over the fast muxer: exact bytes, then a clean error.

    The sender writes in uneven pieces from a host of either kind; the reader is always a fast host, so its
    stream is a ``FastYamuxStream`` and the bytes go from the decrypted frames straight into the buffer.
    """
    server, client = make_server(), fast_host()
    server.set_stream_handler(ECHO, echo)
    size = (3 << 20) + 12_345

    async def test() -> None:
        async with connected(server, client):
            data = random.Random(7).randbytes(size)
            stream = await client.new_stream(server.get_id(), [ECHO])
            await stream.write(size.to_bytes(4, "big") + data)
            out = bytearray(b"\x01" * (size + 3))
            await read_exactly_into(stream, memoryview(out)[:size])
            assert out[:size] == data and out[size:] == b"\x01" * 3
            with pytest.raises(BlobProtocolError, match="stream ended after 0 of 10 bytes"):
                await read_exactly_into(stream, memoryview(bytearray(10)))  # the echo closed its side
            await stream.close()

    run(test)
