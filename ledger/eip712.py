"""EIP-712 digests of committee rounds, and secp256k1 signing and recovery over them.

The domain is ``EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)`` with
name ``"fedchain Runs"``, version ``"1"`` and the ``Runs`` registry as the verifying contract. Two typed
messages exist (``IRuns`` offers their digests as views, ``commitDigest`` and ``committeeVoteDigest``):

- ``UpdateCommit(uint256 runId,uint256 round,bytes32 sha256,bytes32 cidHash,uint64 numSamples)``, a member's
  off-chain commit of its update, ``cidHash = keccak256(bytes(cid))``;
- ``CommitteeVote(uint256 runId,uint256 round,bytes32 mergedSha256,bytes32 mergedCidHash,
  bytes32 includedSetHash,bytes32 manifestCidHash,bytes32 includedBitmapHash)``, a committee member's vote,
  ``includedBitmapHash = keccak256(abi.encodePacked(uint256[] includedBitmap))``.

Signatures are 65 bytes ``r || s || v`` with ``v`` 27 or 28 and ``s`` in the lower half of the curve order
(what the contract accepts); anything else is refused with :class:`~ledger.errors.SignatureError`.
"""

from __future__ import annotations

from eth_abi.abi import encode as abi_encode
from eth_keys.datatypes import PrivateKey, Signature
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from eth_utils.exceptions import ValidationError

from ledger.errors import LedgerConfigError, SignatureError
from ledger.types import CommitteeResult

DOMAIN_NAME = "fedchain Runs"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
COMMIT_TYPE = "UpdateCommit(uint256 runId,uint256 round,bytes32 sha256,bytes32 cidHash,uint64 numSamples)"
VOTE_TYPE = (
    "CommitteeVote(uint256 runId,uint256 round,bytes32 mergedSha256,bytes32 mergedCidHash,"
    "bytes32 includedSetHash,bytes32 manifestCidHash,bytes32 includedBitmapHash)"
)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SIGNATURE_BYTES = 65


def _hash32(name: str, value: bytes) -> bytes:
    if not isinstance(value, bytes) or len(value) != 32:
        raise LedgerConfigError(f"`{name}` must be 32 bytes, got {value!r:.80}")
    return value


def _uint(name: str, value: int, bits: int = 256) -> int:
    if not isinstance(value, int) or not 0 <= value < 2**bits:
        raise LedgerConfigError(f"`{name}` must be an integer in [0, 2**{bits}), got {value!r}")
    return value


def domain_separator(chain_id: int, registry: str) -> bytes:
    """Return the EIP-712 domain separator of the ``Runs`` registry at ``registry`` on ``chain_id``."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(text=DOMAIN_TYPE),
                keccak(text=DOMAIN_NAME),
                keccak(text=DOMAIN_VERSION),
                _uint("chain_id", chain_id),
                to_checksum_address(registry),
            ],
        )
    )


def _digest(chain_id: int, registry: str, struct_hash: bytes) -> bytes:
    return keccak(b"\x19\x01" + domain_separator(chain_id, registry) + struct_hash)


def commit_digest(
    chain_id: int, registry: str, run: int, round: int, sha256: bytes, cid: str, num_samples: int
) -> bytes:
    """Return the EIP-712 digest of a member's ``UpdateCommit`` (what the member signs)."""
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "uint256", "uint256", "bytes32", "bytes32", "uint64"],
            [
                keccak(text=COMMIT_TYPE),
                _uint("run", run),
                _uint("round", round),
                _hash32("sha256", sha256),
                keccak(cid.encode()),
                _uint("num_samples", num_samples, 64),
            ],
        )
    )
    return _digest(chain_id, registry, struct_hash)


def bitmap_hash(words: list[int]) -> bytes:
    """Return ``keccak256(abi.encodePacked(uint256[] words))``: the words as 32-byte big-endian."""
    return keccak(b"".join(_uint("includedBitmap word", w).to_bytes(32, "big") for w in words))


def vote_digest(chain_id: int, registry: str, result: CommitteeResult) -> bytes:
    """Return the EIP-712 digest of a ``CommitteeVote`` on ``result`` (what each committee member signs)."""
    struct_hash = keccak(
        abi_encode(
            ["bytes32", "uint256", "uint256", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"],
            [
                keccak(text=VOTE_TYPE),
                _uint("run_id", result.run_id),
                _uint("round", result.round),
                _hash32("merged_sha256", result.merged_sha256),
                keccak(result.merged_cid.encode()),
                _hash32("included_set_hash", result.included_set_hash),
                keccak(result.manifest_cid.encode()),
                bitmap_hash(list(result.included_bitmap)),
            ],
        )
    )
    return _digest(chain_id, registry, struct_hash)


def sign_digest(key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest with a secp256k1 private key: 65 bytes ``r || s || v``, low s, v 27/28."""
    if not isinstance(key, bytes) or len(key) != 32:
        raise LedgerConfigError("`key` must be a 32-byte secp256k1 private key")
    try:
        signature = PrivateKey(key).sign_msg_hash(_hash32("digest", digest))
    except ValidationError as exc:
        raise LedgerConfigError(f"`key` is not a valid secp256k1 private key: {exc}") from exc
    r, s, v = int(signature.r), int(signature.s), int(signature.v)
    if s > SECP256K1_N // 2:  # RFC 6979 signers already give low s; normalise in case one does not
        s, v = SECP256K1_N - s, 1 - v
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27])


def recover(digest: bytes, signature: bytes) -> str:
    """Return the checksummed address that signed ``digest``.

    Raises
    ------
    SignatureError
        If the signature is not 65 bytes, ``v`` is not 27/28, ``r`` or ``s`` is out of range, ``s`` is in
        the upper half of the curve order (malleable: the contract refuses it too), or no key recovers.
    """
    _hash32("digest", digest)
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        size = len(signature) if isinstance(signature, bytes) else type(signature).__name__
        raise SignatureError(f"signature must be {SIGNATURE_BYTES} bytes (r || s || v), got {size}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {v}")
    if not 0 < r < SECP256K1_N:
        raise SignatureError("signature r is out of range")
    if not 0 < s <= SECP256K1_N // 2:
        raise SignatureError("signature s is zero or in the upper half of the curve order (malleable)")
    try:
        public = Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except (BadSignature, ValidationError) as exc:
        raise SignatureError(f"no public key recovers from the signature: {exc}") from exc
    return to_checksum_address(public.to_canonical_address())
