"""Node identity: a participant's secp256k1 Ethereum key as its libp2p key, peer id <-> address mapping.

A secp256k1 libp2p peer id (``16Uiu2…``) is an identity multihash of the protobuf-encoded compressed
public key, so the key — and therefore the Ethereum address — can be recovered from the peer id alone.
That is what lets a gossipsub signature (made with the peer's key) prove which on-chain member sent it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import coincurve
from eth_hash.auto import keccak
from libp2p.crypto.keys import KeyPair, KeyType
from libp2p.crypto.secp256k1 import Secp256k1PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from p2p.errors import IdentityError


def address_from_public_key(public_key: bytes) -> str:
    """Return the EIP-55 checksummed Ethereum address of a secp256k1 public key.

    Parameters
    ----------
    public_key
        Compressed (33 bytes) or uncompressed (65 bytes) SEC1 encoding.
    """
    try:
        uncompressed = coincurve.PublicKey(public_key).format(compressed=False)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"not a secp256k1 public key ({len(public_key)} bytes): {exc}") from exc
    return to_checksum_address(keccak(uncompressed[1:])[-20:])


def to_checksum_address(raw: bytes) -> str:
    """EIP-55 checksum encoding of a 20-byte address."""
    if len(raw) != 20:
        raise IdentityError(f"an address has 20 bytes, got {len(raw)}")
    hex_addr = raw.hex()
    digest = keccak(hex_addr.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hex_addr))


def normalize_address(address: str) -> str:
    """Return ``address`` in EIP-55 form, rejecting anything that is not ``0x`` + 40 hex digits."""
    if not isinstance(address, str) or len(address) != 42 or not address.startswith(("0x", "0X")):
        raise IdentityError(f"`address` must be 0x followed by 40 hex digits, got {address!r}")
    try:
        raw = bytes.fromhex(address[2:])
    except ValueError as exc:
        raise IdentityError(f"`address` must be 0x followed by 40 hex digits, got {address!r}") from exc
    return to_checksum_address(raw)


def address_from_peer_id(peer_id: ID | str) -> str:
    """Return the Ethereum address of the member behind a secp256k1 peer id.

    Raises
    ------
    IdentityError
        If the peer id is malformed or does not embed a secp256k1 public key.
    """
    try:
        pid = peer_id if isinstance(peer_id, ID) else ID.from_base58(peer_id)
    except Exception as exc:  # base58 errors of many kinds: all mean "not a valid peer id"
        raise IdentityError(f"malformed peer id {str(peer_id)[:80]!r}: {exc}") from exc
    return _address_of_peer_id(pid)


@functools.lru_cache(maxsize=4096)
def _address_of_peer_id(pid: ID) -> str:
    # Cached: the gossip validator asks this for every message, and a run has few members; decompressing
    # the key and hashing it costs ~0.4 ms, half of a message's validation. Failures are not cached.
    try:
        public_key = pid.extract_public_key()
    except Exception as exc:  # protobuf errors of many kinds: all mean "not a valid peer id"
        raise IdentityError(f"malformed peer id {str(pid)[:80]!r}: {exc}") from exc
    if public_key is None or public_key.get_type() != KeyType.Secp256k1:
        raise IdentityError(f"peer id {str(pid)[:80]} does not embed a secp256k1 public key")
    if not isinstance(public_key, Secp256k1PublicKey):
        raise IdentityError(f"peer id {str(pid)[:80]} does not embed a secp256k1 public key")
    return address_from_public_key(public_key.to_bytes())


@dataclass(frozen=True)
class NodeIdentity:
    """A participant's libp2p identity, built from its 32-byte Ethereum private key.

    Attributes
    ----------
    key_pair
        The libp2p secp256k1 key pair (used by Noise and by gossipsub message signing).
    peer_id
        The libp2p peer id derived from the public key.
    address
        The EIP-55 Ethereum address of the same key.
    """

    key_pair: KeyPair
    peer_id: ID
    address: str

    @classmethod
    def from_private_key(cls, private_key: bytes) -> NodeIdentity:
        """Build the identity from raw private-key bytes (32 bytes, as stored in an eth-account keystore)."""
        if not isinstance(private_key, bytes | bytearray) or len(private_key) != 32:
            size = len(private_key) if isinstance(private_key, bytes | bytearray) else type(private_key)
            raise IdentityError(f"`private_key` must be 32 bytes, got {size}")
        try:
            key_pair = create_new_key_pair(bytes(private_key))
        except ValueError as exc:
            raise IdentityError(f"`private_key` is not a valid secp256k1 secret: {exc}") from exc
        peer_id = ID.from_pubkey(key_pair.public_key)
        return cls(key_pair=key_pair, peer_id=peer_id, address=address_from_peer_id(peer_id))
