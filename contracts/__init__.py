"""fedchain's Solidity contracts and their compiled artifacts (ABI, bytecode, metadata, standard JSON).

The artifacts in ``contracts/artifacts`` are produced by ``python -m contracts.build`` with the pinned
solcjs compiler and are shipped inside the wheel so that the ledger can deploy and call the contracts
without a compiler.

Modules: ``build`` (the reproducible compile step), ``verify`` (Sourcify verification of a deployment).
Contracts: ``Runs`` (the run registry, interface ``src/interfaces/IRuns.sol``) and ``EventFloor`` (an
event-only gas baseline for ``bench/gas.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class Artifact:
    """A compiled contract as committed in ``contracts/artifacts/<name>.json``."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    metadata: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load the committed artifact of contract ``name`` (``"Runs"`` or ``"EventFloor"``).

    Raises
    ------
    FileNotFoundError
        If no artifact with that name exists.
    """
    path = ARTIFACT_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no contract artifact {name!r} in {ARTIFACT_DIR}")
    data = json.loads(path.read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        metadata=data["metadata"],
    )
