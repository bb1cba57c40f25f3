"""The exact weighted-sum kernels: :func:`training.robust.exact.weighted_sum` and the trimmed mean's sum.

Both share one exact float64 SIMD core (:func:`_accumulate4`, :func:`_accumulate1`); the trimmed mean
(:func:`trimmed_mean_range`) first copies and sorts a tile, then sums its kept rows with weights 1.

Per tile of :data:`SUM_TILE` columns the kernel makes three steps, all on data that stays in L1 cache after
the first read:

1. **Scan** (:func:`_scan`): per column the largest ``bits & 0x7fffffff`` over all selected rows (unsigned
   32-bit integer max, four rows per pass), which also rejects Inf and NaN.
2. **Accumulate** (:func:`_accumulate4`, :func:`_accumulate1`): ``acc[j] += w_i * rint(x_ij * 2**k_j)``,
   four rows per pass over the tile so that ``acc`` is loaded and stored once per four rows.
3. **Finish**: ``out[j] = float32(acc[j] / divisor * 2**-k_j)``.

Why ``fastmath={"contract"}`` cannot change a byte of the accumulation
-----------------------------------------------------------------------
``k_j = bits - u_j`` with ``max_i |x_ij| < 2**u_j`` and ``bits = 53 - ceil(log2(sum_i w_i))``
(:func:`training.robust.exact.sum_bits`). So

- ``p_ij = x_ij * 2**k_j`` is exact: a float32 value times a power of two, in float64 (its magnitude is
  below ``2**bits <= 2**53`` and at least ``2**-149 * 2**(bits - 128) >= 2**-277``, far from float64's
  limits);
- ``q_ij = rint(p_ij)`` is an integer with ``|q_ij| <= 2**bits``;
- every product ``w_i q_ij`` and every partial sum of any subset of them, in any order, is an integer of
  magnitude at most ``sum_i w_i |q_ij| <= (sum_i w_i) 2**bits <= 2**53``.

Every integer of magnitude up to ``2**53`` is a float64, so each product, each sum and each fused
multiply-add of the ``w_i q_ij`` is computed without rounding, with or without FMA contraction (and
whatever the vector width): ``acc[j]`` *is* the integer ``sum_i w_i q_ij``.

The rounding itself is ``q_ij = (p_ij + ROUND_MAGIC) - ROUND_MAGIC`` with ``ROUND_MAGIC = 1.5 * 2**52``:

- if ``|p_ij| < 2**51``, the sum lies in ``[2**52, 2**53)``, where the float64 values are exactly the
  integers, so it is rounded once to the nearest integer, ties to even (``ROUND_MAGIC`` is even, so that is
  ``ROUND_MAGIC + rint(p_ij)``), and the subtraction is exact;
- if ``|p_ij| >= 2**51`` (``bits`` 52 or 53, a total weight of 1 or 2), ``p_ij`` is a float32 significand
  (24 bits) times a power of two, hence an integer multiple of ``2**28``: ``rint(p_ij) = p_ij``, and
  ``ROUND_MAGIC + p_ij``, a multiple of ``2**28`` below ``2**54``, is a float64, so both operations are
  exact and give ``p_ij`` back.

``contract`` may fuse ``x * 2**k + ROUND_MAGIC`` into one FMA: the product is exact, so the fused and the
separate forms round the same real number once. A value that rounds to zero comes out as ``+0.0`` where
``rint`` gives ``-0.0``: it adds nothing (``acc`` starts at ``+0.0``), and the finish writes ``+0.0`` for
any zero. That is one FMA and one subtraction per value, cheaper than a multiply and a two-uop ``rint``.
``reassoc`` is never given: it could cancel the two ``ROUND_MAGIC`` terms.

The scan, the scales and the finish (one correctly rounded division, an exact multiplication by
``2**-k_j`` (as a multiplication by a power of two it equals the division of the torch formulation;
``|k_j| < 200``, so ``2**-k_j`` is a normal float64) and the correctly rounded cast to float32) are compiled
without ``fastmath``. The power-of-two scales are built from their exponent bits, ``(e + 1023) << 52``,
with no table lookup (a gather per column).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from training.robust.kernels import ABS_MASK, NONFINITE, ROUND_MAGIC, _sort_tile

SUM_TILE = 256
"""Columns per tile: ``n * SUM_TILE`` float32 values plus three float64 lanes stay in L1 cache."""


@njit(cache=True, nogil=True, fastmath={"contract"})
def _accumulate4(
    acc: np.ndarray,
    scale: np.ndarray,
    r0: np.ndarray,
    r1: np.ndarray,
    r2: np.ndarray,
    r3: np.ndarray,
    w0: float,
    w1: float,
    w2: float,
    w3: float,
    width: int,
) -> None:  # pragma: no cover - compiled
    """``acc[j] += sum_r w_r * rint(r_r[j] * scale[j])`` for four rows; exact (see the module docstring)."""
    for j in range(width):
        s = scale[j]
        q0 = (np.float64(r0[j]) * s + ROUND_MAGIC) - ROUND_MAGIC
        q1 = (np.float64(r1[j]) * s + ROUND_MAGIC) - ROUND_MAGIC
        q2 = (np.float64(r2[j]) * s + ROUND_MAGIC) - ROUND_MAGIC
        q3 = (np.float64(r3[j]) * s + ROUND_MAGIC) - ROUND_MAGIC
        acc[j] = acc[j] + ((w0 * q0 + w1 * q1) + (w2 * q2 + w3 * q3))


@njit(cache=True, nogil=True, fastmath={"contract"})
def _accumulate1(
    acc: np.ndarray, scale: np.ndarray, r0: np.ndarray, w0: float, width: int
) -> None:  # pragma: no cover - compiled
    """``acc[j] += w0 * rint(r0[j] * scale[j])``; exact (see the module docstring)."""
    for j in range(width):
        acc[j] = acc[j] + w0 * ((np.float64(r0[j]) * scale[j] + ROUND_MAGIC) - ROUND_MAGIC)


@njit(cache=True, nogil=True)
def _scan(
    xbits: np.ndarray, ebits: np.ndarray, rows: np.ndarray, t0: int, width: int, top: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``top[j] = max_i bits_i[t0 + j] & 0x7fffffff`` over the rows ``xbits[rows]`` then all of ``ebits``.

    Four rows per pass, so that ``top`` is loaded and stored once per four rows.
    """
    k = rows.shape[0]
    m = k + ebits.shape[0]
    mask = np.uint32(ABS_MASK)
    top[:width] = 0
    i = 0
    while i + 4 <= m:
        # Slices indexed from 0: plain vector loads, no index wrap-around.
        b0 = xbits[rows[i], t0 : t0 + width] if i < k else ebits[i - k, t0 : t0 + width]
        b1 = xbits[rows[i + 1], t0 : t0 + width] if i + 1 < k else ebits[i + 1 - k, t0 : t0 + width]
        b2 = xbits[rows[i + 2], t0 : t0 + width] if i + 2 < k else ebits[i + 2 - k, t0 : t0 + width]
        b3 = xbits[rows[i + 3], t0 : t0 + width] if i + 3 < k else ebits[i + 3 - k, t0 : t0 + width]
        for j in range(width):
            top[j] = max(top[j], max(max(b0[j] & mask, b1[j] & mask), max(b2[j] & mask, b3[j] & mask)))
        i += 4
    while i < m:
        rb = xbits[rows[i], t0 : t0 + width] if i < k else ebits[i - k, t0 : t0 + width]
        for j in range(width):
            top[j] = max(top[j], rb[j] & mask)
        i += 1


@njit(cache=True, nogil=True)
def _scales(
    top: np.ndarray, bits: int, width: int, scale_bits: np.ndarray, unscale_bits: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Per column, the bits of ``2**k_j`` and ``2**-k_j``: ``k_j = bits - u_j`` with ``max |x| < 2**u_j``.

    ``top[j]`` holds the column's largest ``bits & 0x7fffffff`` (finite); ``u_j = field - 126`` from its
    float32 exponent field (at least 1, so zeros and subnormals share the smallest normal's grid).
    """
    for j in range(width):
        field = np.int64(top[j] >> 23)
        field = max(field, np.int64(1))
        e = bits - (field - 126)  # scale 2**e puts the column's largest magnitude below 2**bits
        scale_bits[j] = (e + 1023) << 52
        unscale_bits[j] = (1023 - e) << 52


@njit(cache=True, nogil=True)
def _finish(
    acc: np.ndarray, divisor: float, unscale: np.ndarray, dst: np.ndarray, width: int
) -> None:  # pragma: no cover - compiled
    """``dst[j] = float32(acc[j] / divisor * 2**-k_j)``, writing ``+0.0`` for any zero."""
    for j in range(width):
        v = np.float32(acc[j] / divisor * unscale[j])
        dst[j] = v if v != 0 else np.float32(0.0)


@njit(cache=True, nogil=True)
def weighted_sum_range(
    x: np.ndarray,
    rows: np.ndarray,
    weights: np.ndarray,
    extra: np.ndarray,
    bits: int,
    divisor: float,
    out: np.ndarray,
    c0: int,
    c1: int,
) -> int:  # pragma: no cover - compiled
    """Exact weighted sum of ``x[rows]`` (plus the rows of ``extra``, weighted last) over ``[c0, c1)``.

    ``weights`` holds one integer per row of ``x[rows]`` then per row of ``extra``; the grid of each column
    has ``bits`` bits below its largest magnitude over all those rows (zero-weight rows included). Writes
    ``out[c0:c1]`` and returns the largest ``bits & 0x7fffffff`` seen; stops early (output invalid) on Inf
    or NaN.
    """
    k = rows.shape[0]
    m = k + extra.shape[0]
    xbits = x.view(np.uint32)
    ebits = extra.view(np.uint32)
    top = np.empty(SUM_TILE, dtype=np.uint32)
    acc = np.empty(SUM_TILE, dtype=np.float64)
    scale = np.empty(SUM_TILE, dtype=np.float64)
    unscale = np.empty(SUM_TILE, dtype=np.float64)
    scale_bits = scale.view(np.int64)
    unscale_bits = unscale.view(np.int64)
    active = np.empty(m, dtype=np.int64)  # rows with a non-zero weight
    count = 0
    for i in range(m):
        if weights[i] != 0:
            active[count] = i
            count += 1
    for t0 in range(c0, c1, SUM_TILE):
        width = min(SUM_TILE, c1 - t0)
        _scan(xbits, ebits, rows, t0, width, top)
        seen = np.uint32(0)
        for j in range(width):
            seen = max(seen, top[j])
        if seen >= NONFINITE:
            return int(seen)
        _scales(top, bits, width, scale_bits, unscale_bits)
        acc[:width] = 0.0
        a = 0
        while a + 4 <= count:
            i0, i1, i2, i3 = active[a], active[a + 1], active[a + 2], active[a + 3]
            r0 = x[rows[i0], t0 : t0 + width] if i0 < k else extra[i0 - k, t0 : t0 + width]
            r1 = x[rows[i1], t0 : t0 + width] if i1 < k else extra[i1 - k, t0 : t0 + width]
            r2 = x[rows[i2], t0 : t0 + width] if i2 < k else extra[i2 - k, t0 : t0 + width]
            r3 = x[rows[i3], t0 : t0 + width] if i3 < k else extra[i3 - k, t0 : t0 + width]
            w0, w1 = np.float64(weights[i0]), np.float64(weights[i1])
            w2, w3 = np.float64(weights[i2]), np.float64(weights[i3])
            _accumulate4(acc, scale, r0, r1, r2, r3, w0, w1, w2, w3, width)
            a += 4
        while a < count:
            i0 = active[a]
            r0 = x[rows[i0], t0 : t0 + width] if i0 < k else extra[i0 - k, t0 : t0 + width]
            _accumulate1(acc, scale, r0, np.float64(weights[i0]), width)
            a += 1
        _finish(acc, divisor, unscale, out[t0 : t0 + width], width)
    return 0


@njit(cache=True, nogil=True)
def trimmed_mean_range(
    x: np.ndarray, net_a: np.ndarray, net_b: np.ndarray, k: int, bits: int, out: np.ndarray, c0: int, c1: int
) -> int:  # pragma: no cover - compiled
    """Per column of ``[c0, c1)``, the exact mean of the values left after dropping the ``k`` extremes.

    The ``k`` smallest and the ``k`` largest values of each column are dropped, ``n - 2k`` are kept.

    ``(net_a, net_b)`` must be a comparator network that puts the ``k`` smallest values of every column on
    rows ``0 .. k-1`` and the ``k`` largest on rows ``n-k .. n-1`` (e.g. Batcher's network pruned to those
    outputs): rows ``k .. n-k-1`` then hold the kept values in some order, and their exact sum does not
    depend on that order. The sum is :func:`weighted_sum_range`'s (weights 1, ``bits`` grid bits), and so
    are the bytes. Returns the largest ``bits & 0x7fffffff`` seen; stops early (output invalid) on Inf or
    NaN.
    """
    n = x.shape[0]
    tile = np.empty((n, SUM_TILE), dtype=np.float32)
    tbits = tile.view(np.uint32)
    mask = np.uint32(ABS_MASK)
    top = np.empty(SUM_TILE, dtype=np.uint32)
    acc = np.empty(SUM_TILE, dtype=np.float64)
    scale = np.empty(SUM_TILE, dtype=np.float64)
    unscale = np.empty(SUM_TILE, dtype=np.float64)
    scale_bits = scale.view(np.int64)
    unscale_bits = unscale.view(np.int64)
    divisor = float(n - 2 * k)
    for t0 in range(c0, c1, SUM_TILE):
        width = min(SUM_TILE, c1 - t0)
        # Copy the tile (the network sorts in place) and take every value's magnitude bits on the way.
        top[:width] = 0
        for r in range(n):
            src, dst, db = x[r, t0 : t0 + width], tile[r], tbits[r]
            for j in range(width):
                dst[j] = src[j]
                top[j] = max(top[j], db[j] & mask)
        seen = np.uint32(0)
        for j in range(width):
            seen = max(seen, top[j])
        if seen >= NONFINITE:
            return int(seen)
        _sort_tile(tile, width, net_a, net_b)
        top[:width] = 0
        for r in range(k, n - k):
            db = tbits[r]
            for j in range(width):
                top[j] = max(top[j], db[j] & mask)
        _scales(top, bits, width, scale_bits, unscale_bits)
        acc[:width] = 0.0
        r = k
        while r + 4 <= n - k:
            r0, r1, r2, r3 = tile[r], tile[r + 1], tile[r + 2], tile[r + 3]
            _accumulate4(acc, scale, r0, r1, r2, r3, 1.0, 1.0, 1.0, 1.0, width)
            r += 4
        while r < n - k:
            _accumulate1(acc, scale, tile[r], 1.0, width)
            r += 1
        _finish(acc, divisor, unscale, out[t0 : t0 + width], width)
    return 0
