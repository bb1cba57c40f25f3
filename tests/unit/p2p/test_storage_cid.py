"""CID scheme: hand-computed blocks, daemon-observed vectors, parsing and verification."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.errors import StorageError
from p2p.storage.cid import (
    CHUNK_SIZE,
    CODEC_DAG_PB,
    CODEC_RAW,
    CidBuilder,
    compute_cid,
    compute_file_cid,
    normalize_cid,
    parse_cid,
    verify,
    verify_file,
)
from p2p.storage.errors import CidMismatchError, InvalidCidError

EMPTY_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def _varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([value & 0x7F | 0x80])
        value >>= 7
    return out + bytes([value])


def test_empty_content_is_the_raw_block_of_no_bytes() -> None:
    # The CID `ipfs add --cid-version=1` and js-ipfs 0.66 both print for an empty file.
    assert compute_cid(b"") == EMPTY_CID
    info = parse_cid(EMPTY_CID)
    assert (info.version, info.codec) == (1, CODEC_RAW)
    assert info.digest == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", [1, 1000, CHUNK_SIZE - 1, CHUNK_SIZE])
def test_content_of_one_chunk_is_a_single_raw_block(size: int) -> None:
    data = random.Random(size).randbytes(size)

    info = parse_cid(compute_cid(data))

    assert info.codec == CODEC_RAW
    assert info.digest == hashlib.sha256(data).digest()


def test_two_chunks_make_a_dag_pb_file_node_laid_out_by_hand() -> None:
    data = random.Random(7).randbytes(CHUNK_SIZE + 5)
    leaves = [data[:CHUNK_SIZE], data[CHUNK_SIZE:]]
    # Built from the dag-pb and UnixFS protobuf definitions, byte by byte.
    links = b""
    for leaf in leaves:
        leaf_cid = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(leaf).digest()
        link = b"\x0a\x24" + leaf_cid + b"\x12\x00" + b"\x18" + _varint(len(leaf))
        links += b"\x12" + _varint(len(link)) + link
    unixfs = b"\x08\x02" + b"\x18" + _varint(len(data)) + b"".join(b"\x20" + _varint(len(x)) for x in leaves)
    block = links + b"\x0a" + _varint(len(unixfs)) + unixfs

    info = parse_cid(compute_cid(data))

    assert info.codec == CODEC_DAG_PB
    assert info.digest == hashlib.sha256(block).digest()


def test_known_vector_from_js_ipfs() -> None:
    # js-ipfs 0.66.1: add(cid_version=1, raw_leaves=True) of 300000 bytes of "x" (two leaves).
    assert compute_cid(b"x" * 300000) == "bafybeiczojrotetz36tnisrtel54lpisc6ga37siyi7lad7oaev2ht2pqq"


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 10),
    cuts=st.lists(st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 10), max_size=6),
)
def test_builder_fed_in_any_pieces_matches_compute_cid(size: int, cuts: list[int]) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    builder = CidBuilder()
    bounds = sorted({0, size, *(c for c in cuts if c <= size)})
    for start, end in zip(bounds, bounds[1:], strict=False):
        builder.update(data[start:end])

    assert builder.finish() == compute_cid(data)
    assert builder.size == size


def test_file_cid_matches_in_memory_cid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = random.Random(3).randbytes(2 * CHUNK_SIZE + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)

    assert compute_file_cid(path) == compute_cid(data)
    verify_file(compute_cid(data), path)


def test_normalize_reads_base58_and_cidv0_forms() -> None:
    # js-ipfs prints both forms of one add: Name (base32) and Hash (base58btc).
    assert (
        normalize_cid("zdj7Wi8XgFBnZaY2a128utK7Kf9NRjzYCGeHcdvS4Rbx4AJdA")
        == "bafybeif4wtnx6oeefxg56j6wrppiycfvpenghuimh6673h72nqtkevfbbu"
    )
    # The empty UnixFS directory, CIDv0 and CIDv1.
    assert (
        normalize_cid("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")
        == "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    )
    assert normalize_cid(EMPTY_CID.upper()) == EMPTY_CID  # multibase "B": upper-case base32


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "1.."),
        ("nonsense", "multibase prefix"),
        ("b!!!!", "base32"),
        ("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", "codec"),  # dag-cbor
        ("bafkqaaa", "multihash"),  # identity hash of no bytes
        (EMPTY_CID[:-8], "digest"),
        ("bAFKreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "mixes"),
        ("Qm" + "1" * 44, "sha2-256"),
        ("z" + "0OIl", "base58"),
        ("x" * 300, "1.."),
    ],
)
def test_parse_rejects_with_a_message_naming_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(InvalidCidError, match=fragment) as caught:
        parse_cid(text)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, StorageError)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidCidError, match="string"):
        parse_cid(b"bafk")  # type: ignore[arg-type]


def test_verify_accepts_the_content_and_names_both_cids_on_mismatch() -> None:
    data = b"model update"
    cid = compute_cid(data)
    verify(cid, data)

    with pytest.raises(CidMismatchError) as caught:
        verify(cid, data + b"!")

    assert cid in str(caught.value) and compute_cid(data + b"!") in str(caught.value)
