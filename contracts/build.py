"""Compile the Solidity sources with the pinned solcjs through standard JSON and write the artifacts.

Run ``python -m contracts.build`` (or ``make contracts``). The build is deterministic: sources are read in
sorted order with fixed compiler settings, and every JSON file is written with sorted keys, so that
recompiling reproduces the committed artifacts byte for byte (``tests/unit/contracts/test_build.py``).

Artifacts (in ``contracts/artifacts/``):

- ``standard-input.json``: the exact compiler input (sources and settings), for explorers to verify;
- ``<Contract>.json``: ``abi``, ``bytecode``, ``deployedBytecode``, ``metadata`` (the compiler's metadata
  string, which embeds every source's keccak256) and the compiler version.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
ARTIFACTS = ROOT / "artifacts"
SOLC_VERSION = "0.8.28"
EVM_VERSION = "cancun"  # runs on anvil 1.7 (prague) and on py-evm 0.12 (cancun and prague VMs)
CONTRACTS = {"Runs": "src/Runs.sol", "EventFloor": "src/bench/EventFloor.sol"}


class BuildError(RuntimeError):
    """The compiler is missing, has the wrong version, or reported errors."""


def find_solcjs(repo: Path | None = None) -> Path:
    """Return the path of the pinned solcjs script in ``node_modules``.

    Raises
    ------
    BuildError
        If ``node_modules/solc`` is missing or not version ``SOLC_VERSION``.
    """
    base = (repo or ROOT.parent) / "node_modules" / "solc"
    package = base / "package.json"
    if not package.is_file():
        raise BuildError(f"solcjs not found at {base}; run `make setup` (npm ci) first")
    version = json.loads(package.read_text())["version"]
    if version != SOLC_VERSION:
        raise BuildError(f"solcjs must be version {SOLC_VERSION}, found {version} at {base}")
    return base / "solc.js"


def standard_input() -> dict[str, Any]:
    """Build the standard-JSON compiler input from every ``.sol`` file under ``src`` (sorted)."""
    sources = {
        f"src/{path.relative_to(SRC).as_posix()}": {"content": path.read_text()}
        for path in sorted(SRC.rglob("*.sol"))
    }
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "optimizer": {"enabled": True, "runs": 1000},
            "viaIR": True,
            "evmVersion": EVM_VERSION,
            "metadata": {"bytecodeHash": "ipfs", "useLiteralContent": False},
            "outputSelection": {
                "*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]}
            },
        },
    }


_NODE_DRIVER = """
const [solcDir, inPath, outPath] = process.argv.slice(1);
const fs = require("fs");
const solc = require(solcDir);
fs.writeFileSync(outPath, solc.compile(fs.readFileSync(inPath, "utf8")));
"""


def compile_standard(input_json: dict[str, Any], solcjs: Path) -> dict[str, Any]:
    """Run solcjs in standard-JSON mode and return its output.

    Raises
    ------
    BuildError
        If node is missing or the compiler reports an error.
    """
    node = shutil.which("node")
    if node is None:
        raise BuildError("`node` is not on PATH; Node 20 is needed to run solcjs")
    # solcjs's own CLI can cut a large piped stdout short, so the wrapper is driven in-process by node and
    # writes its output to a file.
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "input.json", Path(tmp) / "output.json"
        in_path.write_text(json.dumps(input_json))
        proc = subprocess.run(
            [node, "-e", _NODE_DRIVER, str(solcjs.parent), str(in_path), str(out_path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if proc.returncode != 0:
            raise BuildError(f"solcjs exited with {proc.returncode}: {proc.stderr[-2000:]}")
        text = out_path.read_text()
    output: dict[str, Any] = json.loads(text)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("compilation failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    return output


def _dump(data: Any) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def build(out_dir: Path = ARTIFACTS, repo: Path | None = None) -> list[Path]:
    """Compile every contract and write the artifacts to ``out_dir``; return the written paths."""
    input_json = standard_input()
    output = compile_standard(input_json, find_solcjs(repo))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "standard-input.json"]
    written[0].write_text(_dump(input_json))
    for name, source in CONTRACTS.items():
        compiled = output["contracts"][source][name]
        artifact = {
            "contractName": name,
            "sourceName": source,
            "compiler": {"name": "solc", "version": SOLC_VERSION, "evmVersion": EVM_VERSION},
            "abi": compiled["abi"],
            "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
            "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
            "metadata": compiled["metadata"],
        }
        path = out_dir / f"{name}.json"
        path.write_text(_dump(artifact))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: ``python -m contracts.build [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ARTIFACTS, help="artifact folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        paths = build(args.out)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
