"""The exact block Gram kernel of :func:`training.robust.exact.gram`, in float64 SIMD.

Why float64 multiply-adds give the *exact* integer Gram matrix, in any order
---------------------------------------------------------------------------
Each block of ``chunk = 2**14`` columns is put on one grid: ``q = rint(v * 2**s)`` with
``s = grid_bits - e`` and ``max |v| < 2**e``, so every grid value is an integer with ``|q| <= 2**18``
(``grid_bits = 18``; ``rint`` may round up to exactly ``2**18``). Hence

- every product ``q_a q_c`` is an integer with ``|q_a q_c| <= 2**36``;
- every partial sum of any subset of the block's products (at most ``2**14`` of them) is an integer with
  absolute value at most ``2**14 * 2**36 = 2**50``.

Every integer of magnitude up to ``2**53`` is a float64, so each product, each sum and each fused
multiply-add of these values is computed without rounding. Arithmetic without rounding is associative and
commutative, so the float64 result does not depend on the summation order, on whether LLVM fuses
``a * b + c`` into one FMA, on the vector width (``NUMBA_CPU_NAME``, SSE2 to AVX-512), or on the tile
split: it *is* the integer Gram matrix of the grid values. That is what allows ``fastmath={"reassoc",
"contract"}`` on :func:`_tile_gram`: the loop is vectorised with several independent accumulators per
entry and FMA contraction. (:func:`_quantize` allows ``contract`` alone, for another reason: see there.)
``nnan``/``ninf`` are never given (the grid values are finite anyway: the block's Inf/NaN check runs
before quantising). :func:`gram_range` checks the bound
``chunk * 2**(2 * grid_bits) <= 2**50`` explicitly and converts each block's float64 sums to int64 once.

The quantised tile ``q`` is float64 (the rounded float64 product is already an integer-valued float64)
in a ``[rows rounded up to 4, GRAM_TILE]`` buffer (32 KiB for 16 rows) that stays in L1 cache; the
padding rows are zero, so the 4x4 register blocks of :func:`_tile_gram` need no remainder loops (blocks on
the diagonal compute only their 10 lower entries). The block's magnitude scan compares the float bits as
unsigned 32-bit integers, four rows per pass. Scan, rounding and multiply-adds share one pass over each
tile by guessing the block's grid from the previous block's (:func:`gram_range`); a wrong guess is
detected and the block redone, so the result never depends on it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from training.robust.kernels import ABS_MASK, EXP_OFFSET, NONFINITE, ROUND_MAGIC

GRAM_TILE = 256
"""Columns per quantised tile: ``rows * GRAM_TILE`` float64 values (32 KiB for 16 rows) stay in L1 cache.

256 rather than 128 halves the horizontal sums and accumulator updates per column of :func:`_tile_gram`
(about 8% less time for the whole Gram, measured); 512 no longer fits L1.
"""

EXACT_LIMIT_BITS = 50
"""A block's Gram partial sums stay below ``2**EXACT_LIMIT_BITS <= 2**53`` (exact in float64)."""


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _diagonal_block(q: np.ndarray, a: int, width: int, g: np.ndarray) -> None:  # pragma: no cover
    """``g[a + r, a + c] += sum_j q[a + r, j] q[a + c, j]`` for the 10 entries ``c <= r < 4`` of a 4x4 block.

    A diagonal block is symmetric: 10 multiply-adds per column instead of 16. Exact (module docstring).
    """
    x0, x1, x2, x3 = q[a], q[a + 1], q[a + 2], q[a + 3]
    t00 = t10 = t11 = t20 = t21 = t22 = t30 = t31 = t32 = t33 = 0.0
    for j in range(width):
        a0, a1, a2, a3 = x0[j], x1[j], x2[j], x3[j]
        t00 += a0 * a0
        t10 += a1 * a0
        t11 += a1 * a1
        t20 += a2 * a0
        t21 += a2 * a1
        t22 += a2 * a2
        t30 += a3 * a0
        t31 += a3 * a1
        t32 += a3 * a2
        t33 += a3 * a3
    g[a, a] += t00
    g[a + 1, a] += t10
    g[a + 1, a + 1] += t11
    g[a + 2, a] += t20
    g[a + 2, a + 1] += t21
    g[a + 2, a + 2] += t22
    g[a + 3, a] += t30
    g[a + 3, a + 1] += t31
    g[a + 3, a + 2] += t32
    g[a + 3, a + 3] += t33


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _tile_gram(q: np.ndarray, width: int, g: np.ndarray) -> None:  # pragma: no cover - compiled
    """``g[a, c] += sum_j q[a, j] q[c, j]`` over ``q[:, :width]`` for every ``c <= a`` (lower triangle).

    ``q`` has a multiple of 4 rows: 4x4 register blocks below the diagonal, :func:`_diagonal_block` on it.
    Exact (see the module docstring): every value, product and partial sum is an integer below ``2**50``,
    so ``reassoc``/``contract`` cannot change any bit of ``g``.
    """
    for a in range(0, q.shape[0], 4):
        _diagonal_block(q, a, width, g)
        x0, x1, x2, x3 = q[a], q[a + 1], q[a + 2], q[a + 3]
        for c in range(0, a, 4):
            y0, y1, y2, y3 = q[c], q[c + 1], q[c + 2], q[c + 3]
            t00 = t01 = t02 = t03 = t10 = t11 = t12 = t13 = 0.0
            t20 = t21 = t22 = t23 = t30 = t31 = t32 = t33 = 0.0
            for j in range(width):
                a0, a1, a2, a3 = x0[j], x1[j], x2[j], x3[j]
                b0, b1, b2, b3 = y0[j], y1[j], y2[j], y3[j]
                t00 += a0 * b0
                t01 += a0 * b1
                t02 += a0 * b2
                t03 += a0 * b3
                t10 += a1 * b0
                t11 += a1 * b1
                t12 += a1 * b2
                t13 += a1 * b3
                t20 += a2 * b0
                t21 += a2 * b1
                t22 += a2 * b2
                t23 += a2 * b3
                t30 += a3 * b0
                t31 += a3 * b1
                t32 += a3 * b2
                t33 += a3 * b3
            g[a, c] += t00
            g[a, c + 1] += t01
            g[a, c + 2] += t02
            g[a, c + 3] += t03
            g[a + 1, c] += t10
            g[a + 1, c + 1] += t11
            g[a + 1, c + 2] += t12
            g[a + 1, c + 3] += t13
            g[a + 2, c] += t20
            g[a + 2, c + 1] += t21
            g[a + 2, c + 2] += t22
            g[a + 2, c + 3] += t23
            g[a + 3, c] += t30
            g[a + 3, c + 1] += t31
            g[a + 3, c + 2] += t32
            g[a + 3, c + 3] += t33


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


@njit(cache=True, nogil=True, fastmath={"contract"})
def _quantize(
    x: np.ndarray, t0: int, width: int, sc: float, q: np.ndarray, q0: int
) -> None:  # pragma: no cover
    """``q[q0 + r, j] = rint(x[r, t0 + j] * sc)`` in float64 (up to the sign of zero), ``sc = 2**s``.

    Computed as ``(v * sc + ROUND_MAGIC) - ROUND_MAGIC`` with ``ROUND_MAGIC = 1.5 * 2**52``, which
    ``contract`` lets LLVM turn into one FMA and one subtraction (instead of a multiply and a 2-uop round):

    - ``p = v * sc`` is exact in float64 (a float32 times a power of two, ``|p| <= 2**18`` and
      ``|p| >= 2**-149 * 2**-110``, far inside float64's normal range), so the FMA and the separate
      multiply-add round the same real number ``p + ROUND_MAGIC`` once: ``contract`` cannot change a bit;
    - ``p + ROUND_MAGIC`` lies in ``[2**52, 2**53)``, where float64 values are exactly the integers: the
      rounding is to the nearest integer, ties to even, and ``ROUND_MAGIC`` is even, so it is
      ``ROUND_MAGIC + rint(p)``, and the subtraction is exact.

    The only difference from ``rint`` is that a negative value that rounds to zero gives ``+0.0`` instead
    of ``-0.0``; a zero of either sign adds nothing to the integer Gram sums. No ``reassoc``: it could
    cancel the two ``ROUND_MAGIC`` terms.
    """
    for r in range(x.shape[0]):
        xr = x[r, t0 : t0 + width]  # a slice indexed from 0: plain vector loads, no index wrap-around
        qr = q[q0 + r]
        for j in range(width):
            qr[j] = (np.float64(xr[j]) * sc + ROUND_MAGIC) - ROUND_MAGIC


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
def _quantized_tiles(
    x: np.ndarray, extra: np.ndarray, b0: int, width: int, sc: float, q: np.ndarray, acc: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Add the Gram matrix of block columns ``[b0, b0 + width)`` on the grid ``rint(v * sc)`` to ``acc``."""
    n = x.shape[0]
    for t0 in range(b0, b0 + width, GRAM_TILE):
        tw = min(GRAM_TILE, b0 + width - t0)
        _quantize(x, t0, tw, sc, q, 0)
        _quantize(extra, t0, tw, sc, q, n)
        _tile_gram(q, tw, acc)


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
    """Exact integer Gram matrix of every block of ``chunk`` columns in ``[c0, c1)`` (``c0`` block-aligned).

    Rows are those of ``x`` then those of ``extra``. Each block is rounded to ``grid_bits`` bits below its
    largest magnitude: ``q = rint(v * 2**s)`` with ``s = grid_bits - frexp(max |v|)[1]``. Returns the
    per-block Gram matrices (int64), ``2 * s`` per block, whether the block is non-zero, and
    ``[blocks speculated, guesses that held]``. On Inf or NaN it stops: that block is marked non-zero with
    shift ``-1`` (``2 * s`` is never odd). Raises ``ValueError`` if ``chunk * 2**(2 * grid_bits)`` exceeds
    ``2**50`` (float64 sums would not be exact).

    **One pass over memory, speculatively.** The grid needs the block's largest magnitude before any value
    is rounded, which took two passes over each block: a magnitude scan from memory, then rounding and
    multiply-adds from cache. Neighbouring blocks almost always share that magnitude's exponent, so a block
    is scanned, rounded on the previous block's grid and multiplied in the same tile-by-tile pass. When the
    scan ends on that same exponent (about 95% of blocks of the benchmark's matrix), the result is exactly
    the one the two passes give; otherwise the block is redone on its own grid from cache, as before. A tile
    whose magnitude already exceeds the guessed grid stops the speculative work early. After a miss the next
    block scans first, so inputs whose magnitudes jump from block to block cost at most about one wasted
    rounding pass per two blocks. Either way every block's sums come from its own grid: the bytes never
    depend on the guess.
    """
    # |q| <= 2**grid_bits, so |sum of chunk products| <= chunk * 2**(2 * grid_bits): must stay exact.
    if chunk * (1 << (2 * grid_bits)) > 1 << EXACT_LIMIT_BITS:
        raise ValueError("gram block too large for exact float64 sums")
    n = x.shape[0]
    m = n + extra.shape[0]
    blocks = (c1 - c0 + chunk - 1) // chunk
    grams = np.zeros((blocks, m, m), dtype=np.int64)
    shifts = np.zeros(blocks, dtype=np.int64)
    nonzero = np.zeros(blocks, dtype=np.bool_)
    stats = np.zeros(2, dtype=np.int64)
    q = np.zeros(((m + 3) // 4 * 4, GRAM_TILE), dtype=np.float64)  # padding rows stay zero
    acc = np.empty((q.shape[0], q.shape[0]), dtype=np.float64)
    lanes = np.zeros(GRAM_TILE, dtype=np.uint32)
    ebits = extra.view(np.uint32)
    speculate = False  # guess the previous block's exponent (after a scanned block or a guess that held)
    guess = 0
    for b in range(blocks):
        b0 = c0 + b * chunk
        width = min(chunk, c1 - b0)
        lanes[:] = 0  # largest magnitude bits, one lane per tile column (no serial max chain)
        acc[:, :] = 0.0
        live = speculate
        if live:
            stats[0] += 1
            sc = pow2[grid_bits - guess + EXP_OFFSET]
            limit = np.uint32(_bits_of_pow2(guess))
        for t0 in range(b0, b0 + width, GRAM_TILE):
            tw = min(GRAM_TILE, b0 + width - t0)
            _rows_top(xbits, t0, tw, lanes)
            _rows_top(ebits, t0, tw, lanes)
            if live:
                if lanes.max() >= limit:
                    live = False  # the block's exponent is above the guess: finish the scan alone
                else:
                    _quantize(x, t0, tw, sc, q, 0)
                    _quantize(extra, t0, tw, sc, q, n)
                    _tile_gram(q, tw, acc)
        top = int(lanes.max())
        if top >= NONFINITE:
            nonzero[b] = True
            shifts[b] = -1
            return grams, shifts, nonzero, stats
        if top == 0:
            continue
        exponent = _exponent(top)
        s = grid_bits - exponent
        held = live and exponent == guess
        if held:
            stats[1] += 1
        else:
            # Scanned first, or the guess missed: the block (about 1 MiB for 16 rows) is still in cache.
            acc[:, :] = 0.0
            _quantized_tiles(x, extra, b0, width, pow2[s + EXP_OFFSET], q, acc)
        speculate = held or not speculate  # a block scanned first gives the next guess
        guess = exponent
        g = grams[b]
        for a in range(m):
            for c in range(a + 1):
                g[a, c] = np.int64(acc[a, c])  # an integer below 2**50: converted exactly
                g[c, a] = g[a, c]
        shifts[b] = 2 * s
        nonzero[b] = True
    return grams, shifts, nonzero, stats
