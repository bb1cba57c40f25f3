"""A second, independent implementation of the consensus rules, written from docs/specification.md only.

It uses numpy, the standard library and ``eth_hash`` (keccak-256), and imports nothing of this project
(``tests/unit/spec/test_independent.py`` checks that in a fresh interpreter). It covers what an outside
auditor of a fedavg run with the ``mean`` aggregator needs: parsing canonical safetensors, the layout
digest, decoding an update (``fp32``, ``int8``, ``int4`` and ``topk``), the exact weighted mean on the
fixed-point grid, the fedavg server step, the state artifact, the state hash, the CID of a one-chunk
artifact and the included-set hash. Where it and the project's code disagree, the specification is the
arbiter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from eth_hash.auto import keccak

DTYPES = {"F32": np.dtype("<f4"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "I32": np.dtype("<i4")}
CHUNK_BYTES = 262_144


# --- canonical safetensors ------------------------------------------------------------------------------


def st_write(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> bytes:
    """Canonical safetensors: sorted-key compact JSON header padded with spaces to 8, data in name order."""
    names = {np.dtype("<f4"): "F32", np.dtype("i1"): "I8"}
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    body = b""
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": names[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [len(body), len(body) + len(raw)],
        }
        body += raw
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + body


def st_read(data: bytes) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Parse safetensors bytes into ``(metadata, name -> array)`` (F32, I8, U8 and I32 only)."""
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError("header longer than the data")
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + size
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        arr = np.frombuffer(data[base + start : base + end], dtype=DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return meta, out


# --- layout, update decode ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Names (sorted), shapes and dtype names of the exchanged adapter tensors."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    def canonical_json(self) -> str:
        body = {
            "dtypes": list(self.dtypes),
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


def decode_update(data: bytes, layout: Layout, *, run: str, round: int) -> np.ndarray:
    """The flat float32 delta of an update artifact, after the header checks of the specification."""
    meta, tensors = st_read(data)
    want = {"format": "fedchain-update/1", "run": run, "round": str(round), "spec": layout.digest()}
    for key, value in want.items():
        if meta.get(key) != value:
            raise ValueError(f"metadata {key!r} is {meta.get(key)!r}, expected {value!r}")
    codec = meta["codec"]
    if codec == "topk":  # ascending int32 indices into the flat vector, float32 values placed as they are
        indices, values = tensors["topk/indices"].astype(np.int64), tensors["topk/values"]
        if indices.size and not (
            indices[0] >= 0 and indices[-1] < layout.numel and (np.diff(indices) > 0).all()
        ):
            raise ValueError("top-k indices are not strictly ascending in range")
        flat = np.zeros(layout.numel, np.float32)
        flat[indices] = values
        return flat
    pieces = []
    for name, shape in zip(layout.names, layout.shapes, strict=True):
        q = tensors[f"delta/{name}"]
        if codec == "int4":  # two's complement nibbles, low nibble first; q * per-block scale in float32
            n, block = math.prod(shape), int(meta["block"])
            nibbles = np.stack([q & 0xF, q >> 4], axis=1).reshape(-1).astype(np.int16)[:n]
            values = np.where(nibbles >= 8, nibbles - 16, nibbles)
            if (values == -8).any():
                raise ValueError(f"int4 value -8 in {name}")
            scales = np.repeat(tensors[f"scale/{name}"].astype(np.float32), block)[:n]
            pieces.append(values.astype(np.float32) * scales)
            continue
        if list(q.shape) != list(shape):
            raise ValueError(f"tensor delta/{name} has shape {list(q.shape)}, expected {list(shape)}")
        if codec == "fp32":
            piece = q.astype(np.float32)
        elif codec == "int8":
            scale = tensors[f"scale/{name}"].astype(np.float32).reshape(())
            piece = q.astype(np.float32) * scale  # one float32 multiply, correctly rounded
        else:
            raise ValueError(f"codec {codec!r}")
        pieces.append(piece.reshape(-1))
    delta = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if not np.isfinite(delta).all():
        raise ValueError("delta is not finite")
    return delta


# --- the exact weighted sum ---------------------------------------------------------------------------


def weighted_sum(rows: np.ndarray, weights: Sequence[int], divisor: float) -> np.ndarray:
    """``sum_i w_i x_i / divisor`` on the per-coordinate fixed-point grid of the specification."""
    total = sum(weights)
    bits = 53 - (total - 1).bit_length()  # 53 - ceil(log2(total)), in exact integer arithmetic
    x = np.ascontiguousarray(rows, dtype=np.float32)
    field = ((x.view(np.uint32) & 0x7FFFFFFF) >> 23).max(axis=0).astype(np.int64)
    u = np.maximum(field, 1) - 126  # max |x_ij| < 2**u_j; zeros and subnormals share the smallest grid
    k = bits - u
    q = np.rint(x.astype(np.float64) * np.ldexp(1.0, k))  # exact scaling, then half-to-even rounding
    acc = np.zeros(x.shape[1], dtype=np.int64)
    for w, qi in zip(weights, q, strict=True):
        acc += int(w) * qi.astype(np.int64)  # integers below 2**53: any order gives the same sum
    out = ((acc.astype(np.float64) / divisor) * np.ldexp(1.0, -k)).astype(np.float32)
    out[out == 0] = 0.0
    return out


def mean(rows: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """The ``mean`` aggregator: weighted sum divided by the total weight."""
    return weighted_sum(rows, weights, float(sum(weights)))


def fedavg_step(params: np.ndarray, delta: np.ndarray, server_lr: float = 1.0) -> np.ndarray:
    """``x + delta * lr`` in float64, one rounding to float32, ``+0.0`` for zeros."""
    out = (params.astype(np.float64) + delta.astype(np.float64) * server_lr).astype(np.float32)
    out[out == 0] = 0.0
    return out


# --- state artifact and hashes ------------------------------------------------------------------------


def _frame(h: hashlib._Hash, data: bytes) -> None:
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


def state_hash(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over length-prefixed frames: domain, then name, dtype, shape and bytes of each tensor."""
    h = hashlib.sha256()
    _frame(h, b"fedchain-state/1")
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4")
        _frame(h, name.encode())
        _frame(h, b"float32")
        _frame(h, b"".join(struct.pack("<Q", s) for s in arr.shape))
        _frame(h, arr.tobytes())
    return h.hexdigest()


def state_artifact(tensors: Mapping[str, np.ndarray], layout: Layout) -> bytes:
    """The ``fedchain-state/1`` artifact's bytes (its CID is the ``mergedCid``)."""
    return st_write(tensors, {"format": "fedchain-state/1", "spec": layout.canonical_json()})


def raw_cid(data: bytes) -> str:
    """CIDv1 of content of at most one chunk: one raw block, sha2-256, base32 lower case without padding."""
    if len(data) > CHUNK_BYTES:
        raise ValueError("more than one chunk: a UnixFS DAG, not covered here")
    cid = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def included_set_hash(pairs: Sequence[tuple[str, bytes]]) -> bytes:
    """``keccak256(abi.encode(address[] members, bytes32[] sha256s))``, members ascending as numbers."""
    ordered = sorted(pairs, key=lambda p: int(p[0], 16))
    n = len(ordered)
    word = lambda v: v.to_bytes(32, "big")  # noqa: E731 - one ABI word
    head = word(64) + word(64 + 32 + 32 * n)
    members = word(n) + b"".join(word(int(m, 16)) for m, _ in ordered)
    hashes = word(n) + b"".join(h.rjust(32, b"\0") for _, h in ordered)
    return bytes(keccak(head + members + hashes))
