"""The fused numba kernels against the torch formulation (training.robust.reference): the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numpy as np
import pytest
import torch

from training import aggregate
from training.robust import exact, reference, tile_ir
from training.robust.exact import gram, weighted_sum
from training.robust.gram_kernel import _scale, gram_range
from training.robust.kernels import fallback_cache_dir, writable
from training.robust.sorting import coordinate_median, coordinate_trimmed_mean
from training.robust.tile_ir import TILE


def _bytes(vec: torch.Tensor) -> bytes:
    return bytes(vec.contiguous().numpy().tobytes())


def _matrix(n: int, d: int, seed: int) -> torch.Tensor:
    """Rows of mixed magnitudes with zeros of both signs, ties, subnormals, huge values and exact halves."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen) * 0.05
    x[0] *= 1e4
    x[:, : min(d, 7)] = 0.0
    x[n // 2, : min(d, 3)] = -0.0
    if n > 2:
        x[1, 7:40] = x[2, 7:40]
    x[-1, 40:60] = torch.tensor(1e-40)  # subnormal float32
    x[-1, 60:70] = 3.0e38
    x[:, 70:80] = torch.arange(10, dtype=torch.float32) + 0.5  # halves: round-half-even
    x[:, 80:] *= torch.rand(1, d - 80, generator=gen) ** 8  # magnitudes that vary per column
    return x


SHAPES = [(1, 100), (2, 513), (5, 16_385), (7, 40_001), (16, 33_000)]


@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_weighted_sum_matches_the_torch_reference(n: int, d: int) -> None:
    x = _matrix(n, d, seed=n * d)
    ws = [(7 * i + 3) % 11 for i in range(n)]
    ws[0] += 1

    got = weighted_sum(x, ws, float(sum(ws)))

    assert _bytes(got) == _bytes(reference.weighted_sum(x, ws, float(sum(ws))))


def test_weighted_sum_of_chosen_rows_with_an_extra_row_matches_the_reference() -> None:
    x = _matrix(9, 20_000, seed=5)
    extra = x[3] * 0.5 + 1e-3
    rows, ws = [8, 2, 5], [1 << 20, 3, 77]

    got = weighted_sum(x, ws, 1234.5, rows=rows, extra=extra, extra_weight=9)
    want = reference.weighted_sum(x, ws, 1234.5, rows=rows, extra=extra, extra_weight=9)

    assert _bytes(got) == _bytes(want)


@pytest.mark.parametrize("ws", [[1], [1, 1], [0, 2, 0], [1, 2], [3, 0, 0, 0, 0]])
def test_weighted_sum_with_a_total_weight_of_1_to_3_matches_the_reference(ws: list[int]) -> None:
    # Totals 1 and 2 leave 52-53 grid bits: scaled values reach 2**51 and more, past the range where adding
    # and subtracting 1.5 * 2**52 rounds; there they are already integers and must come back unchanged.
    x = _matrix(len(ws), 20_000, seed=len(ws))

    got = weighted_sum(x, ws, 3.0)

    assert _bytes(got) == _bytes(reference.weighted_sum(x, ws, 3.0))


@pytest.mark.parametrize(("n", "d"), SHAPES)
def test_gram_matches_the_torch_reference(n: int, d: int) -> None:
    x = _matrix(n, d, seed=d + 1)
    x[:, 16_384:20_000] = 0.0  # an all-zero block (skipped)

    assert gram(x) == reference.gram(x)
    assert gram(x, x[0] * 0.25) == reference.gram(x, x[0] * 0.25)


def test_gram_of_tiny_and_huge_blocks_matches_the_reference() -> None:
    x = torch.full((3, 40_000), 1e-44)  # 2**s out of float32 range: the float64 path of the reference
    x[:, 20_000:] = 3e38

    assert gram(x) == reference.gram(x)


def _single_range_gram(
    x: torch.Tensor, extra: torch.Tensor | None = None
) -> tuple[exact.ExactGram, list[int]]:
    """The Gram kernel over all of ``x`` in one range (so that every block after the first may speculate)."""
    xn = x.contiguous().numpy()
    ex = extra.reshape(1, -1).numpy() if extra is not None else np.empty((0, x.shape[1]), dtype=np.float32)
    grams, shifts, nonzero, stats = gram_range(
        xn, xn.view(np.uint32), ex, exact.GRAM_CHUNK, exact.GRID_BITS, exact.POW2, 0, x.shape[1]
    )
    blocks = [(grams[b], int(shifts[b])) for b in range(len(shifts)) if nonzero[b]]
    return exact.combine_grams(blocks, x.shape[0] + ex.shape[0]), [int(v) for v in stats]


def test_gram_guessing_each_block_grid_from_the_last_gives_the_bytes_of_scanning_first() -> None:
    """Blocks that keep the guessed scale, and blocks that need another one (early, in the last tile, or
    only at the end of the scan). Every exponent in ``UNSCALED`` shares one scale (the values as they are);
    1e13 and more, and subnormals, are scaled."""
    chunk = exact.GRAM_CHUNK
    scales = [1.0, 1.2, 3.0, 1e13, 1e13, 1e13, 0.3, 0.3, 0.3, 0.0, 0.3, 0.3, 0.3, 1e-40, 1e-40, 1.0]
    x = torch.randn(5, chunk * len(scales) + 123, generator=torch.Generator().manual_seed(7)) * 0.2
    for b, scale in enumerate(scales):
        x[:, b * chunk : (b + 1) * chunk] *= scale
    x[2, 12 * chunk - 1] = 1e14  # block 11 leaves its guessed scale only in its last tile
    x[:, -123:] *= 0.5  # a partial last block
    extra = x[1] * 0.5
    extra[1 * chunk + TILE + 3] = 1e13  # only the extra row needs block 1 scaled

    got, (speculated, held) = _single_range_gram(x)
    got_extra, _ = _single_range_gram(x, extra)

    assert got == reference.gram(x)
    assert got_extra == reference.gram(x, extra)
    assert 0 < held < speculated  # both the guess that held and the one that missed were exercised
    assert speculated - held >= 3


def test_gram_guess_stops_at_a_non_finite_value_in_its_last_tile() -> None:
    x = torch.randn(3, 3 * exact.GRAM_CHUNK, generator=torch.Generator().manual_seed(2))
    x[1, -1] = float("inf")
    xn = x.numpy()

    _, shifts, nonzero, stats = gram_range(
        xn,
        xn.view(np.uint32),
        np.empty((0, x.shape[1]), np.float32),
        exact.GRAM_CHUNK,
        18,
        exact.POW2,
        0,
        x.shape[1],
    )

    assert shifts[-1] == -1 and nonzero[-1] and stats[0] == 2  # the last block was a speculated one
    with pytest.raises(ValueError, match="NaN or Inf"):
        gram(x)


def test_gram_scaling_rounds_once_like_the_float64_product_cast_to_float32() -> None:
    rng = np.random.default_rng(0)
    tiny = np.array([1e-45, -3e-39, 1.1754942e-38, 5e-40, 7e-42, 1.5e-45, 2.9e-45], dtype=np.float32)
    values = np.concatenate([tiny, (rng.standard_normal(200) * 10.0 ** rng.integers(-40, 38, 200))])
    x = values.astype(np.float32).reshape(1, -1)
    for s in (0, 3, -20, -126, 127, -140, 160):  # 2**s a normal float32 or not; subnormal results
        q = np.zeros((1, TILE), dtype=np.float32)
        q[:] = 7.0  # the tail past the width must be zeroed
        _scale(x, 0, x.shape[1], s, exact.POW2, q, 0)

        with np.errstate(over="ignore"):
            want = (x.astype(np.float64) * 2.0**s).astype(np.float32)
        assert np.array_equal(q[:, : x.shape[1]], want), s
        assert not q[:, x.shape[1] :].any()


def test_gram_tile_is_fused_multiply_adds_on_8_lane_vectors() -> None:
    asm = tile_ir.assembly().lower()

    if "+fma" in llvm.get_host_cpu_features().flatten():
        assert "vfmadd231ps" in asm and "%ymm" in asm
        assert "vmulps" not in asm and "vaddps" not in asm  # never a separate multiply and add
    else:  # no FMA unit: the correctly rounded library call
        assert "fmaf" in asm


def test_fma32_rounds_once_where_a_multiply_then_add_rounds_twice() -> None:
    """``(1 + 2**-12)**2 + 2**-60``: the product alone is a float32 tie; the tiny addend decides it."""
    a = torch.tensor([1 + 2**-12, -(1 + 2**-12), 3.0, 0.0], dtype=torch.float32)
    c = torch.tensor([2**-60, -(2**-60), -(2**-60), -0.0], dtype=torch.float32)

    got = reference.fma32(a, a.abs(), c)

    exact = [1 + 2**-11 + 2**-23, -(1 + 2**-11 + 2**-23), 9.0, 0.0]
    assert got.tolist() == exact
    assert (a * a.abs() + c)[0].item() == 1 + 2**-11  # the double rounding it avoids


def test_gram_tile_fma_matches_the_emulated_one_on_a_double_rounding_case() -> None:
    """Column 0 leaves ``2**-60`` in lane 0; column 8 adds the float32 tie ``(1 + 2**-12)**2`` to it."""
    x = torch.zeros(4, 2 * TILE)
    x[:, 0] = 2.0**-30
    x[:, 8] = 1 + 2**-12
    x[:, TILE:] = 1.0  # a second tile: lane totals move into float64 tile by tile

    assert gram(x) == reference.gram(x)
    # 2**18 grid units: entry (0, 1) is (1 + 2**-11 + 2**-23) + 256, not (1 + 2**-11) + 256.
    assert gram(x).value(0, 1) == reference.gram(x).value(0, 1) == 257 + 2**-11 + 2**-23


@pytest.mark.parametrize(("n", "d"), [*SHAPES, (4, 1000), (17, 3000)])
def test_sorting_networks_match_the_torch_reference(n: int, d: int) -> None:
    x = _matrix(n, d, seed=3 * d + n)

    assert _bytes(coordinate_median(x)) == _bytes(reference.coordinate_median(x))
    for k in range((n - 1) // 2 + 1):
        got = coordinate_trimmed_mean(x, k)
        assert _bytes(got) == _bytes(reference.coordinate_trimmed_mean(x, k)), k


AGGREGATOR_PARAMS: dict[str, dict[str, object]] = {
    "mean": {},
    "norm_bound": {"max_norm": 0.5},
    "median": {"f": 1},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"f": 1},
    "multi_krum": {"f": 1},
    "geometric_median": {"f": 1},
    "centered_clip": {"f": 1},
}


def _outputs(x: torch.Tensor, w: torch.Tensor) -> dict[str, bytes]:
    return {name: _bytes(fn(x, w, **AGGREGATOR_PARAMS[name])) for name, fn in aggregate.AGGREGATORS.items()}


@pytest.mark.parametrize(("n", "d", "scale"), [(16, 70_000, 1e-3), (5, 16_385, 1.0), (11, 40_001, 1e-30)])
def test_every_aggregator_gives_the_bytes_of_its_torch_reference_formulation(
    n: int, d: int, scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = _matrix(n, d, seed=n + d) * scale  # 1e-30 scales part of the matrix into subnormals
    x[:, -20:] = 1e-44
    weights = torch.tensor([float((5 * i) % 7 + 1) for i in range(n)])

    got = _outputs(x, weights)
    for module in (aggregate, exact):
        monkeypatch.setattr(module, "gram", reference.gram)
    monkeypatch.setattr(aggregate, "weighted_sum", reference.weighted_sum)
    monkeypatch.setattr(aggregate, "coordinate_median", reference.coordinate_median)
    monkeypatch.setattr(aggregate, "coordinate_trimmed_mean", reference.coordinate_trimmed_mean)
    want = _outputs(x, weights)

    assert got == want


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_kernel_rejects_non_finite_values(bad: float) -> None:
    x = torch.randn(5, 50_000)
    x[3, 41_000] = bad

    for run in (
        lambda: weighted_sum(x, [1] * 5, 5.0),
        lambda: gram(x),
        lambda: coordinate_median(x),
        lambda: coordinate_trimmed_mean(x, 1),
    ):
        with pytest.raises(ValueError, match="NaN or Inf"):
            run()


def test_jit_cache_falls_back_to_a_temporary_folder_only_when_nothing_else_is_writable(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file: no folder can be made under it, even by root

    assert fallback_cache_dir(tmp_path / "pkg", tmp_path / "user") is None
    assert fallback_cache_dir(blocker / "pkg", tmp_path / "user") is None
    fallback = fallback_cache_dir(blocker / "pkg", blocker / "user")
    assert fallback is not None and writable(fallback)


@pytest.mark.slow
def test_kernels_compile_into_numba_cache_dir_with_the_same_bytes(tmp_path: Path) -> None:
    code = (
        "import hashlib, torch\n"
        "from training.aggregate import AGGREGATORS\n"
        "x = torch.randn(6, 3000, generator=torch.Generator().manual_seed(1))\n"
        "w = torch.ones(6)\n"
        "print(hashlib.sha256(b''.join(AGGREGATORS[k](x, w).numpy().tobytes()"
        " for k in ('mean', 'median', 'geometric_median'))).hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    fresh = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    here = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300, check=True
    )

    assert any((tmp_path / "cache").rglob("*.nbi")), "no numba index written to NUMBA_CACHE_DIR"
    assert fresh.stdout == here.stdout
