"""Deploy fedchain's contracts from the committed artifacts."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3

from contracts import load_artifact
from ledger.errors import TransactionError
from ledger.tx import RetryPolicy, TxSender, with_retry


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live on one chain."""

    chain_id: int
    runs: str
    block_number: int


def deploy_contract(w3: Web3, account: LocalAccount, name: str) -> tuple[str, int]:
    """Deploy the committed artifact ``name``; return ``(address, block_number)``.

    Raises
    ------
    TransactionError
        If the deployment transaction fails.
    """
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    sender = TxSender(w3, account)
    result = sender.send(factory.constructor())  # type: ignore[arg-type]
    receipt = with_retry(
        lambda: w3.eth.get_transaction_receipt(HexBytes(result.tx_hash)), RetryPolicy(), "receipt"
    )
    address = receipt["contractAddress"]
    if not address:
        raise TransactionError(f"deploying {name}: receipt has no contract address")
    return str(address), result.block_number


def deploy(w3: Web3, account: LocalAccount) -> Deployment:
    """Deploy the ``Runs`` registry and return its :class:`Deployment`."""
    address, block = deploy_contract(w3, account, "Runs")
    return Deployment(chain_id=int(w3.eth.chain_id), runs=address, block_number=block)
