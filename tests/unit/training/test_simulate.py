"""The in-process simulation: config loading, learning, Byzantine robustness, the codec path and the CLI.

Everything runs the real tiny Llama on seeded synthetic non-IID skills for a few steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from training.errors import ConfigError
from training.simconfig import SimulationConfig, config_from_dict, load_config
from training.simulate import Session, byzantine_indices, prepare, run_simulation

CONFIGS = Path(__file__).resolve().parents[3] / "training" / "configs"

BASE = {
    "simulation": {
        "clients": 6,
        "rounds": 2,
        "algorithm": "fedavg",
        "aggregator": "mean",
        "seed": 0,
        "threads": 1,
    },
    "data": {"source": "synthetic", "examples_per_client": 24, "max_eval_examples": 6, "exact_match": False},
    "model": {"name_or_path": "tiny-llama"},
    "train": {"lr": 0.02, "local_steps": 4, "batch_size": 8, "max_len": 48},
}


def _config(**sections: dict[str, object]) -> SimulationConfig:
    doc = {name: dict(table) for name, table in BASE.items()}
    for name, table in sections.items():
        doc.setdefault(name, {}).update(table)
    return config_from_dict(doc)


@pytest.fixture(scope="module")
def session() -> Session:
    return prepare(_config())


def test_fedavg_improves_union_held_out_loss_over_round_0(session: Session) -> None:
    result = run_simulation(_config(), session=session)

    losses = [r.eval.union_loss for r in result.rounds]
    assert [r.round for r in result.rounds] == [0, 1, 2]
    assert losses[2] < losses[0]
    assert set(result.final.eval.per_client) == {f"client-{i}" for i in range(6)}
    assert result.final.accepted == 6 and result.final.rejected == ()


@pytest.mark.slow
def test_a_scaled_byzantine_client_wrecks_mean_but_not_median_or_krum(session: Session) -> None:
    attack = {"count": 1, "attack": "scaling", "strength": -40.0}

    results = {
        name: run_simulation(
            _config(simulation={"aggregator": name, "aggregator_params": params}, byzantine=attack),
            session=session,
        )
        for name, params in (("mean", {}), ("median", {}), ("krum", {"f": 1}))
    }

    start = results["mean"].rounds[0].eval.union_loss
    final = {name: result.final.eval.union_loss for name, result in results.items()}
    assert results["mean"].byzantine == results["krum"].byzantine and len(results["mean"].byzantine) == 1
    assert final["mean"] > start
    assert final["median"] < start
    assert final["krum"] < start
    assert final["mean"] > final["median"] + 0.1


def test_updates_over_the_norm_bound_are_rejected_and_the_model_stays_put(session: Session) -> None:
    result = run_simulation(_config(simulation={"rounds": 1, "max_update_norm": 1e-9}), session=session)

    assert result.final.accepted == 0
    assert len(result.final.rejected) == 6
    assert result.final.eval.union_loss == pytest.approx(result.rounds[0].eval.union_loss, abs=1e-6)


def test_scaffold_and_fedadam_run_through_the_codec_with_int8(session: Session) -> None:
    for algorithm in ("scaffold", "fedadam"):
        result = run_simulation(
            _config(simulation={"algorithm": algorithm, "codec": "int8", "rounds": 1}), session=session
        )

        assert result.final.accepted == 6
        assert result.final.eval.union_loss < result.rounds[0].eval.union_loss + 0.5


def test_every_codec_runs_the_simulation_and_the_lossy_ones_send_fewer_bytes(session: Session) -> None:
    results = {
        codec: run_simulation(
            _config(simulation={"codec": codec, "rounds": 1, "topk_fraction": 0.05, "codec_block": 32}),
            session=session,
        )
        for codec in ("fp32", "int8", "int4", "topk")
    }

    sizes = {codec: r.final.update_bytes for codec, r in results.items()}
    assert sizes["fp32"] > sizes["int8"] > sizes["int4"] > sizes["topk"] > 0
    assert results["fp32"].rounds[0].update_bytes == 0  # round 0 sends nothing
    for codec, result in results.items():
        assert result.final.accepted == 6, codec
        assert result.final.eval.union_loss < result.rounds[0].eval.union_loss, codec
    with pytest.raises(ConfigError, match="`topk_fraction` must be a number in"):
        _config(simulation={"codec": "topk", "topk_fraction": 0.0})


def test_local_baseline_scores_every_client_on_the_union(session: Session) -> None:
    result = run_simulation(_config(simulation={"rounds": 1, "local_baseline": True}), session=session)

    assert result.baseline is not None
    assert set(result.baseline.per_client_union_loss) == {f"client-{i}" for i in range(6)}
    assert result.baseline.best_union_loss <= result.baseline.mean_union_loss


def test_byzantine_sets_are_seeded_and_nested() -> None:
    two = byzantine_indices(_config(simulation={"clients": 10}, byzantine={"fraction": 0.2}))
    three = byzantine_indices(_config(simulation={"clients": 10}, byzantine={"fraction": 0.3}))

    assert len(two) == 2 and len(three) == 3 and set(two) < set(three)
    assert byzantine_indices(_config(simulation={"clients": 10}, byzantine={"count": 2})) == two


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"simulation": {"rounds": 0}}, r"\[simulation\] `rounds` must be >= 1, got 0"),
        ({"simulation": {"colour": 1}}, r"\[simulation\] unknown key\(s\) colour"),
        ({"train": {"lr": -1.0}}, r"\[train\] `lr` must be > 0, got -1.0"),
        ({"byzantine": {"attack": "bribe"}}, r"\[byzantine\] `attack` must be one of alie, .*got 'bribe'"),
        ({"byzantine": {"count": 6}}, r"one must be honest"),
        ({"simulation": {"algorithm": "fedsgd"}}, r"`algorithm` must be one of .*got 'fedsgd'"),
        ({"extra": {}}, r"unknown table\(s\) extra"),
    ],
)
def test_bad_configs_name_the_table_and_field(doc: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**doc)


def test_load_config_reads_the_shipped_examples_and_reports_bad_toml(tmp_path: Path) -> None:
    for path in sorted(CONFIGS.glob("*.toml")):
        assert load_config(path).rounds >= 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation\nrounds = 2\n")

    with pytest.raises(ConfigError, match="bad.toml: invalid TOML"):
        load_config(bad)


def _write_toml(path: Path) -> Path:
    path.write_text(tomli_w.dumps(BASE))
    return path


def test_cli_json_output_parses_and_overrides_apply(tmp_path: Path) -> None:
    from node.cli import app

    config = _write_toml(tmp_path / "sim.toml")

    result = CliRunner().invoke(
        app, ["simulate", "--config", str(config), "--rounds", "1", "--clients", "4", "--json"]
    )

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["config"]["rounds"] == 1 and out["config"]["clients"] == 4
    assert [r["round"] for r in out["rounds"]] == [0, 1]
    assert out["final_union_loss"] == out["rounds"][-1]["eval"]["union_loss"]


def test_cli_bad_config_exits_2_with_the_field_named(tmp_path: Path) -> None:
    from node.cli import app

    config = _write_toml(tmp_path / "sim.toml")

    result = CliRunner().invoke(app, ["simulate", "--config", str(config), "--rounds", "0"])

    assert result.exit_code == 2
    assert "`rounds` must be >= 1, got 0" in result.stderr
