"""Canonical hashing of model state: the hash peers vote on.

:func:`state_sha256` hashes tensors in sorted name order; for each it feeds the name, dtype, shape and raw
bytes (little-endian, as on every supported platform), each length-prefixed so that no two different states
share a byte stream. Two states hash equal exactly when they have the same names, dtypes, shapes and bytes
(so ``-0.0`` and ``+0.0`` differ: the aggregators write ``+0.0``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping

import torch
from torch import Tensor

from training.errors import TrainingError

_DOMAIN = b"fedchain-state/1"


def _frame(h: hashlib._Hash, data: bytes) -> None:
    h.update(struct.pack("<Q", len(data)))
    h.update(data)


def tensor_bytes(t: Tensor) -> bytes:
    """Raw bytes of a CPU tensor in row-major order (any dtype, including bfloat16 and 0-d tensors)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    return flat.view(torch.uint8).numpy().tobytes()


def state_sha256(state: Mapping[str, Tensor]) -> str:
    """Hex sha256 over sorted names + dtype + shape + raw bytes of every tensor.

    Raises
    ------
    TrainingError
        If a key is not a string or a value is not a tensor.
    """
    h = hashlib.sha256()
    _frame(h, _DOMAIN)
    for name in sorted(state):
        tensor = state[name]
        if not isinstance(name, str) or not isinstance(tensor, Tensor):
            raise TrainingError(
                f"state entries must be str -> Tensor, got {name!r} -> {type(tensor).__name__}"
            )
        _frame(h, name.encode())
        _frame(h, str(tensor.dtype).removeprefix("torch.").encode())
        _frame(h, struct.pack(f"<{tensor.dim()}Q", *tensor.shape))
        _frame(h, tensor_bytes(tensor))
    return h.hexdigest()
