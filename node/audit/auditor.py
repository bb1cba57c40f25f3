"""Audit a run from only the chain and the artifacts: recompute every model, check every hash.

:func:`audit_run` reads a run's history (:mod:`node.protocol.history`), fetches its spec by CID and checks its
sha256, then recomputes the model lineage from the initial state: for every finalised round it finds the
set the winning vote named, fetches each included update and checks its sha256, merges them with
``training.merge`` onto the recomputed starting model, and compares the included list, the included-set
hash, the merged state hash and the merged artifact (its CID and the state hash of its bytes) with the
chain. Every fulfilled unlearning request is replayed (:func:`node.unlearning.replay.replay_unlearning`) and
compared the same way. Members' on-chain counters (submitted rounds, accepted contributions) are compared
with the counts rebuilt from the events. A run that samples clients (``clients_per_round``) has every
round's selection recomputed from the chain (:mod:`node.protocol.sampling`); an included update of a member
that was not selected is a ``selection`` mismatch. Every round's votes are checked against membership, bans,
one vote per member and the quorum of its eligible count (:mod:`node.audit.votes`). An included update that
the store cannot return is ``unavailable`` (:class:`UnavailableArtifact`): its round is not recomputed (the
audit goes on from the recorded model) and the report is not ``complete``, but it is no mismatch.

A problem becomes a :class:`Mismatch` (what, round or request, expected, found) and the audit goes on; facts
that are not faults (an update that honest peers could not use and left out, a dissenting vote) become
notes. :func:`audit_registry` audits every run of a registry (or one).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address

from ledger.client import RunsClient
from ledger.types import MemberInfo, RoundId, RoundStatus, RunId, RunInfo, included_set_hash
from node.audit.committee import check_committee_round
from node.audit.completion import check_completion
from node.audit.records import MemberAudit, Mismatch, RequestAudit, RoundAudit, RunAudit, UnavailableArtifact
from node.audit.votes import VoteFinding, ban_blocks, check_votes
from node.confidential import merged_label, resealed_like
from node.confidential import opener as make_opener
from node.errors import NodeError
from node.protocol.history import ModelRef, RoundRecord, RunHistory, base_of_round, read_history
from node.protocol.model import ModelRuntime
from node.protocol.sampling import Selection, read_selection
from node.runspec import RunSpec, RunSpecError
from node.unlearning.replay import (
    DEFAULT_MAX_ARTIFACT_BYTES,
    ArtifactError,
    ArtifactReader,
    ArtifactUnavailable,
    ReplayError,
    RunSetup,
    fetch_checked,
    fetch_checked_file,
    load_state,
    merge_round,
    named_included_set,
    replay_unlearning,
    update_inputs,
)
from p2p.envelope import is_envelope
from p2p.errors import StorageError
from p2p.storage import Cid, compute_cid
from training.errors import TrainingError
from training.merge import MergeError, ModelState, encode_state, state_hash

log = logging.getLogger(__name__)

SetupLoader = Callable[[bytes, RunInfo], RunSetup]
"""Builds a run's :class:`~node.unlearning.replay.RunSetup` from its verified spec bytes."""

SelectionOf = Callable[[RoundRecord], Selection | None]
"""A round's client-sampling selection recomputed from the chain (``None`` before its start block)."""

VoteChecker = Callable[[RoundRecord], tuple[dict[str, bool], list[VoteFinding]]]
CommitteeCheck = Callable[[RoundRecord], tuple[RoundRecord, dict[str, bool], list[Any]]]
"""A committee round's checks (:func:`node.audit.committee.check_committee_round`): the round with its
manifest as the update set, ``{check: passed}`` and the failed checks."""
"""A round's vote checks (:func:`node.audit.votes.check_votes` bound to the run's members and bans)."""


class _Auditor:
    """Recomputes one run's lineage, memoising every model it rebuilt."""

    def __init__(
        self,
        history: RunHistory,
        store: ArtifactReader,
        setup: RunSetup,
        report: RunAudit,
        selection_of: SelectionOf | None = None,
        vote_checker: VoteChecker | None = None,
        committee_check: CommitteeCheck | None = None,
    ) -> None:
        self.history = history
        self.selection_of = selection_of
        self.vote_checker = vote_checker
        self.committee_check = committee_check
        self.store = store
        self.setup = setup
        self.report = report
        self.rounds: dict[int, ModelState] = {}
        self.unlearned: dict[int, ModelState] = {}
        self.forgotten: dict[str, int] = {}
        for req in history.requests:
            if req.fulfilled:
                subject = to_checksum_address(req.request.subject)
                self.forgotten[subject] = min(
                    self.forgotten.get(subject, req.request.from_round), req.request.from_round
                )

    def resolve_recorded(self, ref: ModelRef, fallback: ModelState) -> ModelState:
        """Return a round's recorded model (fetched, hash-checked), reporting it when unusable."""
        try:
            return load_state(self.store, ref, self.setup)
        except ArtifactError as exc:
            self.mismatch("merged-artifact", ref.source, "the recorded model", "unusable", str(exc))
            return fallback

    def mismatch(
        self,
        what: str,
        round: int | None,
        expected: str,
        found: str,
        detail: str = "",
        request: int | None = None,
    ) -> None:
        m = Mismatch(what, round, expected, found, detail, request)
        log.warning("audit run %s: %s", self.report.run, m.describe())
        self.report.mismatches.append(m)

    def resolve(self, ref: ModelRef) -> ModelState:
        """Return a starting model: recomputed when the audit rebuilt it, else fetched and hash-checked."""
        if ref.kind == "initial":
            return self.setup.initial
        if ref.kind == "round" and ref.source in self.rounds:
            return self.rounds[ref.source]
        if ref.kind == "unlearning" and ref.source is not None:
            if ref.source not in self.unlearned:
                self.audit_request(ref.source)
            if ref.source in self.unlearned:
                return self.unlearned[ref.source]
        self.report.notes.append(f"{ref.describe()} was not recomputed; its stored artifact is used instead")
        return load_state(self.store, ref, self.setup)

    def check_artifact(
        self, what: str, ref: ModelRef, state: ModelState, round: int | None, request: int | None
    ) -> ModelState:
        """Check the artifact at the recorded CID against the recorded hash and the recomputed bytes.

        Returns the model later steps build on: the recorded one when it is usable (so one bad round is
        reported once, not again in every round after it), else the recomputed one.
        """
        data = encode_state(state)
        if self.setup.opener is not None and round is not None and ref.cid is not None:
            data = resealed_like(self.store, ref.cid, data, merged_label(self.setup.run_label, round))
        want_cid = str(compute_cid(data))
        if ref.cid != want_cid:
            why = "CID of the recomputed model"
            self.mismatch(f"{what}-cid", round, want_cid, str(ref.cid), why, request)
        try:
            return load_state(self.store, ref, self.setup)
        except ArtifactError as exc:
            expected = f"a model hashing to {ref.sha256.hex() if ref.sha256 else '?'}"
            self.mismatch(f"{what}-artifact", round, expected, "another or no artifact", str(exc), request)
            return state

    def sealed_round(self, r: int, ref: ModelRef) -> None:
        """Record what a keyless audit of an encrypted round cannot check; check the rest.

        The commits' ciphertext hashes, their availability, the votes and the included set were checked
        already; a merged model stored in the clear is still fetched and checked against its state hash.
        """
        self.report.unchecked.append(f"round {r}: merged model not recomputed (the updates are encrypted)")
        try:
            data = self.store.get(Cid(str(ref.cid)), max_size=DEFAULT_MAX_ARTIFACT_BYTES)
        except (StorageError, ValueError) as exc:
            self.mismatch("merged-artifact", r, "the recorded model", "unavailable", str(exc))
            return
        if is_envelope(data):
            self.report.unchecked.append(f"round {r}: merged model {ref.cid} is encrypted: hash unchecked")
        else:
            self.rounds[r] = self.resolve_recorded(ref, self.setup.initial)

    def audit_round(self, rec: RoundRecord) -> None:
        with self.setup.files() as files:  # the round's updates, streamed to files and merged from them
            self._audit_round(rec, files)

    def _audit_round(self, rec: RoundRecord, files: Path) -> None:
        r = int(rec.round)
        committee = self.committee_check(rec) if self.committee_check is not None else None
        if committee is not None:  # a committee round: its update set is its manifest (node.audit.committee)
            rec = committee[0]
        row = RoundAudit(r, RoundStatus(rec.info.status).name.lower(), len(rec.submissions))
        if committee is not None and committee[1]:
            row.vote_checks = committee[1]
            for finding in committee[2]:
                self.mismatch(finding.check, r, finding.expected, finding.found, finding.detail)
        self.report.rounds.append(row)
        selection = self.selection_of(rec) if self.selection_of is not None else None
        if selection is not None:
            row.selected = list(selection.selected)
        if self.vote_checker is not None:
            row.vote_checks, findings = self.vote_checker(rec)
            for finding in findings:
                self.mismatch(finding.check, r, finding.expected, finding.found, finding.detail)
        usable: dict[str, str] = {}
        missing: dict[str, tuple[str, str]] = {}
        for sub in rec.submissions:
            try:
                fetch_checked_file(self.store, sub.cid, sub.sha256, files / f"check-{sub.cid}").unlink()
                usable[to_checksum_address(sub.member)] = sub.sha256.hex()
            except ArtifactError as exc:
                if isinstance(exc, ArtifactUnavailable):
                    missing[to_checksum_address(sub.member)] = (sub.cid, str(exc))
                self.report.notes.append(f"round {r}: update of {sub.member} is unusable: {exc}")
        if rec.result is None:
            return
        row.merged_sha256 = rec.result.merged_sha256.hex()
        row.merged_cid = rec.result.merged_cid
        row.finalized_block = rec.result.block_number
        row.votes = rec.result.votes
        for late in rec.late_votes:
            row.late_votes.append(
                {
                    "voter": to_checksum_address(late.voter),
                    "merged_sha256": late.merged_sha256.hex(),
                    "merged_cid": late.merged_cid,
                    "included_set_hash": late.included_set_hash.hex(),
                    "agrees": late.agrees,
                    "block": late.block_number,
                }
            )
            if not late.agrees:
                voted = late.merged_sha256.hex()[:16]
                self.report.notes.append(
                    f"round {r}: {late.voter} voted {voted}… late, not the finalised model"
                )
        for vote in rec.votes:
            if (vote.merged_sha256, vote.merged_cid) != (rec.result.merged_sha256, rec.result.merged_cid):
                voted = vote.merged_sha256.hex()[:16]
                self.report.notes.append(f"round {r}: {vote.member} voted {voted}…, not the finalised model")
        try:
            named = named_included_set(rec)
        except ReplayError as exc:
            self.mismatch(
                "included-set", r, rec.result.included_set_hash.hex(), "no matching set of commits", str(exc)
            )
            return
        row.included = [to_checksum_address(s.member) for s in named]
        if selection is not None:
            self.check_selection(r, selection, row.included)
        for member in sorted(set(usable) - set(row.included)):
            if selection is not None and not selection.includes(member):
                self.report.notes.append(f"round {r}: the update of {member} was left out: not selected")
            else:
                self.report.notes.append(f"round {r}: the quorum left out the usable update of {member}")
        base = base_of_round(self.history, r)
        row.base = base.describe()
        if self.setup.sealed:
            self.sealed_round(r, ModelRef("round", r, rec.result.merged_sha256, rec.result.merged_cid))
            return
        try:
            start = self.resolve(base)
        except ArtifactError as exc:
            self.mismatch("base-model", r, base.describe(), "unavailable", str(exc))
            return
        errors: list[tuple[str, str]] = []
        inputs = update_inputs(
            self.store,
            named,
            lambda sub, why: errors.append((to_checksum_address(sub.member), why)),
            opener=self.setup.opener,
            files=files,
        )
        forgotten = [m for m, _ in errors if self.forgotten.get(m, r + 1) <= r]
        if forgotten:  # erased by a fulfilled unlearning request: this round can no longer be rebuilt
            self.report.notes.append(
                f"round {r}: updates of {', '.join(forgotten)} were unpinned after unlearning; "
                "the round is not recomputed and its recorded model is used"
            )
            ref = ModelRef("round", r, rec.result.merged_sha256, rec.result.merged_cid)
            self.rounds[r] = self.resolve_recorded(ref, start)
            return
        gone = [m for m, _ in errors if m in missing]
        if gone:  # not a wrong merge: the store cannot return what the quorum merged
            row.unavailable = gone
            for m in gone:
                self.report.unavailable.append(UnavailableArtifact(r, m, *missing[m]))
            self.report.unchecked.append(
                f"round {r}: not recomputed: the included update of {', '.join(gone)} is unavailable"
            )
            ref = ModelRef("round", r, rec.result.merged_sha256, rec.result.merged_cid)
            self.rounds[r] = self.resolve_recorded(ref, start)
            return
        for member, why in errors:
            self.mismatch(
                "update", r, "an included update matching its commit", "unusable", f"{member}: {why}"
            )
        try:
            state, included, rejected = merge_round(start, inputs, self.setup, r, rec.info.eligible)
        except MergeError as exc:
            self.mismatch("merged-sha256", r, row.merged_sha256, "no merge", str(exc))
            return
        if list(included) != row.included:
            self.mismatch(
                "included-set",
                r,
                ",".join(row.included),
                ",".join(included),
                f"rejected by the merge: {dict(rejected)}",
            )
        by_member: dict[str, bytes] = {to_checksum_address(s.member): s.sha256 for s in named}
        recomputed_hash = included_set_hash([(m, by_member[m]) for m in included])
        if recomputed_hash != rec.result.included_set_hash:
            self.mismatch(
                "included-set",
                r,
                rec.result.included_set_hash.hex(),
                recomputed_hash.hex(),
                "includedSetHash of the recomputed included list",
            )
        row.recomputed_sha256 = state_hash(state)
        if row.recomputed_sha256 != row.merged_sha256:
            self.mismatch(
                "merged-sha256",
                r,
                row.recomputed_sha256,
                row.merged_sha256,
                "the finalised hash is not the merge of the named set",
            )
        ref = ModelRef("round", r, rec.result.merged_sha256, rec.result.merged_cid)
        self.rounds[r] = self.check_artifact("merged", ref, state, r, None)

    def check_selection(self, r: int, selection: Selection, included: list[str]) -> None:
        """Report every included member that the round's client sampling did not select."""
        for member in included:
            if not selection.includes(member):
                self.mismatch(
                    "selection",
                    r,
                    f"updates of the {len(selection.selected)} selected members only "
                    f"({', '.join(selection.selected)})",
                    member,
                    f"the finalised set includes an update of {member}, whom client sampling "
                    f"(clients_per_round = {selection.k}, start block hash {selection.block_hash.hex()}) "
                    "did not select",
                )

    def audit_request(self, request_id: int) -> None:
        rec = self.history.request(request_id)
        req = rec.request
        if any(row.request == request_id for row in self.report.requests):
            return
        row = RequestAudit(
            request_id, to_checksum_address(req.subject), int(req.from_round), req.status.name.lower()
        )
        self.report.requests.append(row)
        if not rec.fulfilled:
            return
        row.result_sha256 = req.result_sha256.hex()
        row.result_cid = rec.result_cid
        if self.setup.sealed:
            self.report.unchecked.append(
                f"unlearning request {request_id}: not replayed (the updates are encrypted; no view key)"
            )
            return
        try:
            result = replay_unlearning(self.history, request_id, self.store, self.setup, self.resolve)
        except (ReplayError, MergeError) as exc:
            self.mismatch("unlearning-sha256", None, row.result_sha256, "no replay", str(exc), request_id)
            return
        row.replayed_rounds = [step.round for step in result.steps]
        row.recomputed_sha256 = result.sha256
        if result.sha256 != row.result_sha256:
            self.mismatch(
                "unlearning-sha256",
                None,
                result.sha256,
                row.result_sha256,
                "the fulfilled model is not the replay",
                request_id,
            )
        ref = ModelRef("unlearning", request_id, req.result_sha256, rec.result_cid)
        self.unlearned[request_id] = self.check_artifact("unlearning", ref, result.state, None, request_id)

    def audit_members(self, client: RunsClient) -> None:
        run = self.history.run_id
        for member in client.members(run):
            address = to_checksum_address(member)
            info = client.member_info(run, address)
            submitted = sum(
                1
                for rec in self.history.rounds
                for s in rec.submissions
                if to_checksum_address(s.member) == address
            )
            included = [row.round for row in self.report.rounds if address in row.included]
            recorded = [
                int(rec.round)
                for rec in self.history.rounds
                if rec.info.contributions_recorded and int(rec.round) in included
            ]
            if self.committee_check is not None:  # the contract counts the included bitmaps of the rounds
                submitted, recorded = len(included), included
            row = MemberAudit(
                address,
                info.banned,
                info.submitted_rounds,
                submitted,
                info.accepted_contributions,
                len(recorded),
                included,
            )
            self.report.members.append(row)
            if info.submitted_rounds != submitted:
                self.mismatch(
                    "contributions",
                    None,
                    f"{submitted} submissions in events",
                    f"{info.submitted_rounds} on chain",
                    address,
                )
            if info.accepted_contributions != len(recorded):
                self.mismatch(
                    "contributions",
                    None,
                    f"{len(recorded)} accepted in recorded rounds",
                    f"{info.accepted_contributions} on chain",
                    address,
                )


def audit_run(client: RunsClient, run: int, store: ArtifactReader, load_setup: SetupLoader) -> RunAudit:
    """Audit one run (see the module docstring); never stops at the first mismatch.

    Parameters
    ----------
    client
        A (read-only) client of the registry.
    run
        The run id.
    store
        Where the artifacts are read (an IPFS daemon's API, or any store holding them).
    load_setup
        Builds the run's merge rules and initial state from its verified spec bytes.
    """
    history = read_history(client, RunId(run))
    report = RunAudit(run, history.info.spec_cid)
    try:
        spec_bytes = fetch_checked(store, history.info.spec_cid, history.info.spec_sha256)
    except ArtifactError as exc:
        report.mismatches.append(
            Mismatch("spec", None, history.info.spec_sha256.hex(), "unusable spec", str(exc))
        )
        return report
    try:
        setup = load_setup(spec_bytes, history.info)
    except (NodeError, TrainingError, ValueError, LookupError, OSError) as exc:
        report.mismatches.append(
            Mismatch("spec", None, "a run spec this auditor can load", "unusable", str(exc))
        )
        return report
    _check_initial(spec_bytes, setup, report)
    selection_of: SelectionOf | None = None
    k = setup.clients_per_round
    if k is not None:

        def selection_of(rec: RoundRecord) -> Selection | None:
            return read_selection(client, RunId(run), rec.info, k)

    auditor = _Auditor(
        history,
        store,
        setup,
        report,
        selection_of,
        _vote_checker(client, history),
        _committee_check(client, history, store),
    )
    for rec in history.rounds:
        auditor.audit_round(rec)
    check_completion(history, report)
    for req in history.requests:
        auditor.audit_request(req.request_id)
    report.requests.sort(key=lambda row: row.request)
    auditor.audit_members(client)
    return report


def _committee_check(client: RunsClient, history: RunHistory, store: ArtifactReader) -> CommitteeCheck | None:
    """Return the run's committee-round checks (``None`` for an ordinary run)."""
    k = int(history.info.committee_size)
    if not k:
        return None

    bans = ban_blocks(history)
    return lambda rec: check_committee_round(client, rec, store, bans, k, history.info.quorum_bps)


def _check_initial(spec_bytes: bytes, setup: RunSetup, report: RunAudit) -> None:
    """Compare round 0's rebuilt state with the ``initial_sha256`` the spec records (when it records one)."""
    try:
        recorded = json.loads(spec_bytes).get("initial_sha256")
    except (ValueError, AttributeError):
        recorded = None
    if not isinstance(recorded, str):
        report.notes.append("the run spec records no initial_sha256: round 0's state is not on record")
        return
    rebuilt = state_hash(setup.initial)
    if rebuilt != recorded:
        report.mismatches.append(
            Mismatch(
                "initial-state", 0, recorded, rebuilt, "round 0's state rebuilt from the spec and the model"
            )
        )


def _vote_checker(client: RunsClient, history: RunHistory) -> VoteChecker | None:
    """Return the run's vote checks (``None`` for a committee run, whose rounds are decided otherwise)."""
    if history.info.committee_size:
        return None
    members: dict[str, MemberInfo] = {}
    bans = ban_blocks(history)

    def member_of(address: str) -> MemberInfo:
        if address not in members:
            members[address] = client.member_info(history.run_id, address)
        return members[address]

    return lambda rec: check_votes(rec, history.info.quorum_bps, member_of, bans)


def runspec_setup_loader(view_key: bytes | None = None) -> SetupLoader:
    """Return the default :data:`SetupLoader`: parse a ``RunSpec``, load its model once per spec.

    The initial state is the run-seeded adapter initialisation of the spec's model (loading the model is
    the only way to know it), so auditing needs the base model available locally, like a node. For an
    ``artifacts = "members"`` run, ``view_key`` (a member's or a named auditor's private key) opens the
    envelopes; without it the setup is ``sealed`` and the audit checks only what needs no plaintext.
    """
    cache: dict[bytes, tuple[Any, ModelState]] = {}

    def load(data: bytes, info: RunInfo) -> RunSetup:
        key = hashlib.sha256(data).digest()
        if key not in cache:
            spec = RunSpec.from_bytes(data)
            runtime = ModelRuntime(spec)
            if spec.base_model_sha256 not in (None, runtime.base_model_sha256):
                raise RunSpecError(
                    f"the auditor's {spec.model.name_or_path!r} has file digest {runtime.base_model_sha256}, "
                    f"the run records base_model_sha256 = {spec.base_model_sha256}: give the run's base model"
                )
            cache[key] = (spec, runtime.initial_state())
        spec, initial = cache[key]
        label = str(int(info.run_id))
        if spec.artifacts != "members":
            return RunSetup(spec.merge_spec(), initial, label, spec.clients_per_round)
        return RunSetup(
            spec.merge_spec(),
            initial,
            label,
            spec.clients_per_round,
            opener=make_opener(view_key, label),
            sealed=view_key is None,
        )

    return load


def audit_registry(
    client: RunsClient, store: ArtifactReader, load_setup: SetupLoader, run: int | None = None
) -> list[RunAudit]:
    """Audit one run, or every run of the registry (ids ``1..runCount``)."""
    runs = [run] if run is not None else list(range(1, client.run_count() + 1))
    return [audit_run(client, RoundId(r), store, load_setup) for r in runs]


__all__ = [
    "MemberAudit",
    "Mismatch",
    "RequestAudit",
    "RoundAudit",
    "RunAudit",
    "SetupLoader",
    "UnavailableArtifact",
    "audit_registry",
    "audit_run",
    "runspec_setup_loader",
]
