"""Fuzzing the storage decoders: random and mutated input never crashes, only raises InvalidCidError."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.storage.cid import compute_cid, normalize_cid, parse_cid
from p2p.storage.errors import CidMismatchError, InvalidCidError
from p2p.storage.local import LocalStore

VALID = [
    compute_cid(b""),
    compute_cid(b"x" * 300000),
    "zdj7Wi8XgFBnZaY2a128utK7Kf9NRjzYCGeHcdvS4Rbx4AJdA",
    "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
]
CID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567ABCDEFGHJKLMNPQRSTUVWXYZ0189Qmz!/ \x00é"


def _check(text: str) -> None:
    """The decoder's contract: a canonical round trip, or InvalidCidError — nothing else."""
    try:
        info = parse_cid(text)
    except InvalidCidError:
        return
    canonical = info.to_cid()
    assert parse_cid(canonical).digest == info.digest
    assert normalize_cid(canonical) == canonical


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_random_text(text: str) -> None:
    _check(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=CID_ALPHABET, max_size=70))
def test_random_text_from_cid_alphabets(text: str) -> None:
    _check(text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(["b", "B", "z"]))
def test_random_bytes_under_a_valid_multibase(raw: bytes, prefix: str) -> None:
    body = base64.b32encode(raw).decode().rstrip("=")
    _check(prefix + (body.lower() if prefix == "b" else body))


@settings(max_examples=800, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete"]),
            st.integers(0, 80),
            st.sampled_from(CID_ALPHABET),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_cids(cid: str, edits: list[tuple[str, int, str]]) -> None:
    text = cid
    for op, pos, ch in edits:
        pos = pos % (len(text) + 1)
        if op == "replace" and pos < len(text):
            text = text[:pos] + ch + text[pos + 1 :]
        elif op == "insert":
            text = text[:pos] + ch + text[pos:]
        elif op == "delete" and pos < len(text):
            text = text[:pos] + text[pos + 1 :]
    _check(text)


@settings(max_examples=150, deadline=None)
@given(content=st.binary(max_size=2048), garbage=st.binary(max_size=2048))
def test_local_get_of_garbage_on_disk_raises_mismatch(content: bytes, garbage: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp))
        cid = store.put(content)
        (Path(tmp) / "blobs" / cid).write_bytes(garbage)
        if garbage == content:
            assert store.get(cid) == content
        else:
            try:
                store.get(cid)
            except CidMismatchError:
                return
            raise AssertionError("garbage was returned as content")
