"""Robust aggregators against hand-computed vectors, their documented bounds, and purity."""

from __future__ import annotations

import hashlib

import pytest
import torch

from training.aggregate import AGGREGATORS, aggregate, krum_scores

PARAMS: dict[str, dict[str, object]] = {
    "mean": {},
    "norm_bound": {"max_norm": 2.0},
    "median": {},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"f": 1},
    "multi_krum": {"f": 1},
    "geometric_median": {},
    "centered_clip": {"tau": 1.0},
}


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _ones(n: int) -> torch.Tensor:
    return torch.ones(n)


def test_registry_names_every_aggregator() -> None:
    assert set(AGGREGATORS) == set(PARAMS)


def test_mean_is_weighted_by_sample_counts() -> None:
    out = AGGREGATORS["mean"](_t([[1, 2], [3, 4], [5, 6]]), torch.tensor([1.0, 1.0, 2.0]))

    assert out.tolist() == [3.5, 4.5]


def test_norm_bound_scales_long_updates_down_before_averaging() -> None:
    out = AGGREGATORS["norm_bound"](_t([[3, 4], [0, 1]]), _ones(2), max_norm=1.0)

    assert out.tolist() == pytest.approx([0.3, 0.9], abs=1e-6)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([[1, 5], [2, -1], [10, 3]], [2.0, 3.0]),
        ([[1], [2], [3], [10]], [2.5]),  # even n: mean of the two middle values
        ([[-1], [7]], [3.0]),
        ([[4, 4]], [4.0, 4.0]),
    ],
)
def test_median_hand_computed(rows: list[list[float]], expected: list[float]) -> None:
    assert AGGREGATORS["median"](_t(rows), _ones(len(rows))).tolist() == expected


def test_trimmed_mean_drops_the_extremes_per_coordinate() -> None:
    rows = [[1, -50], [2, 1], [3, 2], [4, 3], [100, 4]]

    out = AGGREGATORS["trimmed_mean"](_t(rows), _ones(5), trim_ratio=0.2)

    assert out.tolist() == [3.0, 2.0]


def test_krum_scores_and_choice_hand_computed() -> None:
    # 1-D points 0, 1, 2, 4, 100 with f=1: score = sum of squared distances to the n-f-2 = 2 nearest others.
    updates = _t([[0], [1], [2], [4], [100]])

    assert krum_scores(updates, 1) == [5.0, 2.0, 5.0, 13.0, 96.0**2 + 98.0**2]
    assert AGGREGATORS["krum"](updates, _ones(5), f=1).tolist() == [1.0]
    assert AGGREGATORS["multi_krum"](updates, _ones(5), f=1, m=3).tolist() == [1.0]


def test_krum_breaks_ties_by_row_digest_not_position() -> None:
    updates = _t([[0], [1], [2], [3], [100]])  # rows 1 and 2 tie with score 2
    digest = {v: hashlib.sha256(_t([[v]]).numpy().tobytes()).digest() for v in (1.0, 2.0)}
    winner = min((1.0, 2.0), key=digest.__getitem__)

    assert AGGREGATORS["krum"](updates, _ones(5), f=1).tolist() == [winner]
    assert AGGREGATORS["krum"](updates.flip(0), _ones(5), f=1).tolist() == [winner]


def test_geometric_median_of_collinear_points_is_the_middle_one() -> None:
    out = AGGREGATORS["geometric_median"](_t([[0, 0], [1, 1], [10, 10]]), _ones(3))

    assert out.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)


def test_geometric_median_of_a_square_is_its_centre() -> None:
    out = AGGREGATORS["geometric_median"](_t([[0, 0], [2, 0], [0, 2], [2, 2]]), _ones(4))

    assert out.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)


def test_centered_clip_one_step_hand_computed() -> None:
    # From 0 with tau=1: x1=(3,4) at distance 5 is clipped to (0.6, 0.8); x2=(0, 0.5) is kept.
    out = AGGREGATORS["centered_clip"](
        _t([[3, 4], [0, 0.5]]), _ones(2), tau=1.0, iters=1, center=torch.zeros(2)
    )

    assert out.tolist() == pytest.approx([0.3, 0.65], abs=1e-6)


def test_centered_clip_with_a_large_radius_is_the_mean() -> None:
    updates = _t([[1, 2], [3, 4], [5, 9]])

    out = AGGREGATORS["centered_clip"](updates, torch.tensor([1.0, 2.0, 1.0]), tau=1e6, iters=1)

    assert out.tolist() == pytest.approx([3.0, 4.75], abs=1e-5)


def test_centered_clip_starts_from_the_geometric_median_by_default() -> None:
    updates = _t([[0, 0], [2, 0], [0, 2], [2, 2], [100, 100]])
    weights = torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0])
    start = AGGREGATORS["geometric_median"](updates, weights)

    out = AGGREGATORS["centered_clip"](updates, weights, tau=0.5, iters=2)

    want = AGGREGATORS["centered_clip"](updates, weights, tau=0.5, iters=2, center=start)
    # Distances come from the Gram grid: 18 bits below the largest magnitude (100) is about 4e-4.
    assert out.tolist() == pytest.approx(want.tolist(), abs=1e-3)
    assert float(out.norm()) < 3.0  # the far-off input moved it by at most tau per step


def test_span_centered_clip_rejects_a_bad_start() -> None:
    from training.robust.exact import gram
    from training.robust.span import centered_clip

    g = gram(_t([[0, 0], [2, 0], [0, 2]]))

    with pytest.raises(ValueError, match="`start` must be 3 non-negative coefficients"):
        centered_clip(g, [1, 1, 1], tau=1.0, iters=1, start=[1, 1])
    with pytest.raises(ValueError, match="`start` must be 3 non-negative coefficients"):
        centered_clip(g, [1, 1, 1], tau=1.0, iters=1, start=[0, 0, 0])


@pytest.mark.parametrize(
    ("name", "n", "params", "message"),
    [
        ("krum", 5, {"f": 2}, r"krum needs n > 2f \+ 2, got n=5, f=2"),
        ("multi_krum", 4, {"f": 1}, r"multi_krum needs n > 2f \+ 2, got n=4, f=1"),
        ("median", 2, {"f": 1}, r"median needs n > 2f, got n=2, f=1"),
        ("geometric_median", 4, {"f": 2}, r"geometric_median needs n > 2f, got n=4, f=2"),
        ("centered_clip", 3, {"f": 2}, r"centered_clip needs n > 2f, got n=3, f=2"),
        ("trimmed_mean", 5, {"trim_ratio": 0.7}, r"`trim_ratio` must be in \[0, 0.5\), got 0.7"),
        ("mean", 0, {}, r"at least 1 updates, got n=0"),
    ],
)
def test_too_few_updates_raise_value_error(
    name: str, n: int, params: dict[str, object], message: str | None
) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate(name, torch.randn(n, 3), _ones(n), **params)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_bad_input_is_rejected_clearly(name: str) -> None:
    good = torch.randn(5, 4)
    fn = AGGREGATORS[name]
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(torch.tensor([[float("nan")] * 4] * 5), _ones(5), **PARAMS[name])
    with pytest.raises(ValueError, match="float32"):
        fn(good.double(), _ones(5), **PARAMS[name])
    with pytest.raises(ValueError, match="length n=5"):
        fn(good, _ones(4), **PARAMS[name])
    if name in ("mean", "norm_bound", "multi_krum", "geometric_median", "centered_clip"):
        with pytest.raises(ValueError, match="non-negative integers"):
            fn(good, torch.tensor([1.0, 0.5, 1.0, 1.0, 1.0]), **PARAMS[name])


def test_unknown_aggregator_is_named() -> None:
    with pytest.raises(ValueError, match="unknown aggregator 'avg'"):
        aggregate("avg", torch.randn(3, 2), _ones(3))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_aggregators_are_pure_and_order_free(name: str) -> None:
    gen = torch.Generator().manual_seed(7)
    updates = torch.randn(9, 70_001, generator=gen)
    updates[:, :5] = 0.0
    updates[1, :3] = -0.0  # signs of zero must not leak into the output bytes
    weights = torch.tensor([3.0, 1, 4, 1, 5, 9, 2, 6, 5])
    before = updates.clone()

    out = AGGREGATORS[name](updates, weights, **PARAMS[name])
    perm = torch.randperm(9, generator=gen)
    out_perm = AGGREGATORS[name](updates[perm], weights[perm], **PARAMS[name])

    assert torch.equal(updates, before)
    assert out.shape == (70_001,) and out.dtype == torch.float32
    assert out.numpy().tobytes() == out_perm.numpy().tobytes()
    assert not torch.signbit(out[:5]).any()
