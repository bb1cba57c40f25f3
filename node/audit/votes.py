"""Audit checks of a round's votes: who voted, how often, and whether the finalising votes reached quorum.

The contract enforces these rules when a vote is cast; the audit checks them again from the events alone,
so that a registry whose code or state is not what it claims is caught, and an outsider does not have to
trust the contract's bookkeeping. For every round with ``MergeVoted`` events (:func:`check_votes`):

- ``voters-eligible``: every voter is a member of the run with ``index < memberSnapshot`` of the round
  (it joined before the round opened) and was not banned when it voted (no unlearning request naming it
  was filed in an earlier block);
- ``one-vote-each``: no member voted twice in the round;
- ``eligible-count``: the round's ``eligible`` is ``memberSnapshot`` minus the members banned before the
  round opened (unlearning requests filed before its start block), less any bans filed while it was open
  and before the contract took its snapshot (at the first transaction on the round), and a finalised
  round's result records the same count;
- ``quorum`` (finalised rounds): the ``MergeVoted`` events naming exactly the finalised
  ``(mergedSha256, mergedCid, includedSetHash)`` number at least ``quorum(eligible, quorumBps) =
  max(1, ceil(eligible * quorumBps / 10000))``, and so does the count the result records;
- ``late-votes`` (finalised rounds): every ``LateVoteCast`` is from a voter eligible as above that cast no
  ``MergeVoted`` in the round and no other late vote, in a block from the finalising one to before
  ``max(voteEnd, closedBlock + voteBlocks)``, and its ``agrees`` is whether its ``(mergedSha256,
  includedSetHash)`` equal the finalised result's.

Each failed check is a :class:`VoteFinding` that :mod:`node.audit.auditor` reports as a mismatch named after
the check.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from ledger.types import MemberInfo
from node.protocol.history import RoundRecord, RunHistory

VOTE_CHECKS = ("voters-eligible", "one-vote-each", "eligible-count", "quorum", "late-votes")
"""The names of the checks, as they appear in the audit's JSON (``rounds[].vote_checks``) and mismatches."""

BPS = 10_000


def quorum_of(eligible: int, quorum_bps: int) -> int:
    """Equal votes that finalise a round of ``eligible`` members: ``max(1, ceil(eligible * bps / 10000))``."""
    return max(1, (eligible * quorum_bps + BPS - 1) // BPS)


@dataclass(frozen=True)
class VoteFinding:
    """One failed vote check of a round."""

    check: str
    expected: str
    found: str
    detail: str = ""


def ban_blocks(history: RunHistory) -> dict[str, int]:
    """Block of each banned member's first unlearning request (the request bans its subject)."""
    out: dict[str, int] = {}
    for req in history.requests:
        subject = to_checksum_address(req.request.subject)
        out[subject] = min(out.get(subject, req.request.request_block), req.request.request_block)
    return out


def check_votes(
    rec: RoundRecord,
    quorum_bps: int,
    member_of: Callable[[str], MemberInfo],
    bans: Mapping[str, int],
) -> tuple[dict[str, bool], list[VoteFinding]]:
    """Run the checks of the module docstring on one round; return ``({check: passed}, findings)``.

    ``member_of(address)`` returns the member record the registry holds (``is_member`` false for a
    stranger); ``bans`` maps banned members to the block of the request that banned them
    (:func:`ban_blocks`). ``quorum`` is left out of the result for a round that is not finalised.
    """
    findings: list[VoteFinding] = []
    info = rec.info
    for vote in rec.votes:
        voter = to_checksum_address(vote.member)
        member = member_of(voter)
        if not member.is_member:
            why = "not a member of the run"
        elif member.index >= info.member_snapshot:
            why = f"member index {member.index} >= memberSnapshot {info.member_snapshot} (joined later)"
        elif bans.get(voter, vote.block_number) < vote.block_number:
            why = f"banned by an unlearning request in block {bans[voter]}"
        else:
            continue
        findings.append(
            VoteFinding(
                "voters-eligible",
                f"votes from the round's {info.member_snapshot} first members, none banned",
                voter,
                f"{voter} voted in block {vote.block_number}: {why}",
            )
        )
    counts = Counter(to_checksum_address(v.member) for v in rec.votes)
    for voter, n in sorted(counts.items()):
        if n > 1:
            findings.append(VoteFinding("one-vote-each", "1 vote", f"{n} votes", f"{voter} voted {n} times"))
    banned_before = sum(1 for block in bans.values() if block < info.start_block)
    eligible = info.member_snapshot - banned_before
    # the contract takes the round's snapshot at the first transaction on it, not at startBlock: a ban that
    # lands after the round opened and before that transaction is already subtracted
    end = info.closed_block or max([*bans.values(), info.start_block])
    banned_while_open = sum(1 for block in bans.values() if info.start_block <= block <= end)
    recorded = {info.eligible} | ({rec.result.eligible} if rec.result is not None else set())
    if len(recorded) != 1 or not eligible - banned_while_open <= min(recorded) <= eligible:
        findings.append(
            VoteFinding(
                "eligible-count",
                f"{eligible} eligible ({info.member_snapshot} members minus {banned_before} banned"
                + (
                    f", or up to {banned_while_open} fewer for bans while the round was open)"
                    if banned_while_open
                    else ")"
                ),
                ", ".join(str(e) for e in sorted(recorded)),
                "eligible count of roundInfo and RoundFinalized",
            )
        )
    checks = {name: not any(f.check == name for f in findings) for name in VOTE_CHECKS[:3]}
    if rec.result is not None:
        result = rec.result
        needed = quorum_of(eligible, quorum_bps)
        winning = sum(
            1
            for v in rec.votes
            if (v.merged_sha256, v.merged_cid, v.included_set_hash)
            == (result.merged_sha256, result.merged_cid, result.included_set_hash)
        )
        if winning < needed or result.votes < needed:
            findings.append(
                VoteFinding(
                    "quorum",
                    f"at least {needed} equal votes (quorum of {eligible} at {quorum_bps} bps)",
                    f"{winning} MergeVoted events, {result.votes} in RoundFinalized",
                    "the finalised result did not reach quorum",
                )
            )
        checks["quorum"] = not any(f.check == "quorum" for f in findings)
        late = _late_findings(rec, member_of, bans)
        findings.extend(late)
        checks["late-votes"] = not late
    return checks, findings


def _late_findings(
    rec: RoundRecord, member_of: Callable[[str], MemberInfo], bans: Mapping[str, int]
) -> list[VoteFinding]:
    """Return the ``late-votes`` findings of a finalised round (see the module docstring)."""
    result, info = rec.result, rec.info
    if result is None:
        return []
    voted = {to_checksum_address(v.member) for v in rec.votes}
    end = info.late_vote_end
    findings: list[VoteFinding] = []
    for late in rec.late_votes:
        voter = to_checksum_address(late.voter)
        member = member_of(voter)
        agrees = (late.merged_sha256, late.included_set_hash) == (
            result.merged_sha256,
            result.included_set_hash,
        )
        if not member.is_member or member.index >= info.member_snapshot:
            why = "not in the round's eligible set"
        elif bans.get(voter, late.block_number) < late.block_number:
            why = f"banned by an unlearning request in block {bans[voter]}"
        elif voter in voted:
            why = "it had voted in the round already"
        elif not result.block_number <= late.block_number < end:
            why = f"outside the late window [{result.block_number}, {end})"
        elif late.agrees != agrees:
            why = f"its agrees flag is {late.agrees}, the result says {agrees}"
        else:
            voted.add(voter)
            continue
        findings.append(
            VoteFinding(
                "late-votes",
                "late votes from eligible members that had not voted, in the window, flagged right",
                voter,
                f"{voter} voted late in block {late.block_number}: {why}",
            )
        )
    return findings


__all__ = ["VOTE_CHECKS", "VoteFinding", "ban_blocks", "check_votes", "quorum_of"]
