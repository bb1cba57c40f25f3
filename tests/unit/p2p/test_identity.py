from __future__ import annotations

import pytest
from eth_account import Account

from p2p.errors import IdentityError
from p2p.identity import NodeIdentity, address_from_peer_id, normalize_address


def test_identity_address_matches_eth_account() -> None:
    key = bytes(range(1, 33))

    identity = NodeIdentity.from_private_key(key)

    assert identity.address == Account.from_key(key).address
    assert identity.peer_id.to_base58().startswith("16Uiu2")


def test_address_is_recovered_from_peer_id_alone() -> None:
    identity = NodeIdentity.from_private_key((7).to_bytes(32, "big"))

    assert address_from_peer_id(identity.peer_id.to_base58()) == identity.address
    assert address_from_peer_id(identity.peer_id) == identity.address


@pytest.mark.parametrize("key", [b"", b"\x01" * 31, b"\x00" * 32, b"\xff" * 32])
def test_invalid_private_keys_are_rejected(key: bytes) -> None:
    with pytest.raises(IdentityError):
        NodeIdentity.from_private_key(key)


@pytest.mark.parametrize("peer_id", ["", "not-a-peer-id", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"])
def test_peer_ids_without_a_secp256k1_key_are_rejected(peer_id: str) -> None:
    with pytest.raises(IdentityError):
        address_from_peer_id(peer_id)


def test_normalize_address_checksums_and_rejects_garbage() -> None:
    address = Account.from_key(b"\x02" * 32).address

    assert normalize_address(address.lower()) == address
    with pytest.raises(IdentityError, match="40 hex digits"):
        normalize_address("0x1234")
