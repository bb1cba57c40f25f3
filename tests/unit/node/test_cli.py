"""Tests for the node commands' user-facing behaviour: init output and refusals, exit codes on bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from node.cli import app
from node.config import load_config

runner = CliRunner()


def test_init_creates_a_documented_home_and_prints_address_and_peer_id(tmp_path: Path) -> None:
    key_file = tmp_path / "key.hex"
    key_file.write_text("0x" + "11" * 32)
    home = tmp_path / "home"

    result = runner.invoke(
        app,
        ["init", "--home", str(home), "--import-key-file", str(key_file), "--registry", "0x" + "ab" * 20,
         "--listen-port", "4010", "--kdf-iterations", "1024", "--json"],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["address"] == "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    assert out["peer_id"].startswith("16Uiu2")
    config = load_config(home / "config.toml")
    assert config.p2p.listen_port == 4010 and config.chain.registry == "0x" + "ab" * 20
    assert (home / "key.json").stat().st_mode & 0o777 == 0o600
    assert (home / "passphrase").stat().st_mode & 0o777 == 0o600
    assert "11" * 32 not in (home / "key.json").read_text()


def test_init_refuses_to_overwrite_a_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = runner.invoke(app, ["init", "--home", str(home), "--kdf-iterations", "1024"])

    second = runner.invoke(app, ["init", "--home", str(home), "--kdf-iterations", "1024"])

    assert first.exit_code == 0, first.output
    assert second.exit_code == 2
    assert "already exists" in second.output


def test_node_start_without_a_home_says_how_to_create_one(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["node", "start", "--home", str(tmp_path / "none"), "--run", "1", "--data", "synthetic:reverse"]
    )

    assert result.exit_code == 2
    assert "fedchain init" in result.output


def test_run_create_reports_a_bad_spec_with_exit_code_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert runner.invoke(app, ["init", "--home", str(home), "--kdf-iterations", "1024"]).exit_code == 0
    spec = tmp_path / "run.toml"
    spec.write_text('[run]\naggregator = "avg"\n')

    result = runner.invoke(app, ["run", "create", "--spec", str(spec), "--home", str(home)])

    assert result.exit_code == 2
    assert "aggregator" in result.output
