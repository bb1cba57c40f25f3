"""The block Gram kernel of :func:`training.robust.exact.gram`: float32 SIMD in a fixed order.

What it computes
----------------
Let ``2**e`` be the smallest power of two above the largest magnitude of a block of ``chunk = 2**14``
columns (over all rows) and ``s = grid_bits - e`` (``grid_bits = 18``). The block's values are used as they
are when ``e`` is in :data:`UNSCALED` (any realistic update), and otherwise first multiplied by ``2**s``
(``p = float32(v * 2**s)``, so ``|p| < 2**18``; exact unless the result is subnormal, where it rounds
once). Scaling by a power of two changes no rounding in between, so it only keeps huge or tiny blocks away
from float32 overflow and underflow. Then, per pair of rows, in this order:

1. per tile of :data:`TILE` columns and lane ``l`` (the columns ``j`` with ``j % 8 == l``), the float32
   fused multiply-adds ``acc = fma(p_a, p_c, acc)`` in column order, from ``+0.0``
   (:mod:`training.robust.tile_ir`);
2. each tile's lane sums added to a float64 lane total, tile by tile in column order;
3. the eight lane totals summed in float64 as ``((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))``;
4. that value, times the power of two that puts it in units of ``2**(-2 s)`` of the unscaled values,
   rounded to the nearest integer (ties to even): the block's entry, an int64 below ``2**50``.

Every step is a correctly rounded IEEE operation in an order fixed by this definition, so the result does not
depend on the instruction set, the vector width, the thread count or the order of the rows (``fma(a, b, c)``
and ``fma(b, a, c)`` round alike). Blocks are then summed exactly as integers
(:func:`training.robust.exact.combine_grams`), so how blocks are split over threads cannot matter either.
:mod:`training.robust.reference` computes the same steps with torch tensors (emulating the fused
multiply-add exactly) and must give the same integers.

Why float32 fused multiply-adds
-------------------------------
A 256-bit vector holds 8 float32 products per fused multiply-add (4 in float64), the float32 input is read
in place (no copy for unscaled blocks of a multiple of 4 rows), and no rounding pass onto an integer grid is
needed before the products: the Gram matrix is memory-bound rather than multiply-bound. The fixed lane order
makes the float32 rounding part of the definition, so it is the same on every peer. Error: each product is
rounded relative to its own size (``2**-24``); the float32 sums run over 32 terms before they move into
float64; the final integers have ``2**-36`` of the block's largest squared magnitude as their unit. In all,
an entry differs from the exact inner product by at most ``2**-18 * sum_j |x_ij x_kj|`` plus half a unit
per block (the bound ``tests/unit/training/test_aggregate_reference.py`` checks): the same order as rounding
every value to 18 bits below the block's largest magnitude, and smaller for small values.

The scan
--------
The block's magnitude scan compares the float bits as unsigned 32-bit integers, four rows per pass, and also
finds Inf and NaN. Scan, scaling and the tile products share one pass over each tile by guessing the
block's scale from the previous block's (:func:`gram_range`); a wrong guess is detected and the block
redone, so the result never depends on it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from training.robust.kernels import ABS_MASK, EXP_OFFSET, NONFINITE
from training.robust.tile_ir import LANES, TILE, tile_gram

UNSCALED = (-40, 40)
"""Blocks whose largest magnitude ``m`` has ``frexp`` exponent in this range (``2**-41 <= m < 2**40``) are
multiplied as they are; others are scaled by a power of two first (:func:`input_scale`)."""

EXACT_LIMIT_BITS = 50
"""Block Gram entries stay below ``2**EXACT_LIMIT_BITS`` (int64 sums of 4096 blocks cannot overflow)."""


@njit(cache=True, nogil=True)
def _rows_top(bits: np.ndarray, t0: int, width: int, lanes: np.ndarray) -> None:  # pragma: no cover
    """``lanes[j] = max(lanes[j], max_r bits[r, t0 + j] & 0x7fffffff)`` (unsigned 32-bit integer max).

    ``bits`` and ``lanes`` are uint32, so the max stays in 32-bit lanes (8 per 256-bit vector). Four rows
    per pass, so that ``lanes`` is loaded and stored once per four rows.
    """
    mask = np.uint32(ABS_MASK)
    rows = bits.shape[0]
    r = 0
    while r + 4 <= rows:
        # Slices indexed from 0: plain vector loads, no index wrap-around.
        b0, b1 = bits[r, t0 : t0 + width], bits[r + 1, t0 : t0 + width]
        b2, b3 = bits[r + 2, t0 : t0 + width], bits[r + 3, t0 : t0 + width]
        for j in range(width):
            top = max(max(b0[j] & mask, b1[j] & mask), max(b2[j] & mask, b3[j] & mask))
            lanes[j] = max(lanes[j], top)
        r += 4
    while r < rows:
        br = bits[r, t0 : t0 + width]
        for j in range(width):
            lanes[j] = max(lanes[j], br[j] & mask)
        r += 1


@njit(cache=True, nogil=True)
def _scale(
    x: np.ndarray, t0: int, width: int, s: int, pow2: np.ndarray, q: np.ndarray, q0: int
) -> None:  # pragma: no cover - compiled
    """``q[q0 + r, :width] = float32(x[r, t0 : t0 + width] * 2**s)`` (correctly rounded); the rest zero.

    With ``2**s`` a normal float32 the float32 product is the correctly rounded exact product; otherwise the
    float64 product is exact (a float32 times a power of two, far inside float64's range) and the cast rounds
    it once: the same value either way. No ``fastmath``: there is nothing to fuse or reorder.
    """
    for r in range(x.shape[0]):
        xr = x[r, t0 : t0 + width]  # a slice indexed from 0: plain vector loads, no index wrap-around
        qr = q[q0 + r]
        if -126 <= s <= 127:
            sc = np.float32(pow2[s + EXP_OFFSET])
            for j in range(width):
                qr[j] = xr[j] * sc
        else:
            wide = pow2[s + EXP_OFFSET]
            for j in range(width):
                qr[j] = np.float32(np.float64(xr[j]) * wide)
        for j in range(width, TILE):
            qr[j] = 0.0


@njit(cache=True, nogil=True)
def _exponent(top: int) -> int:  # pragma: no cover - compiled
    """``frexp`` exponent ``e`` (``mag in [2**(e-1), 2**e)``) of the float32 magnitude with bits ``top``."""
    field = top >> 23
    if field > 0:
        return field - 126  # normal float32
    exponent = -149  # subnormal: mag = top * 2**-149, exponent = bit_length(top) - 149
    while top > 0:
        top >>= 1
        exponent += 1
    return exponent


@njit(cache=True, nogil=True)
def _bits_of_pow2(e: int) -> int:  # pragma: no cover - compiled
    """Bits of the float32 ``2**e`` for ``-149 <= e <= 128`` (``2**128``: the bits of Inf).

    A finite float32 magnitude with bits ``v`` has frexp exponent at most ``e`` exactly when ``v`` is below
    this (float32 bits of non-negative values order like the values).
    """
    return (e + 127) << 23 if e >= -126 else 1 << (e + 149)


@njit(cache=True, nogil=True)
def input_scale(exponent: int, grid_bits: int) -> int:  # pragma: no cover - compiled
    """Power of two ``s`` a block is multiplied by before its products, from its largest magnitude's exponent.

    ``0`` (the values as they are) when that exponent is in :data:`UNSCALED`: products stay below ``2**80``
    and sums far below float32's range, and values down to ``2**-63`` have normal products. Otherwise
    ``grid_bits - exponent``, which puts the largest magnitude just below ``2**grid_bits``.
    """
    if UNSCALED[0] <= exponent <= UNSCALED[1]:
        return 0
    return grid_bits - exponent


@njit(cache=True, nogil=True)
def _add_tile(
    x: np.ndarray,
    extra: np.ndarray,
    t0: int,
    tw: int,
    s: int,
    pow2: np.ndarray,
    q: np.ndarray,
    sums: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add the lane sums of columns ``[t0, t0 + tw)`` (scaled by ``2**s``) to ``sums``.

    Unscaled full tiles of a matrix with a multiple of 4 rows and no extra row are read in place (``x`` is
    C-contiguous); any other tile is first copied, scaled and zero-padded into ``q``. Both give the same
    products: scaling by ``2**0`` changes nothing, and padding adds zero products.
    """
    n = x.shape[0]
    if s == 0 and tw == TILE and extra.shape[0] == 0 and n % 4 == 0:
        tile_gram(x.ctypes.data + 4 * t0, x.shape[1], n, sums.ctypes.data)
        return
    _scale(x, t0, tw, s, pow2, q, 0)
    _scale(extra, t0, tw, s, pow2, q, n)
    tile_gram(q.ctypes.data, TILE, q.shape[0], sums.ctypes.data)


@njit(cache=True, nogil=True)
def _lane_tree(v: np.ndarray) -> float:  # pragma: no cover - compiled
    """``((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7))`` in float64, in exactly this order."""
    return float(((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])))


@njit(cache=True, nogil=True)
def gram_range(
    x: np.ndarray,
    xbits: np.ndarray,
    extra: np.ndarray,
    chunk: int,
    grid_bits: int,
    pow2: np.ndarray,
    c0: int,
    c1: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Integer Gram matrix of every block of ``chunk`` columns in ``[c0, c1)`` (``c0`` block-aligned).

    Rows are those of ``x`` then those of ``extra``; each block as the module docstring defines it, with
    ``s = grid_bits - frexp(max |v|)[1]``. Returns the per-block Gram matrices (int64), ``2 * s`` per block,
    whether the block is non-zero, and ``[blocks speculated, guesses that held]``. On Inf or NaN it stops:
    that block is marked non-zero with shift ``-1`` (``2 * s`` is never odd). Raises ``ValueError`` if
    ``chunk * 2**(2 * grid_bits)`` exceeds ``2**50`` (entries could leave int64's safe range).

    **One pass over memory, speculatively.** The scale needs the block's largest magnitude before any value
    is scaled, which would take two passes over each block: a magnitude scan from memory, then scaling
    and products from cache. Neighbouring blocks almost always share that magnitude's exponent, so a block is
    scanned, scaled by the previous block's factor and multiplied in the same tile-by-tile pass. When the
    scan ends on an exponent with that same input scale (:func:`input_scale`: every block of a realistic
    update, whose exponents all lie in :data:`UNSCALED`), the result is exactly the one the two passes give;
    otherwise the block is redone with its own scale from cache. A tile whose magnitude already needs
    another scale stops the speculative work early. After a miss the next
    block scans first, so inputs whose magnitudes jump from block to block cost at most about one wasted
    pass over cache per two blocks. Either way every block's sums use its own scale: the bytes never depend
    on the guess.
    """
    # |p| < 2**grid_bits, so |sum of chunk products| <= chunk * 2**(2 * grid_bits): must fit the int64 sums.
    if chunk * (1 << (2 * grid_bits)) > 1 << EXACT_LIMIT_BITS:
        raise ValueError("gram block too large for int64 block sums")
    n = x.shape[0]
    m = n + extra.shape[0]
    blocks = (c1 - c0 + chunk - 1) // chunk
    grams = np.zeros((blocks, m, m), dtype=np.int64)
    shifts = np.zeros(blocks, dtype=np.int64)
    nonzero = np.zeros(blocks, dtype=np.bool_)
    stats = np.zeros(2, dtype=np.int64)
    rows = (m + 3) // 4 * 4
    q = np.zeros((rows, TILE), dtype=np.float32)  # padding rows stay zero
    sums = np.zeros((rows, rows, LANES), dtype=np.float64)  # float64 lane totals per pair
    tops = np.zeros(TILE, dtype=np.uint32)
    ebits = extra.view(np.uint32)
    speculate = False  # guess the previous block's exponent (after a scanned block or a guess that held)
    guess = 0
    for b in range(blocks):
        b0 = c0 + b * chunk
        width = min(chunk, c1 - b0)
        tops[:] = 0  # largest magnitude bits, one lane per tile column (no serial max chain)
        sums[:, :, :] = 0.0
        live = speculate
        if live:
            stats[0] += 1
            scale = input_scale(guess, grid_bits)
            # Above this the block needs another scale: out of UNSCALED, or above a scaled guess's exponent.
            limit = np.uint32(_bits_of_pow2(UNSCALED[1] if scale == 0 else guess))
        for t0 in range(b0, b0 + width, TILE):
            tw = min(TILE, b0 + width - t0)
            _rows_top(xbits, t0, tw, tops)
            _rows_top(ebits, t0, tw, tops)
            if live:
                if tops.max() >= limit:
                    live = False  # the block needs another scale than guessed: finish the scan alone
                else:
                    _add_tile(x, extra, t0, tw, scale, pow2, q, sums)
        top = int(tops.max())
        if top >= NONFINITE:
            nonzero[b] = True
            shifts[b] = -1
            return grams, shifts, nonzero, stats
        if top == 0:
            continue
        exponent = _exponent(top)
        s = grid_bits - exponent
        # The lane sums depend on the exponent only through the input scale (0 across all of UNSCALED).
        held = live and input_scale(exponent, grid_bits) == scale
        if held:
            stats[1] += 1
        else:
            # Scanned first, or the guess missed: the block (about 1 MiB for 16 rows) is still in cache.
            sums[:, :, :] = 0.0
            for t0 in range(b0, b0 + width, TILE):
                _add_tile(
                    x, extra, t0, min(TILE, b0 + width - t0), input_scale(exponent, grid_bits), pow2, q, sums
                )
        speculate = held or not speculate  # a block scanned first gives the next guess
        guess = exponent
        g = grams[b]
        # Sums of values scaled by 2**t are in units of 2**(-2t); the block's integers are in units of
        # 2**(-2s). Multiplying by a power of two is exact (the integers stay below 2**50).
        to_units = pow2[2 * (s - input_scale(exponent, grid_bits)) + EXP_OFFSET]
        for a in range(m):
            for c in range(a + 1):
                g[a, c] = np.int64(np.rint(_lane_tree(sums[a, c]) * to_units))
                g[c, a] = g[a, c]
        shifts[b] = 2 * s
        nonzero[b] = True
    return grams, shifts, nonzero, stats
