from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from p2p.direct import encode_request, read_request
from p2p.errors import BlobProtocolError, MessageError
from p2p.messages import MAX_MESSAGE_BYTES
from tests.unit.p2p.test_blob import PipeStream


def test_a_framed_message_reads_back_whole() -> None:
    data = b'{"v":1}' * 10

    async def main() -> bytes:
        left, right = trio.testing.memory_stream_pair()
        await PipeStream(left).write(encode_request(data))
        return await read_request(PipeStream(right))

    assert trio.run(main) == data


@pytest.mark.parametrize("size", [0, MAX_MESSAGE_BYTES + 1])
def test_an_empty_or_oversized_message_is_not_framed(size: int) -> None:
    with pytest.raises(MessageError, match=f"1..{MAX_MESSAGE_BYTES} bytes, got {size}"):
        encode_request(b"x" * size)


def test_an_oversized_length_is_refused_before_the_body_is_read() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        await PipeStream(left).write(struct.pack(">H", MAX_MESSAGE_BYTES + 1))  # and no body at all
        await read_request(PipeStream(right))

    with pytest.raises(BlobProtocolError, match=f"length {MAX_MESSAGE_BYTES + 1} not in"):
        trio.run(main)


def test_a_short_stream_is_an_error() -> None:
    async def main() -> None:
        left, right = trio.testing.memory_stream_pair()
        await PipeStream(left).write(struct.pack(">H", 10) + b"abc")
        await left.aclose()
        await read_request(PipeStream(right))

    with pytest.raises(BlobProtocolError, match="stream ended after 3 of 10 bytes"):
        trio.run(main)
