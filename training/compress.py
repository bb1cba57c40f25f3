"""Lossy update compression: blockwise int4 and top-k, as pure functions on flat float32 vectors.

:mod:`training.codec` lays their output out as safetensors and checks it on the way back in; this module
holds the arithmetic, which is the part an independent implementation must reproduce bit for bit
(docs/specification.md, "Update artifact").

int4 (per tensor, blocks of ``block`` values, the last one shorter): ``scale_b = max|x| / 7`` over the
block (float32), ``q = clamp(round(x / scale_b), -7, 7)`` (``0`` where ``scale_b`` is 0), two values per
byte, the first in the low nibble, each nibble the 4-bit two's complement of ``q`` (nibble 8, i.e. -8, is
never written and is refused), an odd count padded with a zero nibble. Decoding is ``q * scale_b`` in
float32: one correctly rounded multiply per value, so every peer gets the same bits.

top-k (over the whole flat vector): the ``k`` values of largest magnitude (ties to the lower index), sent as
their ascending int32 indices and their float32 values unchanged; decoding writes them into zeros (no
arithmetic). ``k`` is at most :meth:`CodecParams.max_k` of the vector's length. What a member did not send
stays in its error-feedback residual and is added to its next round's update before selecting
(:func:`training.codec.encode_with_feedback`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from training.errors import TrainingError

INT4_BLOCK = 64
"""Default int4 block size (values per float32 scale)."""
INT4_MAX = 7
TOPK_FRACTION = 0.01
"""Default share of the update's values a top-k update may carry."""
MAX_BLOCK = 1 << 20


@dataclass(frozen=True)
class CodecParams:
    """Parameters of the lossy codecs, from the run spec (identical on every peer).

    Attributes
    ----------
    block
        int4: values per float32 scale.
    topk_fraction
        top-k: an update carries at most ``max(1, ceil(topk_fraction * d))`` values of its ``d``.
    """

    block: int = field(default=INT4_BLOCK, metadata={"help": "int4: values per float32 scale"})
    topk_fraction: float = field(
        default=TOPK_FRACTION, metadata={"help": "topk: share of the update's values sent, in (0, 1]"}
    )

    def __post_init__(self) -> None:
        b = self.block
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BLOCK:
            raise TrainingError(f"`codec_block` must be an integer in [1, {MAX_BLOCK}], got {b!r}")
        f = self.topk_fraction
        if isinstance(f, bool) or not isinstance(f, int | float) or not (math.isfinite(f) and 0 < f <= 1):
            raise TrainingError(f"`topk_fraction` must be a number in (0, 1], got {f!r}")

    def max_k(self, numel: int) -> int:
        """Most values a top-k update of ``numel`` values may carry: ``max(1, ceil(fraction * numel))``.

        The product is rounded to float64 before the ceiling (as Python computes it); 0 for an empty vector.
        """
        if numel <= 0:
            return 0
        return min(numel, max(1, math.ceil(float(self.topk_fraction) * numel)))


def int4_blocks(n: int, block: int) -> int:
    """Return the number of int4 blocks (scales) of an ``n``-value tensor."""
    return -(-n // block)


def int4_encode(piece: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Quantise a flat float32 ``piece``; return ``(packed uint8 [ceil(n/2)], scales float32 [blocks])``."""
    n = piece.numel()
    nb = int4_blocks(n, block)
    padded = torch.zeros(nb * block, dtype=torch.float32)
    padded[:n] = piece
    rows = padded.reshape(nb, block)
    scales = (rows.abs().amax(dim=1) / float(INT4_MAX)).to(torch.float32) if nb else torch.zeros(0)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    q = torch.round(rows / safe.unsqueeze(1)).clamp_(-INT4_MAX, INT4_MAX)
    q = torch.where((scales > 0).unsqueeze(1), q, torch.zeros_like(q)).reshape(-1)[:n].to(torch.int16)
    if n % 2:
        q = torch.cat([q, torch.zeros(1, dtype=torch.int16)])
    nibbles = q & 0xF
    packed = (nibbles[0::2] | (nibbles[1::2] << 4)).to(torch.uint8)
    return packed, scales


def int4_unpack(packed: Tensor, n: int) -> Tensor:
    """Return the ``n`` int4 values of ``packed`` as int16 in [-8, 7] (the caller refuses -8 and padding)."""
    wide = packed.to(torch.int16)
    nibbles = torch.stack([wide & 0xF, wide >> 4], dim=1).reshape(-1)
    return torch.where(nibbles >= 8, nibbles - 16, nibbles)[:n]


def int4_decode(q: Tensor, scales: Tensor, block: int) -> Tensor:
    """``q * scale`` per value in float32 (one correctly rounded multiply): the consensus decode."""
    n = q.numel()
    if n == 0:
        return torch.zeros(0, dtype=torch.float32)
    per_value = scales.repeat_interleave(block)[:n]
    return q.to(torch.float32) * per_value


def topk_select(flat: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Return the ``k`` largest-magnitude values of ``flat``: ``(ascending int32 indices, float32 values)``.

    Ties in magnitude go to the lower index (a stable sort), so one input always gives one output.
    """
    k = min(k, flat.numel())
    order = torch.sort(flat.abs(), descending=True, stable=True).indices[:k]
    indices = torch.sort(order).values
    return indices.to(torch.int32), flat[indices].to(torch.float32)


def topk_scatter(indices: Tensor, values: Tensor, numel: int) -> Tensor:
    """Return the dense float32 ``numel``-vector holding ``values`` at ``indices``, zeros elsewhere."""
    out = torch.zeros(numel, dtype=torch.float32)
    out[indices.to(torch.int64)] = values
    return out
