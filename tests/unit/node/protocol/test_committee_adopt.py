"""A member outside the committee asks the signers of a finalised round for its merged state first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from eth_utils.address import to_checksum_address

from ledger.types import CommitteeFinalization
from node.protocol.committee_round import RoundBook, adopt, holders_first
from node.protocol.context import LoopState, NodeContext

MEMBERS = [to_checksum_address(f"0x{i + 1:040x}") for i in range(8)]
PEERS = {a: f"peer-{i}" for i, a in enumerate(MEMBERS)}


def test_signers_come_first_then_the_rest_of_the_committee_once_each() -> None:
    order = holders_first([5, 2], [2, 5, 7], [m.lower() for m in MEMBERS], PEERS)

    assert order == ["peer-5", "peer-2", "peer-7"]


def test_members_without_a_known_peer_id_or_out_of_range_are_left_out() -> None:
    known = {a: p for a, p in PEERS.items() if p != "peer-2"}

    assert holders_first([2, 9, 5], [1], MEMBERS, known) == ["peer-5", "peer-1"]
    assert holders_first([], [], MEMBERS, known) == []


class _P2P:
    peer_id = "peer-0"

    def peer_ids(self) -> dict[str, str]:
        return {a: p for a, p in PEERS.items() if p != self.peer_id}

    def peers(self) -> list[str]:  # connected peers, in no useful order
        return [f"peer-{i}" for i in range(1, 8)]


def _ctx(signers: list[int], book_round: int) -> Any:
    asked: list[list[str]] = []
    ctx = SimpleNamespace(
        run_id=1,
        p2p=_P2P(),
        loop=LoopState(
            providers={"bafymerged": ["peer-3"]},  # an announcer seen on gossip stays ahead of mere peers
            committee=RoundBook(round=book_round, committee=[4, 6, 7], members=MEMBERS),
        ),
        client=SimpleNamespace(
            committee_finalized=lambda run, rnd: CommitteeFinalization(
                run, rnd, "bafymanifest", [0], signers, 9
            ),
            members=lambda run: MEMBERS,
        ),
        config=SimpleNamespace(chain=SimpleNamespace(spot_checks=0)),
        log=SimpleNamespace(event=lambda name, **fields: None),
    )
    ctx.load_state = lambda sha, cid, round: asked.append(NodeContext.providers_of(ctx, cid))  # type: ignore[arg-type]
    ctx.asked = asked
    return ctx


def test_adopt_asks_signers_then_committee_then_announcers_then_every_peer() -> None:
    ctx = _ctx(signers=[6, 4], book_round=2)

    adopt(ctx, 2, "ab" * 32, "bafymerged")

    assert ctx.asked == [["peer-6", "peer-4", "peer-7", "peer-3", "peer-1", "peer-2", "peer-5"]]


def test_adopt_after_the_book_moved_on_still_asks_the_signers_first() -> None:
    ctx = _ctx(signers=[7, 6], book_round=3)  # the book is of a later round: its committee is not round 2's

    adopt(ctx, 2, "ab" * 32, "bafymerged")

    assert ctx.asked[0][:3] == ["peer-7", "peer-6", "peer-3"]


def test_a_proposal_puts_its_leader_first_for_the_manifest() -> None:
    from node.protocol.committee_round import _take_proposal

    book = RoundBook(round=2, committee=[4, 6, 7], order=[6, 4, 7], members=MEMBERS)
    ctx = SimpleNamespace(p2p=_P2P(), loop=LoopState(providers={"bafymanifest": ["peer-3"]}))
    message = SimpleNamespace(
        sender=MEMBERS[6].lower(), rank=0, manifest_cid="bafymanifest", manifest_sha256="cd" * 32,
        providers=("peer-6",),
    )  # fmt: skip

    _take_proposal(ctx, book, message)  # type: ignore[arg-type]

    assert [p.manifest_cid for p in book.proposals.values()] == ["bafymanifest"]
    assert NodeContext.providers_of(ctx, "bafymanifest")[:3] == ["peer-6", "peer-3", "peer-1"]  # type: ignore[arg-type]
