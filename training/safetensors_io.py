"""Canonical safetensors bytes, written and parsed by hand: the one format that crosses the network.

The writer sorts the header keys and lays tensors out in name order, so equal tensors give equal bytes and
hence equal content ids (``safetensors.torch.save`` orders the metadata differently from call to call). The
header reader treats its input as hostile: it caps the header length before parsing it. Tensor data is read
by the callers with their own shape and dtype checks; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float32: "F32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int32: "I32",
}


def write(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> bytes:
    """Return canonical safetensors bytes of ``tensors`` (F32, I8, U8, I32; on the CPU) with ``metadata``."""
    head, chunks = _layout(tensors, metadata)
    return b"".join([head, *chunks])  # the one copy of the tensor bytes


def write_file(tensors: Mapping[str, Tensor], metadata: Mapping[str, str], path: Path) -> int:
    """Write the bytes :func:`write` returns to ``path``, one tensor at a time (no copy); return the size."""
    head, chunks = _layout(tensors, metadata)
    with open(path, "wb") as f:
        f.write(head)
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def _layout(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]) -> tuple[bytes, list[memoryview]]:
    """Return the length-prefixed header and, in name order, views of the tensors' bytes (not copies)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks: list[memoryview] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().data
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head, chunks


def read_header(
    data: bytes | Path, *, max_header_bytes: int, error: type[Exception], what: str
) -> tuple[Any, dict[str, Any]]:
    """Parse the JSON header of safetensors ``data``; return ``(metadata, tensor entries)``.

    ``data`` is the bytes or a file (:func:`read_header_file` then reads only the header).

    ``metadata`` is whatever ``__metadata__`` held (``None`` if absent): the caller checks it.

    Raises
    ------
    error
        (the caller's exception class) if the data is too short, the header is longer than the data or
        ``max_header_bytes``, or it is not a JSON object. ``what`` names the data in the message.
    """
    if isinstance(data, Path):
        return read_header_file(data, max_header_bytes=max_header_bytes, error=error, what=what)
    if len(data) < 8:
        raise error(f"{what} is {len(data)} bytes, shorter than a safetensors header")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(max_header_bytes, len(data) - 8):
        raise error(f"header length {size} exceeds the data or the {max_header_bytes}-byte cap")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise error("header is not a JSON object")
    return header.pop("__metadata__", None), header


def read_header_file(
    path: Path, *, max_header_bytes: int, error: type[Exception], what: str
) -> tuple[Any, dict[str, Any]]:
    """Like :func:`read_header` for a file: reads only its first ``8 + header length`` bytes.

    The header length is checked against ``max_header_bytes`` and the file size before it is read.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise error(f"{what} is {size} bytes, shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(max_header_bytes, size - 8):
                raise error(f"header length {length} exceeds the data or the {max_header_bytes}-byte cap")
            head = prefix + f.read(length)
    except OSError as exc:
        raise error(f"{what} file {path} cannot be read: {exc}") from exc
    return read_header(head, max_header_bytes=max_header_bytes, error=error, what=what)


def load_file(path: Path, *, error: type[Exception]) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, read through ``safetensors.safe_open`` (a memory map).

    Each tensor is copied out of the map once (no copy of the whole file's bytes is made); the parser's
    errors on a malformed file are raised as ``error``. Nothing is unpickled.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118  (safe_open has no __iter__)
    except Exception as exc:  # the parser's own errors on hostile bytes
        raise error(f"safetensors payload is malformed: {exc}") from exc
