"""The torch formulation of the exact kernels: the reference the numba kernels must match byte for byte.

Each function here is a chain of whole-block torch operations (cast, power-of-two scale, round, BLAS
product, the Gram's fused multiply-adds emulated exactly; ``minimum``/``maximum`` over rows), easy to read
and check against the arithmetic described in :mod:`training.robust.exact`, but several passes over every
block. :mod:`training.robust.kernels` computes the same numbers in one fused pass;
``tests/unit/training/test_aggregate_kernels.py`` compares the two bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from training.robust.exact import (
    CHUNK,
    GRAM_CHUNK,
    GRID_BITS,
    ExactGram,
    canonical_zero,
    combine_grams,
    map_chunks,
    sum_bits,
)
from training.robust.gram_kernel import UNSCALED
from training.robust.sorting import _sorted_rows, pruned_network
from training.robust.tile_ir import LANES, TILE


def _pow2(exponents: Tensor) -> Tensor:
    """``2.0**e`` as float64, built from the exponent bits (exact; no ``pow`` kernel involved)."""
    return ((exponents.to(torch.int64) + 1023) << 52).view(torch.float64)


def _upper_exponents(block: Tensor) -> Tensor:
    """Per column of a float32 block, ``u`` with ``max_i |x_ij| < 2**u`` (from the float32 exponent field)."""
    mag = torch.maximum(block.amax(dim=0), torch.neg(block.amin(dim=0)))
    field = (mag.view(torch.int32) >> 23).clamp_(min=1)
    return field - 126


def weighted_sum(
    updates: Tensor,
    int_weights: Sequence[int],
    divisor: float,
    *,
    rows: Sequence[int] | None = None,
    extra: Tensor | None = None,
    extra_weight: int = 0,
    threads: bool = True,
) -> Tensor:
    """Torch reference of :func:`training.robust.exact.weighted_sum` (same arguments, same bytes)."""
    idx = list(range(updates.shape[0])) if rows is None else list(rows)
    ws, bits = sum_bits(int_weights, len(idx), divisor, [extra_weight] if extra is not None else [])
    d = updates.shape[1]
    out = torch.empty(d, dtype=torch.float32)
    contiguous = idx == list(range(updates.shape[0]))
    w_row = torch.tensor([ws], dtype=torch.float64)

    def block_sum(c0: int, c1: int) -> None:
        part = updates[:, c0:c1] if contiguous else updates[idx, c0:c1]
        if extra is not None:
            part = torch.cat([part, extra[c0:c1].unsqueeze(0)])
        scale = _pow2(bits - _upper_exponents(part))
        block = part.to(torch.float64).mul_(scale).round_()  # exact: scaling by powers of two
        # Integer products and partial sums below 2**53: the BLAS product is exact in any order.
        acc = torch.mm(w_row, block).squeeze(0)
        acc.div_(divisor).div_(scale)
        out[c0:c1] = acc

    map_chunks(d, CHUNK, block_sum, parallel=threads)
    return canonical_zero(out)


def fma32(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Return ``a * b + c`` rounded once to float32 (IEEE fusedMultiplyAdd) for float32 tensors.

    ``a * b`` is exact in float64 (48 significant bits). Adding ``c`` in float64 rounds; ``TwoSum`` gives that
    rounding's exact error, and nudging an even result one float64 step towards the error makes the sum
    *round to odd*. A round-to-odd value with at least two more bits than float32 then rounds to float32
    exactly as the real number would (Boldo and Melquiond, "Emulation of FMA and correctly rounded sums:
    proved algorithms using rounding to odd", IEEE Trans. Computers 2008).
    """
    p = a.to(torch.float64) * b.to(torch.float64)
    c64 = c.to(torch.float64)
    s = p + c64
    bp = s - c64
    err = (p - bp) + (c64 - (s - bp))  # TwoSum: p + c64 == s + err exactly
    even = (s.view(torch.int64) & 1) == 0
    toward = torch.where(err > 0, math.inf, -math.inf).to(torch.float64)
    odd = torch.where((err != 0) & even, torch.nextafter(s, toward), s)
    return odd.to(torch.float32)


def _block_gram_ints(scaled: Tensor, to_units: float) -> np.ndarray:
    """Integer Gram matrix of one scaled float32 block, in the order of :mod:`training.robust.gram_kernel`."""
    m, width = scaled.shape
    tiles = -(-width // TILE)
    padded = torch.zeros(m, tiles * TILE, dtype=torch.float32)
    padded[:, :width] = scaled
    steps = padded.reshape(m, tiles, TILE // LANES, LANES)
    totals = torch.zeros(m, m, LANES, dtype=torch.float64)
    for t in range(tiles):
        acc = torch.zeros(m, m, LANES, dtype=torch.float32)
        for j in range(TILE // LANES):  # float32 fused multiply-adds, lane by lane, in column order
            v = steps[:, t, j, :]
            acc = fma32(v.unsqueeze(1), v.unsqueeze(0), acc)
        totals = totals + acc.to(torch.float64)  # tile by tile
    lane = totals.unbind(dim=2)
    value = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]))
    return (value * to_units).round().to(torch.int64).numpy()  # torch.round: half to even, like rint


def gram(updates: Tensor, extra: Tensor | None = None) -> ExactGram:
    """Torch reference of :func:`training.robust.exact.gram`."""
    d = updates.shape[1]
    m = updates.shape[0] + (1 if extra is not None else 0)

    def block_gram(c0: int, c1: int) -> tuple[np.ndarray, int] | None:
        part = updates[:, c0:c1]
        if extra is not None:
            part = torch.cat([part, extra[c0:c1].unsqueeze(0)])
        mag = max(-float(part.amin()), float(part.amax()))
        if mag == 0.0:
            return None
        exponent = math.frexp(mag)[1]
        s = GRID_BITS - exponent
        t = 0 if UNSCALED[0] <= exponent <= UNSCALED[1] else s
        # Exact in float64 (a float32 times a power of two), then one rounding to float32.
        scaled = part.to(torch.float64).mul_(math.ldexp(1.0, t)).to(torch.float32)
        return _block_gram_ints(scaled, math.ldexp(1.0, 2 * (s - t))), 2 * s

    blocks = [b for b in map_chunks(d, GRAM_CHUNK, block_gram) if b is not None]
    return combine_grams(blocks, m)


def coordinate_median(updates: Tensor) -> Tensor:
    """Torch reference of :func:`training.robust.sorting.coordinate_median`."""
    n, d = updates.shape
    mid = (n - 1) // 2, n // 2
    network = pruned_network(n, frozenset(mid))
    out = torch.empty(d, dtype=torch.float32)

    def block_median(c0: int, c1: int) -> None:
        rows = _sorted_rows(updates[:, c0:c1].clone(), network)
        if mid[0] == mid[1]:
            out[c0:c1] = rows[mid[0]]
        else:
            both = rows[mid[0]].to(torch.float64) + rows[mid[1]].to(torch.float64)
            out[c0:c1] = both.mul_(0.5)

    map_chunks(d, CHUNK, block_median)
    return canonical_zero(out)


def coordinate_trimmed_mean(updates: Tensor, k: int) -> Tensor:
    """Torch reference of :func:`training.robust.sorting.coordinate_trimmed_mean`."""
    n, d = updates.shape
    kept = list(range(k, n - k))
    network = pruned_network(n, frozenset(kept))
    ones = [1] * len(kept)
    out = torch.empty(d, dtype=torch.float32)

    def block_mean(c0: int, c1: int) -> None:
        rows = _sorted_rows(updates[:, c0:c1].clone(), network)
        middle = torch.stack([rows[i] for i in kept])
        out[c0:c1] = weighted_sum(middle, ones, float(len(kept)), threads=False)

    map_chunks(d, CHUNK, block_mean)
    return canonical_zero(out)
