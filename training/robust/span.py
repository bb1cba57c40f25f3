"""Iterative robust aggregators run in coefficient space over an integer Gram matrix.

Weiszfeld's geometric median and centered clipping both move a point ``z`` that stays a convex combination of
the input rows (and, for centered clipping from an explicit centre, that centre as one more row). Centered
clipping's default start is Weiszfeld's result itself, so both share one Gram matrix. Writing
``z = sum_k (A_k / S) y_k`` with integer coefficients ``A_k`` (``S = sum A_k``), every distance they need is

``||y_i - z||^2 = (G_ii S^2 - 2 S sum_k A_k G_ik + sum_kl A_k A_l G_kl) / (S^2 2^shift)``

over the integer Gram matrix ``G`` of :func:`training.robust.exact.gram` (the same integers on every peer):
exact integer arithmetic, one correctly rounded division and one correctly rounded square root. So the
``d``-long data is read twice in all (once for ``G``, once for the final
:func:`training.robust.exact.weighted_sum`) however many iterations run,
and each step is independent of row order (integer sums and :func:`math.fsum` are order-free).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from training.robust.exact import ExactGram, quantize_coefficients

COEFF_BITS = 24
"""Bits of the integer coefficients: the largest is ``2**COEFF_BITS``."""


def distances(g: ExactGram, coeffs: Sequence[int], points: int) -> list[float]:
    """Distances from the first ``points`` rows of ``g`` to ``sum_k coeffs[k] y_k / sum(coeffs)``."""
    ints = g.ints
    m = len(coeffs)
    total = sum(coeffs)
    active = [k for k in range(m) if coeffs[k]]
    t = [sum(coeffs[k] * ints[i][k] for k in active) for i in range(m)]
    quad = sum(coeffs[k] * t[k] for k in active)
    denom = total * total << g.shift if g.shift >= 0 else total * total
    lift = 1 if g.shift >= 0 else 1 << -g.shift
    out = []
    for i in range(points):
        num = (ints[i][i] * total * total - 2 * total * t[i] + quad) * lift
        out.append(math.sqrt(max(num, 0) / denom))
    return out


def weiszfeld(
    g: ExactGram, weights: Sequence[int], *, max_iter: int, tol: float, eps: float
) -> tuple[list[int], int]:
    """Weiszfeld iterations for the weighted geometric median; returns the final coefficients and steps.

    Starts at the weighted mean; each step re-weights the rows by ``w_i / max(dist_i, eps)``; stops after
    ``max_iter`` steps, when the coefficients stop changing, or when the objective ``sum w_i dist_i`` improves
    by less than ``tol`` relative.
    """
    n = len(weights)
    coeffs = list(weights)
    dist = distances(g, coeffs, n)
    objective = math.fsum(w * r for w, r in zip(weights, dist, strict=True))
    steps = 0
    for steps in range(1, max_iter + 1):  # noqa: B007 - the step count is returned
        beta = [w / max(r, eps) for w, r in zip(weights, dist, strict=True)]
        new = quantize_coefficients(beta, COEFF_BITS)
        if new == coeffs:
            break
        new_dist = distances(g, new, n)
        new_objective = math.fsum(w * r for w, r in zip(weights, new_dist, strict=True))
        if new_objective > objective:
            break
        coeffs, dist = new, new_dist
        if objective - new_objective <= tol * objective:
            break
        objective = new_objective
    return coeffs, steps


def centered_clip(
    g: ExactGram,
    weights: Sequence[int],
    *,
    tau: float | None,
    iters: int,
    start: Sequence[int] | None = None,
) -> list[int]:
    """Centered-clipping iterations in coefficient space; returns the coefficients over all rows of ``g``.

    ``v <- v + sum_i (w_i / W) min(1, tau / ||x_i - v||) (x_i - v)`` for the first ``len(weights)`` rows
    ``x_i`` of ``g``. The start ``v`` is ``sum_k start[k] y_k / sum(start)`` over all rows ``y_k`` of ``g``
    (default: the last row alone, an explicit centre appended to the Gram matrix). With ``tau=None`` each
    step uses the median of the current distances (the lower middle one) as ``tau``.
    """
    n = len(weights)
    m = len(g.ints)
    total_w = sum(weights)
    coeffs = [0] * (m - 1) + [1] if start is None else [int(c) for c in start]
    if len(coeffs) != m or min(coeffs) < 0 or sum(coeffs) <= 0:
        raise ValueError(f"`start` must be {m} non-negative coefficients, not all zero, got {list(coeffs)}")
    for _ in range(iters):
        dist = distances(g, coeffs, n)
        radius = tau if tau is not None else sorted(dist)[(n - 1) // 2]
        lam = [w / total_w * (1.0 if r <= radius else radius / r) for w, r in zip(weights, dist, strict=True)]
        keep = 1.0 - math.fsum(lam)
        size = sum(coeffs)
        real = [c / size * keep for c in coeffs]
        for i in range(n):
            real[i] += lam[i]
        coeffs = quantize_coefficients([max(c, 0.0) for c in real], COEFF_BITS)
    return coeffs
