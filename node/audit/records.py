"""The records an audit produces: per round, per unlearning request, per member, and its mismatches.

:mod:`node.audit.auditor` fills them; ``fedchain audit`` prints them (``RunAudit.to_json`` for ``--json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Mismatch:
    """One disagreement between the chain and what the auditor recomputed.

    Attributes
    ----------
    what
        A short label: ``spec``, ``update``, ``included-set``, ``merged-sha256``, ``merged-artifact``,
        ``merged-cid``, ``unlearning-sha256``, ``unlearning-artifact``, ``contributions``, ``base-model``,
        ``selection`` (an included update from a member client sampling did not select), and the vote
        checks of :mod:`node.audit.votes`: ``voters-eligible``, ``one-vote-each``, ``eligible-count``,
        ``quorum``, ``late-votes``; ``run-completed`` (the run's completion against its rounds).
    round, request
        The round or unlearning request it concerns (``None`` when not applicable).
    expected, found
        What the chain records (or the audit recomputed) and what was found instead.
    detail
        A sentence for humans.
    """

    what: str
    round: int | None
    expected: str
    found: str
    detail: str = ""
    request: int | None = None

    def describe(self) -> str:
        """One line naming the mismatch."""
        where = f"round {self.round}" if self.round is not None else ""
        if self.request is not None:
            where = f"unlearning request {self.request}"
        head = f"{self.what}" + (f" ({where})" if where else "")
        return f"{head}: expected {self.expected}, found {self.found}" + (
            f" — {self.detail}" if self.detail else ""
        )


@dataclass
class RoundAudit:
    """What the audit recomputed for one round."""

    round: int
    status: str
    submissions: int
    base: str = ""
    included: list[str] = field(default_factory=list)
    merged_sha256: str | None = None
    recomputed_sha256: str | None = None
    merged_cid: str | None = None
    finalized_block: int | None = None
    votes: int = 0
    selected: list[str] | None = None
    """The members client sampling selected (``None``: the run does not sample)."""
    vote_checks: dict[str, bool] = field(default_factory=dict)
    """Each check of :mod:`node.audit.votes` run on the round (``voters-eligible``, ``one-vote-each``,
    ``eligible-count``, ``quorum``, ``late-votes``) and whether it passed; empty when not run (a committee
    run)."""
    late_votes: list[dict[str, Any]] = field(default_factory=list)
    """The votes cast after the round finalised (``LateVoteCast``): ``voter``, ``merged_sha256``,
    ``merged_cid``, ``included_set_hash``, ``agrees`` (with the finalised result), ``block``."""
    unavailable: list[str] = field(default_factory=list)
    """Members whose included update the store could not return: the round was not recomputed."""


@dataclass(frozen=True)
class UnavailableArtifact:
    """An artifact the chain names that the store could not return (not a wrong merge: unverifiable)."""

    round: int
    member: str
    cid: str
    detail: str


@dataclass
class RequestAudit:
    """What the audit recomputed for one unlearning request."""

    request: int
    subject: str
    from_round: int
    status: str
    result_sha256: str | None = None
    recomputed_sha256: str | None = None
    result_cid: str | None = None
    replayed_rounds: list[int] = field(default_factory=list)


@dataclass
class MemberAudit:
    """A member's contributions: on-chain counters against the counts rebuilt from events."""

    member: str
    banned: bool
    submitted_on_chain: int
    submitted_events: int
    accepted_on_chain: int
    accepted_recomputed: int
    included_rounds: list[int] = field(default_factory=list)


@dataclass
class RunAudit:
    """The audit of one run."""

    run: int
    spec_cid: str
    status: str = "active"
    """``active`` or ``completed`` (``runInfo``)."""
    completion: dict[str, Any] | None = None
    """The ``RunCompleted`` event (``rounds``, ``last_round``, ``final_merged_sha256``, ``block``)."""
    rounds: list[RoundAudit] = field(default_factory=list)
    requests: list[RequestAudit] = field(default_factory=list)
    members: list[MemberAudit] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """What could not be checked (e.g. merges of encrypted updates audited without a view key)."""
    unavailable: list[UnavailableArtifact] = field(default_factory=list)
    """Included updates the store could not return (their rounds are in :attr:`unchecked` too)."""

    @property
    def complete(self) -> bool:
        """Whether everything was checked (nothing left in :attr:`unchecked` or :attr:`unavailable`)."""
        return not self.unchecked and not self.unavailable

    @property
    def ok(self) -> bool:
        """Whether no mismatch was found."""
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict (mismatches also as one-line descriptions)."""
        out = asdict(self)
        out["ok"] = self.ok
        out["complete"] = self.complete
        out["mismatch_lines"] = [m.describe() for m in self.mismatches]
        return out
