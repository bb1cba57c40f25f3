"""Robust aggregators: pure, bit-exact functions from an ``[n, d]`` update matrix to one ``[d]`` update.

Every aggregator is ``fn(updates: Tensor[n, d] float32, weights: Tensor[n], **params) -> Tensor[d] float32``,
registered by name in :data:`AGGREGATORS`. ``weights`` are sample counts (non-negative integers). Inputs are
never modified. Each raises ``ValueError`` naming the violated bound when ``n`` is too small for its
parameters, and for non-finite or wrongly shaped input.

Bit-exactness (see :mod:`training.robust.exact`, consensus arithmetic :data:`training.merge.ARITHMETIC`):

- weighted sums over ``n`` (mean, trimmed mean, Multi-Krum, the last step of the geometric median and
  centered clipping, ``norm_bound``) are exact integer sums on a per-coordinate fixed-point grid;
- distances and norms (Krum, Multi-Krum, geometric median, centered clipping, ``norm_bound``) come from the
  canonical Gram matrix of :func:`training.robust.exact.gram`: per block of coordinates, float32 fused
  multiply-adds in an order fixed by its definition, rounded to integers and summed exactly across blocks;
- order statistics (median, trimmed mean) are sorting networks, which do no arithmetic;
- ties are broken by the sha256 of the row bytes, and ``-0.0`` is written as ``+0.0``.

So the output bytes are the same for any order of the rows, any ``torch.set_num_threads``, any
``ATEN_CPU_CAPABILITY`` and any x86-64 instruction set (``tests/unit/training/test_determinism.py``).

=====================  ==========================================================  ========================
aggregator             tolerates ``f`` Byzantine inputs out of ``n``               raises ``ValueError`` if
=====================  ==========================================================  ========================
``mean``               none (one input moves it arbitrarily)                       ``n < 1``
``norm_bound``         none, but each input moves it by at most ``w_i M / W``      ``n < 1``
``median``             ``f < n / 2`` (breakdown point 1/2)                         ``n <= 2f``
``trimmed_mean``       ``f <= floor(beta n)``                                      ``beta`` not in [0, 0.5)
``krum``               ``f`` with ``n > 2f + 2`` (Blanchard et al. 2017)           ``n <= 2f + 2``
``multi_krum``         same as Krum, averaging the ``m`` best-scored inputs        ``n <= 2f + 2``
``geometric_median``   ``f < n / 2`` (breakdown point 1/2)                         ``n <= 2f``
``centered_clip``      ``f / n`` up to about 0.1 with a good ``tau`` (Karimireddy   ``n <= 2f``
                       et al. 2021); in practice ``f < n / 2``
=====================  ==========================================================  ========================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from training.robust import span
from training.robust.exact import (
    check_updates,
    gram,
    integer_weights,
    quantize_coefficients,
    row_digest,
    sq_norms,
    weighted_sum,
)
from training.robust.sorting import coordinate_median, coordinate_trimmed_mean

Aggregator = Callable[..., Tensor]

WEISZFELD_MAX_ITER, WEISZFELD_TOL, WEISZFELD_EPS = 100, 1e-8, 1e-12
"""Weiszfeld defaults of :func:`geometric_median`, also centered clipping's default start."""


def _check_f(f: int, n: int, name: str) -> None:
    if not isinstance(f, int) or f < 0:
        raise ValueError(f"`f` must be a non-negative integer, got {f!r}")
    if n <= 2 * f:
        raise ValueError(f"{name} needs n > 2f, got n={n}, f={f}")


def mean(updates: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean ``sum_i w_i x_i / sum_i w_i``, exact on the fixed-point grid.

    Tolerates no Byzantine input. Order never matters: the sum is exact.

    Parameters
    ----------
    updates
        ``[n, d]`` float32 updates.
    weights
        ``[n]`` sample counts.

    Returns
    -------
    Tensor
        ``[d]`` float32 aggregate.
    """
    check_updates(updates, weights, finite=False)
    ws = integer_weights(weights)
    return weighted_sum(updates, ws, float(sum(ws)))


def norm_bound(updates: Tensor, weights: Tensor, *, max_norm: float) -> Tensor:
    """Scale every update with L2 norm above ``max_norm`` down to ``max_norm``, then take the weighted mean.

    Bounds the influence of any single input to ``w_i max_norm / W`` but does not remove it (``f = 0``).
    Norms come from the canonical Gram matrix of :func:`training.robust.exact.gram` (the same bits on every
    peer); the scale factors are rounded to 24-bit integer coefficients.
    """
    check_updates(updates, weights, finite=False)
    if not max_norm > 0.0:
        raise ValueError(f"`max_norm` must be > 0, got {max_norm!r}")
    ws = integer_weights(weights)
    norms = [math.sqrt(v) for v in sq_norms(updates)]
    factors = [w * (1.0 if r <= max_norm else max_norm / r) for w, r in zip(ws, norms, strict=True)]
    if max(factors) == 0.0:
        return torch.zeros(updates.shape[1], dtype=torch.float32)
    coeffs = quantize_coefficients(factors, span.COEFF_BITS)
    # sum_i coeff_i x_i / (top / 2**bits) / W, with top the largest factor.
    scale = max(factors) / float(1 << span.COEFF_BITS)
    return weighted_sum(updates, coeffs, float(sum(ws)) / scale)


def median(updates: Tensor, weights: Tensor, *, f: int = 0) -> Tensor:
    """Coordinate-wise median (mean of the two middle values for even ``n``); ignores ``weights``.

    Tolerates ``f < n / 2`` Byzantine inputs; raises ``ValueError`` if ``n <= 2f``.
    """
    check_updates(updates, weights, finite=False)
    _check_f(f, updates.shape[0], "median")
    return coordinate_median(updates)


def trimmed_mean(updates: Tensor, weights: Tensor, *, trim_ratio: float = 0.1) -> Tensor:
    """Coordinate-wise trimmed mean: drop the ``k = floor(trim_ratio * n)`` largest and smallest values.

    Ignores ``weights``. Tolerates ``f <= k`` Byzantine inputs (so ``n > 2f`` at best); raises ``ValueError``
    if ``trim_ratio`` is outside ``[0, 0.5)`` (which keeps ``n > 2k``) or ``n < 1``.
    """
    check_updates(updates, weights, finite=False)
    if not 0.0 <= trim_ratio < 0.5:
        raise ValueError(f"`trim_ratio` must be in [0, 0.5), got {trim_ratio!r}")
    # trim_ratio < 0.5 gives k < n / 2, so at least one value per coordinate is kept.
    return coordinate_trimmed_mean(updates, int(trim_ratio * updates.shape[0]))


def krum_scores(updates: Tensor, f: int) -> list[float]:
    """Krum score of each row: sum of squared distances to its ``n - f - 2`` nearest other rows."""
    n = updates.shape[0]
    g = gram(updates)
    scores = []
    for i in range(n):
        near = sorted(g.sq_distance(i, k) for k in range(n) if k != i)[: n - f - 2]
        scores.append(sum(near))
    return scores


def _ranked(updates: Tensor, scores: list[float]) -> list[int]:
    """Row indices by score, ties broken by the sha256 of the row bytes (order-free)."""
    digests: dict[int, bytes] = {}

    def key(i: int) -> tuple[float, bytes]:
        tied = sum(1 for s in scores if s == scores[i]) > 1
        if tied and i not in digests:
            digests[i] = row_digest(updates, i)
        return scores[i], digests.get(i, b"")

    return sorted(range(len(scores)), key=key)


def _check_krum(updates: Tensor, weights: Tensor, f: int, name: str) -> None:
    check_updates(updates, weights, finite=False)
    if not isinstance(f, int) or f < 0:
        raise ValueError(f"`f` must be a non-negative integer, got {f!r}")
    n = updates.shape[0]
    if n <= 2 * f + 2:
        raise ValueError(f"{name} needs n > 2f + 2, got n={n}, f={f}")


def krum(updates: Tensor, weights: Tensor, *, f: int = 1) -> Tensor:
    """Return the input with the lowest Krum score (Blanchard et al. 2017); ignores ``weights``.

    Tolerates ``f`` Byzantine inputs when ``n > 2f + 2``; raises ``ValueError`` otherwise.
    """
    _check_krum(updates, weights, f, "krum")
    best = _ranked(updates, krum_scores(updates, f))[0]
    return updates[best].clone()


def multi_krum(updates: Tensor, weights: Tensor, *, f: int = 1, m: int | None = None) -> Tensor:
    """Weighted mean of the ``m`` inputs with the lowest Krum scores (default ``m = n - f``).

    Scores are computed once (as Flower does). Tolerates ``f`` Byzantine inputs when ``n > 2f + 2``.
    """
    _check_krum(updates, weights, f, "multi_krum")
    n = updates.shape[0]
    m = n - f if m is None else m
    if not 1 <= m <= n - f:
        raise ValueError(f"`m` must be in [1, n - f] = [1, {n - f}], got {m!r}")
    ws = integer_weights(weights)
    chosen = _ranked(updates, krum_scores(updates, f))[:m]
    chosen_w = [ws[i] for i in chosen]
    if sum(chosen_w) == 0:
        raise ValueError("the selected updates all have weight 0")
    return weighted_sum(updates, chosen_w, float(sum(chosen_w)), rows=chosen)


def geometric_median(
    updates: Tensor,
    weights: Tensor,
    *,
    f: int = 0,
    max_iter: int = WEISZFELD_MAX_ITER,
    tol: float = WEISZFELD_TOL,
    eps: float = WEISZFELD_EPS,
) -> Tensor:
    """Weighted geometric median by Weiszfeld's algorithm (smoothed by ``eps``), deterministic.

    Tolerates ``f < n / 2`` Byzantine inputs; raises ``ValueError`` if ``n <= 2f``. Stops after ``max_iter``
    steps or when the objective improves by less than ``tol`` (relative).
    """
    check_updates(updates, weights, finite=False)
    _check_f(f, updates.shape[0], "geometric_median")
    if max_iter < 0 or not tol >= 0.0 or not eps > 0.0:
        raise ValueError(f"need max_iter >= 0, tol >= 0, eps > 0, got {max_iter}, {tol}, {eps}")
    ws = integer_weights(weights)
    coeffs, _ = span.weiszfeld(gram(updates), ws, max_iter=max_iter, tol=tol, eps=eps)
    return weighted_sum(updates, coeffs, float(sum(coeffs)))


def centered_clip(
    updates: Tensor,
    weights: Tensor,
    *,
    f: int = 0,
    tau: float | None = None,
    iters: int = 3,
    center: Tensor | None = None,
) -> Tensor:
    """Centered clipping (Karimireddy et al. 2021) from ``center`` (default: the weighted geometric median).

    ``iters`` steps of ``v <- v + sum_i (w_i / W) min(1, tau / ||x_i - v||) (x_i - v)``; ``tau=None`` uses
    the median distance to ``v`` at each step. Raises ``ValueError`` if ``n <= 2f``.

    The default start is the weighted geometric median (Weiszfeld with :func:`geometric_median`'s defaults),
    a robust start with breakdown point 1/2 (so the same ``n > 2f`` bound). It is computed in coefficient
    space over the same Gram matrix the clipping steps use, so the default costs one Gram matrix and
    one weighted sum over ``d`` in all. (Before, the default start was the coordinate-wise median: an extra
    pass over ``d`` and an extra Gram row; the default output bytes changed with this.) An explicit
    ``center`` (e.g. the previous aggregate) is appended to the Gram matrix as one more row.
    """
    check_updates(updates, weights, finite=False)
    _check_f(f, updates.shape[0], "centered_clip")
    if tau is not None and not tau > 0.0:
        raise ValueError(f"`tau` must be > 0 or None, got {tau!r}")
    if iters < 1:
        raise ValueError(f"`iters` must be >= 1, got {iters!r}")
    ws = integer_weights(weights)
    if center is None:
        g = gram(updates)
        start, _ = span.weiszfeld(g, ws, max_iter=WEISZFELD_MAX_ITER, tol=WEISZFELD_TOL, eps=WEISZFELD_EPS)
        coeffs = span.centered_clip(g, ws, tau=tau, iters=iters, start=start)
        return weighted_sum(updates, coeffs, float(sum(coeffs)))
    if center.shape != (updates.shape[1],) or center.dtype != torch.float32:
        raise ValueError(
            f"`center` must be float32 of shape ({updates.shape[1]},), got {tuple(center.shape)}"
        )
    coeffs = span.centered_clip(gram(updates, center), ws, tau=tau, iters=iters)
    return weighted_sum(updates, coeffs[:-1], float(sum(coeffs)), extra=center, extra_weight=coeffs[-1])


AGGREGATORS: dict[str, Aggregator] = {
    "mean": mean,
    "norm_bound": norm_bound,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multi_krum": multi_krum,
    "geometric_median": geometric_median,
    "centered_clip": centered_clip,
}
"""Aggregators by name: ``fn(updates[n, d], weights[n], **params) -> Tensor[d]``."""


def aggregate(name: str, updates: Tensor, weights: Tensor, **params: Any) -> Tensor:
    """Run the aggregator ``name`` (a key of :data:`AGGREGATORS`).

    Raises
    ------
    ValueError
        If ``name`` is unknown, or the aggregator rejects its input or parameters.
    """
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}")
    return AGGREGATORS[name](updates, weights, **params)
