"""Canonical safetensors bytes, written and parsed by hand: the one format that crosses the network.

The writer sorts the header keys and lays tensors out in name order, so equal tensors give equal bytes and
hence equal content ids (``safetensors.torch.save`` orders the metadata differently from call to call). The
header reader treats its input as hostile: it caps the header length before parsing it. Tensor data is read
by the callers with their own shape and dtype checks; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
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
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def read_header(
    data: bytes, *, max_header_bytes: int, error: type[Exception], what: str
) -> tuple[Any, dict[str, Any]]:
    """Parse the JSON header of safetensors ``data``; return ``(metadata, tensor entries)``.

    ``metadata`` is whatever ``__metadata__`` held (``None`` if absent): the caller checks it.

    Raises
    ------
    error
        (the caller's exception class) if the data is too short, the header is longer than the data or
        ``max_header_bytes``, or it is not a JSON object. ``what`` names the data in the message.
    """
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
