"""Committee selection of committee runs, exactly as the ``Runs`` contract's ``committeeOf`` computes it.

The committee of round ``r`` is the ``min(k, snapshot)`` member indices ``i`` in ``[0, snapshot)`` with the
smallest tickets ``uint256(keccak256(abi.encode(seed, i)))`` (ties broken by the smaller index), where
``seed = keccak256(abi.encode(blockhash(startBlock), runId, r))``. The included set of a round travels on
chain as a bitmap: bit ``i % 256`` of word ``i // 256`` is set when member index ``i`` is included.
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak

from ledger.errors import LedgerConfigError
from ledger.types import MAX_BPS

WORD_BITS = 256


def committee_seed(block_hash: bytes, run: int, round: int) -> bytes:
    """Return ``keccak256(abi.encode(blockhash(startBlock), runId, round))``."""
    if not isinstance(block_hash, bytes) or len(block_hash) != 32:
        raise LedgerConfigError(f"`block_hash` must be 32 bytes, got {block_hash!r:.80}")
    if run < 0 or round < 0:
        raise LedgerConfigError(f"`run` and `round` must be >= 0, got {run} and {round}")
    return keccak(abi_encode(["bytes32", "uint256", "uint256"], [block_hash, run, round]))


def ticket(seed: bytes, index: int) -> int:
    """Return member ``index``'s ticket ``uint256(keccak256(abi.encode(seed, index)))``."""
    return int.from_bytes(keccak(abi_encode(["bytes32", "uint256"], [seed, index])), "big")


def ticket_order(seed: bytes, snapshot: int) -> list[int]:
    """Return the indices ``[0, snapshot)`` by ascending ticket (ties: smaller index first).

    The first ``k`` of them are the committee; the first is the leader, then the fallback leaders in order.
    """
    if len(seed) != 32:
        raise LedgerConfigError(f"`seed` must be 32 bytes, got {len(seed)}")
    if snapshot < 0:
        raise LedgerConfigError(f"`snapshot` must be >= 0, got {snapshot}")
    return sorted(range(snapshot), key=lambda i: (ticket(seed, i), i))


def select_committee(seed: bytes, snapshot: int, k: int) -> list[int]:
    """Return the committee: the ``min(k, snapshot)`` smallest-ticket indices, ascending by index."""
    if k < 0:
        raise LedgerConfigError(f"`k` must be >= 0, got {k}")
    return sorted(ticket_order(seed, snapshot)[:k])


def quorum(k: int, snapshot: int, quorum_bps: int) -> int:
    """Votes a committee round needs: ``max(1, ceil(quorum_bps * min(k, snapshot) / 10000))``."""
    if not 1 <= quorum_bps <= MAX_BPS:
        raise LedgerConfigError(f"`quorum_bps` must be in [1, {MAX_BPS}], got {quorum_bps}")
    if k < 0 or snapshot < 0:
        raise LedgerConfigError(f"`k` and `snapshot` must be >= 0, got {k} and {snapshot}")
    return max(1, -(-min(k, snapshot) * quorum_bps // MAX_BPS))


def bitmap(indices: Iterable[int]) -> list[int]:
    """Return the bitmap words of a set of member indices (no trailing zero words; ``[]`` for none)."""
    words: list[int] = []
    for i in indices:
        if not isinstance(i, int) or i < 0:
            raise LedgerConfigError(f"member index must be an integer >= 0, got {i!r}")
        word, bit = divmod(i, WORD_BITS)
        if word >= len(words):
            words.extend([0] * (word + 1 - len(words)))
        if words[word] >> bit & 1:
            raise LedgerConfigError(f"member index {i} is listed twice")
        words[word] |= 1 << bit
    return words


def bitmap_indices(words: Iterable[int]) -> list[int]:
    """Return the member indices set in bitmap ``words``, ascending."""
    out: list[int] = []
    for w, word in enumerate(words):
        if not isinstance(word, int) or not 0 <= word < 2**WORD_BITS:
            raise LedgerConfigError(f"bitmap word {w} must be a uint256, got {word!r:.80}")
        out.extend(w * WORD_BITS + b for b in range(WORD_BITS) if word >> b & 1)
    return out
