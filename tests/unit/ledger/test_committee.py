"""ledger.committee: committee selection, quorum and bitmaps against hand-computed answers."""

from __future__ import annotations

import heapq

import pytest
from eth_hash.auto import keccak

from ledger.committee import bitmap, bitmap_indices, committee_seed, quorum, select_committee, ticket_order
from ledger.errors import LedgerConfigError

BLOCK_HASH = bytes.fromhex("5d" * 32)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def test_seed_is_the_abi_encoding_of_blockhash_run_round() -> None:
    assert committee_seed(BLOCK_HASH, 2, 5) == keccak(BLOCK_HASH + _word(2) + _word(5))
    with pytest.raises(LedgerConfigError, match="`block_hash`"):
        committee_seed(b"\x00" * 31, 1, 0)


@pytest.mark.parametrize(("snapshot", "k"), [(1, 1), (5, 3), (16, 4), (32, 5), (7, 7), (4, 9), (10, 0)])
def test_committee_is_the_k_smallest_tickets_ascending_by_index(snapshot: int, k: int) -> None:
    seed = committee_seed(BLOCK_HASH, 1, snapshot)
    tickets = {i: int.from_bytes(keccak(seed + _word(i)), "big") for i in range(snapshot)}
    expected = sorted(heapq.nsmallest(min(k, snapshot), range(snapshot), key=lambda i: (tickets[i], i)))

    committee = select_committee(seed, snapshot, k)

    assert committee == expected
    assert len(committee) == min(k, snapshot)
    assert ticket_order(seed, snapshot)[0] == min(range(snapshot), key=lambda i: tickets[i])


def test_committee_changes_with_the_round() -> None:
    picks = {tuple(select_committee(committee_seed(BLOCK_HASH, 1, r), 32, 4)) for r in range(8)}
    assert len(picks) > 1


@pytest.mark.parametrize(
    ("k", "snapshot", "bps", "needed"),
    [
        (4, 16, 6_666, 3),
        (4, 2, 6_666, 2),
        (5, 16, 5_001, 3),
        (1, 1, 10_000, 1),
        (4, 0, 6_666, 1),
        (7, 20, 10_000, 7),
    ],
)
def test_quorum_counts_the_committee_not_the_members(k: int, snapshot: int, bps: int, needed: int) -> None:
    assert quorum(k, snapshot, bps) == needed


def test_bitmap_round_trips_and_has_no_trailing_words() -> None:
    assert bitmap([]) == []
    assert bitmap([0, 1, 3]) == [0b1011]
    assert bitmap([255, 256]) == [1 << 255, 1]
    assert bitmap([600]) == [0, 0, 1 << 88]
    assert bitmap_indices([0b1011, 0, 1 << 7]) == [0, 1, 3, 519]
    indices = [0, 5, 255, 256, 300, 511, 512]
    assert bitmap_indices(bitmap(indices)) == indices


def test_bitmap_refuses_duplicates_and_bad_words() -> None:
    with pytest.raises(LedgerConfigError, match="index 3 is listed twice"):
        bitmap([3, 3])
    with pytest.raises(LedgerConfigError, match=">= 0"):
        bitmap([-1])
    with pytest.raises(LedgerConfigError, match="word 1"):
        bitmap_indices([0, 2**256])
