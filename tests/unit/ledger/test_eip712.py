"""ledger.eip712 against eth_account's EIP-712 encoder and signer (a second, independent implementation)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils.crypto import keccak

from ledger.eip712 import SECP256K1_N, commit_digest, domain_separator, recover, sign_digest, vote_digest
from ledger.errors import LedgerConfigError, SignatureError
from ledger.types import CommitteeResult

CHAIN_ID = 31337
REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")  # anvil account 0
DOMAIN = {"name": "fedchain Runs", "version": "1", "chainId": CHAIN_ID, "verifyingContract": REGISTRY}
COMMIT_TYPES = {
    "UpdateCommit": [
        {"name": "runId", "type": "uint256"},
        {"name": "round", "type": "uint256"},
        {"name": "sha256", "type": "bytes32"},
        {"name": "cidHash", "type": "bytes32"},
        {"name": "numSamples", "type": "uint64"},
    ]
}
VOTE_TYPES = {
    "CommitteeVote": [
        {"name": "runId", "type": "uint256"},
        {"name": "round", "type": "uint256"},
        {"name": "mergedSha256", "type": "bytes32"},
        {"name": "mergedCidHash", "type": "bytes32"},
        {"name": "includedSetHash", "type": "bytes32"},
        {"name": "manifestCidHash", "type": "bytes32"},
        {"name": "includedBitmapHash", "type": "bytes32"},
    ]
}
RESULT = CommitteeResult(
    run_id=3,
    round=7,
    merged_sha256=bytes(range(32)),
    merged_cid="bafymerged",
    included_set_hash=b"\x11" * 32,
    manifest_cid="bafymanifest",
    included_bitmap=[0b1011, 1 << 255],
)


def _reference(types: dict[str, list[dict[str, str]]], message: dict[str, object]) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(DOMAIN, types, message)))


def test_commit_digest_matches_eth_account() -> None:
    sha = bytes.fromhex("ab" * 32)
    cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
    expected = _reference(
        COMMIT_TYPES,
        {"runId": 1, "round": 2, "sha256": sha, "cidHash": keccak(cid.encode()), "numSamples": 48},
    )

    assert commit_digest(CHAIN_ID, REGISTRY, 1, 2, sha, cid, 48) == expected
    assert commit_digest(CHAIN_ID, REGISTRY, 1, 2, sha, cid, 49) != expected
    assert commit_digest(CHAIN_ID + 1, REGISTRY, 1, 2, sha, cid, 48) != expected


def test_vote_digest_matches_eth_account() -> None:
    packed = b"".join(w.to_bytes(32, "big") for w in RESULT.included_bitmap)
    expected = _reference(
        VOTE_TYPES,
        {
            "runId": 3,
            "round": 7,
            "mergedSha256": RESULT.merged_sha256,
            "mergedCidHash": keccak(b"bafymerged"),
            "includedSetHash": RESULT.included_set_hash,
            "manifestCidHash": keccak(b"bafymanifest"),
            "includedBitmapHash": keccak(packed),
        },
    )

    assert vote_digest(CHAIN_ID, REGISTRY, RESULT) == expected


def test_domain_separator_lowercase_registry_is_the_same_domain() -> None:
    assert domain_separator(CHAIN_ID, REGISTRY.lower()) == domain_separator(CHAIN_ID, REGISTRY)


def test_sign_digest_equals_eth_account_and_recovers_the_signer() -> None:
    digest = vote_digest(CHAIN_ID, REGISTRY, RESULT)
    account = Account.from_key(KEY)

    signature = sign_digest(KEY, digest)

    assert signature == bytes(Account.unsafe_sign_hash(digest, KEY).signature)
    assert len(signature) == 65 and signature[64] in (27, 28)
    assert int.from_bytes(signature[32:64], "big") <= SECP256K1_N // 2
    assert recover(digest, signature) == account.address
    assert recover(keccak(b"other"), signature) != account.address


def _high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # 27 <-> 28


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda sig: sig[:64], "65 bytes"),
        (lambda sig: sig + b"\x00", "65 bytes"),
        (lambda sig: sig[:64] + b"\x00", "v must be 27 or 28"),
        (lambda sig: sig[:64] + b"\x01", "v must be 27 or 28"),
        (_high_s, "upper half"),
        (lambda sig: b"\x00" * 32 + sig[32:], "r is out of range"),
        (lambda sig: SECP256K1_N.to_bytes(32, "big") + sig[32:], "r is out of range"),
        (lambda sig: sig[:32] + b"\x00" * 32 + sig[64:], "s is zero"),
    ],
)
def test_recover_RevertWhen_SignatureMalformed(mangle: Callable[[bytes], bytes], match: str) -> None:
    digest = commit_digest(CHAIN_ID, REGISTRY, 1, 0, b"\x01" * 32, "bafy", 1)
    signature = sign_digest(KEY, digest)
    # the high-s twin is a valid ECDSA signature of the same key: only the low-s rule refuses it
    assert _high_s(signature) != signature

    with pytest.raises(SignatureError, match=match):
        recover(digest, mangle(signature))


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(LedgerConfigError, match="`sha256` must be 32 bytes"):
        commit_digest(CHAIN_ID, REGISTRY, 1, 0, b"short", "bafy", 1)
    with pytest.raises(LedgerConfigError, match="`num_samples`"):
        commit_digest(CHAIN_ID, REGISTRY, 1, 0, b"\x01" * 32, "bafy", 2**64)
    with pytest.raises(LedgerConfigError, match="`key`"):
        sign_digest(b"\x00" * 32, b"\x01" * 32)
    with pytest.raises(LedgerConfigError, match="includedBitmap word"):
        vote_digest(CHAIN_ID, REGISTRY, CommitteeResult(1, 0, b"\x01" * 32, "m", b"\x02" * 32, "x", [-1]))
