"""The confidential-artifact envelope: round trips, every kind of bad input, and a fuzzed parser."""

from __future__ import annotations

import hashlib
import os
import struct

import coincurve
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2p.envelope import (
    MAX_READERS,
    WRAP_BYTES,
    CommitmentError,
    EnvelopeFormatError,
    MissingWrapError,
    TamperedError,
    WrongKeyError,
    _seal,
    is_envelope,
    open_envelope,
    parse,
    public_key_bytes,
    public_key_of,
    seal,
)
from p2p.errors import EnvelopeError, P2PError


def _key(i: int) -> bytes:
    return hashlib.sha256(f"reader {i}".encode()).digest()


READERS = [_key(i) for i in range(3)]
PUBLIC = [public_key_of(k) for k in READERS]
PLAIN = os.urandom(3000)


def test_round_trip_for_every_reader() -> None:
    env = seal(PLAIN, PUBLIC, label="update r1")
    for key in READERS:
        assert open_envelope(env, key, label="update r1") == PLAIN
    parsed = parse(env)
    assert parsed.readers == tuple(sorted(PUBLIC))
    assert parsed.plaintext_sha256 == hashlib.sha256(PLAIN).digest()
    assert PLAIN not in env and len(env) == len(PLAIN) + len(parsed.header) + 16
    assert is_envelope(env) and not is_envelope(PLAIN[:0] + b"\x10\x00\x00\x00\x00\x00\x00\x00{")


def test_public_keys_in_any_encoding_name_the_same_reader() -> None:
    uncompressed = coincurve.PrivateKey(READERS[0]).public_key.format(compressed=False)
    for form in (uncompressed, uncompressed.hex(), "0x" + PUBLIC[0].hex(), PUBLIC[0]):
        assert public_key_bytes(form) == PUBLIC[0]
    env = seal(b"x", [uncompressed, PUBLIC[0].hex()])
    assert parse(env).readers == (PUBLIC[0],)


def test_fresh_encryption_differs_deterministic_repeats() -> None:
    assert seal(PLAIN, PUBLIC) != seal(PLAIN, PUBLIC)
    one = seal(PLAIN, PUBLIC, label="merged", deterministic=True)
    assert one == seal(PLAIN, list(reversed(PUBLIC)), label="merged", deterministic=True)
    assert one != seal(PLAIN, PUBLIC, label="merged 2", deterministic=True)
    assert open_envelope(one, READERS[2]) == PLAIN


def test_non_reader_key_finds_no_wrap() -> None:
    env = seal(PLAIN, PUBLIC[:2])
    with pytest.raises(MissingWrapError, match="no wrapped key"):
        open_envelope(env, READERS[2])


def test_wrong_key_in_a_readers_slot_is_refused() -> None:
    # A wrap addressed to reader 0 but made for another key: reader 0 cannot unwrap it.
    env = bytearray(seal(PLAIN, [PUBLIC[1]]))
    start = parse(bytes(env)).header.index(PUBLIC[1])
    env[start : start + 33] = PUBLIC[0]
    with pytest.raises(WrongKeyError, match="does not open"):
        open_envelope(bytes(env), READERS[0])


def test_every_tampered_byte_is_caught() -> None:
    env = seal(b"small plaintext", PUBLIC[:2], label="lbl")
    for i in range(len(env)):
        bad = bytearray(env)
        bad[i] ^= 0x01
        with pytest.raises(EnvelopeError):
            open_envelope(bytes(bad), READERS[0], label="lbl")


def test_tampered_payload_and_header_name_authentication() -> None:
    env = bytearray(seal(PLAIN, PUBLIC))
    env[-1] ^= 0x80
    with pytest.raises(TamperedError, match="authentication"):
        open_envelope(bytes(env), READERS[0])
    env = bytearray(seal(PLAIN, PUBLIC))
    header = parse(bytes(env)).header
    env[len(header) - 1] ^= 0x80  # last byte of the commitment: bound as associated data
    with pytest.raises(TamperedError):
        open_envelope(bytes(env), READERS[0])


def test_truncated_anywhere_is_refused() -> None:
    env = seal(PLAIN[:50], PUBLIC[:1])
    for n in range(len(env)):
        with pytest.raises(EnvelopeError):
            open_envelope(env[:n], READERS[0])


def test_wrong_commitment_is_caught_after_decryption() -> None:
    env = _seal(PLAIN, sorted(PUBLIC), b"", hashlib.sha256(b"other").digest(), False)
    with pytest.raises(CommitmentError, match="commits to"):
        open_envelope(env, READERS[0])


def test_oversized_and_malformed_headers() -> None:
    env = seal(PLAIN, PUBLIC)
    with pytest.raises(EnvelopeFormatError, match="over the 100-byte cap"):
        parse(env, max_size=100)
    too_many = b"FCENV" + struct.pack(">BBH", 1, 1, 0) + struct.pack(">H", MAX_READERS + 1)
    with pytest.raises(EnvelopeFormatError, match="readers, allowed"):
        parse(too_many + bytes(WRAP_BYTES * 2))
    with pytest.raises(EnvelopeFormatError, match="label is 300 bytes"):
        parse(b"FCENV" + struct.pack(">BBH", 1, 1, 300) + bytes(400))
    with pytest.raises(EnvelopeFormatError, match="version 2"):
        parse(b"FCENV" + struct.pack(">BBH", 2, 1, 0) + bytes(400))
    with pytest.raises(EnvelopeFormatError, match="suite 9"):
        parse(b"FCENV" + struct.pack(">BBH", 1, 9, 0) + bytes(400))
    with pytest.raises(EnvelopeFormatError, match="bad magic"):
        parse(b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + bytes(400))
    with pytest.raises(EnvelopeFormatError, match="labelled"):
        open_envelope(env, READERS[0], label="something else")


def test_duplicate_reader_and_bad_point_are_refused() -> None:
    env = seal(b"p", PUBLIC[:2])
    header = parse(env).header
    start = header.index(sorted(PUBLIC[:2])[0])
    dup = bytearray(env)
    dup[start + WRAP_BYTES : start + WRAP_BYTES + 33] = dup[start : start + 33]
    with pytest.raises(EnvelopeFormatError, match="twice"):
        parse(bytes(dup))
    bad = bytearray(env)
    bad[start + 33] = 0x07
    with pytest.raises(EnvelopeFormatError, match="ephemeral key is not a compressed"):
        parse(bytes(bad))


def test_bad_arguments_to_seal() -> None:
    with pytest.raises(EnvelopeError, match="1..1024 readers"):
        seal(b"x", [])
    with pytest.raises(EnvelopeFormatError, match="33 or 65 bytes"):
        seal(b"x", [b"\x02" * 20])
    with pytest.raises(EnvelopeFormatError, match="not hex"):
        seal(b"x", ["0xzz"])
    with pytest.raises(EnvelopeError, match="label"):
        seal(b"x", PUBLIC, label="x" * 300)
    with pytest.raises(EnvelopeError, match="32 bytes"):
        open_envelope(seal(b"x", PUBLIC), b"short")
    assert issubclass(EnvelopeError, P2PError) and issubclass(EnvelopeError, ValueError)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_parser_raises_only_envelope_errors(data: bytes) -> None:
    for blob in (data, b"FCENV\x01\x01" + data):
        with pytest.raises(EnvelopeError):  # random bytes never authenticate; nothing else may escape
            open_envelope(blob, READERS[0])


_SMALL = seal(b"fuzz me", PUBLIC[:2], label="f")


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_SMALL) - 1), st.integers(1, 255), st.integers(0, len(_SMALL)))
def test_fuzz_mutations_of_a_real_envelope(pos: int, flip: int, cut: int) -> None:
    bad = bytearray(_SMALL)
    bad[pos] ^= flip
    for blob in (bytes(bad), bytes(bad[:cut])):
        with pytest.raises(EnvelopeError):
            open_envelope(blob, READERS[0], label="f")
