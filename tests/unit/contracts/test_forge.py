"""The Solidity-side tests of ``Runs`` (contracts/test/*.t.sol) run by forge, with fixed fuzz seeds.

forge compiles the tests with the pinned solcjs (``contracts/forge/solc``) and deploys ``Runs`` from its
committed artifact, so the unit, fuzz and invariant tests exercise the bytecode the ledger deploys.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CONTRACTS = Path(__file__).resolve().parents[3] / "contracts"
FORGE = CONTRACTS.parent / "node_modules" / "@foundry-rs" / "forge-linux-amd64" / "bin" / "forge"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def forge_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, dict[str, object]]]:
    if not FORGE.is_file():
        pytest.fail(f"forge is not installed at {FORGE}: run `make setup`", pytrace=False)
    if shutil.which("node") is None:
        pytest.fail("`node` is not on PATH (forge compiles through solcjs)", pytrace=False)
    out = tmp_path_factory.mktemp("forge")
    proc = subprocess.run(
        [str(FORGE), "test", "--json", "--out", str(out / "out"), "--cache-path", str(out / "cache")],
        cwd=CONTRACTS,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"test/')]
    tail = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines, f"forge printed no results (exit {proc.returncode}):\n{tail}"
    suites: dict[str, dict[str, dict[str, object]]] = {
        name: suite["test_results"] for name, suite in json.loads(lines[-1]).items()
    }
    return suites


def test_every_solidity_test_passes(forge_results: dict[str, dict[str, dict[str, object]]]) -> None:
    failed = {
        f"{suite}::{name}": result.get("reason")
        for suite, tests in forge_results.items()
        for name, result in tests.items()
        if result["status"] != "Success"
    }
    assert not failed, failed


Results = dict[str, dict[str, dict[str, object]]]


def test_unit_fuzz_and_invariant_suites_all_ran(forge_results: Results) -> None:
    kinds: dict[str, int] = {}
    for tests in forge_results.values():
        for result in tests.values():
            kind = next(iter(result["kind"]))  # type: ignore[call-overload]
            kinds[kind] = kinds.get(kind, 0) + 1

    assert kinds.get("Unit", 0) >= 40
    assert kinds.get("Fuzz", 0) >= 5
    assert kinds.get("Invariant", 0) >= 3


def test_every_custom_error_of_the_interface_is_expected_by_some_test() -> None:
    interface = (CONTRACTS / "src" / "interfaces" / "IRuns.sol").read_text()
    errors = set(re.findall(r"^\s*error (\w+)\(", interface, flags=re.MULTILINE))
    tests = "".join(path.read_text() for path in (CONTRACTS / "test").rglob("*.t.sol"))
    expected = set(re.findall(r"IRuns\.(\w+)\.selector", tests))

    assert len(errors) > 20
    assert errors - expected == set()
