"""Audit checks of a committee round (docs/scale.md): its manifest, its bitmap and its committee's signatures.

A committee run has no ``UpdateSubmitted`` or ``MergeVoted`` events: a finalised round is described by its
``CommitteeFinalized`` event (manifest CID, included bitmap, signers) and the ``finalizeCommitteeRound``
transaction that emitted it (the signatures). :func:`check_committee_round` checks, from the chain and the
store alone:

- ``manifest``: the manifest fetched by its CID parses strictly (:class:`node.protocol.committee.Manifest`)
  and names this run, round, registry and chain;
- ``commit-signatures``: every commit in it is signed (EIP-712 ``UpdateCommit``) by the member of its index,
  which was eligible (``index < memberSnapshot``, not banned before the round's finalisation);
- ``included-bitmap``: every bitmap bit names a commit of the manifest, and the bits are exactly the members
  of the included set that ``includedSetHash`` names (the members the committee merged);
- ``committee-quorum``: the signers are members of the round's committee, recomputed from the start block's
  hash, and number at least ``quorum(k, memberSnapshot, quorumBps)``;
- ``committee-signatures``: each signature of the finalising transaction recovers to its signer over the
  ``CommitteeVote`` digest of the finalised result.

It returns the round record with the manifest's commits as its update set, so :mod:`node.audit.auditor` then
recomputes the merge exactly as for an ordinary round (the included set found by ``includedSetHash``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_utils.address import to_checksum_address

from ledger.committee import bitmap_indices, committee_seed, quorum, select_committee
from ledger.errors import SignatureError
from ledger.types import CommitteeResult, RoundId, RunId, Submission
from node.protocol.committee import MAX_MANIFEST_BYTES, CommitteeError, Eligibility, Manifest, check_commit
from node.protocol.history import RoundRecord
from node.unlearning.replay import ReplayError, named_included_set
from p2p.storage import Cid, compute_cid

COMMITTEE_CHECKS = (
    "manifest",
    "commit-signatures",
    "included-bitmap",
    "committee-quorum",
    "committee-signatures",
)
"""The names of the checks, as they appear in the audit's JSON (``rounds[].vote_checks``) and mismatches."""


@dataclass(frozen=True)
class CommitteeFinding:
    """One failed check of a committee round."""

    check: str
    expected: str
    found: str
    detail: str = ""


def check_committee_round(
    client: Any, rec: RoundRecord, store: Any, bans: Mapping[str, int], k: int, quorum_bps: int
) -> tuple[RoundRecord, dict[str, bool], list[CommitteeFinding]]:
    """Run the checks of the module docstring on one finalised committee round.

    Returns the round record with the manifest's commits as ``submissions``, ``{check: passed}`` and the
    failed checks. A round that did not finalise is returned unchanged with no checks.
    """
    if rec.result is None:
        return rec, {}, []
    run, r = RunId(int(rec.info.run_id)), RoundId(int(rec.round))
    checks = dict.fromkeys(COMMITTEE_CHECKS, True)
    findings: list[CommitteeFinding] = []

    def fail(check: str, expected: str, found: str, detail: str = "") -> None:
        checks[check] = False
        findings.append(CommitteeFinding(check, expected, found, detail))

    event = client.committee_finalized(run, r)
    if event is None:
        fail("manifest", "a CommitteeFinalized event", "none")
        return rec, checks, findings
    try:
        data = bytes(store.get(Cid(event.manifest_cid), max_size=MAX_MANIFEST_BYTES))
        if str(compute_cid(data)) != event.manifest_cid:
            raise CommitteeError(f"the bytes do not hash to CID {event.manifest_cid}")
        manifest = Manifest.from_bytes(data)
        manifest.check_for(run=run, round=r, registry=client.address, chain_id=client.chain_id)
    except Exception as exc:  # unavailable, malformed or for another round: nothing below can be checked
        fail("manifest", f"the manifest {event.manifest_cid}", "unusable", str(exc)[:300])
        return rec, checks, findings
    members = list(client.members(run))
    finalized = rec.result.block_number
    banned = frozenset(m.lower() for m, block in bans.items() if block < finalized)
    eligibility = Eligibility(tuple(members), int(rec.info.member_snapshot), banned)
    for commit in manifest.commits:
        try:
            manifest_commit_ok(commit, eligibility, manifest)
        except CommitteeError as exc:
            fail("commit-signatures", "a valid signed commit of an eligible member", "invalid", str(exc))

    indices = set(manifest.indices)
    outside = [i for i in bitmap_indices(event.included_bitmap) if i not in indices]
    if outside:
        fail("included-bitmap", "bits of manifest commits only", f"indices {outside} not in the manifest")
    _check_signers(client, rec, event, members, k, quorum_bps, fail)
    submissions = tuple(
        Submission(run, r, c.member, bytes.fromhex(c.sha256), c.cid, c.num_samples, finalized)
        for c in manifest.commits
    )
    rebuilt = dataclasses.replace(rec, submissions=submissions, accepted=())
    try:
        named = [s.member for s in named_included_set(rebuilt)]
    except ReplayError:  # no subset hashes to includedSetHash: the auditor reports `included-set`
        named = None
    if named is not None and not bitmap_matches(event.included_bitmap, members, named):
        fail("included-bitmap", "the members of includedSetHash", "other bits", f"included: {named}")
    return rebuilt, checks, findings


def manifest_commit_ok(commit: Any, eligibility: Eligibility, manifest: Manifest) -> None:
    """Raise :class:`CommitteeError` unless one manifest commit is an eligible member's valid one."""
    check_commit(
        commit,
        eligibility,
        chain_id=manifest.chain_id,
        registry=manifest.registry,
        run=manifest.run,
        round=manifest.round,
    )


def bitmap_matches(event_bitmap: Sequence[int], members: Sequence[str], included: Sequence[str]) -> bool:
    """Whether the bitmap names exactly the members of the recomputed included set."""
    index = {to_checksum_address(m): i for i, m in enumerate(members)}
    return sorted(index[to_checksum_address(m)] for m in included) == bitmap_indices(event_bitmap)


def _check_signers(
    client: Any, rec: RoundRecord, event: Any, members: list[str], k: int, quorum_bps: int, fail: Any
) -> None:
    run, r = int(rec.info.run_id), int(rec.round)
    block_hash = client.block_hash(int(rec.info.start_block))
    if block_hash is None:
        fail("committee-quorum", "the start block's hash", "unavailable")
        return
    snapshot = int(rec.info.member_snapshot)
    committee = set(select_committee(committee_seed(block_hash, run, r), snapshot, k))
    strangers = [i for i in event.signers if i not in committee]
    if strangers:
        fail("committee-quorum", f"signers of the committee {sorted(committee)}", f"signers {strangers}")
    needed = quorum(k, snapshot, quorum_bps)
    if len(set(event.signers)) < needed:
        fail("committee-quorum", f">= {needed} signers", str(len(set(event.signers))))
    try:
        result, signers, signatures = _finalizing_call(client, rec, event)
    except LookupError as exc:
        fail("committee-signatures", "the finalizeCommitteeRound transaction", "not found", str(exc))
        return
    from ledger.eip712 import recover, vote_digest

    if list(signers) != list(event.signers):
        fail("committee-signatures", f"signers {event.signers}", f"signers {list(signers)} in the call")
    digest = vote_digest(client.chain_id, client.address, result)
    for index, signature in zip(signers, signatures, strict=False):
        try:
            signer = recover(digest, bytes(signature))
        except SignatureError as exc:
            fail("committee-signatures", f"a signature of member {index}", "malformed", str(exc))
            continue
        if index >= len(members) or signer != to_checksum_address(members[index]):
            fail("committee-signatures", f"a signature of member {index}", f"a signature of {signer}")


def _finalizing_call(
    client: Any, rec: RoundRecord, event: Any
) -> tuple[CommitteeResult, list[int], list[bytes]]:
    """Decode the ``finalizeCommitteeRound`` call of the round from its block (the signatures live there)."""
    block = client.w3.eth.get_block(event.block_number, full_transactions=True)
    registry = to_checksum_address(client.address)
    for tx in block["transactions"]:
        if not tx.get("to") or to_checksum_address(tx["to"]) != registry:
            continue
        try:
            fn, args = client.contract.decode_function_input(tx["input"])
        except ValueError:
            continue
        if fn.fn_name != "finalizeCommitteeRound":
            continue
        raw = args["result"]
        result = CommitteeResult(*_fields(raw))
        if (result.run_id, result.round) != (int(rec.info.run_id), int(rec.round)):
            continue
        receipt = client.w3.eth.get_transaction_receipt(tx["hash"])
        if int(receipt["status"]) != 1:
            continue
        return result, [int(i) for i in args["signers"]], [bytes(s) for s in args["signatures"]]
    raise LookupError(
        f"no successful finalizeCommitteeRound of round {rec.round} in block {event.block_number}"
    )


def _fields(raw: Any) -> tuple[Any, ...]:
    """Return the struct's fields in ``CommitteeResult`` order, from web3's decoded tuple or dict."""
    if isinstance(raw, Mapping):
        names = (
            "runId",
            "round",
            "mergedSha256",
            "mergedCid",
            "includedSetHash",
            "manifestCid",
            "includedBitmap",
        )
        raw = tuple(raw[n] for n in names)
    run, rnd, sha, cid, set_hash, manifest, bitmap = raw
    return (
        int(run),
        int(rnd),
        bytes(sha),
        str(cid),
        bytes(set_hash),
        str(manifest),
        [int(w) for w in bitmap],
    )
