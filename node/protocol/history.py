"""A run's history as the chain records it, and which model each round starts from.

:func:`read_history` reads one run from a ``Runs`` contract: its rounds (windows, commits, votes, the
finalised result, the accepted contributions) and its unlearning requests (votes, fulfilment). It needs only a
read-only :class:`ledger.client.RunsClient`, so the auditor, the unlearning replay and the node share it.

The model lineage (:func:`base_of_round`) is the one rule every peer and the auditor apply to know which
model a round starts from:

* round ``r`` starts from ``M(r')`` of the latest finalised round ``r' < r`` (the initial state if none);
* unless an unlearning request of the run was fulfilled at a block before round ``r`` opened and *after*
  round ``r'`` opened: then ``M(r')`` descends from the model the request forgets, and round ``r`` starts
  from the request's recomputed model ``U(q)`` instead.

So a round that was open while a request was fulfilled is superseded: its updates were trained from the
model being forgotten. Everything the rule looks at precedes round ``r``'s start block, so every peer reads
the same answer as soon as the round opens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from ledger.client import RunsClient
from ledger.types import (
    LateVote,
    MergeVote,
    RequestId,
    RequestStatus,
    RoundId,
    RoundInfo,
    RoundResult,
    RunCompletion,
    RunId,
    RunInfo,
    Submission,
    UnlearningRequest,
)


@dataclass(frozen=True)
class UnlearningVote:
    """One ``UnlearningVoted`` event."""

    request_id: RequestId
    member: str
    model_sha256: bytes
    model_cid: str
    votes: int
    block_number: int


@dataclass(frozen=True)
class RoundRecord:
    """Everything the chain says about one round.

    Attributes
    ----------
    info
        The ``roundInfo`` view (windows, eligible set, status).
    submissions
        The ``UpdateSubmitted`` events, in chain order.
    votes
        The ``MergeVoted`` events, in chain order.
    result
        The ``RoundFinalized`` result (``None`` unless finalised).
    accepted
        ``(member, sha256)`` of the ``ContributionAccepted`` events (empty until someone recorded them).
    late_votes
        The ``LateVoteCast`` events: votes cast after the round finalised, in chain order.
    """

    info: RoundInfo
    submissions: tuple[Submission, ...]
    votes: tuple[MergeVote, ...]
    result: RoundResult | None
    accepted: tuple[tuple[str, bytes], ...]
    late_votes: tuple[LateVote, ...] = ()

    @property
    def round(self) -> RoundId:
        """The round number."""
        return self.info.round

    @property
    def finalized(self) -> bool:
        """Whether the round has a finalised result."""
        return self.result is not None


@dataclass(frozen=True)
class RequestRecord:
    """An unlearning request of the run with its votes and, once fulfilled, the agreed model's CID."""

    request: UnlearningRequest
    votes: tuple[UnlearningVote, ...]
    result_cid: str | None

    @property
    def request_id(self) -> RequestId:
        """The request id."""
        return self.request.request_id

    @property
    def fulfilled(self) -> bool:
        """Whether a quorum agreed on the recomputed model."""
        return self.request.status == RequestStatus.FULFILLED


@dataclass(frozen=True)
class RunHistory:
    """One run as the chain records it: its configuration, every round so far and its requests.

    ``completion`` is the ``RunCompleted`` event once the run is complete (``None`` while it is active).
    """

    info: RunInfo
    rounds: tuple[RoundRecord, ...]
    requests: tuple[RequestRecord, ...]
    completion: RunCompletion | None = None

    @property
    def run_id(self) -> RunId:
        """The run id."""
        return self.info.run_id

    def round(self, r: int) -> RoundRecord:
        """Return the record of round ``r`` (``KeyError`` when the run has not reached it)."""
        if not 0 <= r < len(self.rounds):
            raise KeyError(f"run {self.run_id} has no round {r} (rounds 0..{len(self.rounds) - 1})")
        return self.rounds[r]

    def request(self, request_id: int) -> RequestRecord:
        """Return the record of one of the run's unlearning requests."""
        for rec in self.requests:
            if rec.request_id == request_id:
                return rec
        raise KeyError(f"run {self.run_id} has no unlearning request {request_id}")


@dataclass(frozen=True)
class ModelRef:
    """Where a round's starting model comes from.

    Attributes
    ----------
    kind
        ``"initial"`` (the run-seeded initial state), ``"round"`` (a finalised round) or ``"unlearning"``
        (a fulfilled request's recomputed model).
    source
        The round number or request id (``None`` for the initial state).
    sha256, cid
        The model's hash and CID as recorded on chain (``None`` for the initial state).
    """

    kind: str
    source: int | None
    sha256: bytes | None
    cid: str | None

    def describe(self) -> str:
        """Return a short human label, e.g. ``round 3`` or ``unlearning request 2``."""
        if self.kind == "initial":
            return "the initial state"
        return f"{'round' if self.kind == 'round' else 'unlearning request'} {self.source}"


INITIAL = ModelRef("initial", None, None, None)


def _events(client: RunsClient, name: str, filters: dict[str, Any], from_block: int = 0) -> list[Any]:
    return client.logs(name, filters, from_block)


def read_requests(client: RunsClient, run: RunId, from_block: int = 0) -> tuple[RequestRecord, ...]:
    """Read every unlearning request of ``run`` with its votes, in request-id order."""
    records: list[RequestRecord] = []
    for entry in _events(client, "UnlearningRequested", {"runId": run}, from_block):
        request_id = RequestId(int(entry["args"]["requestId"]))
        request = client.unlearning_request(request_id)
        votes = tuple(
            UnlearningVote(
                request_id=request_id,
                member=to_checksum_address(e["args"]["member"]),
                model_sha256=bytes(e["args"]["modelSha256"]),
                model_cid=str(e["args"]["modelCid"]),
                votes=int(e["args"]["votes"]),
                block_number=int(e["blockNumber"]),
            )
            for e in _events(client, "UnlearningVoted", {"requestId": request_id}, request.request_block)
        )
        cid = None
        if request.status == RequestStatus.FULFILLED:
            done = _events(client, "UnlearningFulfilled", {"requestId": request_id}, request.request_block)
            cid = str(done[0]["args"]["modelCid"]) if done else None
        records.append(RequestRecord(request, votes, cid))
    return tuple(sorted(records, key=lambda rec: rec.request_id))


def read_round(client: RunsClient, run: RunId, r: RoundId, from_block: int = 0) -> RoundRecord:
    """Read one round of ``run``: its view, commits, votes, result, accepted contributions, late votes."""
    info = client.round_info(run, r)
    start = min(from_block, info.start_block)
    accepted: tuple[tuple[str, bytes], ...] = ()
    if info.contributions_recorded:
        accepted = tuple(
            (to_checksum_address(e["args"]["member"]), bytes(e["args"]["sha256"]))
            for e in _events(client, "ContributionAccepted", {"runId": run, "round": r}, info.closed_block)
        )
    result = client.round_result(run, r)
    return RoundRecord(
        info=info,
        submissions=tuple(client.submissions(run, r, start)),
        votes=tuple(client.votes(run, r, start)),
        result=result,
        accepted=accepted,
        late_votes=tuple(client.late_votes(run, r, info.closed_block)) if result is not None else (),
    )


def read_history(client: RunsClient, run: RunId, from_block: int = 0) -> RunHistory:
    """Read the whole recorded history of ``run`` (every round up to the open one, every request).

    Raises
    ------
    ledger.reverts.ContractRevertError
        ``RunsUnknownRun`` when the run does not exist.
    """
    info = client.run_info(run)
    rounds = tuple(read_round(client, run, RoundId(r), from_block) for r in range(info.current_round + 1))
    completion = client.run_completion(run, from_block) if info.completed else None
    return RunHistory(info, rounds, read_requests(client, run, from_block), completion)


def _latest_finalized(rounds: Sequence[RoundRecord], before: int) -> RoundRecord | None:
    for rec in reversed(rounds[:before]):
        if rec.finalized:
            return rec
    return None


def base_of_round(history: RunHistory, r: int) -> ModelRef:
    """Return the model round ``r`` starts from, by the lineage rule of this module's docstring.

    Also valid for ``r`` one past the open round (what the next round will start from, as far as the chain
    knows now).
    """
    opened = history.rounds[r].info.start_block if r < len(history.rounds) else 2**64
    prev = _latest_finalized(history.rounds, min(r, len(history.rounds)))
    fulfilled = [
        rec
        for rec in history.requests
        if rec.fulfilled and rec.request.fulfilled_block < opened and rec.result_cid is not None
    ]
    latest = max(fulfilled, key=lambda rec: (rec.request.fulfilled_block, rec.request_id), default=None)
    if latest is not None and (prev is None or latest.request.fulfilled_block >= prev.info.start_block):
        return ModelRef("unlearning", latest.request_id, latest.request.result_sha256, latest.result_cid)
    if prev is not None and prev.result is not None:
        return ModelRef("round", prev.round, prev.result.merged_sha256, prev.result.merged_cid)
    return INITIAL


def replay_window(history: RunHistory, request_id: int) -> tuple[int, list[int]]:
    """Return the rounds an unlearning request recomputes: ``(first, finalised rounds to replay)``.

    ``first`` is the request's ``fromRound``; the rounds are the finalised ones from ``first`` that closed
    before the block the request was filed in (fixed at filing, so every peer replays the same rounds).
    """
    req = history.request(request_id).request
    rounds = [
        int(rec.round)
        for rec in history.rounds[req.from_round :]
        if rec.finalized and rec.info.closed_block < req.request_block
    ]
    return int(req.from_round), rounds


def exclusions(history: RunHistory, request_id: int) -> dict[str, int]:
    """Subjects a request's replay leaves out, each from its first forgotten round.

    The request's own subject, and the subjects of the run's earlier requests (their data stays forgotten).
    """
    out: dict[str, int] = {}
    for rec in history.requests:
        if rec.request_id <= request_id:
            subject = to_checksum_address(rec.request.subject)
            out[subject] = min(out.get(subject, rec.request.from_round), rec.request.from_round)
    return out
