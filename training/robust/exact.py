"""Exact, order-free arithmetic over an ``[n, d]`` update matrix.

Consensus needs every peer to compute the same bytes whatever its thread count, instruction set
(``ATEN_CPU_CAPABILITY``) and the order the updates arrived in. Float reductions over ``d`` are not that:
their association order changes with vectorisation and threads, and ``add(x, alpha=w)`` fuses a
multiply-add. So every reduction here is made *exact*, and exact sums do not depend on order:

- **Weighted sums** (:func:`weighted_sum`). Per coordinate ``j``, each value is put on a fixed-point grid
  ``q = round(x * 2**s_j)`` with a power-of-two scale chosen from that coordinate's largest magnitude so that
  ``sum_i w_i |q_i| <= 2**53``. Then every product ``w_i q_i`` and every partial sum is an integer of at most
  53 bits, exactly representable in float64, so the float64 sum is exact in *any* order (even with fused
  multiply-adds). One correctly rounded division by the divisor, an exact division by ``2**s_j`` and a
  correctly rounded cast to float32 finish it. Precision: ``53 - ceil(log2(sum w))`` bits below each
  coordinate's largest magnitude (31 bits for a total weight of 2**22).
- **Inner products** (:func:`gram`). Per block of :data:`GRAM_CHUNK` coordinates, the products are float32
  fused multiply-adds in a fixed order (8 lanes, 256-column tiles, float64 lane totals, a fixed lane tree),
  which every IEEE machine computes alike; the block's entries are then rounded to integers in units of
  ``2**(2 e - 2 GRID_BITS)`` (``2**e`` above the block's largest magnitude), and blocks are summed exactly as
  integers. See :mod:`training.robust.gram_kernel`.
- Elementwise work uses only correctly rounded operations (add, subtract, multiply, divide, sqrt, casts).

Results differ from the real-number answer by the documented rounding, but never between peers. The per-block
work runs in the fused one-pass kernels of :mod:`training.robust.kernels`, :mod:`training.robust.sum_kernel`
and :mod:`training.robust.gram_kernel`; the same arithmetic written as
torch operations is :mod:`training.robust.reference`, which the kernels must match byte for byte.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from training.robust import gram_kernel, kernels, sum_kernel

CHUNK = 1 << 14
"""Coordinates per block of :func:`weighted_sum`: keeps its ``n * CHUNK`` float64 block in cache."""

GRAM_CHUNK = 1 << 14
"""Coordinates per block of :func:`gram` (each block's Gram entries stay below ``2**50``)."""

GRID_BITS = 18
""":func:`gram` block entries are integers in units of ``(2**e / 2**GRID_BITS)**2``, ``2**e`` above the
block's largest magnitude; ``GRAM_CHUNK * (2**GRID_BITS)**2 <= 2**50`` keeps them in int64 with room."""

T = TypeVar("T")

POW2 = np.ldexp(1.0, np.arange(-kernels.EXP_OFFSET, 1024, dtype=np.int64))
"""``POW2[e + kernels.EXP_OFFSET] == 2.0**e`` for every float64 power of two (exact)."""

MAX_WEIGHT_BITS = 40
"""Largest total integer weight is ``2**MAX_WEIGHT_BITS`` (still 13 bits of grid precision)."""


def map_chunks(d: int, chunk: int, fn: Callable[[int, int], T], *, parallel: bool = True) -> list[T]:
    """Run ``fn(c0, c1)`` on every block ``[c0, c1)`` of ``range(d)``; results in block order.

    Blocks run on ``torch.get_num_threads()`` Python threads (torch kernels release the GIL). Many small
    kernels from one thread each open an OpenMP region, which is slow on a busy machine; whole blocks per
    thread are not. Every block's result is exact, so the schedule cannot change any byte.
    """
    bounds = [(c0, min(d, c0 + chunk)) for c0 in range(0, d, chunk)]
    workers = min(torch.get_num_threads(), len(bounds)) if parallel else 1
    if workers <= 1:
        return [fn(c0, c1) for c0, c1 in bounds]
    with ThreadPoolExecutor(workers, thread_name_prefix="fedchain-exact") as pool:
        return list(pool.map(lambda b: fn(*b), bounds))


def map_ranges(d: int, align: int, fn: Callable[[int, int], T]) -> list[T]:
    """Run ``fn(c0, c1)`` on a few large ranges of ``range(d)`` (starts aligned to ``align``); block order.

    A handful of ranges per thread (not one per block) keeps the per-call overhead of the compiled kernels
    negligible while letting a thread that finishes early take the next range on a busy machine.
    """
    workers = max(1, torch.get_num_threads())
    blocks = max(1, -(-d // align))
    per = max(1, -(-blocks // (4 * workers)))
    return map_chunks(d, per * align, fn, parallel=workers > 1)


def as_numpy(vec: Tensor) -> np.ndarray:
    """Return a tensor's memory as a numpy array (no copy when already contiguous)."""
    return vec.detach().contiguous().numpy()


def check_finite(seen: Sequence[int]) -> None:
    """Raise ``ValueError`` if a kernel saw an Inf or NaN (``seen``: the largest magnitude bits per range)."""
    if seen and max(seen) >= kernels.NONFINITE:
        raise ValueError("`updates` contain NaN or Inf")


def check_updates(updates: Tensor, weights: Tensor, *, min_rows: int = 1, finite: bool = True) -> None:
    """Validate an update matrix and its weights.

    ``finite=False`` skips the pass over the values that rejects Inf and NaN, for callers whose first
    kernel (:func:`weighted_sum`, :func:`gram`, the sorting networks) rejects them on its own pass.

    Raises
    ------
    ValueError
        If ``updates`` is not a finite float32 ``[n, d]`` tensor, ``weights`` is not ``[n]``, or ``n`` is
        below ``min_rows``.
    """
    if updates.dim() != 2:
        raise ValueError(f"`updates` must be 2-D [n, d], got shape {tuple(updates.shape)}")
    if updates.dtype != torch.float32:
        raise ValueError(f"`updates` must be float32, got {updates.dtype}")
    n = updates.shape[0]
    if weights.dim() != 1 or weights.shape[0] != n:
        raise ValueError(f"`weights` must be 1-D of length n={n}, got shape {tuple(weights.shape)}")
    if n < min_rows:
        raise ValueError(f"needs at least {min_rows} updates, got n={n}")
    if finite and updates.numel() > 0:
        # One pass over the float bits: an exponent field of all ones is Inf or NaN.
        bits = as_numpy(updates).view(np.int32)
        check_finite(map_ranges(updates.shape[1], CHUNK, lambda c0, c1: kernels.max_abs_bits(bits, c0, c1)))


def integer_weights(weights: Tensor) -> list[int]:
    """Return ``weights`` as Python ints (sample counts).

    Raises
    ------
    ValueError
        If a weight is negative, not an integer or not finite, or all weights are zero, or their total
        exceeds ``2**MAX_WEIGHT_BITS``.
    """
    out: list[int] = []
    for w in weights.tolist():
        if not (isinstance(w, int) or (math.isfinite(w) and float(w).is_integer())) or w < 0:
            raise ValueError(f"`weights` must be non-negative integers (sample counts), got {w!r}")
        out.append(int(w))
    total = sum(out)
    if total == 0:
        raise ValueError("`weights` must not all be zero")
    if total > 1 << MAX_WEIGHT_BITS:
        raise ValueError(f"total weight must be at most 2**{MAX_WEIGHT_BITS}, got {total}")
    return out


def quantize_coefficients(coeffs: Sequence[float], bits: int = 24) -> list[int]:
    """Round non-negative real coefficients to integers, the largest becoming ``2**bits``.

    Deterministic (one correctly rounded division and multiplication per value); the relative error of each
    ratio is at most ``2**-bits``.
    """
    top = max(coeffs)
    if not top > 0.0 or any(c < 0.0 or not math.isfinite(c) for c in coeffs):
        raise ValueError(f"coefficients must be finite, non-negative and not all zero, got {list(coeffs)}")
    scale = float(1 << bits)
    return [round(c / top * scale) for c in coeffs]


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
    """Return ``(sum_i int_weights[i] * updates[rows[i]] + extra_weight * extra) / divisor`` as float32.

    Exact on the per-coordinate fixed-point grid described in the module docstring, hence independent of the
    order of ``rows``, of threads and of the instruction set.

    Parameters
    ----------
    updates
        ``[n, d]`` float32 matrix (not modified).
    int_weights
        One non-negative integer weight per selected row.
    divisor
        Positive number the weighted sum is divided by (once, correctly rounded).
    rows
        Row indices to combine (default: all rows, in order).
    extra
        An optional extra ``[d]`` float32 vector (e.g. a centre) with its own integer weight.
    extra_weight
        Weight of ``extra``.
    threads
        Spread blocks over threads (off when already called from a block worker).
    """
    idx = list(range(updates.shape[0])) if rows is None else list(rows)
    ws, bits = sum_bits(int_weights, len(idx), divisor, [extra_weight] if extra is not None else [])
    d = updates.shape[1]
    out = np.empty(d, dtype=np.float32)
    x = as_numpy(updates)
    idx_arr = np.asarray(idx, dtype=np.int64)
    w_arr = np.asarray(ws, dtype=np.int64)
    extra_rows = as_numpy(extra).reshape(1, d) if extra is not None else np.empty((0, d), dtype=np.float32)

    def block_sum(c0: int, c1: int) -> int:
        return sum_kernel.weighted_sum_range(x, idx_arr, w_arr, extra_rows, bits, divisor, out, c0, c1)

    check_finite(map_ranges(d, CHUNK, block_sum) if threads else [block_sum(0, d)])
    return torch.from_numpy(out)


def sum_bits(
    row_weights: Sequence[int], rows: int, divisor: float, extra_weights: Sequence[int]
) -> tuple[list[int], int]:
    """Validate the integer weights of a weighted sum; return them (extras last) and the grid bits.

    The grid bits are ``53 - ceil(log2(total weight))``, so that every partial sum stays below ``2**53``.
    """
    if len(row_weights) != rows:
        raise ValueError(f"one weight per row needed, got {len(row_weights)} weights for {rows} rows")
    ws = [int(w) for w in row_weights] + [int(w) for w in extra_weights]
    total = sum(ws)
    if total <= 0 or any(w < 0 for w in ws) or not divisor > 0.0:
        raise ValueError(
            f"weights must be non-negative with a positive total and divisor, got {list(ws)}, {divisor}"
        )
    return ws, 53 - max(0, (total - 1).bit_length())


def canonical_zero(vec: Tensor) -> Tensor:
    """Replace ``-0.0`` by ``+0.0`` (in place) so that equal values always have equal bytes."""
    vec.masked_fill_(vec == 0, 0.0)
    return vec


@dataclass(frozen=True)
class ExactGram:
    """Gram matrix of :func:`gram` held exactly as integers: entry ``(i, k)`` is ``ints[i][k] / 2**shift``."""

    ints: tuple[tuple[int, ...], ...]
    shift: int

    def value(self, i: int, k: int) -> float:
        """Entry ``(i, k)`` as a correctly rounded float."""
        return (
            self.ints[i][k] / (1 << self.shift) if self.shift >= 0 else float(self.ints[i][k] << -self.shift)
        )

    def sq_distance(self, i: int, k: int) -> float:
        """Squared distance between rows ``i`` and ``k``, correctly rounded from the exact integer."""
        g = self.ints
        num = g[i][i] + g[k][k] - 2 * g[i][k]
        return num / (1 << self.shift) if self.shift >= 0 else float(num << -self.shift)


def gram(updates: Tensor, extra: Tensor | None = None) -> ExactGram:
    """Gram matrix of the rows of ``updates`` (plus ``extra`` as a last row), bit-identical on every peer.

    Per block of :data:`GRAM_CHUNK` coordinates: float32 fused multiply-adds in the fixed order of
    :mod:`training.robust.gram_kernel`, rounded to integers in units of ``(2**e / 2**GRID_BITS)**2``
    (``2**e`` above the block's largest magnitude over all rows); the blocks are summed exactly.
    """
    n, d = updates.shape
    m = n + (1 if extra is not None else 0)
    x = as_numpy(updates)
    xbits = x.view(np.uint32)
    extra_rows = as_numpy(extra).reshape(1, d) if extra is not None else np.empty((0, d), dtype=np.float32)

    def block_grams(c0: int, c1: int) -> list[tuple[np.ndarray, int]]:
        grams, shifts, nonzero, _ = gram_kernel.gram_range(
            x, xbits, extra_rows, GRAM_CHUNK, GRID_BITS, POW2, c0, c1
        )
        return [(grams[b], int(shifts[b])) for b in range(len(shifts)) if nonzero[b]]

    blocks = [b for part in map_ranges(d, GRAM_CHUNK, block_grams) for b in part]
    if any(s2 == -1 for _, s2 in blocks):  # the kernel's mark for Inf or NaN
        raise ValueError("`updates` contain NaN or Inf")
    return combine_grams(blocks, m)


SUM_GROUP = 1 << 12
"""Block Gram matrices (entries below ``2**50``) summed in int64 at a time: ``2**12 * 2**50 < 2**63``."""


def combine_grams(blocks: Sequence[tuple[np.ndarray, int]], m: int) -> ExactGram:
    """Sum per-block integer Gram matrices ``ints / 2**shift`` exactly into one :class:`ExactGram`."""
    if not blocks:
        return ExactGram(tuple(tuple(0 for _ in range(m)) for _ in range(m)), 0)
    shift = max(s2 for _, s2 in blocks)
    groups: dict[int, list[np.ndarray]] = {}
    for products, s2 in blocks:
        groups.setdefault(s2, []).append(products)
    total = [[0] * m for _ in range(m)]
    for s2, mats in groups.items():
        up = shift - s2
        for g0 in range(0, len(mats), SUM_GROUP):
            summed = np.stack(mats[g0 : g0 + SUM_GROUP]).sum(axis=0, dtype=np.int64)
            part: list[list[int]] = summed.tolist()
            for i in range(m):
                row, src = total[i], part[i]
                for k in range(m):
                    row[k] += src[k] << up
    return ExactGram(tuple(tuple(r) for r in total), shift)


def row_digest(updates: Tensor, i: int) -> bytes:
    """sha256 of row ``i``'s float32 bytes: the canonical tie-breaker between rows."""
    return hashlib.sha256(updates[i].contiguous().numpy().tobytes()).digest()


def sq_norms(updates: Tensor) -> list[float]:
    """Squared L2 norm of each row: the diagonal of :func:`gram` (correctly rounded from its integers)."""
    g = gram(updates)
    return [g.value(i, i) for i in range(updates.shape[0])]
