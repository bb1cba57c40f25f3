"""The protocol of committee rounds (docs/scale.md), as pure functions: commits, manifest, leaders, votes.

In a committee run (run spec ``[chain] committee_size = k > 0``) members do not send transactions per round.
Each member signs an EIP-712 ``UpdateCommit`` of its stored update and gossips it (:class:`Commit`); the
round's *leader*, the committee member with the smallest ticket, publishes a :class:`Manifest` of the
commits it holds (canonical JSON in the content store); each committee member checks the best-ranked
proposal it has seen (:func:`best_proposal`), merges the manifest's updates, and gossips its EIP-712
``CommitteeVote`` signature (:class:`SignedVote`); a member holding a quorum of equal votes
(:class:`VoteBook`) posts ``finalizeCommitteeRound``, the proposer first (:func:`finalizer_due`).

Everything here is deterministic and free of I/O, so the node (:mod:`node.protocol.committee_round`) and the
audit share it. Inputs from the network are untrusted: :meth:`Manifest.from_bytes` parses strictly,
:func:`check_commit` and :func:`check_vote` verify signatures and eligibility, and each raises
:class:`CommitteeError` naming what is wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from ledger.committee import ticket
from ledger.errors import SignatureError
from ledger.types import CommitteeResult
from node.errors import NodeError

MANIFEST_FORMAT = "fedchain-committee-manifest/1"
MAX_MANIFEST_BYTES = 1 << 20
"""Size cap of a manifest blob (about 2,500 commits)."""

_SHA = re.compile(r"^[0-9a-f]{64}$")
_SIG = re.compile(r"^[0-9a-f]{130}$")
_CID = re.compile(r"^b[a-z2-7]{20,120}$")
_COMMIT_KEYS = frozenset({"index", "member", "sha256", "cid", "num_samples", "signature"})
_MANIFEST_KEYS = frozenset({"format", "run", "round", "registry", "chain_id", "commits"})


class CommitteeError(NodeError, ValueError):
    """A commit, manifest, proposal or vote of a committee round is malformed or does not verify."""


def _int(name: str, value: object, bits: int = 256) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise CommitteeError(f"`{name}` must be an integer in [0, 2**{bits}), got {value!r:.80}")
    return value


def _match(name: str, value: object, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise CommitteeError(f"`{name}` is malformed: {value!r:.80}")
    return value


# ---- commits ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """One member's signed commit of its update for a round (an entry of the manifest).

    ``sha256`` and ``signature`` are lowercase hex (32 and 65 bytes), ``member`` checksummed.
    """

    index: int
    member: str
    sha256: str
    cid: str
    num_samples: int
    signature: str

    def __post_init__(self) -> None:
        _int("index", self.index, 32)
        if not isinstance(self.member, str) or not is_address(self.member):
            raise CommitteeError(f"`member` is not an address: {self.member!r:.80}")
        if self.member != to_checksum_address(self.member):
            raise CommitteeError(f"`member` must be checksummed, got {self.member}")
        _match("sha256", self.sha256, _SHA)
        _match("cid", self.cid, _CID)
        _int("num_samples", self.num_samples, 64)
        _match("signature", self.signature, _SIG)

    def to_json(self) -> dict[str, Any]:
        """Return the manifest entry (plain JSON data)."""
        return {
            "index": self.index,
            "member": self.member,
            "sha256": self.sha256,
            "cid": self.cid,
            "num_samples": self.num_samples,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, doc: object, where: str = "commit") -> Commit:
        """Parse one manifest entry strictly (exact keys, exact types)."""
        if not isinstance(doc, dict) or set(doc) != _COMMIT_KEYS:
            keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise CommitteeError(f"{where}: must be an object with keys {sorted(_COMMIT_KEYS)}, got {keys}")
        try:
            return cls(**doc)
        except CommitteeError as exc:
            raise CommitteeError(f"{where}: {exc}") from exc

    def digest(self, chain_id: int, registry: str, run: int, round: int) -> bytes:
        """Return the EIP-712 ``UpdateCommit`` digest this commit's signature is over."""
        from ledger.eip712 import commit_digest

        return commit_digest(
            chain_id, registry, run, round, bytes.fromhex(self.sha256), self.cid, self.num_samples
        )


def sign_commit(
    key: bytes,
    *,
    chain_id: int,
    registry: str,
    run: int,
    round: int,
    index: int,
    sha256: str,
    cid: str,
    num_samples: int,
) -> Commit:
    """Sign this member's commit of ``(sha256, cid, num_samples)`` for ``round`` with its private key."""
    from eth_keys.datatypes import PrivateKey

    from ledger.eip712 import commit_digest, sign_digest

    member = to_checksum_address(PrivateKey(key).public_key.to_canonical_address())
    digest = commit_digest(chain_id, registry, run, round, bytes.fromhex(sha256), cid, num_samples)
    return Commit(index, member, sha256, cid, num_samples, sign_digest(key, digest).hex())


@dataclass(frozen=True)
class Eligibility:
    """Who may commit in a round: the run's members by index, the round's snapshot, the excluded ones.

    ``members`` is the run's member list in index (join) order; ``snapshot`` the round's
    ``memberSnapshot``; ``excluded`` the lower-case addresses of banned members (unlearning subjects).
    """

    members: tuple[str, ...]
    snapshot: int
    excluded: frozenset[str] = frozenset()

    def member(self, index: int) -> str | None:
        """Return member ``index``'s checksummed address if it may commit in the round, else ``None``."""
        if not 0 <= index < min(self.snapshot, len(self.members)):
            return None
        address = to_checksum_address(self.members[index])
        return None if address.lower() in self.excluded else address


def check_commit(
    commit: Commit, eligibility: Eligibility, *, chain_id: int, registry: str, run: int, round: int
) -> None:
    """Raise :class:`CommitteeError` unless ``commit`` is an eligible member's valid one for ``round``."""
    from ledger.eip712 import recover

    expected = eligibility.member(commit.index)
    if expected is None:
        raise CommitteeError(f"commit of index {commit.index}: not an eligible member of round {round}")
    if expected != commit.member:
        raise CommitteeError(
            f"commit of index {commit.index}: names {commit.member}, the member is {expected}"
        )
    try:
        signer = recover(commit.digest(chain_id, registry, run, round), bytes.fromhex(commit.signature))
    except SignatureError as exc:
        raise CommitteeError(f"commit of index {commit.index}: bad signature ({exc})") from exc
    if signer != expected:
        raise CommitteeError(f"commit of index {commit.index}: signed by {signer}, not by {expected}")


# ---- the manifest ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """A round's update set as its leader proposed it: the commits, ascending by member index."""

    run: int
    round: int
    registry: str
    chain_id: int
    commits: tuple[Commit, ...]

    def __post_init__(self) -> None:
        _int("run", self.run)
        _int("round", self.round)
        _int("chain_id", self.chain_id)
        if not isinstance(self.registry, str) or not is_address(self.registry):
            raise CommitteeError(f"`registry` is not an address: {self.registry!r:.80}")
        indices = [c.index for c in self.commits]
        for pos in range(1, len(indices)):
            if indices[pos] <= indices[pos - 1]:
                raise CommitteeError(
                    f"commits must be strictly ascending by index: index {indices[pos]} at position {pos} "
                    f"follows {indices[pos - 1]}"
                )

    @property
    def indices(self) -> list[int]:
        """The included member indices, ascending."""
        return [c.index for c in self.commits]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data of the manifest."""
        return {
            "format": MANIFEST_FORMAT,
            "run": self.run,
            "round": self.round,
            "registry": to_checksum_address(self.registry),
            "chain_id": self.chain_id,
            "commits": [c.to_json() for c in self.commits],
        }

    def canonical_bytes(self) -> bytes:
        """Sorted-key compact UTF-8 JSON: what is stored, hashed and named by the manifest CID."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest fetched from the network (untrusted): strict, canonical, size-capped.

        Raises
        ------
        CommitteeError
            If the bytes are over :data:`MAX_MANIFEST_BYTES`, not UTF-8 JSON, of another format, have a
            missing or extra key, a wrong type, commits out of order or duplicated, or are not the
            canonical encoding of what they hold.
        """
        if len(data) > MAX_MANIFEST_BYTES:
            raise CommitteeError(f"manifest is {len(data)} bytes, over the {MAX_MANIFEST_BYTES}-byte cap")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise CommitteeError(f"manifest is not UTF-8 JSON: {exc}") from exc
        if not isinstance(doc, dict) or set(doc) != _MANIFEST_KEYS:
            keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise CommitteeError(f"manifest must be an object with keys {sorted(_MANIFEST_KEYS)}, got {keys}")
        if doc["format"] != MANIFEST_FORMAT:
            raise CommitteeError(f"manifest format must be {MANIFEST_FORMAT!r}, got {doc['format']!r:.60}")
        commits = doc["commits"]
        if not isinstance(commits, list):
            raise CommitteeError(f"manifest `commits` must be a list, got {type(commits).__name__}")
        parsed = tuple(Commit.from_json(c, f"commits[{i}]") for i, c in enumerate(commits))
        registry = doc["registry"]
        if (
            not isinstance(registry, str)
            or not is_address(registry)
            or registry != to_checksum_address(registry)
        ):
            raise CommitteeError(f"manifest `registry` must be a checksummed address, got {registry!r:.60}")
        manifest = cls(doc["run"], doc["round"], registry, doc["chain_id"], parsed)
        if manifest.canonical_bytes() != bytes(data):
            raise CommitteeError("manifest is not in canonical form (sorted keys, no spaces)")
        return manifest

    def check_for(self, *, run: int, round: int, registry: str, chain_id: int) -> None:
        """Raise :class:`CommitteeError` unless the manifest is for this run, round, registry and chain."""
        want = (run, round, to_checksum_address(registry).lower(), chain_id)
        got = (self.run, self.round, self.registry.lower(), self.chain_id)
        for name, a, b in zip(("run", "round", "registry", "chain_id"), got, want, strict=True):
            if a != b:
                raise CommitteeError(f"manifest is for {name} {a}, expected {b}")

    def verify(self, eligibility: Eligibility) -> None:
        """Raise :class:`CommitteeError` on the first commit that is not an eligible member's valid one."""
        for commit in self.commits:
            check_commit(
                commit,
                eligibility,
                chain_id=self.chain_id,
                registry=self.registry,
                run=self.run,
                round=self.round,
            )


def build_manifest(
    commits: Iterable[Commit], *, run: int, round: int, registry: str, chain_id: int
) -> Manifest:
    """Return the manifest of the commits a leader holds: one per member index, ascending.

    A member that signed two different commits for the round keeps the one with the smaller sha256, so
    every leader holding both proposes the same set.
    """
    by_index: dict[int, Commit] = {}
    for commit in commits:
        held = by_index.get(commit.index)
        if held is None or (commit.sha256, commit.cid) < (held.sha256, held.cid):
            by_index[commit.index] = commit
    ordered = tuple(by_index[i] for i in sorted(by_index))
    return Manifest(run, round, to_checksum_address(registry), chain_id, ordered)


# ---- leaders and proposals -------------------------------------------------------------------------------


def leader_order(seed: bytes, committee: Iterable[int]) -> list[int]:
    """Return the committee by ascending ticket: the leader, then the fallback leaders in order."""
    return sorted(committee, key=lambda i: (ticket(seed, i), i))


def proposal_opens(submit_end: int, ready_block: int | None) -> int:
    """Return the block from which the leader may propose.

    That is the submit window's end, or earlier when every eligible member's commit is in hand
    (``ready_block``, the block at which that was seen).
    """
    return submit_end if ready_block is None else min(submit_end, ready_block)


def proposer_due(rank: int, opens: int, head: int, timeout_blocks: int) -> bool:
    """Whether the leader of ``rank`` may propose at block ``head``: leader ``j`` waits ``j`` timeouts."""
    return head >= opens + rank * timeout_blocks


@dataclass(frozen=True)
class Proposal:
    """A leader's proposal as gossiped: who (committee index, leader rank) and which manifest."""

    rank: int
    proposer: int
    manifest_cid: str
    manifest_sha256: str


def best_proposal(proposals: Iterable[Proposal]) -> Proposal | None:
    """Return the proposal every committee member should take: the best leader rank.

    Ties (an equivocating leader) go to the smallest manifest sha256, so they split no honest member
    from another.
    """
    ranked = sorted(proposals, key=lambda p: (p.rank, p.manifest_sha256, p.manifest_cid))
    return ranked[0] if ranked else None


# ---- votes -----------------------------------------------------------------------------------------------


def result_key(result: CommitteeResult) -> tuple[Any, ...]:
    """Return a hashable identity of a result (the fields a ``CommitteeVote`` signs)."""
    return (
        result.run_id,
        result.round,
        result.merged_sha256,
        result.merged_cid,
        result.included_set_hash,
        result.manifest_cid,
        tuple(result.included_bitmap),
    )


@dataclass(frozen=True)
class SignedVote:
    """A committee member's signature on a result."""

    index: int
    result: CommitteeResult
    signature: bytes


def sign_vote(key: bytes, index: int, result: CommitteeResult, *, chain_id: int, registry: str) -> SignedVote:
    """Sign ``result`` as committee member ``index``."""
    from ledger.eip712 import sign_digest, vote_digest

    return SignedVote(index, result, sign_digest(key, vote_digest(chain_id, registry, result)))


def check_vote(
    vote: SignedVote,
    *,
    committee: Sequence[int],
    members: Sequence[str],
    chain_id: int,
    registry: str,
    run: int,
    round: int,
) -> None:
    """Raise :class:`CommitteeError` unless ``vote`` is a committee member's valid signature for ``round``."""
    from ledger.eip712 import recover, vote_digest

    if (vote.result.run_id, vote.result.round) != (run, round):
        raise CommitteeError(
            f"vote of index {vote.index} is for run {vote.result.run_id} round {vote.result.round}, "
            f"expected run {run} round {round}"
        )
    if vote.index not in committee or vote.index >= len(members):
        raise CommitteeError(f"vote of index {vote.index}: not in the committee of round {round}")
    try:
        signer = recover(vote_digest(chain_id, registry, vote.result), vote.signature)
    except SignatureError as exc:
        raise CommitteeError(f"vote of index {vote.index}: bad signature ({exc})") from exc
    if signer != to_checksum_address(members[vote.index]):
        raise CommitteeError(f"vote of index {vote.index}: signed by {signer}, not by {members[vote.index]}")


class VoteBook:
    """The committee votes of one round seen so far, one per committee member (its first valid one)."""

    def __init__(self) -> None:
        self._votes: dict[int, SignedVote] = {}

    def add(self, vote: SignedVote) -> bool:
        """Record a (checked) vote; ``False`` if this member's vote is already recorded."""
        if vote.index in self._votes:
            return False
        self._votes[vote.index] = vote
        return True

    def __len__(self) -> int:
        return len(self._votes)

    def tallies(self) -> dict[tuple[Any, ...], list[int]]:
        """Return the committee indices per result, ascending."""
        out: dict[tuple[Any, ...], list[int]] = {}
        for index in sorted(self._votes):
            out.setdefault(result_key(self._votes[index].result), []).append(index)
        return out

    def quorum(self, needed: int) -> tuple[CommitteeResult, list[int], list[bytes]] | None:
        """Return a result with ``needed`` equal votes: ``(result, signers ascending, signatures)``.

        Of several (only possible when ``needed`` is at most half the committee), the one with the most
        votes, then the smallest key.
        """
        best = sorted(self.tallies().items(), key=lambda kv: (-len(kv[1]), kv[0]))
        if not best or len(best[0][1]) < needed:
            return None
        signers = best[0][1]
        votes = [self._votes[i] for i in signers]
        return votes[0].result, signers, [v.signature for v in votes]


def finalizer_order(order: Sequence[int], proposer: int | None) -> list[int]:
    """Return who sends ``finalizeCommitteeRound`` first: the proposer, then the rest in leader order."""
    first = [proposer] if proposer is not None and proposer in order else []
    return first + [i for i in order if i != proposer]


def finalizer_due(position: int, quorum_block: int, head: int, grace_blocks: int) -> bool:
    """Whether the member at ``position`` of :func:`finalizer_order` should send at block ``head``."""
    return head >= quorum_block + position * grace_blocks


def bitmap_from_hex(words: Iterable[str]) -> list[int]:
    """Bitmap words from their 64-digit hex form (gossip), checked to carry no trailing zero word."""
    out = [int(_match("included_bitmap word", w, _SHA), 16) for w in words]
    if out and out[-1] == 0:
        raise CommitteeError("included bitmap has a trailing zero word")
    return out


def bitmap_to_hex(words: Iterable[int]) -> tuple[str, ...]:
    """Bitmap words as 64-digit hex (gossip)."""
    return tuple(f"{w:064x}" for w in words)


def included_pairs(manifest: Manifest, included: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """``(index, member, sha256)`` of the manifest commits whose member the merge included."""
    keep = {m.lower() for m in included}
    return [(c.index, c.member, c.sha256) for c in manifest.commits if c.member.lower() in keep]
