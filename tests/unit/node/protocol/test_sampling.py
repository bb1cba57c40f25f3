"""Tests for node.protocol.sampling: the seed, the pick, the candidates, the chain reads and the spec key."""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from pathlib import Path

import pytest
from eth_utils.address import to_checksum_address

from ledger.types import RoundId
from node.protocol.sampling import (
    SAMPLING,
    Selection,
    SelectionError,
    candidates,
    read_selection,
    select_members,
    selection_seed,
    ticket,
)
from node.runspec import RunSpec, RunSpecError
from tests.fixtures.chain import ChainEnv

ADDRESSES: list[str] = [
    to_checksum_address(f"0x{i:040x}") for i in (0x11, 0x2222, 0xABCDEF, 0x5, 0x99, 0x1234567)
]
SEED = hashlib.sha256(b"a seed").digest()


def _by_address(addresses: list[str]) -> list[str]:
    return sorted(addresses, key=lambda a: int(a, 16))


def test_seed_is_sha256_of_tag_block_hash_run_and_round() -> None:
    block_hash = bytes(range(32))

    seed = selection_seed(block_hash, 7, 3)

    expected = hashlib.sha256(
        b"fedchain-sample/1" + block_hash + (7).to_bytes(32, "big") + (3).to_bytes(32, "big")
    ).digest()
    assert SAMPLING == "fedchain-sample/1"
    assert seed == expected
    assert selection_seed(block_hash, 7, 4) != seed
    assert selection_seed(block_hash, 8, 3) != seed


def test_pick_is_the_k_smallest_tickets_in_address_order() -> None:
    tickets = {
        a: int.from_bytes(hashlib.sha256(SEED + bytes.fromhex(a[2:])).digest(), "big") for a in ADDRESSES
    }

    picked = select_members(ADDRESSES, 3, SEED)

    smallest = sorted(ADDRESSES, key=lambda a: tickets[a])[:3]
    assert picked == tuple(_by_address(smallest))
    assert all(ticket(SEED, a) == tickets[a] for a in ADDRESSES)


def test_pick_does_not_depend_on_input_order_or_address_spelling() -> None:
    picked = select_members(ADDRESSES, 2, SEED)
    shuffled = list(ADDRESSES)
    for i in range(20):
        random.Random(i).shuffle(shuffled)
        spelled = [a.lower() if j % 2 else a for j, a in enumerate(shuffled)]
        assert select_members(spelled, 2, SEED) == picked


def test_pick_is_deterministic_and_gives_k_distinct_candidates() -> None:
    for k in range(1, len(ADDRESSES)):
        picked = select_members(ADDRESSES, k, SEED)
        assert picked == select_members(ADDRESSES, k, SEED)
        assert len(set(picked)) == k and set(picked) <= set(ADDRESSES)


def test_k_at_or_above_the_candidates_selects_everyone() -> None:
    assert select_members(ADDRESSES, len(ADDRESSES), SEED) == tuple(_by_address(ADDRESSES))
    assert select_members(ADDRESSES[:2], 5, SEED) == tuple(_by_address(ADDRESSES[:2]))
    assert select_members([], 2, SEED) == ()


def test_pick_is_roughly_uniform_over_seeds() -> None:
    members, k, draws = ADDRESSES[:5], 2, 3000
    singles: Counter[str] = Counter()
    pairs: Counter[tuple[str, ...]] = Counter()
    for i in range(draws):
        picked = select_members(members, k, hashlib.sha256(i.to_bytes(4, "big")).digest())
        singles.update(picked)
        pairs[picked] += 1

    # Each member is picked with probability k / n = 0.4 (sd of the count ~27): within 5 sd.
    for m in members:
        assert abs(singles[m] - draws * 0.4) < 135, (m, singles[m])
    # Each of the 10 pairs with probability 0.1 (sd ~16), and every pair occurs.
    assert len(pairs) == 10
    assert all(abs(count - draws / 10) < 80 for count in pairs.values()), pairs


@pytest.mark.parametrize(
    ("pool", "k", "seed", "message"),
    [
        (ADDRESSES, 0, SEED, "clients_per_round"),
        (ADDRESSES, -1, SEED, "clients_per_round"),
        (ADDRESSES, True, SEED, "clients_per_round"),
        (ADDRESSES, 2, b"short", "seed"),
        ([*ADDRESSES, ADDRESSES[0].lower()], 2, SEED, "listed twice"),
        (["0x1234"], 1, SEED, "not an address"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(pool: list[str], k: int, seed: bytes, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        select_members(pool, k, seed)


def test_seed_refuses_a_block_hash_that_is_not_32_bytes() -> None:
    with pytest.raises(SelectionError, match="block_hash"):
        selection_seed(b"\x00" * 31, 1, 0)


def test_candidates_are_the_snapshot_minus_bans_before_the_start_block() -> None:
    members = ADDRESSES[:5]

    pool = candidates(members, 4, [(members[1], 99), (members[2], 100), (members[4], 50)], start_block=100)

    # members[4] joined after the snapshot, members[1] was banned before the round opened; a ban in the
    # start block itself does not count (its order against the opening transaction is not by block).
    assert pool == tuple(_by_address([members[0], members[2], members[3]]))


def test_selection_survives_the_state_database_round_trip() -> None:
    sel = Selection(3, 2, bytes(range(32)), tuple(ADDRESSES[:3]), tuple(ADDRESSES[:2]))

    assert Selection.from_json(sel.to_json()) == sel
    assert sel.includes(ADDRESSES[0].lower()) and not sel.includes(ADDRESSES[2])


def test_read_selection_uses_the_start_blocks_hash_and_the_snapshot(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=4, join=True)
    client = pyevm_chain.client(0)
    info = client.round_info(run, RoundId(0))
    pyevm_chain.mine_to(info.start_block)  # the next transaction lands in the start block: not mined yet
    assert read_selection(client, run, info, 2) is None

    pyevm_chain.mine_to(info.start_block + 2)
    sel = read_selection(client, run, info, 2)

    assert sel is not None
    block_hash = bytes(pyevm_chain.w3.eth.get_block(info.start_block)["hash"])
    assert sel.block_hash == block_hash
    members = client.members(run)
    assert sel.candidates == tuple(_by_address(members))
    assert sel.selected == select_members(members, 2, selection_seed(block_hash, run, 0))
    assert len(sel.selected) == 2


def test_read_selection_leaves_out_a_member_banned_before_the_round(pyevm_chain: ChainEnv) -> None:
    run = pyevm_chain.new_run(members=4, join=True)
    client = pyevm_chain.client(0)
    banned = pyevm_chain.address(2)
    # mined in round 0's start block
    pyevm_chain.client(2).request_unlearning(run, banned, RoundId(0), bytes(32))
    first = client.round_info(run, RoundId(0))
    pyevm_chain.mine_to(first.vote_end)
    client.close_failed(run, RoundId(0))  # opens round 1 in this block
    second = client.round_info(run, RoundId(1))
    pyevm_chain.mine_to(second.start_block + 1)

    in_start_block = read_selection(client, run, first, 3)
    after = read_selection(client, run, second, 3)

    assert in_start_block is not None and after is not None
    assert banned in in_start_block.candidates and len(in_start_block.candidates) == 4
    assert banned not in after.candidates and len(after.candidates) == 3
    assert after.selected == after.candidates  # 3 of 3: everyone
    assert after.block_hash == bytes(pyevm_chain.w3.eth.get_block(second.start_block)["hash"])


# ---- the run spec key ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-2", "true", "2.5", '"two"'])
def test_spec_refuses_a_clients_per_round_below_one_or_not_an_integer(tmp_path: Path, value: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(f"[run]\nclients_per_round = {value}\n")

    with pytest.raises(RunSpecError, match=r"\[run\] `clients_per_round` must be an integer"):
        RunSpec.from_toml(path)


def test_spec_carries_clients_per_round_through_its_canonical_bytes(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[run]\nclients_per_round = 2\n")

    spec = RunSpec.from_toml(path)
    back = RunSpec.from_bytes(spec.canonical_bytes())

    assert spec.clients_per_round == 2 and back == spec
    assert b'"clients_per_round":2' in spec.canonical_bytes()
    assert b"clients_per_round" not in RunSpec().canonical_bytes()  # unsampled specs keep their bytes
    assert RunSpec().clients_per_round is None


def test_every_pair_of_a_small_pool_is_reachable() -> None:
    # A pick that ignored part of the seed or the address would miss some subsets.
    members = ADDRESSES[:4]
    seen = {select_members(members, 2, hashlib.sha256(bytes([i])).digest()) for i in range(200)}

    assert seen == {tuple(_by_address(list(c))) for c in itertools.combinations(members, 2)}


def test_block_hash_waits_until_the_block_is_confirmations_deep(pyevm_chain: ChainEnv) -> None:
    from ledger.client import RunsClient

    pyevm_chain.mine_to(pyevm_chain.head() + 5)
    head = pyevm_chain.head()
    deep = RunsClient(pyevm_chain.w3, pyevm_chain.runs_address, confirmations=2)

    assert pyevm_chain.client(0).block_hash(head + 1) is None  # not mined
    assert deep.block_hash(head) is None and deep.block_hash(head - 1) is None
    assert deep.block_hash(head - 2) == bytes(pyevm_chain.w3.eth.get_block(head - 2)["hash"])
