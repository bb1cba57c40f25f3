"""Aggregators against references computed another way (numpy float64, exact fractions, plain sorting)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from training.aggregate import AGGREGATORS
from training.robust.exact import GRAM_CHUNK, GRID_BITS, gram, weighted_sum
from training.robust.sorting import _sorted_rows, batcher_network, pruned_network


@pytest.fixture
def cloud() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight honest updates around a common direction, three far-off ones, integer weights."""
    gen = torch.Generator().manual_seed(3)
    honest = torch.randn(1, 5_003, generator=gen) + 0.3 * torch.randn(8, 5_003, generator=gen)
    byzantine = 20.0 * torch.randn(3, 5_003, generator=gen)
    weights = torch.tensor([5.0, 3, 8, 2, 7, 1, 4, 6, 9, 9, 9])
    return torch.cat([honest, byzantine]), weights


def _ulps32(a: np.ndarray, b: np.ndarray) -> int:
    ia = a.astype(np.float32).view(np.int32).astype(np.int64)
    ib = b.astype(np.float32).view(np.int32).astype(np.int64)
    return int(np.abs(ia - ib).max())


@pytest.mark.parametrize("n", list(range(1, 34)))
def test_sorting_network_sorts_every_column(n: int) -> None:
    block = torch.randn(n, 257)
    block[:, :7] = torch.randint(0, 3, (n, 7)).float()  # many ties

    rows = _sorted_rows(block.clone(), batcher_network(n))

    assert torch.equal(torch.stack(rows), torch.sort(block, dim=0).values)


@pytest.mark.parametrize("n", list(range(1, 34)))
def test_network_pruned_to_the_ends_leaves_the_kept_values_on_the_middle_rows(n: int) -> None:
    block = torch.randn(n, 257)
    block[:, :7] = torch.randint(0, 3, (n, 7)).float()  # many ties
    want = torch.sort(block, dim=0).values

    for k in range((n - 1) // 2 + 1):
        ends = frozenset(range(k)) | frozenset(range(n - k, n))
        rows = torch.stack(_sorted_rows(block.clone(), pruned_network(n, ends)))

        assert torch.equal(rows[:k], want[:k]) and torch.equal(rows[n - k :], want[n - k :]), k
        assert torch.equal(torch.sort(rows[k : n - k], dim=0).values, want[k : n - k]), k


def test_pruned_network_is_smaller_for_a_median() -> None:
    assert len(batcher_network(16)) == 63
    assert len(pruned_network(16, frozenset({7, 8}))) < 63


def test_weighted_mean_matches_exact_fractions_to_one_ulp() -> None:
    gen = torch.Generator().manual_seed(11)
    updates = torch.randn(6, 300, generator=gen) * torch.logspace(-6, 3, 300)
    weights = [3, 1, 4, 1, 5, 9]

    out = weighted_sum(updates, weights, float(sum(weights)))

    x = updates.tolist()
    exact = [
        float(sum(Fraction(w) * Fraction(x[i][j]) for i, w in enumerate(weights)) / sum(weights))
        for j in range(300)
    ]
    assert _ulps32(out.numpy(), np.array(exact)) <= 1


def test_gram_is_exact_for_small_integers() -> None:
    """Products of 9-bit integers have 18 bits, 32 of them at most 23: every float32 sum is exact."""
    updates = torch.randint(-500, 501, (4, 70_000)).float()
    ref = updates.double().numpy().astype(np.int64)

    g = gram(updates)

    exact = [[int(v) for v in row] for row in ref @ ref.T]
    assert [[g.value(i, k) for k in range(4)] for i in range(4)] == exact


def test_gram_error_is_within_the_float32_dot_product_bound() -> None:
    """Against the exact products: float32 sums of 32 terms, plus half a unit of each block's integer grid."""
    gen = torch.Generator().manual_seed(3)
    updates = torch.randn(6, 50_000, generator=gen) * torch.rand(6, 1, generator=gen) ** 4
    updates[:, ::7] *= 1e-4  # magnitudes that differ within a row
    x = updates.double().numpy()
    blocks = range(0, x.shape[1], GRAM_CHUNK)
    # Entry units of each block: 2**(-2 s) with s = GRID_BITS - frexp(block max)[1].
    units = [2.0 ** (2 * (math.frexp(np.abs(x[:, c : c + GRAM_CHUNK]).max())[1] - GRID_BITS)) for c in blocks]

    g = gram(updates)

    for i in range(6):
        for k in range(i + 1):
            exact = math.fsum((x[i] * x[k]).tolist())  # float32 products are exact in float64
            bound = 2.0**-18 * float(np.abs(x[i] * x[k]).sum()) + 0.5 * sum(units)
            assert abs(g.value(i, k) - exact) <= bound, (i, k)
            assert abs(g.value(i, k) - exact) <= 1e-6 * math.sqrt(g.value(i, i) * g.value(k, k)) + sum(units)


def test_mean_matches_numpy(cloud: tuple[torch.Tensor, torch.Tensor]) -> None:
    updates, weights = cloud
    x, w = updates.double().numpy(), weights.double().numpy()

    out = AGGREGATORS["mean"](updates, weights).numpy()

    np.testing.assert_allclose(out, (w[:, None] * x).sum(0) / w.sum(), rtol=1e-6, atol=1e-6)


def test_median_matches_numpy_exactly(cloud: tuple[torch.Tensor, torch.Tensor]) -> None:
    updates, weights = cloud
    for n in (11, 10):
        x = updates[:n].double().numpy()

        out = AGGREGATORS["median"](updates[:n], weights[:n]).numpy()

        assert np.array_equal(out, np.median(x, axis=0).astype(np.float32))


def test_trimmed_mean_matches_numpy(cloud: tuple[torch.Tensor, torch.Tensor]) -> None:
    updates, weights = cloud
    x = np.sort(updates.double().numpy(), axis=0)[2:-2]

    out = AGGREGATORS["trimmed_mean"](updates, weights, trim_ratio=0.2).numpy()

    np.testing.assert_allclose(out, x.mean(0), rtol=1e-6, atol=1e-7)


def _np_krum_scores(x: np.ndarray, f: int) -> np.ndarray:
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    n = len(x)
    return np.array([np.sort(np.delete(d2[i], i))[: n - f - 2].sum() for i in range(n)])


def test_krum_and_multi_krum_match_numpy(cloud: tuple[torch.Tensor, torch.Tensor]) -> None:
    updates, weights = cloud
    x, w = updates.double().numpy(), weights.double().numpy()
    scores = _np_krum_scores(x, 3)
    best = np.argsort(scores, kind="stable")

    assert torch.equal(AGGREGATORS["krum"](updates, weights, f=3), updates[int(best[0])])
    chosen = best[:5]
    ref = (w[chosen, None] * x[chosen]).sum(0) / w[chosen].sum()
    out = AGGREGATORS["multi_krum"](updates, weights, f=3, m=5).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_geometric_median_matches_numpy_weiszfeld(cloud: tuple[torch.Tensor, torch.Tensor]) -> None:
    updates, weights = cloud
    x, w = updates.double().numpy(), weights.double().numpy()
    z: np.ndarray = (w[:, None] * x).sum(0) / w.sum()
    for _ in range(500):
        beta = w / np.maximum(np.linalg.norm(x - z, axis=1), 1e-12)
        z = (beta[:, None] * x).sum(0) / beta.sum()

    out = AGGREGATORS["geometric_median"](updates, weights, max_iter=500, tol=0.0).numpy()

    assert np.linalg.norm(out - z) <= 1e-4 * np.linalg.norm(z)


def _np_weiszfeld(x: np.ndarray, w: np.ndarray, max_iter: int, tol: float) -> np.ndarray:
    """Weiszfeld from the weighted mean, stopping as ``geometric_median`` does (relative objective gain)."""
    z: np.ndarray = (w[:, None] * x).sum(0) / w.sum()
    objective = (w * np.linalg.norm(x - z, axis=1)).sum()
    for _ in range(max_iter):
        beta = w / np.maximum(np.linalg.norm(x - z, axis=1), 1e-12)
        z = (beta[:, None] * x).sum(0) / beta.sum()
        new = (w * np.linalg.norm(x - z, axis=1)).sum()
        if objective - new <= tol * objective:
            break
        objective = new
    return z


@pytest.mark.parametrize(("tau", "iters"), [(5.0, 4), (None, 3)])
def test_centered_clip_from_the_geometric_median_matches_numpy(
    cloud: tuple[torch.Tensor, torch.Tensor], tau: float | None, iters: int
) -> None:
    updates, weights = cloud
    x, w = updates.double().numpy(), weights.double().numpy()
    v = _np_weiszfeld(x, w, max_iter=100, tol=1e-8)
    for _ in range(iters):
        r = np.linalg.norm(x - v, axis=1)
        radius = tau if tau is not None else np.sort(r)[(len(r) - 1) // 2]
        c = np.minimum(1.0, radius / r)
        v = v + ((w * c)[:, None] * (x - v)).sum(0) / w.sum()

    out = AGGREGATORS["centered_clip"](updates, weights, tau=tau, iters=iters).numpy()

    assert np.linalg.norm(out - v) <= 1e-5 * np.linalg.norm(v)


def test_centered_clip_from_an_explicit_center_matches_numpy(
    cloud: tuple[torch.Tensor, torch.Tensor],
) -> None:
    updates, weights = cloud
    x, w = updates.double().numpy(), weights.double().numpy()
    center = torch.from_numpy(np.median(x, axis=0).astype(np.float32))
    v = center.double().numpy()
    for _ in range(4):
        r = np.linalg.norm(x - v, axis=1)
        c = np.minimum(1.0, 5.0 / r)
        v = v + ((w * c)[:, None] * (x - v)).sum(0) / w.sum()

    out = AGGREGATORS["centered_clip"](updates, weights, tau=5.0, iters=4, center=center).numpy()

    assert np.linalg.norm(out - v) <= 1e-5 * np.linalg.norm(v)


def test_robust_aggregators_resist_the_far_off_updates(cloud: tuple[torch.Tensor, torch.Tensor]) -> None:
    updates, weights = cloud
    honest_mean = updates[:8].mean(0)
    radius = float((updates[:8] - honest_mean).norm(dim=1).max())

    cases: list[tuple[str, dict[str, float]]] = [
        ("median", {}),
        ("trimmed_mean", {"trim_ratio": 0.3}),
        ("krum", {"f": 3}),
        ("multi_krum", {"f": 3}),
        ("geometric_median", {}),
        ("centered_clip", {}),
    ]
    for name, params in cases:
        out = AGGREGATORS[name](updates, weights, **params)
        assert float((out - honest_mean).norm()) < radius, name
    assert float((AGGREGATORS["mean"](updates, weights) - honest_mean).norm()) > radius
