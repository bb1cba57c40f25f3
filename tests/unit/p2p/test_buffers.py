"""ByteQueue behaves like a bytearray used as a FIFO."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2p.buffers import ByteQueue

operations = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.binary(max_size=300)),
        st.tuples(st.just("take"), st.integers(-2, 400)),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=60,
)


@given(operations)
def test_matches_a_bytearray_fifo(ops: list[tuple[str, object]]) -> None:
    queue, reference = ByteQueue(), bytearray()
    for op, arg in ops:
        if op == "extend":
            assert isinstance(arg, bytes)
            queue.extend(arg)
            reference += arg
        elif op == "take":
            assert isinstance(arg, int)
            n = max(arg, 0)
            expected = bytes(reference[:n])
            del reference[:n]
            got = queue.take(arg)
            assert got == expected and type(got) is bytes
        else:
            queue.clear()
            reference.clear()
        assert len(queue) == len(reference)
        assert bool(queue) == bool(reference)


def test_a_whole_chunk_is_returned_without_a_copy() -> None:
    queue = ByteQueue()
    chunk = bytes(range(200))
    queue.extend(chunk)
    assert queue.take(200) is chunk


def test_bytearray_input_is_copied() -> None:
    queue = ByteQueue()
    data = bytearray(b"abc")
    queue.extend(data)
    data[0] = ord("x")
    assert queue.take(3) == b"abc"


view_operations = st.lists(
    st.one_of(
        st.tuples(st.just("extend"), st.binary(max_size=300)),
        st.tuples(st.just("extend_frozen"), st.binary(max_size=300)),
        st.tuples(st.just("take"), st.integers(-2, 400)),
        st.tuples(st.just("take_view"), st.integers(-2, 400)),
        st.tuples(st.just("take_into"), st.integers(0, 400)),
    ),
    max_size=60,
)


@given(view_operations)
def test_views_in_and_out_match_a_bytearray_fifo(ops: list[tuple[str, object]]) -> None:
    queue, reference = ByteQueue(), bytearray()
    for op, arg in ops:
        if isinstance(arg, bytes):
            if op == "extend":
                queue.extend(arg)
            else:  # a view into a larger immutable message, as yamux queues frame bodies
                message = b"hdr" + arg + b"tail"
                queue.extend_frozen(memoryview(message)[3 : 3 + len(arg)])
            reference += arg
        else:
            assert isinstance(arg, int)
            n = max(arg, 0)
            expected = bytes(reference[:n])
            del reference[:n]
            if op == "take_into":  # into a larger buffer: nothing past the bytes taken may be written
                out = bytearray(b"\xee" * (arg + 5))
                count = queue.take_into(memoryview(out)[:arg])
                assert count == len(expected) and out[:count] == expected
                assert out[count:] == b"\xee" * (len(out) - count)
            else:
                got = queue.take(arg) if op == "take" else queue.take_view(arg)
                assert bytes(got) == expected
                assert type(got) is bytes if op == "take" else (isinstance(got, bytes) or got.readonly)
        assert len(queue) == len(reference)


def test_a_view_taken_from_one_chunk_is_not_a_copy() -> None:
    queue = ByteQueue()
    message = bytes(range(100))
    queue.extend(message)
    queue.take(12)
    body = queue.take_view(50)
    assert isinstance(body, memoryview) and body.obj is message and body.readonly
