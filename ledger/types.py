"""Plain records and ids of the chain layer: run configuration, views of runs, rounds, members, requests.

Every record is a frozen dataclass; hashes are ``bytes`` (32 bytes), addresses checksummed ``str``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NewType

from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.errors import LedgerConfigError

RunId = NewType("RunId", int)
RoundId = NewType("RoundId", int)
RequestId = NewType("RequestId", int)
Address = NewType("Address", str)

MAX_BPS = 10_000
MAX_COMMITTEE_WINDOW = 255
"""Longest submit + vote window of a committee run: ``blockhash(startBlock)`` is readable 256 blocks."""


class Admission(enum.IntEnum):
    """How members join a run."""

    OPEN = 0
    ALLOWLIST = 1


class RoundStatus(enum.IntEnum):
    """Life cycle of a round."""

    OPEN = 0
    FINALIZED = 1
    FAILED = 2


class RunStatus(enum.IntEnum):
    """Life cycle of a run: active until its ``rounds``-th round finalises (never, for ``rounds = 0``)."""

    ACTIVE = 0
    COMPLETED = 1


class RequestStatus(enum.IntEnum):
    """Life cycle of an unlearning request."""

    NONE = 0
    PENDING = 1
    FULFILLED = 2


class Phase(enum.Enum):
    """Where the open round stands at a given block."""

    NOT_STARTED = "not-started"
    SUBMIT = "submit"
    VOTE = "vote"
    EXPIRED = "expired"  # windows over without a result: anyone may close it as failed


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != 32:
        raise LedgerConfigError(f"`{name}` must be 32 bytes, got {len(value)}")


@dataclass(frozen=True)
class RunConfig:
    """Parameters of a new run (see ``IRuns.RunParams``)."""

    spec_sha256: bytes = field(metadata={"help": "sha256 of the run specification file"})
    spec_cid: str = field(metadata={"help": "IPFS CID of the run specification file"})
    quorum_bps: int = field(
        default=6_666, metadata={"help": "quorum in basis points of eligible members (two thirds)"}
    )
    submit_blocks: int = field(default=20, metadata={"help": "submit window length in blocks"})
    vote_blocks: int = field(default=20, metadata={"help": "vote window length in blocks"})
    min_updates: int = field(default=1, metadata={"help": "fewest updates a round needs to be voted on"})
    start_block: int = field(default=0, metadata={"help": "first block of round 0 (0: the client picks)"})
    admission: Admission = field(default=Admission.OPEN, metadata={"help": "open or allowlist"})
    governance: str | None = field(default=None, metadata={"help": "governance address (default: creator)"})
    committee_size: int = field(
        default=0,
        metadata={"help": "members drawn per round to verify and vote (0: every member votes)"},
    )
    rounds: int = field(
        default=0,
        metadata={"help": "finalised rounds after which the run is complete on chain (0: open-ended)"},
    )

    def __post_init__(self) -> None:
        _check_hash("spec_sha256", self.spec_sha256)
        if not 0 <= self.rounds < 2**32:
            raise LedgerConfigError(f"`rounds` must be in [0, 2**32), got {self.rounds}")
        if not 0 <= self.committee_size < 2**32:
            raise LedgerConfigError(f"`committee_size` must be in [0, 2**32), got {self.committee_size}")
        if self.committee_size and self.submit_blocks + self.vote_blocks > MAX_COMMITTEE_WINDOW:
            raise LedgerConfigError(
                f"a committee run needs `submit_blocks` + `vote_blocks` <= {MAX_COMMITTEE_WINDOW} "
                f"(the seed's blockhash must stay readable), got {self.submit_blocks} + {self.vote_blocks}"
            )
        if not 1 <= self.quorum_bps <= MAX_BPS:
            raise LedgerConfigError(f"`quorum_bps` must be in [1, {MAX_BPS}], got {self.quorum_bps}")
        for name in ("submit_blocks", "vote_blocks"):
            value = getattr(self, name)
            if not 1 <= value < 2**32:
                raise LedgerConfigError(f"`{name}` must be in [1, 2**32), got {value}")
        if not 0 <= self.min_updates < 2**32:
            raise LedgerConfigError(f"`min_updates` must be in [0, 2**32), got {self.min_updates}")
        if not 0 <= self.start_block < 2**64:
            raise LedgerConfigError(f"`start_block` must be in [0, 2**64), got {self.start_block}")


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: bytes
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class RunInfo:
    """A run's configuration and state."""

    run_id: RunId
    spec_sha256: bytes
    spec_cid: str
    creator: str
    governance: str
    quorum_bps: int
    submit_blocks: int
    vote_blocks: int
    min_updates: int
    admission: Admission
    current_round: RoundId
    member_count: int
    banned_count: int
    committee_size: int = 0
    """Members drawn per round to verify and vote; 0 for an ordinary run."""
    rounds: int = 0
    """Finalised rounds after which the run is complete; 0 for an open-ended run."""
    finalized_rounds: int = 0
    """Rounds finalised so far."""
    status: RunStatus = RunStatus.ACTIVE
    """``COMPLETED`` once the ``rounds``-th round finalised; ``current_round`` is then the last round."""

    @property
    def completed(self) -> bool:
        """Whether the run is complete on chain (no round opens any more)."""
        return self.status == RunStatus.COMPLETED


@dataclass(frozen=True)
class RoundInfo:
    """A round's windows (block numbers, ends exclusive), eligible set, tally target, status and result."""

    run_id: RunId
    round: RoundId
    start_block: int
    submit_end: int
    vote_end: int
    member_snapshot: int
    eligible: int
    quorum: int
    submissions: int
    status: RoundStatus
    closed_block: int
    merged_sha256: bytes
    included_set_hash: bytes
    contributions_recorded: bool

    def phase(self, block: int) -> Phase:
        """Return the phase of this (open) round at ``block``.

        Like the contract, voting opens before ``submit_end`` once every eligible member has submitted.
        """
        if block < self.start_block:
            return Phase.NOT_STARTED
        if block < self.submit_end and not (self.eligible > 0 and self.submissions >= self.eligible):
            return Phase.SUBMIT
        if block < self.vote_end:
            return Phase.VOTE
        return Phase.EXPIRED

    @property
    def late_vote_end(self) -> int:
        """First block at which a late vote on this (finalised) round is refused (exclusive end).

        The contract's rule: ``max(vote_end, closed_block + voteBlocks)``, where
        ``voteBlocks = vote_end - submit_end``.
        """
        return max(self.vote_end, self.closed_block + self.vote_end - self.submit_end)


@dataclass(frozen=True)
class MemberInfo:
    """A member's record in a run."""

    is_member: bool
    index: int
    join_block: int
    banned: bool
    submitted_rounds: int
    accepted_contributions: int
    last_submitted_round: int | None


@dataclass(frozen=True)
class UnlearningRequest:
    """An unlearning request and its fulfilment."""

    request_id: RequestId
    run_id: RunId
    subject: str
    requester: str
    from_round: RoundId
    status: RequestStatus
    member_snapshot: int
    eligible: int
    quorum: int
    request_block: int
    fulfilled_block: int
    reason_hash: bytes
    result_sha256: bytes


@dataclass(frozen=True)
class Submission:
    """One ``UpdateSubmitted`` event."""

    run_id: RunId
    round: RoundId
    member: str
    sha256: bytes
    cid: str
    num_samples: int
    block_number: int


@dataclass(frozen=True)
class MergeVote:
    """One ``MergeVoted`` event."""

    run_id: RunId
    round: RoundId
    member: str
    merged_sha256: bytes
    merged_cid: str
    included_set_hash: bytes
    votes: int
    block_number: int


@dataclass(frozen=True)
class LateVote:
    """One ``LateVoteCast`` event: a vote on a round after it finalised; ``agrees`` with its result or not."""

    run_id: RunId
    round: RoundId
    voter: str
    merged_sha256: bytes
    merged_cid: str
    included_set_hash: bytes
    agrees: bool
    block_number: int


@dataclass(frozen=True)
class RunCompletion:
    """The ``RunCompleted`` event: the run's ``rounds``-th round (``last_round``) finalised."""

    run_id: RunId
    rounds: int
    last_round: RoundId
    final_merged_sha256: bytes
    block_number: int


@dataclass(frozen=True)
class RoundResult:
    """A finalised round's merged model, from its ``RoundFinalized`` event."""

    run_id: RunId
    round: RoundId
    merged_sha256: bytes
    merged_cid: str
    included_set_hash: bytes
    votes: int
    eligible: int
    block_number: int


@dataclass(frozen=True)
class CommitteeResult:
    """The result a committee signs and posts with ``finalizeCommitteeRound`` (``IRuns.CommitteeResult``).

    ``included_bitmap``: bit ``i % 256`` of word ``i // 256`` is set when member index ``i`` is included
    (:func:`ledger.committee.bitmap`); no trailing zero words.
    """

    run_id: int
    round: int
    merged_sha256: bytes
    merged_cid: str
    included_set_hash: bytes
    manifest_cid: str
    included_bitmap: list[int]

    def __post_init__(self) -> None:
        _check_hash("merged_sha256", self.merged_sha256)
        _check_hash("included_set_hash", self.included_set_hash)

    def as_tuple(self) -> tuple[object, ...]:
        """Return the struct as the ABI encodes it (field order of ``IRuns.CommitteeResult``)."""
        return (
            self.run_id,
            self.round,
            self.merged_sha256,
            self.merged_cid,
            self.included_set_hash,
            self.manifest_cid,
            list(self.included_bitmap),
        )


@dataclass(frozen=True)
class CommitteeFinalization:
    """One ``CommitteeFinalized`` event: the manifest, the included bitmap and the signers of a round."""

    run_id: RunId
    round: RoundId
    manifest_cid: str
    included_bitmap: list[int]
    signers: list[int]
    block_number: int


def included_set_hash(included: Iterable[tuple[str, bytes]]) -> bytes:
    """Hash of a round's included set, exactly as the contract computes it.

    ``keccak256(abi.encode(address[] members, bytes32[] sha256s))`` with the members sorted ascending by
    address (as 160-bit numbers) and ``sha256s[i]`` the update hash of ``members[i]``.

    Raises
    ------
    LedgerConfigError
        If a member appears twice or a hash is not 32 bytes.
    """
    pairs = sorted_included(included)
    return keccak(abi_encode(["address[]", "bytes32[]"], [[m for m, _ in pairs], [h for _, h in pairs]]))


def sorted_included(included: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Return the included set in the contract's order (ascending address), checked for duplicates."""
    pairs: list[tuple[str, bytes]] = sorted(
        ((to_checksum_address(m), h) for m, h in included), key=lambda p: int(p[0], 16)
    )
    for i, (member, sha) in enumerate(pairs):
        _check_hash("sha256", sha)
        if i and int(pairs[i - 1][0], 16) == int(member, 16):
            raise LedgerConfigError(f"included set lists member {member} twice")
    return pairs


def quorum_of(eligible: int, quorum_bps: int) -> int:
    """Votes needed to finalise: ``max(1, ceil(quorum_bps * eligible / 10000))`` (the contract's rule)."""
    return max(1, -(-eligible * quorum_bps // MAX_BPS))
