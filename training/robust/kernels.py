"""Fused one-pass numba kernels for the exact aggregation arithmetic of :mod:`training.robust.exact`.

Each kernel reads a column range ``[c0, c1)`` of the ``[n, d]`` matrix once, in tiles of :data:`TILE`
coordinates that stay in L1/L2 cache, and writes only its own slice of the output, so ranges run on plain
threads (the kernels release the GIL) without any shared reduction. They compute the *same numbers* as the
torch formulation (kept as the reference in :mod:`training.robust.reference`), using only:

- integer operations (exponent fields read from the float bits, fixed-point sums and dot products in int64),
- correctly rounded single float operations (multiplication by a power of two, ``rint``, division, casts).

No ``fastmath`` here: LLVM may neither reassociate nor contract the float operations, so the bytes do not
depend on the instruction set (``NUMBA_CPU_NAME``) or the thread schedule. (The accumulation of
:mod:`training.robust.sum_kernel` allows ``contract`` alone: its products are exact integers below ``2**53``,
so fusing a multiply-add rounds the same real number once; see its docstring. The Gram tile is LLVM IR with
explicit vectors and fused multiply-adds by definition, :mod:`training.robust.tile_ir`.)
Loops index
slices from 0 (``row = x[r, t0:t1]; row[j]``), not ``x[r, t0 + j]``: numba's negative-index wrap-around
on a computed index would turn the loads into gathers.

``cache=True`` stores the compiled code in ``NUMBA_CACHE_DIR`` if set, else next to this module, else in
the user cache folder (numba's own order); if neither is writable, in a per-user folder of the temporary
directory (:func:`fallback_cache_dir`), so a read-only install still imports. Loading the cached kernels
takes well under a second; compiling them (a cold cache) about 10-30 s.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numba import njit
from numba.misc.appdirs import AppDirs


def writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def fallback_cache_dir(package_dir: Path, user_dir: Path) -> Path | None:
    """Cache folder to give numba when neither ``package_dir/__pycache__`` nor ``user_dir`` is writable.

    numba's own locators try exactly those two (then raise at import); a read-only install under a
    read-only home gets a per-user folder in the temporary directory instead.
    """
    if writable(package_dir / "__pycache__") or writable(user_dir):
        return None
    return Path(tempfile.gettempdir()) / f"fedchain-numba-{os.getuid()}"


_config: Any = numba.config
if not _config.CACHE_DIR:
    _user_dir = AppDirs(appname="numba", appauthor=False).user_cache_dir  # type: ignore[no-untyped-call]
    _fallback = fallback_cache_dir(Path(__file__).resolve().parent, Path(_user_dir))
    if _fallback is not None:
        _config.CACHE_DIR = str(_fallback)

TILE = 512
"""Coordinates per tile: ``n * TILE`` values of scratch stay in cache."""

ABS_MASK = 0x7FFFFFFF
NONFINITE = 0x7F800000
"""``bits & ABS_MASK`` at least this is Inf or NaN."""
EXP_OFFSET = 1074
"""``pow2[e + EXP_OFFSET] == 2.0**e``."""
ROUND_MAGIC = 6755399441055744.0
"""``1.5 * 2**52``: ``(p + ROUND_MAGIC) - ROUND_MAGIC`` is ``rint(p)`` for ``|p| < 2**51`` (zero: +0.0)."""


@njit(cache=True, nogil=True)
def max_abs_bits(bits: np.ndarray, c0: int, c1: int) -> int:  # pragma: no cover - compiled
    """Largest ``bits & 0x7fffffff`` over all rows of columns ``[c0, c1)`` of an int32 view of float32 data.

    At least ``0x7f800000`` means some value is Inf or NaN.
    """
    top = 0
    for r in range(bits.shape[0]):
        row_top = 0
        for j in range(c0, c1):
            v = bits[r, j] & ABS_MASK
            row_top = v if v > row_top else row_top
        top = row_top if row_top > top else top
    return top


@njit(cache=True, nogil=True)
def _tile_top(tbits: np.ndarray, width: int) -> int:  # pragma: no cover - compiled
    """Largest ``bits & 0x7fffffff`` in ``tbits[:, :width]``."""
    top = 0
    for r in range(tbits.shape[0]):
        for j in range(width):
            v = tbits[r, j] & ABS_MASK
            top = v if v > top else top
    return top


@njit(cache=True, nogil=True)
def _sort_tile(
    tile: np.ndarray, width: int, net_a: np.ndarray, net_b: np.ndarray
) -> None:  # pragma: no cover
    """Apply the comparators ``(net_a[c], net_b[c])`` to every column of ``tile[:, :width]``."""
    for c in range(net_a.shape[0]):
        a = net_a[c]
        b = net_b[c]
        for j in range(width):
            p = tile[a, j]
            v = tile[b, j]
            tile[a, j] = p if p < v else v
            tile[b, j] = v if p < v else p


@njit(cache=True, nogil=True)
def median_range(
    x: np.ndarray, net_a: np.ndarray, net_b: np.ndarray, lo: int, hi: int, out: np.ndarray, c0: int, c1: int
) -> int:  # pragma: no cover - compiled
    """Per column of ``[c0, c1)``, sorted row ``lo`` (``lo == hi``) or ``(row lo + row hi) / 2`` in float64.

    Returns the largest ``bits & 0x7fffffff`` seen; stops early (output invalid) on Inf or NaN.
    """
    n = x.shape[0]
    tile = np.empty((n, TILE), dtype=np.float32)
    tbits = tile.view(np.int32)
    for t0 in range(c0, c1, TILE):
        width = min(TILE, c1 - t0)
        for r in range(n):
            src, dst = x[r, t0 : t0 + width], tile[r]  # slices: plain vector copies, no index wrap-around
            for j in range(width):
                dst[j] = src[j]
        seen = _tile_top(tbits, width)
        if seen >= NONFINITE:
            return seen
        _sort_tile(tile, width, net_a, net_b)
        dst = out[t0 : t0 + width]
        for j in range(width):
            if lo == hi:
                v = tile[lo, j]
            else:
                v = np.float32((np.float64(tile[lo, j]) + np.float64(tile[hi, j])) * 0.5)
            dst[j] = v if v != 0 else np.float32(0.0)
    return 0
