"""Client sampling: which of a round's eligible members train and submit (run spec ``clients_per_round``).

Every node and the auditor compute a round's selection with the same pure steps (docs/sampling.md):

1. *Candidates* (:func:`candidates`): the members with ``index < memberSnapshot`` of the round (they
   joined before it opened), minus the subjects of unlearning requests filed in a block before the
   round's ``startBlock`` (banned before it opened), as checksummed addresses in ascending order.
2. *Seed* (:func:`selection_seed`): ``sha256("fedchain-sample/1" || blockhash(startBlock) ||
   uint256(run) || uint256(round))``. ``startBlock`` is the block whose transaction opened the round (the
   one that closed the round before it; for round 0 the start block fixed at run creation), so nobody
   knows its hash before the round opens.
3. *Pick* (:func:`select_members`): each candidate draws the ticket ``sha256(seed || address)`` (the
   20 address bytes); the ``k`` candidates with the smallest tickets, read as 256-bit big-endian
   integers, are selected. That is a uniform ``k``-subset without replacement while sha256 behaves as a
   random function, and it does not depend on the order in which the candidates are listed.

With fewer candidates than ``k``, every candidate is selected (and the node logs it): sampling never
refuses a round. :func:`read_selection` reads the inputs from the chain; :func:`round_selection` is the
node's cached view of it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from node.errors import NodeError

SAMPLING = "fedchain-sample/1"
"""Domain tag of the selection seed; a change to the algorithm changes it."""


class SelectionError(NodeError, ValueError):
    """Bad input to the selection (a malformed address, a duplicate, ``k`` < 1, a bad hash)."""


@dataclass(frozen=True)
class Selection:
    """One round's selection and what it was computed from.

    Attributes
    ----------
    round
        The round.
    k
        The run's ``clients_per_round``.
    block_hash
        Hash of the round's start block (the seed's chain input).
    candidates
        The eligible members the selection drew from (ascending address).
    selected
        The selected members (ascending address); all candidates when there are at most ``k``.
    """

    round: int
    k: int
    block_hash: bytes
    candidates: tuple[str, ...]
    selected: tuple[str, ...]

    def includes(self, member: str) -> bool:
        """Whether ``member`` (any address spelling) is selected."""
        return to_checksum_address(member) in self.selected

    def to_json(self) -> str:
        """Compact JSON (for the node's state database)."""
        return json.dumps(
            {
                "round": self.round,
                "k": self.k,
                "block_hash": self.block_hash.hex(),
                "candidates": list(self.candidates),
                "selected": list(self.selected),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Selection:
        """Inverse of :meth:`to_json`."""
        doc = json.loads(text)
        return cls(
            int(doc["round"]),
            int(doc["k"]),
            bytes.fromhex(doc["block_hash"]),
            tuple(doc["candidates"]),
            tuple(doc["selected"]),
        )


def _canonical(addresses: Iterable[str]) -> list[str]:
    out: list[str] = []
    for a in addresses:
        if not isinstance(a, str) or not is_address(a):
            raise SelectionError(f"candidate {a!r:.60} is not an address")
        out.append(to_checksum_address(a))
    out.sort(key=lambda a: int(a, 16))
    for prev, cur in zip(out, out[1:], strict=False):
        if prev == cur:
            raise SelectionError(f"candidate {cur} is listed twice")
    return out


def selection_seed(block_hash: bytes, run: int, round: int) -> bytes:
    """Return the 32-byte seed of round ``round`` of run ``run`` from its start block's hash.

    Raises
    ------
    SelectionError
        If ``block_hash`` is not 32 bytes or ``run`` / ``round`` is outside ``[0, 2**256)``.
    """
    if not isinstance(block_hash, bytes) or len(block_hash) != 32:
        raise SelectionError(f"`block_hash` must be 32 bytes, got {block_hash!r:.80}")
    for name, value in (("run", run), ("round", round)):
        if not 0 <= value < 2**256:
            raise SelectionError(f"`{name}` must be in [0, 2**256), got {value}")
    body = SAMPLING.encode() + block_hash + run.to_bytes(32, "big") + round.to_bytes(32, "big")
    return hashlib.sha256(body).digest()


def ticket(seed: bytes, member: str) -> int:
    """Return ``member``'s ticket for ``seed``: ``sha256(seed || address bytes)`` as a 256-bit integer."""
    return int.from_bytes(
        hashlib.sha256(seed + bytes.fromhex(to_checksum_address(member)[2:])).digest(), "big"
    )


def select_members(candidates: Iterable[str], k: int, seed: bytes) -> tuple[str, ...]:
    """Return the ``k`` candidates with the smallest tickets for ``seed``, in ascending address order.

    All candidates are returned when there are at most ``k``. Pure: the same set of candidates (in any
    order, any address spelling), ``k`` and ``seed`` always give the same selection.

    Raises
    ------
    SelectionError
        If ``k`` < 1, ``seed`` is not 32 bytes, or a candidate is not an address or is listed twice.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise SelectionError(f"`k` (clients_per_round) must be an integer >= 1, got {k!r}")
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise SelectionError(f"`seed` must be 32 bytes, got {seed!r:.80}")
    pool = _canonical(candidates)
    if len(pool) <= k:
        return tuple(pool)
    chosen = sorted(pool, key=lambda a: (ticket(seed, a), int(a, 16)))[:k]
    return tuple(sorted(chosen, key=lambda a: int(a, 16)))


def candidates(
    members: Sequence[str], member_snapshot: int, bans: Iterable[tuple[str, int]], start_block: int
) -> tuple[str, ...]:
    """Return a round's candidates: ``members[:member_snapshot]`` minus those banned before ``start_block``.

    ``members`` is the run's member list in join (index) order; ``bans`` are ``(subject, block)`` of the
    run's unlearning requests (a request bans its subject in its block). A ban in the start block itself
    does not count: whether it came before the round opened depends on the order within the block.
    """
    banned = {to_checksum_address(s) for s, block in bans if block < start_block}
    pool = [m for m in members[:member_snapshot] if to_checksum_address(m) not in banned]
    return tuple(_canonical(pool))


def read_selection(client: Any, run: int, info: Any, k: int) -> Selection | None:
    """Read a round's selection inputs from the chain and compute it; ``None`` before its start block.

    ``client`` is a :class:`ledger.client.RunsClient`, ``info`` the round's ``RoundInfo``. The member
    snapshot is final once the start block is mined (a join at or after it takes the snapshot first).
    """
    start = int(info.start_block)
    block_hash = client.block_hash(start)
    if block_hash is None:
        return None
    info = client.round_info(run, info.round)  # the snapshot as of now, after the start block
    logs = client.logs("UnlearningRequested", {"runId": run}, 0, start - 1) if start > 0 else []
    bans = [(str(e["args"]["subject"]), int(e["blockNumber"])) for e in logs]
    pool = candidates(client.members(run), int(info.member_snapshot), bans, start)
    seed = selection_seed(block_hash, int(run), int(info.round))
    return Selection(int(info.round), k, block_hash, pool, select_members(pool, k, seed) if pool else ())


def round_selection(ctx: Any, info: Any) -> Selection | None:
    """Return this node's selection of ``info``'s round (``None`` before its start block is mined).

    Computed once per round and kept in the state database (the inputs never change once the start block
    is mined); logs ``round.selection`` the first time, noting when ``clients_per_round`` exceeds the
    candidates.
    """
    k = ctx.spec.clients_per_round
    if k is None:
        raise SelectionError("the run does not sample clients (`clients_per_round` is not set)")
    cached = ctx.state.selection(ctx.run_id, int(info.round))
    if cached:
        return Selection.from_json(cached)
    selection = read_selection(ctx.client, ctx.run_id, info, k)
    if selection is None:
        return None
    ctx.state.set_selection(ctx.run_id, int(info.round), selection.to_json())
    ctx.log.event(
        "round.selection",
        run=ctx.run_id,
        round=selection.round,
        clients_per_round=k,
        candidates=len(selection.candidates),
        selected=list(selection.selected),
        ours=selection.includes(ctx.address),
        all_selected=len(selection.candidates) <= k,
        block_hash=selection.block_hash.hex(),
    )
    return selection
