"""Explorer-grade verification: Sourcify's own library checks a fresh ``Runs`` deployment on anvil."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hexbytes import HexBytes

from contracts import load_artifact
from contracts.verify import VerificationError, deployed_code_matches, verify_deployment
from ledger.chain import connect
from ledger.deploy import deploy_contract
from tests.fixtures.chain import AnvilChain

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _deploy(anvil: AnvilChain, name: str) -> tuple[str, str]:
    """Deploy the committed artifact ``name``; return its address and creation transaction hash."""
    w3 = connect(anvil.rpc_url)
    address, block = deploy_contract(w3, anvil.accounts[0], name)
    for tx in w3.eth.get_block(block, full_transactions=True)["transactions"]:
        receipt = w3.eth.get_transaction_receipt(HexBytes(tx["hash"]))
        if receipt["contractAddress"] == address:
            return address, "0x" + bytes(tx["hash"]).hex()
    raise AssertionError(f"no creation transaction for {address} in block {block}")


def test_runs_deployment_is_a_perfect_match_of_the_committed_sources(anvil: AnvilChain) -> None:
    address, creation_tx = _deploy(anvil, "Runs")

    result = verify_deployment(anvil.rpc_url, anvil.chain_id, address, creation_tx=creation_tx)

    assert (result.runtime_match, result.creation_match) == ("perfect", "perfect")
    assert result.perfect
    assert result.compiler.startswith("0.8.28+commit.")
    assert load_artifact("Runs").metadata  # the metadata whose hash the perfect match covers


def test_other_code_at_the_address_is_not_verified_as_runs(anvil: AnvilChain) -> None:
    address, creation_tx = _deploy(anvil, "EventFloor")

    with pytest.raises(VerificationError, match="Runs"):
        verify_deployment(anvil.rpc_url, anvil.chain_id, address, creation_tx=creation_tx)


def test_fedchain_audit_checks_the_registry_code_and_its_sourcify_match(
    anvil: AnvilChain, tmp_path: Path
) -> None:
    runs, _ = _deploy(anvil, "Runs")
    other, _ = _deploy(anvil, "EventFloor")
    cmd = [str(Path(sys.executable).parent / "fedchain"), "audit", "--rpc-url", anvil.rpc_url]
    cmd += ["--registry", runs]
    cmd += ["--ipfs-api", f"local:{tmp_path / 'store'}", "--verify-source", "--json"]

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)

    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["registry"]["code_matches_artifact"] is True
    assert report["registry"]["sourcify"]["runtime_match"] == "perfect"
    assert deployed_code_matches(connect(anvil.rpc_url), other) is False
