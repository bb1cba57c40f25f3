"""``fedchain --version``: package version, consensus arithmetic version and the Runs contract's code hash."""

from __future__ import annotations

import hashlib
from importlib import metadata

from typer.testing import CliRunner

from node.cli import app
from tests.fixtures.chain import ChainEnv
from training.merge import ARITHMETIC

runner = CliRunner()


def _version_lines() -> dict[str, str]:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def test_version_prints_package_and_arithmetic_versions() -> None:
    lines = _version_lines()

    assert lines["fedchain"] == metadata.version("fedchain")
    assert lines["arithmetic"] == ARITHMETIC


def test_version_contract_hash_is_the_sha256_of_the_code_a_deployment_holds(pyevm_chain: ChainEnv) -> None:
    code = bytes(pyevm_chain.w3.eth.get_code(pyevm_chain.w3.to_checksum_address(pyevm_chain.runs_address)))

    lines = _version_lines()

    assert len(code) > 0
    assert lines["runs-contract"] == "sha256:" + hashlib.sha256(code).hexdigest()


def test_version_runs_before_any_command_and_needs_none() -> None:
    result = runner.invoke(app, ["--version", "status"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("fedchain ")
