"""``fedchain audit`` takes ``--rpc-url`` like every other command; ``--rpc`` is a hidden deprecated alias."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner, Result

from node.cli import app
from node.exitcodes import EXIT_FAILURE, EXIT_USAGE

runner = CliRunner()
REGISTRY = "0x" + "ab" * 20
DEAD_RPC = "http://127.0.0.1:9"  # the discard port: nothing answers JSON-RPC there


def _audit(tmp_path: Path, *rpc: str) -> Result:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    return runner.invoke(app, ["audit", *rpc, "--registry", REGISTRY, "--ipfs-api", str(store)])


def test_help_shows_rpc_url_and_hides_the_deprecated_rpc() -> None:
    result = runner.invoke(app, ["audit", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0
    assert "--rpc-url" in result.stdout
    assert "--rpc " not in result.stdout.replace("--rpc-url", "")


def test_rpc_url_reaches_the_chain_and_the_outage_exits_1(tmp_path: Path) -> None:
    result = _audit(tmp_path, "--rpc-url", DEAD_RPC)

    assert result.exit_code == EXIT_FAILURE, result.output
    assert "deprecated" not in result.stderr


def test_the_deprecated_rpc_still_works_with_a_warning(tmp_path: Path) -> None:
    result = _audit(tmp_path, "--rpc", DEAD_RPC)

    assert result.exit_code == EXIT_FAILURE, result.output
    assert "warning: --rpc is deprecated, use --rpc-url" in result.stderr


def test_no_url_or_two_different_ones_are_usage_errors(tmp_path: Path) -> None:
    missing = _audit(tmp_path)
    both = _audit(tmp_path, "--rpc-url", DEAD_RPC, "--rpc", "http://127.0.0.1:8545")

    assert missing.exit_code == EXIT_USAGE
    assert "missing option --rpc-url" in missing.stderr
    assert both.exit_code == EXIT_USAGE and "disagree" in both.stderr
