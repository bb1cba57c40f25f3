"""Compute, parse and verify the CIDs that every fedchain store uses.

The scheme is Kubo's ``ipfs add --cid-version=1`` default, which js-ipfs 0.66 also produces with
``cid_version=1, raw_leaves=True``:

* the file is cut into chunks of 262144 bytes (``size-262144``);
* every chunk is a *raw* block (CID codec ``raw``, 0x55), hashed with sha2-256;
* a file of at most one chunk (the empty file included) is that single raw block, so its CID is
  ``bafkrei…``;
* bigger files get a balanced tree of dag-pb (0x70) UnixFS ``File`` nodes with at most 174 links each,
  built level by level from the leaves; the root is ``bafybei…``;
* CIDs are written as CIDv1 in lower-case base32 (multibase prefix ``b``).

:func:`compute_cid` and :class:`CidBuilder` encode the dag-pb nodes by hand (canonical field order, as
``@ipld/dag-pb`` and go-merkledag write them), so the embedded store needs no daemon to name content.
:func:`parse_cid` reads any CID a daemon may print (CIDv0 ``Qm…``, base32 ``b…``, base58btc ``z…``) and
:func:`normalize_cid` rewrites it in the canonical form above.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from p2p.storage.base import Cid
from p2p.storage.errors import CidMismatchError, InvalidCidError

CHUNK_SIZE = 262144
"""Bytes per leaf chunk (Kubo's ``size-262144`` chunker)."""
MAX_LINKS = 174
"""Links per dag-pb node in the balanced layout (Kubo's and js-ipfs's default)."""

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
SHA2_256 = 0x12
_DIGEST_LEN = 32
_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {ch: i for i, ch in enumerate(_BASE58_ALPHABET)}
_MAX_CID_TEXT = 256  # a sha2-256 CID is ~60 characters; anything far longer is not one


@dataclass(frozen=True)
class CidInfo:
    """The parts of a parsed CID.

    Attributes
    ----------
    version
        0 or 1.
    codec
        Multicodec of the block (``0x55`` raw, ``0x70`` dag-pb).
    digest
        The 32-byte sha2-256 digest of the block.
    """

    version: int
    codec: int
    digest: bytes

    def to_bytes(self) -> bytes:
        """Return the binary CIDv1 (version, codec, multihash), the form dag-pb links carry."""
        return _cid_bytes(self.codec, self.digest)

    def to_cid(self) -> Cid:
        """Return the canonical text form: CIDv1, lower-case base32 with the ``b`` prefix."""
        return _cid_text(self.to_bytes())


# --- varints and the two protobuf messages (dag-pb PBNode/PBLink, UnixFS Data) -------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 varint at ``pos``; return ``(value, next_pos)``."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise InvalidCidError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise InvalidCidError("varint longer than 9 bytes")


def _field_bytes(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _field_varint(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _cid_bytes(codec: int, digest: bytes) -> bytes:
    return b"\x01" + _varint(codec) + bytes([SHA2_256, _DIGEST_LEN]) + digest


@dataclass(frozen=True)
class _Node:
    """One block of the DAG as its parent links to it."""

    cid: bytes  # binary CIDv1
    file_size: int  # bytes of file content below this node
    tsize: int  # cumulative size: this block plus every block below it


def _leaf(chunk: bytes | bytearray | memoryview) -> _Node:
    digest = hashlib.sha256(chunk).digest()
    return _Node(_cid_bytes(CODEC_RAW, digest), len(chunk), len(chunk))


def _parent(children: list[_Node]) -> _Node:
    """Encode a dag-pb UnixFS File node over ``children`` (links first, then data: canonical order)."""
    file_size = sum(child.file_size for child in children)
    unixfs = _field_varint(1, 2) + _field_varint(3, file_size)  # Type = File, filesize
    unixfs += b"".join(_field_varint(4, child.file_size) for child in children)  # blocksizes
    links = b"".join(
        # PBLink: Hash, Name (always written, empty), Tsize
        _field_bytes(2, _field_bytes(1, child.cid) + _field_bytes(2, b"") + _field_varint(3, child.tsize))
        for child in children
    )
    block = links + _field_bytes(1, unixfs)
    digest = hashlib.sha256(block).digest()
    return _Node(_cid_bytes(CODEC_DAG_PB, digest), file_size, len(block) + sum(c.tsize for c in children))


def _root(leaves: list[_Node]) -> bytes:
    """Reduce leaves level by level into groups of :data:`MAX_LINKS` (js-ipfs's balanced builder)."""
    if not leaves:
        leaves = [_leaf(b"")]
    if len(leaves) == 1:
        return leaves[0].cid  # a one-chunk file is its raw block
    level = leaves
    while len(level) > 1:
        level = [_parent(level[i : i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)]
    return level[0].cid


class CidBuilder:
    """Incremental CID computation for content that arrives in pieces (files, network streams).

    Holds at most one partial chunk plus 40-odd bytes per finished chunk, so a 64 MiB file needs
    ~256 KiB of memory beyond what the caller passes in.

    Examples
    --------
    >>> builder = CidBuilder()
    >>> builder.update(b"hello ")
    >>> builder.update(b"world")
    >>> builder.finish() == compute_cid(b"hello world")
    True
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._leaves: list[_Node] = []
        self.size = 0
        """Bytes fed so far."""

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the content."""
        view = memoryview(data).cast("B")
        self.size += len(view)
        if self._pending:
            take = min(CHUNK_SIZE - len(self._pending), len(view))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) == CHUNK_SIZE:
                self._leaves.append(_leaf(self._pending))
                self._pending.clear()
        while len(view) >= CHUNK_SIZE:
            self._leaves.append(_leaf(view[:CHUNK_SIZE]))
            view = view[CHUNK_SIZE:]
        self._pending += view

    def finish(self) -> Cid:
        """Return the CID of everything fed so far."""
        leaves = list(self._leaves)
        if self._pending or not leaves:
            leaves.append(_leaf(self._pending))
        return _cid_text(_root(leaves))


def _cid_text(cid: bytes) -> Cid:
    return Cid("b" + base64.b32encode(cid).decode("ascii").rstrip("=").lower())


def compute_cid(data: bytes | bytearray | memoryview) -> Cid:
    """Return the CID of ``data`` under fedchain's scheme (see the module docstring).

    Examples
    --------
    >>> compute_cid(b"")
    'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
    """
    view = memoryview(data).cast("B")
    leaves = [_leaf(view[i : i + CHUNK_SIZE]) for i in range(0, len(view), CHUNK_SIZE)]
    return _cid_text(_root(leaves))


def compute_file_cid(path: str | os.PathLike[str]) -> Cid:
    """Return the CID of a file's content, reading it one chunk at a time."""
    builder = CidBuilder()
    buf = bytearray(CHUNK_SIZE)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            builder.update(memoryview(buf)[:n])
    return builder.finish()


# --- parsing -----------------------------------------------------------------------------------------


def _b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        digit = _BASE58_INDEX.get(ch)
        if digit is None:
            raise InvalidCidError(f"invalid base58btc character {ch!r}")
        num = num * 58 + digit
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + body


def _b32decode(text: str) -> bytes:
    upper = text.upper()
    try:
        return base64.b32decode(upper + "=" * (-len(upper) % 8))
    except ValueError as exc:  # binascii.Error is a ValueError
        raise InvalidCidError(f"invalid base32: {exc}") from None


def parse_cid(text: str) -> CidInfo:
    """Parse a CID string (CIDv0 ``Qm…``, or CIDv1 in base32 ``b…``/``B…`` or base58btc ``z…``).

    Only sha2-256 CIDs with the raw or dag-pb codec are accepted: that is everything a UnixFS add
    with default hashing produces.

    Raises
    ------
    InvalidCidError
        If ``text`` is not such a CID; the message says which part is wrong.
    """
    if not isinstance(text, str):
        raise InvalidCidError(f"CID must be a string, got {type(text).__name__}")
    if not text or len(text) > _MAX_CID_TEXT:
        raise InvalidCidError(f"CID must be 1..{_MAX_CID_TEXT} characters, got {len(text)}")
    if len(text) == 46 and text.startswith("Qm"):
        raw = _b58decode(text)
        if raw[:2] != bytes([SHA2_256, _DIGEST_LEN]) or len(raw) != 2 + _DIGEST_LEN:
            raise InvalidCidError(f"CIDv0 {text!r} is not a sha2-256 multihash")
        return CidInfo(0, CODEC_DAG_PB, raw[2:])
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        if body != body.lower() and body != body.upper():
            raise InvalidCidError(f"CID {text!r} mixes upper- and lower-case base32")
        raw = _b32decode(body)
    elif prefix == "z":
        raw = _b58decode(body)
    else:
        raise InvalidCidError(f"unsupported multibase prefix {prefix!r} in CID {text[:64]!r}")
    version, pos = _read_varint(raw, 0)
    if version != 1:
        raise InvalidCidError(f"CID version must be 1 in a multibase CID, got {version}")
    codec, pos = _read_varint(raw, pos)
    if codec not in (CODEC_RAW, CODEC_DAG_PB):
        raise InvalidCidError(f"CID codec must be raw (0x55) or dag-pb (0x70), got {codec:#x}")
    hash_code, pos = _read_varint(raw, pos)
    length, pos = _read_varint(raw, pos)
    if hash_code != SHA2_256 or length != _DIGEST_LEN:
        raise InvalidCidError(f"CID multihash must be sha2-256/32, got code {hash_code:#x} length {length}")
    digest = raw[pos:]
    if len(digest) != _DIGEST_LEN:
        raise InvalidCidError(f"CID digest must be {_DIGEST_LEN} bytes, got {len(digest)}")
    return CidInfo(1, codec, digest)


def normalize_cid(text: str) -> Cid:
    """Return ``text`` as a canonical CIDv1 base32 string (``Qm…`` becomes ``bafybei…``).

    Raises
    ------
    InvalidCidError
        If ``text`` is not a CID (see :func:`parse_cid`).
    """
    return parse_cid(text).to_cid()


def verify(cid: str, data: bytes | bytearray | memoryview) -> None:
    """Check that ``data`` is the content named by ``cid`` under fedchain's scheme.

    Raises
    ------
    InvalidCidError
        If ``cid`` is not a CID.
    CidMismatchError
        If the bytes hash to a different CID (corrupt, truncated or substituted content).
    """
    expected = normalize_cid(cid)
    actual = compute_cid(data)
    if actual != expected:
        raise CidMismatchError(f"content of {len(data)} bytes has CID {actual}, expected {expected}")


def verify_file(cid: str, path: str | os.PathLike[str]) -> None:
    """Like :func:`verify`, for a file on disk (streamed, not loaded whole)."""
    expected = normalize_cid(cid)
    actual = compute_file_cid(path)
    if actual != expected:
        size = Path(path).stat().st_size
        raise CidMismatchError(f"file {path} ({size} bytes) has CID {actual}, expected {expected}")
