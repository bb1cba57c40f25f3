"""The run spec's ``[privacy]`` table: parsing, canonical bytes, refusals naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.runspec import RunSpec, RunSpecError
from training.privacy import PrivacyConfig

SPECS = Path(__file__).resolve().parents[3] / "node" / "specs"


def test_privacy_table_round_trips_through_canonical_bytes(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        "[run]\nmax_norm = 500.0\n[privacy]\nclip_norm = 0.5\nnoise_multiplier = 1.5\nepsilon_budget = 9.0\n"
    )

    spec = RunSpec.from_toml(path)
    back = RunSpec.from_bytes(spec.canonical_bytes())

    assert spec.privacy == PrivacyConfig(clip_norm=0.5, noise_multiplier=1.5, delta=1e-5, epsilon_budget=9.0)
    assert back == spec and back.canonical_bytes() == spec.canonical_bytes()
    assert b'"privacy":{"clip_norm":0.5' in spec.canonical_bytes()


def test_no_privacy_table_means_no_dp_and_unchanged_bytes() -> None:
    spec = RunSpec.from_toml(SPECS / "tiny.toml")

    assert spec.privacy is None
    assert b"privacy" not in spec.canonical_bytes()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[privacy]\nclip_norm = -1.0\n", r"\[privacy\] `clip_norm` must be > 0"),
        ("[privacy]\ndelta = 2.0\n", r"\[privacy\] `delta` must be in \(0, 1\)"),
        ("[privacy]\nepsilon = 2.0\n", r"\[privacy\] unknown key\(s\) epsilon"),
        ("privacy = 3\n", r"\[privacy\] must be a table"),
        (
            '[run]\nalgorithm = "scaffold"\n[privacy]\nclip_norm = 1.0\n',
            r"\[privacy\] cannot be used with `algorithm = 'scaffold'`",
        ),
        ("[run]\nmax_norm = 2.0\n[privacy]\nclip_norm = 1.0\n", r"\[privacy\] `max_norm` 2 is below"),
    ],
)
def test_bad_privacy_tables_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(body)

    with pytest.raises(RunSpecError, match=message):
        RunSpec.from_toml(path)
