"""Explorer-grade verification: Sourcify's own library checks a fresh ``Runs`` deployment on anvil."""

from __future__ import annotations

import pytest
from hexbytes import HexBytes

from contracts import load_artifact
from contracts.verify import VerificationError, verify_deployment
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
