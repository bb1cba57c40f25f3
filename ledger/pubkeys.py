"""Members' public keys, recovered from the signature of the transaction with which each joined a run.

The ``Runs`` contract records members by address only, and an address is a hash of a public key: nobody can
encrypt to it. But every member joined with a transaction it signed itself (``join(runId)``: the member is
``msg.sender``), and an ECDSA signature together with the signed hash yields the signer's public key. So the
key of every member is on chain already, in a form anyone can check (the recovered key must hash to the
member's address), with no contract change, no extra transaction and no trust in whoever relays it.

:func:`member_public_key` finds the member's ``join`` transaction in the block of its ``joinBlock`` and
recovers the key from it. It needs the node's RPC endpoint to serve full blocks (every Ethereum node does);
the recovered keys never change, so callers cache them.
"""

from __future__ import annotations

from typing import Any

import coincurve
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from ledger.errors import LedgerError
from ledger.tx import with_retry


class PublicKeyError(LedgerError, LookupError):
    """A member's public key cannot be recovered (no join transaction found, or an unsupported one)."""


def _join_selector() -> bytes:
    return bytes(keccak(b"join(uint256)")[:4])


_ALIASES = {
    "input": "data",
    "chainId": "chain_id",
    "accessList": "access_list",
    "yParity": "y_parity",
    "maxFeePerGas": "max_fee_per_gas",
    "maxPriorityFeePerGas": "max_priority_fee_per_gas",
    "gasPrice": "gas_price",
    "storageKeys": "storage_keys",
}


def _get(tx: Any, name: str, default: Any = None) -> Any:
    # JSON-RPC nodes answer in camelCase; web3's in-process tester in snake_case.
    for key in (name, _ALIASES.get(name, name)):
        if key in tx:
            return tx[key]
    if default is not None:
        return default
    raise PublicKeyError(f"transaction has no `{name}` field")


def recover_sender_key(tx: Any) -> bytes:
    """Return the 33-byte compressed public key that signed a mined typed transaction (EIP-2718 type 1/2).

    The transaction is rebuilt from the node's JSON fields and checked to hash to the mined hash, so a node
    that misreports a field cannot substitute another key: the key must also hash to ``tx["from"]``.

    Raises
    ------
    PublicKeyError
        If the transaction type is not supported or the rebuilt bytes do not match.
    """
    kind = int(_get(tx, "type", 0))
    if kind not in (1, 2):
        raise PublicKeyError(f"transaction {HexBytes(tx['hash']).hex()} is of type {kind}; 1 or 2 needed")
    fields = {
        "type": kind,
        "chainId": int(_get(tx, "chainId")),
        "nonce": int(tx["nonce"]),
        "gas": int(tx["gas"]),
        "to": to_checksum_address(tx["to"]),
        "value": int(tx["value"]),
        "data": HexBytes(_get(tx, "input")),
        "accessList": [
            {
                "address": to_checksum_address(a["address"]),
                "storageKeys": [HexBytes(k) for k in _get(a, "storageKeys")],
            }
            for a in _get(tx, "accessList", ())
        ],
        "v": int(_get(tx, "yParity", tx["v"])),
        "r": int.from_bytes(HexBytes(tx["r"]), "big"),
        "s": int.from_bytes(HexBytes(tx["s"]), "big"),
    }
    if kind == 2:
        fields["maxFeePerGas"] = int(_get(tx, "maxFeePerGas"))
        fields["maxPriorityFeePerGas"] = int(_get(tx, "maxPriorityFeePerGas"))
    else:
        fields["gasPrice"] = int(_get(tx, "gasPrice"))
    try:
        typed = TypedTransaction.from_dict(fields)
        raw = typed.encode()
    except Exception as exc:  # eth-account's validators raise several types; all mean "cannot rebuild"
        raise PublicKeyError(f"cannot rebuild transaction {HexBytes(tx['hash']).hex()}: {exc}") from exc
    if keccak(raw) != bytes(HexBytes(tx["hash"])):
        raise PublicKeyError(f"transaction {HexBytes(tx['hash']).hex()} does not rebuild to its hash")
    v, r, s = typed.vrs()
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
    try:
        key = coincurve.PublicKey.from_signature_and_message(signature, typed.hash(), hasher=None)
    except (ValueError, TypeError) as exc:
        raise PublicKeyError(f"transaction {HexBytes(tx['hash']).hex()}: bad signature: {exc}") from exc
    address = to_checksum_address(keccak(key.format(compressed=False)[1:])[-20:])
    if address != to_checksum_address(tx["from"]):
        raise PublicKeyError(f"transaction {HexBytes(tx['hash']).hex()} recovers to {address}, not `from`")
    return bytes(key.format(compressed=True))


def member_public_key(client: Any, run: int, account: str) -> bytes:
    """Return a run member's compressed secp256k1 public key, recovered from its ``join`` transaction.

    Parameters
    ----------
    client
        A ``ledger.client.RunsClient`` of the registry.
    run, account
        The run and the member's address.

    Raises
    ------
    PublicKeyError
        If ``account`` is not a member, or no ``join(run)`` from it is found in its join block.
    """
    account = to_checksum_address(account)
    info = client.member_info(run, account)
    if not info.is_member:
        raise PublicKeyError(f"{account} is not a member of run {run}")
    block = with_retry(
        lambda: client.w3.eth.get_block(int(info.join_block), full_transactions=True),
        client.retry,
        "eth_getBlockByNumber",
    )
    selector = _join_selector()
    for tx in block["transactions"]:
        data = bytes(HexBytes(_get(tx, "input")))
        if (
            tx.get("to") is not None
            and to_checksum_address(tx["to"]) == client.address
            and to_checksum_address(tx["from"]) == account
            and data[:4] == selector
            and int.from_bytes(data[4:36], "big") == int(run)
        ):
            return recover_sender_key(tx)
    raise PublicKeyError(f"no join({run}) transaction of {account} in block {info.join_block}")
