"""The canonical run spec states every default that changes merged bytes, so the spec alone rebuilds a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.runspec import RunSpec, RunSpecError
from training.merge import ARITHMETIC


def _stored(tmp_path: Path, toml: str) -> dict:  # type: ignore[type-arg]
    path = tmp_path / "run.toml"
    path.write_text(toml)
    return json.loads(RunSpec.from_toml(path).canonical_bytes())  # type: ignore[no-any-return]


def test_a_minimal_fedavg_spec_is_stored_with_its_resolved_defaults(tmp_path: Path) -> None:
    doc = _stored(tmp_path, '[run]\nname = "minimal"\n')

    assert doc["server"] == {"server_lr": 1.0}
    assert doc["aggregator"] == "mean" and doc["aggregator_params"] == {}
    assert (doc["codec"], doc["convention"], doc["max_norm"], doc["max_samples"]) == (
        "fp32",
        "openfedllm",
        None,
        1_000_000,
    )
    assert (doc["seed"], doc["arithmetic"], doc["algorithm"]) == (0, ARITHMETIC, "fedavg")
    assert doc["weighting"] == "samples"


def test_equal_weighting_reaches_the_merge(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[run]\nweighting = "equal"\n')

    assert RunSpec.from_toml(path).merge_spec().weighting == "equal"
    path.write_text('[run]\nweighting = "votes"\n')
    with pytest.raises(RunSpecError, match="`weighting` must be one of samples, equal, got 'votes'"):
        RunSpec.from_toml(path)


@pytest.mark.parametrize(
    ("algorithm", "server"),
    [
        ("fedavgm", {"server_lr": 1.0, "beta1": 0.9}),
        ("fedadagrad", {"server_lr": 0.1, "beta1": 0.0, "tau": 1e-3}),
        ("fedadam", {"server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}),
    ],
)
def test_server_optimiser_defaults_are_written_out(tmp_path: Path, algorithm: str, server: dict) -> None:  # type: ignore[type-arg]
    doc = _stored(
        tmp_path, f'[run]\nalgorithm = "{algorithm}"\n[server]\nserver_lr = {server["server_lr"]}\n'
    )

    assert doc["server"] == server


@pytest.mark.parametrize(
    ("aggregator", "given", "stored"),
    [
        ("trimmed_mean", "", {"trim_ratio": 0.1}),
        ("krum", "f = 2\n", {"f": 2}),
        ("multi_krum", "", {"f": 1, "m": None}),
        ("geometric_median", "", {"f": 0, "max_iter": 100, "tol": 1e-8, "eps": 1e-12}),
        ("centered_clip", "tau = 0.5\n", {"f": 0, "tau": 0.5, "iters": 3, "center": None}),
    ],
)
def test_aggregator_defaults_are_written_out(
    tmp_path: Path, aggregator: str, given: str, stored: dict
) -> None:  # type: ignore[type-arg]
    doc = _stored(tmp_path, f'[run]\naggregator = "{aggregator}"\n[aggregator_params]\n{given}')

    assert doc["aggregator_params"] == stored


def test_the_stored_form_round_trips_and_merges_like_the_minimal_one(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[run]\nalgorithm = "fedyogi"\naggregator = "median"\n')
    spec = RunSpec.from_toml(path)
    back = RunSpec.from_bytes(spec.canonical_bytes())

    assert back == spec and back.canonical_bytes() == spec.canonical_bytes()
    legacy = json.loads(spec.canonical_bytes())  # a spec stored before the defaults were written out
    legacy["server"], legacy["aggregator_params"] = {}, {}
    old = RunSpec.from_bytes(json.dumps(legacy).encode())
    assert old.merge_spec() == spec.merge_spec()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[run]\naggregator = "median"\n[aggregator_params]\ntrim = 1\n',
            "'trim' is not a parameter of `median`",
        ),
        ('[run]\naggregator = "norm_bound"\n', "`norm_bound` needs 'max_norm'"),
        ("[server]\nmomentum = 0.5\n", "[server]"),
    ],
)
def test_bad_parameters_are_named(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(toml)

    with pytest.raises(RunSpecError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RunSpec.from_toml(path)


def test_a_codec_parameter_is_written_out_only_in_runs_of_its_codec(tmp_path: Path) -> None:
    plain = _stored(tmp_path, '[run]\ncodec = "int8"\n')
    int4 = _stored(tmp_path, '[run]\ncodec = "int4"\n')
    topk = _stored(tmp_path, '[run]\ncodec = "topk"\ntopk_fraction = 0.05\n')

    assert "codec_block" not in plain and "topk_fraction" not in plain  # the bytes fp32/int8 runs had
    assert int4["codec_block"] == 64 and "topk_fraction" not in int4
    assert topk["topk_fraction"] == 0.05 and "codec_block" not in topk
    spec = RunSpec.from_bytes(json.dumps(dict(topk, format="fedchain-runspec/1")).encode())
    assert spec.merge_spec().codec_params.topk_fraction == 0.05
    assert RunSpec(codec="int4", codec_block=32).merge_spec().codec_params.block == 32


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (
            'codec = "int8"\ncodec_block = 32',
            "`codec_block` is a parameter of codec 'int4', but the run's codec is 'int8'",
        ),
        ('codec = "int4"\ntopk_fraction = 0.1', "`topk_fraction` is a parameter of codec 'topk'"),
        ('codec = "topk"\ntopk_fraction = 1.5', r"`topk_fraction` must be a number in \(0, 1\], got 1.5"),
        ('codec = "int4"\ncodec_block = 0', r"`codec_block` must be an integer in \[1, 1048576\], got 0"),
        ('codec = "zip"', "`codec` must be one of fp32, int8, int4, topk, got 'zip'"),
    ],
)
def test_bad_codec_parameters_are_refused_naming_the_key(tmp_path: Path, run: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f"[run]\n{run}\n")

    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_toml(path)
