"""Confidential artifacts: a versioned envelope that only its named readers can open.

An envelope holds one artifact (an update or a model state, i.e. safetensors bytes) encrypted under a fresh
256-bit content key with ChaCha20-Poly1305, and that content key wrapped once per reader: for each reader's
secp256k1 public key a fresh ephemeral key pair, ECDH (coincurve), HKDF-SHA256 into a key-encryption key,
and ChaCha20-Poly1305 over the content key. Readers are named by their compressed public key, so whoever
holds the plaintext and the envelope can rebuild a deterministic envelope byte for byte (see
:func:`seal` ``deterministic``).

Layout (all integers big-endian)::

    magic        5   b"FCENV"
    version      1   1
    suite        1   1 = secp256k1-ECDH / HKDF-SHA256 / ChaCha20-Poly1305
    label_len    2   0..MAX_LABEL_BYTES
    label        n   UTF-8, what the artifact is for (e.g. "fedchain update run 1 round 3")
    readers      2   1..MAX_READERS
    wraps        readers x 114: reader public key (33) | ephemeral public key (33) | wrapped key (48)
    nonce        12  payload nonce
    plain_sha256 32  sha256 of the plaintext (the commitment)
    ciphertext   rest: ChaCha20-Poly1305(content key, nonce, plaintext, aad = every byte above)

The whole header is the payload's associated data, so a changed byte anywhere (a wrap, the label, the
commitment) fails authentication for every reader; the plaintext's sha256 is checked again after
decryption. Parsing is strict and size-capped before any cryptography runs: untrusted input never costs
more than its length, and nothing is unpickled. This module knows nothing of chains or runs: callers pass
public keys, a private key and a label.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import coincurve
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2p.errors import EnvelopeError

MAGIC = b"FCENV"
VERSION = 1
SUITE = 1
MAX_READERS = 1024
MAX_LABEL_BYTES = 256
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
PUBKEY_BYTES = 33
WRAP_BYTES = PUBKEY_BYTES + PUBKEY_BYTES + KEY_BYTES + TAG_BYTES
_FIXED = len(MAGIC) + 1 + 1 + 2
MAX_HEADER_BYTES = _FIXED + MAX_LABEL_BYTES + 2 + MAX_READERS * WRAP_BYTES + NONCE_BYTES + 32
_WRAP_INFO = b"fedchain-envelope/1 wrap"
_DET_INFO = b"fedchain-envelope/1 deterministic"


class EnvelopeFormatError(EnvelopeError):
    """The bytes are not a well-formed envelope (magic, version, sizes, a public key)."""


class MissingWrapError(EnvelopeError):
    """The envelope holds no content key for this reader: it was not encrypted for them."""


class WrongKeyError(EnvelopeError):
    """The reader's wrapped content key does not open with the given private key (or was altered)."""


class TamperedError(EnvelopeError):
    """The payload or the header fails authentication: some byte was changed after sealing."""


class CommitmentError(EnvelopeError):
    """The decrypted plaintext does not hash to the commitment in the header."""


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope header and its ciphertext (no cryptography checked yet).

    Attributes
    ----------
    label
        What the writer says the artifact is.
    readers
        Compressed public keys (33 bytes each) of the readers, in envelope order.
    plaintext_sha256
        The commitment: sha256 of the plaintext (32 bytes).
    header
        The raw header bytes (the payload's associated data).
    """

    label: str
    readers: tuple[bytes, ...]
    ephemeral: tuple[bytes, ...]
    wrapped: tuple[bytes, ...]
    nonce: bytes
    plaintext_sha256: bytes
    header: bytes
    ciphertext: bytes


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` starts like an envelope (safetensors bytes never do: they start with a length)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def public_key_bytes(key: bytes | str) -> bytes:
    """Return the 33-byte compressed form of a secp256k1 public key (bytes, or hex with optional ``0x``).

    Raises
    ------
    EnvelopeFormatError
        If it is not a valid secp256k1 point.
    """
    if isinstance(key, str):
        text = key[2:] if key.startswith(("0x", "0X")) else key
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise EnvelopeFormatError(f"public key {key[:20]!r}… is not hex") from exc
    else:
        raw = bytes(key)
    if len(raw) not in (33, 65):
        raise EnvelopeFormatError(f"a secp256k1 public key has 33 or 65 bytes, got {len(raw)}")
    try:
        return coincurve.PublicKey(raw).format(compressed=True)
    except (ValueError, TypeError) as exc:
        raise EnvelopeFormatError(f"not a secp256k1 public key: {exc}") from exc


def public_key_of(private_key: bytes) -> bytes:
    """Compressed public key of a 32-byte secp256k1 private key."""
    return _private(private_key).public_key.format(compressed=True)


def _private(private_key: bytes) -> coincurve.PrivateKey:
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
        raise EnvelopeError("a reader's private key must be 32 bytes")
    try:
        return coincurve.PrivateKey(bytes(private_key))
    except (ValueError, TypeError) as exc:
        raise EnvelopeError(f"not a secp256k1 private key: {exc}") from exc


def _kek(shared: bytes, ephemeral: bytes, reader: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=ephemeral + reader, info=_WRAP_INFO).derive(
        shared
    )


def _derive(secret: bytes, what: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=_DET_INFO + b"/" + what).derive(
        secret
    )


def seal(
    plaintext: bytes,
    readers: Sequence[bytes | str],
    *,
    label: str = "",
    deterministic: bool = False,
) -> bytes:
    """Encrypt ``plaintext`` so that exactly the holders of ``readers``' private keys can open it.

    Parameters
    ----------
    plaintext
        The artifact bytes.
    readers
        secp256k1 public keys (33/65 bytes, or hex); duplicates are dropped, the order is canonicalised
        (sorted), so the same reader set always gives the same header layout.
    label
        What the artifact is for; authenticated with the payload.
    deterministic
        Derive the content key, nonce and every ephemeral key from the plaintext, the label and the reader
        set (convergent encryption), so that every writer of the same plaintext for the same readers
        produces the same bytes (and CID). Use it only for artifacts many peers must name identically
        (merged states); it lets anyone who can guess the whole plaintext confirm the guess.

    Raises
    ------
    EnvelopeError
        If a public key is malformed, there are no or too many readers, or the label is too long.
    """
    keys = sorted({public_key_bytes(r) for r in readers})
    if not 1 <= len(keys) <= MAX_READERS:
        raise EnvelopeError(f"an envelope needs 1..{MAX_READERS} readers, got {len(keys)}")
    label_raw = label.encode("utf-8")
    if len(label_raw) > MAX_LABEL_BYTES:
        raise EnvelopeError(f"`label` is {len(label_raw)} bytes, over {MAX_LABEL_BYTES}")
    return _seal(plaintext, keys, label_raw, hashlib.sha256(plaintext).digest(), deterministic)


def _seal(plaintext: bytes, keys: list[bytes], label_raw: bytes, digest: bytes, deterministic: bool) -> bytes:
    # ``digest`` is the commitment written into the header; tests pass a wrong one.
    if deterministic:
        secret = hashlib.sha256(digest + label_raw + b"".join(keys)).digest()
        content_key = _derive(secret, b"content", KEY_BYTES)
        nonce = _derive(secret, b"nonce", NONCE_BYTES)
    else:
        content_key = ChaCha20Poly1305.generate_key()
        nonce = secrets.token_bytes(NONCE_BYTES)
    prefix = MAGIC + struct.pack(">BBH", VERSION, SUITE, len(label_raw)) + label_raw
    wraps = []
    for reader in keys:
        if deterministic:
            eph = _ephemeral(_derive(content_key, b"ephemeral" + reader, KEY_BYTES))
        else:
            eph = coincurve.PrivateKey()
        eph_pub = eph.public_key.format(compressed=True)
        kek = _kek(eph.ecdh(reader), eph_pub, reader)
        wrapped = ChaCha20Poly1305(kek).encrypt(bytes(NONCE_BYTES), content_key, prefix + reader)
        wraps.append(reader + eph_pub + wrapped)
    header = prefix + struct.pack(">H", len(keys)) + b"".join(wraps) + nonce + digest
    return header + ChaCha20Poly1305(content_key).encrypt(nonce, bytes(plaintext), header)


def _ephemeral(seed: bytes) -> coincurve.PrivateKey:
    # A 32-byte HKDF output is a valid secret except with probability ~2**-128 (zero or >= the group order).
    return coincurve.PrivateKey(seed)


def parse(data: bytes, *, max_size: int | None = None) -> Envelope:
    """Parse an envelope's layout strictly (no cryptography): sizes, version, suite, keys, duplicates.

    Parameters
    ----------
    data
        Untrusted bytes.
    max_size
        Refuse envelopes longer than this (``None``: no cap besides the header's own).

    Raises
    ------
    EnvelopeFormatError
        Naming the first field that is wrong.
    """
    data = bytes(data)
    if max_size is not None and len(data) > max_size:
        raise EnvelopeFormatError(f"envelope is {len(data)} bytes, over the {max_size}-byte cap")
    if len(data) < _FIXED:
        raise EnvelopeFormatError(f"envelope is truncated: {len(data)} bytes, no header")
    if data[: len(MAGIC)] != MAGIC:
        raise EnvelopeFormatError("not an envelope: bad magic")
    version, suite, label_len = struct.unpack_from(">BBH", data, len(MAGIC))
    if version != VERSION:
        raise EnvelopeFormatError(f"envelope version {version} is not supported (this reads {VERSION})")
    if suite != SUITE:
        raise EnvelopeFormatError(f"envelope suite {suite} is not supported (this reads {SUITE})")
    if label_len > MAX_LABEL_BYTES:
        raise EnvelopeFormatError(f"envelope label is {label_len} bytes, over {MAX_LABEL_BYTES}")
    pos = _FIXED
    if len(data) < pos + label_len + 2:
        raise EnvelopeFormatError("envelope is truncated in its label")
    try:
        label = data[pos : pos + label_len].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeFormatError(f"envelope label is not UTF-8: {exc}") from exc
    pos += label_len
    (count,) = struct.unpack_from(">H", data, pos)
    pos += 2
    if not 1 <= count <= MAX_READERS:
        raise EnvelopeFormatError(f"envelope names {count} readers, allowed 1..{MAX_READERS}")
    end = pos + count * WRAP_BYTES + NONCE_BYTES + 32
    if len(data) < end + TAG_BYTES:
        raise EnvelopeFormatError(f"envelope is truncated: {len(data)} bytes, its header alone needs {end}")
    readers, ephemeral, wrapped = [], [], []
    for i in range(count):
        row = data[pos + i * WRAP_BYTES : pos + (i + 1) * WRAP_BYTES]
        for what, raw in (
            ("reader", row[:PUBKEY_BYTES]),
            ("ephemeral", row[PUBKEY_BYTES : 2 * PUBKEY_BYTES]),
        ):
            if raw[0] not in (2, 3):
                raise EnvelopeFormatError(f"envelope wrap {i}: {what} key is not a compressed public key")
        readers.append(row[:PUBKEY_BYTES])
        ephemeral.append(row[PUBKEY_BYTES : 2 * PUBKEY_BYTES])
        wrapped.append(row[2 * PUBKEY_BYTES :])
    if len(set(readers)) != count:
        raise EnvelopeFormatError("envelope names a reader twice")
    pos += count * WRAP_BYTES
    return Envelope(
        label=label,
        readers=tuple(readers),
        ephemeral=tuple(ephemeral),
        wrapped=tuple(wrapped),
        nonce=data[pos : pos + NONCE_BYTES],
        plaintext_sha256=data[pos + NONCE_BYTES : end],
        header=data[:end],
        ciphertext=data[end:],
    )


def open_envelope(
    data: bytes, private_key: bytes, *, max_size: int | None = None, label: str | None = None
) -> bytes:
    """Decrypt an envelope with a reader's private key; return the plaintext, checked against its commitment.

    Parameters
    ----------
    data
        The envelope bytes (untrusted; check their sha256 against the chain before calling).
    private_key
        The reader's 32-byte secp256k1 private key.
    max_size
        Size cap on the envelope.
    label
        When given, the envelope's label must equal it (an envelope made for another artifact is refused).

    Raises
    ------
    EnvelopeFormatError, MissingWrapError, WrongKeyError, TamperedError, CommitmentError
        Each a :class:`~p2p.errors.EnvelopeError` saying what failed.
    """
    env = parse(data, max_size=max_size)
    if label is not None and env.label != label:
        raise EnvelopeFormatError(f"envelope is labelled {env.label!r}, expected {label!r}")
    key = _private(private_key)
    me = key.public_key.format(compressed=True)
    try:
        i = env.readers.index(me)
    except ValueError:
        raise MissingWrapError(
            f"envelope has no wrapped key for reader {me.hex()[:16]}… ({len(env.readers)} readers)"
        ) from None
    prefix = env.header[: _FIXED + len(env.label.encode("utf-8"))]
    try:
        shared = key.ecdh(env.ephemeral[i])
    except (ValueError, TypeError) as exc:
        raise EnvelopeFormatError(f"envelope wrap {i}: ephemeral key is not on the curve: {exc}") from exc
    kek = _kek(shared, env.ephemeral[i], me)
    try:
        content_key = ChaCha20Poly1305(kek).decrypt(bytes(NONCE_BYTES), env.wrapped[i], prefix + me)
    except InvalidTag:
        raise WrongKeyError(
            f"the wrapped key for reader {me.hex()[:16]}… does not open: wrong key or altered wrap"
        ) from None
    try:
        plaintext = ChaCha20Poly1305(content_key).decrypt(env.nonce, env.ciphertext, env.header)
    except InvalidTag:
        raise TamperedError(
            "envelope payload fails authentication: a byte was changed after sealing"
        ) from None
    found = hashlib.sha256(plaintext).digest()
    if not hmac.compare_digest(found, env.plaintext_sha256):
        committed = env.plaintext_sha256.hex()[:16]
        raise CommitmentError(
            f"plaintext hashes to {found.hex()[:16]}…, the envelope commits to {committed}…"
        )
    return plaintext


__all__ = [
    "CommitmentError",
    "Envelope",
    "EnvelopeFormatError",
    "MissingWrapError",
    "TamperedError",
    "WrongKeyError",
    "is_envelope",
    "open_envelope",
    "parse",
    "public_key_bytes",
    "public_key_of",
    "seal",
]
