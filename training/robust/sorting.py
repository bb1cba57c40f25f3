"""Coordinate-wise order statistics with sorting networks: exact and independent of input order.

A sorting network is a fixed list of compare-exchange steps ``(i, j)``: ``x_i, x_j = min, max``. Run on whole
rows (``torch.minimum`` / ``torch.maximum``, which do no arithmetic), it sorts every coordinate at once, and
the sorted values do not depend on the order of the input rows. We use Batcher's odd-even merge sort for the
next power of two, drop the comparators that touch the (virtual, ``+inf``) padding rows, and keep only the
comparators that feed the output positions we need (for a median of 16 that is less than the full 63).
:mod:`training.robust.kernels` (median) and :mod:`training.robust.sum_kernel` (trimmed mean) run the network
per tile of coordinates in cache, compare-exchanging whole tile rows (the torch formulation,
:func:`_sorted_rows` over blocks, is the reference in :mod:`training.robust.reference`). The trimmed mean
needs only *which* values are dropped: its network is pruned to the ``k`` lowest and ``k`` highest outputs,
which leaves the kept values on the middle rows in some order (52 comparators instead of 61 for ``n=16,
k=3``).

The only bytes that could still depend on the order are signs of zero (``-0.0 == +0.0`` to a comparator);
results write ``+0.0`` for any zero.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from training.robust import kernels, sum_kernel
from training.robust.exact import as_numpy, check_finite, map_ranges, sum_bits

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


def _network_arrays(network: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray([a for a, _ in network], dtype=np.int64),
        np.asarray([b for _, b in network], dtype=np.int64),
    )


def coordinate_median(updates: Tensor) -> Tensor:
    """Per coordinate, the middle value; for even ``n`` the mean of the two middle values.

    The mean of the two middle values ``a, b`` is ``(a + b) / 2`` in float64 rounded once to float32.
    """
    n, d = updates.shape
    lo, hi = (n - 1) // 2, n // 2
    net_a, net_b = _network_arrays(pruned_network(n, frozenset((lo, hi))))
    x = as_numpy(updates)
    out = np.empty(d, dtype=np.float32)
    check_finite(
        map_ranges(d, CHUNK, lambda c0, c1: kernels.median_range(x, net_a, net_b, lo, hi, out, c0, c1))
    )
    return torch.from_numpy(out)


def coordinate_trimmed_mean(updates: Tensor, k: int) -> Tensor:
    """Per coordinate, drop the ``k`` largest and ``k`` smallest values and average the rest (exactly).

    The kept values are summed as in :func:`training.robust.exact.weighted_sum` (weights 1), so the mean
    carries ``53 - ceil(log2(n - 2k))`` bits below each coordinate's largest kept magnitude.
    """
    n, d = updates.shape
    # Only which values are dropped matters, not the order of the kept ones: a network that sorts the k
    # smallest and k largest into place leaves the kept multiset on the middle rows, with fewer comparators.
    ends = frozenset(range(k)) | frozenset(range(n - k, n))
    net_a, net_b = _network_arrays(pruned_network(n, ends))
    _, bits = sum_bits([1] * (n - 2 * k), n - 2 * k, float(n - 2 * k), [])
    x = as_numpy(updates)
    out = np.empty(d, dtype=np.float32)

    def block_mean(c0: int, c1: int) -> int:
        return sum_kernel.trimmed_mean_range(x, net_a, net_b, k, bits, out, c0, c1)

    check_finite(map_ranges(d, CHUNK, block_mean))
    return torch.from_numpy(out)
