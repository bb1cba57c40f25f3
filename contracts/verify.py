"""Explorer-grade source verification of a deployed contract with Sourcify's own library.

:func:`verify_deployment` runs ``contracts/sourcify.mjs`` under Node: `@ethereum-sourcify/lib-sourcify`
recompiles the committed standard-JSON input (``artifacts/standard-input.json``) with the pinned solcjs and
compares the result with the runtime code at the address and, given the creation transaction, with the
creation code. ``perfect`` means the metadata hashes match too, so every source byte is the committed one;
``partial`` means the same code compiled from other metadata (comments, file names); no match is an error.
This is the check Sourcify (and explorers that use it) run; nothing is sent anywhere but the JSON-RPC URL.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.build import ARTIFACTS, CONTRACTS, ROOT, BuildError, find_solcjs

SCRIPT = ROOT / "sourcify.mjs"


class VerificationError(BuildError):
    """Node, lib-sourcify or the chain could not be used, or the recompiled code does not match."""


@dataclass(frozen=True)
class VerificationResult:
    """What Sourcify's library concluded for one deployment.

    Attributes
    ----------
    compiler
        The solc version that recompiled the input.
    runtime_match, creation_match
        ``"perfect"``, ``"partial"`` or ``None`` (not checked: no creation transaction given).
    """

    compiler: str
    runtime_match: str | None
    creation_match: str | None

    @property
    def perfect(self) -> bool:
        """Whether every checked bytecode is a perfect match (runtime always; creation when given)."""
        return self.runtime_match == "perfect" and self.creation_match in ("perfect", None)


def verify_deployment(
    rpc_url: str,
    chain_id: int,
    address: str,
    *,
    contract: str = "Runs",
    creation_tx: str | None = None,
    timeout_s: float = 300.0,
) -> VerificationResult:
    """Verify the contract at ``address`` against the committed sources, as Sourcify does.

    Parameters
    ----------
    rpc_url, chain_id
        The chain's JSON-RPC endpoint and id.
    address
        The deployed contract.
    contract
        Which committed contract it should be (``Runs``).
    creation_tx
        The deployment transaction hash; with it, the creation code (and constructor arguments) is checked
        as well.
    timeout_s
        Bound on the recompilation and checks (solcjs takes 10-20 s for ``Runs`` on a busy 2-core machine).

    Raises
    ------
    VerificationError
        If Node or the npm packages are missing, the chain cannot be read, or the code does not match.
    """
    if contract not in CONTRACTS:
        raise VerificationError(f"unknown contract {contract!r}; known: {', '.join(CONTRACTS)}")
    node = shutil.which("node")
    if node is None:
        raise VerificationError("`node` is not on PATH; Sourcify verification needs Node.js 20+")
    find_solcjs()
    if not (ROOT.parent / "node_modules" / "@ethereum-sourcify" / "lib-sourcify").is_dir():
        raise VerificationError("@ethereum-sourcify/lib-sourcify is not installed; run `make setup`")
    request = {
        "input": str(ARTIFACTS / "standard-input.json"),
        "path": CONTRACTS[contract],
        "name": contract,
        "rpc": rpc_url,
        "chainId": chain_id,
        "address": address,
        "creationTx": creation_tx,
    }
    with tempfile.TemporaryDirectory(prefix="fedchain-sourcify-") as folder:
        request_path = Path(folder) / "request.json"
        request_path.write_text(json.dumps(request))
        try:
            done = subprocess.run(
                [node, str(SCRIPT), str(request_path)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=ROOT.parent,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise VerificationError(f"Sourcify verification did not finish within {timeout_s:.0f} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as exc:
        tail = (done.stderr or done.stdout)[-800:]
        raise VerificationError(f"lib-sourcify printed no result (exit {done.returncode}): {tail}") from exc
    if "error" in result:
        raise VerificationError(f"Sourcify verification of {contract} at {address} failed: {result['error']}")
    return VerificationResult(
        compiler=str(result["compiler"]),
        runtime_match=result.get("runtimeMatch"),
        creation_match=result.get("creationMatch"),
    )


def deployed_code_matches(w3: Any, address: str, contract: str = "Runs") -> bool:
    """Whether the runtime code at ``address`` is byte for byte the committed artifact's deployed code.

    A cheap check (one ``eth_getCode``) that needs no compiler: the committed artifact is what
    :func:`verify_deployment` proves to be compiled from the committed sources.
    """
    from contracts import load_artifact

    expected = bytes.fromhex(load_artifact(contract).deployed_bytecode.removeprefix("0x"))
    return bytes(w3.eth.get_code(w3.to_checksum_address(address))) == expected
