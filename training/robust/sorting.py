"""Coordinate-wise order statistics with sorting networks: exact and independent of input order.

A sorting network is a fixed list of compare-exchange steps ``(i, j)``: ``x_i, x_j = min, max``. Run on whole
rows (``torch.minimum`` / ``torch.maximum``, which do no arithmetic), it sorts every coordinate at once, and
the sorted values do not depend on the order of the input rows. We use Batcher's odd-even merge sort for the
next power of two, drop the comparators that touch the (virtual, ``+inf``) padding rows, and keep only the
comparators that feed the output positions we need (for a median of 16 that is less than the full 63).
Blocks of :data:`CHUNK` coordinates keep the working set in cache.

The only bytes that could still depend on the order are signs of zero (``-0.0 == +0.0`` to a comparator);
results go through :func:`training.robust.exact.canonical_zero`.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from training.robust.exact import canonical_zero, map_chunks, weighted_sum

CHUNK = 1 << 14
"""Coordinates per block for the comparator passes."""


@functools.cache
def batcher_network(n: int) -> tuple[tuple[int, int], ...]:
    """Return the comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort on ``n`` wires."""
    size = 1
    while size < n:
        size *= 2
    pairs: list[tuple[int, int]] = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        pairs.append((a, b))
            k //= 2
        p *= 2
    return tuple(pairs)


@functools.cache
def pruned_network(n: int, outputs: frozenset[int]) -> tuple[tuple[int, int], ...]:
    """Return the comparators of :func:`batcher_network` that the wires ``outputs`` depend on, in order."""
    live = set(outputs)
    kept: list[tuple[int, int]] = []
    for a, b in reversed(batcher_network(n)):
        if a in live or b in live:
            kept.append((a, b))
            live.update((a, b))
    return tuple(reversed(kept))


def _sorted_rows(block: Tensor, network: tuple[tuple[int, int], ...]) -> list[Tensor]:
    """Apply ``network`` to the rows of a (private, writable) block; returns the rows in sorted positions."""
    rows = list(block.unbind(0))
    for a, b in network:
        low = torch.minimum(rows[a], rows[b])
        torch.maximum(rows[a], rows[b], out=rows[b])
        rows[a] = low
    return rows


def coordinate_median(updates: Tensor) -> Tensor:
    """Per coordinate, the middle value; for even ``n`` the mean of the two middle values.

    The mean of the two middle values ``a, b`` is ``(a + b) / 2`` in float64 rounded once to float32.
    """
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
    """Per coordinate, drop the ``k`` largest and ``k`` smallest values and average the rest (exactly).

    The kept values of each block are summed with :func:`training.robust.exact.weighted_sum`, so the mean
    carries ``53 - ceil(log2(n - 2k))`` bits below each coordinate's largest kept magnitude.
    """
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
