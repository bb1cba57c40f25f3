"""The vote phase: fetch the round's on-chain update set, merge it with ``training.merge``, store, vote.

Re-entrant: a merged state already stored for the round is voted as is, and a vote already on chain (the
round's ``MergeVoted`` events) is not sent again. A vote that lands after the quorum is taken by the contract
as a late vote (``LateVoteCast``, agreeing or not): logged as ``round.vote_late``; :func:`late_vote` sends
the merged result of a finalised round this member did not vote (the round loop's settling).

Scoring the merged model on the held-out split is reporting only, so it is not on the round's critical
path: :func:`score_merged` runs while the member waits anyway (the round loop's chores), after the vote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ledger.errors import ContractRevertError
from ledger.reverts import AlreadyVotedError, RoundClosedError
from ledger.types import RoundId, included_set_hash
from node.confidential import (
    ConfidentialError,
    merged_label,
    open_artifact,
    reader_keys,
    seal_for,
    update_label,
)
from node.protocol.confirm import still_on_chain, tx_hex
from node.protocol.context import NodeContext
from node.protocol.gossip import publish
from node.protocol.retrieval import Want
from node.protocol.sampling import round_selection
from node.protocol.state import LocalRound, round_s
from p2p.messages import VoteAnnouncement
from p2p.storage.base import Cid


def vote(ctx: NodeContext, info: Any) -> bool:
    """Fetch the round's on-chain update set, merge it, store the result and vote; ``False`` if done."""
    rnd = int(info.round)
    record = ctx.state.round(ctx.run_id, rnd)
    # vote_tx is recorded only once the vote was mined (or found on chain); a reorganisation may drop it
    if record.vote_tx is not None and still_on_chain(ctx, record.vote_tx, rnd, "vote"):
        return False
    if any(
        v.member.lower() == ctx.address.lower()
        for v in ctx.client.votes(ctx.run_id, RoundId(rnd), info.start_block)
    ):
        ctx.state.update_round(ctx.run_id, rnd, vote_tx="on-chain")
        return False
    if ctx.state.merge_failure(ctx.run_id, rnd) is not None:
        return False  # the round's update set is fixed: merging it again fails the same way
    if record.merged_sha is None or record.merged_cid is None or not ctx.store.has(Cid(record.merged_cid)):
        record = _merge(ctx, info)
        if record is None:
            return False
    merged_sha, merged_cid = str(record.merged_sha), str(record.merged_cid)
    pairs = [(member, bytes.fromhex(sha)) for member, sha in json.loads(record.included or "[]")]
    set_hash = included_set_hash(pairs)
    started = time.perf_counter()
    try:
        tx = ctx.client.vote(ctx.run_id, RoundId(rnd), bytes.fromhex(merged_sha), merged_cid, set_hash)
        sent = tx_hex(tx)
    except AlreadyVotedError:
        sent = "on-chain"
    except RoundClosedError:
        # The round failed while this member merged: there is no result to vote on, late or not.
        ctx.log.event("round.vote_closed", run=ctx.run_id, round=rnd)
        return False
    except ContractRevertError as exc:
        ctx.log.event("round.vote_refused", run=ctx.run_id, round=rnd, why=str(exc))
        return False
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.state.update_round(ctx.run_id, rnd, vote_tx=sent)
    late = ctx.client.late_vote_in(tx) if sent != "on-chain" else None
    if late is not None:  # the others reached quorum while this member merged: recorded, not counted
        ctx.log.event("round.vote_late", run=ctx.run_id, round=rnd, agrees=late.agrees, tx=sent)
        return True
    ctx.log.event(
        "round.voted",
        run=ctx.run_id,
        round=rnd,
        sha=record.merged_sha,
        cid=record.merged_cid,
        tx=sent,
        included=len(pairs),
    )
    if ctx.p2p is not None:
        publish(
            ctx,
            VoteAnnouncement(
                run=ctx.run_key,
                round=rnd,
                sender=ctx.address,
                merged_sha256=merged_sha,
                merged_cid=merged_cid,
                included_set_hash=set_hash.hex(),
            ),
        )
    return True


def late_vote(ctx: NodeContext, info: Any, record: LocalRound) -> bool:
    """Vote this member's merged result of the finalised round ``info`` late; ``True`` if it was sent.

    The contract takes it until ``info.late_vote_end`` from an eligible member that has not voted in the
    round (nor in a later one); it changes nothing but the record (``LateVoteCast``, ``agrees`` or not).
    """
    rnd = int(info.round)
    if record.merged_sha is None or record.merged_cid is None:
        return False
    if ctx.client.block_number() + 1 >= info.late_vote_end:
        ctx.log.event("round.vote_late_skipped", run=ctx.run_id, round=rnd, why="late window over")
        return False
    pairs = [(member, bytes.fromhex(sha)) for member, sha in json.loads(record.included or "[]")]
    try:
        tx = ctx.client.vote(
            ctx.run_id,
            RoundId(rnd),
            bytes.fromhex(record.merged_sha),
            record.merged_cid,
            included_set_hash(pairs),
        )
    except AlreadyVotedError:  # this member's vote is on chain already (or it voted a later round)
        ctx.state.update_round(ctx.run_id, rnd, vote_tx="on-chain")
        return False
    except ContractRevertError as exc:
        ctx.log.event("round.vote_late_refused", run=ctx.run_id, round=rnd, why=str(exc)[:300])
        return False
    sent = tx_hex(tx)
    ctx.state.update_round(ctx.run_id, rnd, vote_tx=sent)
    late = ctx.client.late_vote_in(tx)
    ctx.log.event(
        "round.vote_late",
        run=ctx.run_id,
        round=rnd,
        agrees=None if late is None else late.agrees,
        sha=record.merged_sha,
        tx=sent,
    )
    return True


def _update_wants(ctx: NodeContext, info: Any) -> tuple[list[Any], list[Want]]:
    """Return the round's committed updates on chain (excluded members left out) and their fetches."""
    from training.codec import default_max_bytes

    rnd = int(info.round)
    excluded = {m.lower() for m in ctx.loop.excluded}
    submissions = ctx.client.submissions(ctx.run_id, RoundId(rnd), info.start_block)
    wanted = [s for s in submissions if s.member.lower() not in excluded]
    if ctx.spec.clients_per_round is not None:
        wanted = _selected_only(ctx, info, wanted)
    cap = default_max_bytes(ctx.runtime.flat_spec)
    return wanted, [Want(s.cid, s.sha256.hex(), cap, "update", ctx.run_id, rnd) for s in wanted]


def _selected_only(ctx: NodeContext, info: Any, submissions: list[Any]) -> list[Any]:
    """Leave out the commits of members client sampling did not select (logged once per member)."""
    rnd = int(info.round)
    selection = round_selection(ctx, info)
    if selection is None:  # the vote phase follows the start block, so only a prefetch can get here
        return []
    keep = [s for s in submissions if selection.includes(s.member)]
    for s in submissions:
        if s not in keep and ctx.state.not_selected(ctx.run_id, rnd, s.member) is None:
            ctx.state.mark_not_selected(ctx.run_id, rnd, s.member, s.sha256.hex())
            ctx.log.event(
                "round.update_excluded",
                run=ctx.run_id,
                round=rnd,
                member=s.member,
                sha=s.sha256.hex(),
                why=f"not selected by client sampling ({len(selection.selected)} selected)",
            )
    return keep


def prefetch(ctx: NodeContext, info: Any) -> None:
    """Fetch the updates committed so far into the own store while this member waits for the vote phase.

    Called in the submit phase after this member has submitted. Once per new submission count, it moves
    the transfer off the round's critical path: when the vote phase opens, the merge finds the updates in
    the own store. Failures are logged only (the vote phase fetches again, from every source).
    """
    rnd, count = int(info.round), int(info.submissions)
    if ctx.loop.prefetched == (rnd, count) or count == 0:
        return
    ctx.loop.prefetched = (rnd, count)
    try:
        _, wants = _update_wants(ctx, info)
        missing = [w for w in wants if not ctx.store.has(Cid(w.cid))]
        if not missing:
            return
        started = time.perf_counter()
        got = ctx.fetcher.get_files(missing, raise_errors=False)
        ctx.state.add_timing(ctx.run_id, rnd, "transfer", time.perf_counter() - started)
    except Exception as exc:  # an RPC or store hiccup: the vote phase fetches anyway
        ctx.log.event("round.prefetch_failed", run=ctx.run_id, round=rnd, why=str(exc)[:300])
        return
    fetched = sum(1 for v in got.values() if isinstance(v, tuple))
    ctx.log.event(
        "round.prefetched", run=ctx.run_id, round=rnd, updates=fetched, missing=len(missing) - fetched
    )


def _merge(ctx: NodeContext, info: Any) -> Any:
    from training.merge import MergeError, UpdateInput, encode_state, encode_state_file, merge, state_hash

    rnd = int(info.round)
    wanted, wants = _update_wants(ctx, info)
    base, base_sha = ctx.base_state(rnd)
    started = time.perf_counter()
    got = ctx.fetcher.get_files(wants, raise_errors=False)  # files: decoded through a memory map
    fetch_s = time.perf_counter() - started
    ctx.state.add_timing(ctx.run_id, rnd, "transfer", fetch_s)
    sources: dict[str, int] = {}
    updates, unavailable = [], {}
    unopened: dict[str, str] = {}
    for s in wanted:
        value = got.get(s.cid)
        if isinstance(value, tuple):
            sources[value[1]] = sources.get(value[1], 0) + 1
            if ctx.spec.artifacts != "members":
                data: bytes | Path | None = value[0]
            else:  # an envelope is opened in memory
                data = _open_update(ctx, s, value[0].read_bytes(), unopened)
            if data is not None:
                updates.append(UpdateInput(s.member, data, int(s.num_samples)))
        else:
            unavailable[s.member] = f"unavailable: {value}"
    ctx.log.event(
        "round.fetched",
        run=ctx.run_id,
        round=rnd,
        updates=len(updates),
        sources=sources,
        seconds=round_s(fetch_s),
    )
    started = time.perf_counter()
    try:
        outcome = merge(
            base, updates, ctx.spec.merge_spec(), run=ctx.run_key, round=rnd, eligible=int(info.eligible)
        )
    except MergeError as exc:
        if not unavailable:  # with every update in hand the failure is final; else retry after fetching again
            ctx.state.mark_merge_failed(ctx.run_id, rnd, str(exc))
        ctx.log.event("round.merge_failed", run=ctx.run_id, round=rnd, why=str(exc))
        return None
    sha = state_hash(outcome.state)
    merged: bytes | Path
    if ctx.spec.encrypt_merged:  # deterministic: every honest member stores (and votes) the same CID
        try:
            label = merged_label(ctx.run_key, rnd)
            merged = seal_for(reader_keys(ctx), encode_state(outcome.state), label, deterministic=True)
        except ConfidentialError as exc:
            ctx.log.event("round.seal_failed", run=ctx.run_id, round=rnd, why=str(exc))
            return None
    else:  # written tensor by tensor, then moved into the own store: no copy of the state's bytes in memory
        merged = ctx.fetcher.scratch / f"merged-{ctx.run_id}-{rnd}.safetensors"
        encode_state_file(outcome.state, merged)
    merge_s = time.perf_counter() - started
    by_member = {s.member: s.sha256.hex() for s in wanted}
    included = [[m, by_member[m]] for m in outcome.included]
    rejected = {**unavailable, **unopened, **dict(outcome.rejected)}
    return record_merge(ctx, rnd, merged, sha, outcome.state, base_sha, included, rejected, merge_s)


def record_merge(
    ctx: NodeContext,
    rnd: int,
    data: bytes | Path,
    sha: str,
    state: Any,
    base_sha: str,
    included: list[list[str]],
    rejected: dict[str, str],
    merge_s: float,
) -> LocalRound:
    """Keep a merged state this member computed and record it (state DB, ``round.merged``).

    The artifact is stored before anything refers to it and mirrored to IPFS later as a chore, off the
    vote's critical path. Shared by the ordinary vote and the committee's. ``data`` is the encoded state,
    or a file holding it in the fetcher's scratch folder (moved into the own store).
    """
    ctx.state.add_timing(ctx.run_id, rnd, "aggregate", merge_s)
    if isinstance(data, Path):
        cid = ctx.fetcher.keep_file(data, "merged", ctx.run_id, rnd, publish=False).cid
    else:
        cid = ctx.fetcher.keep(data, "merged", ctx.run_id, rnd, publish=False)
    ctx.loop.unpublished.append((cid, "merged"))
    ctx.remember(sha, state)
    if ctx.config.training.evaluate:
        ctx.state.set_score_due(ctx.run_id, rnd)
    ctx.log.event(
        "round.merged",
        run=ctx.run_id,
        round=rnd,
        sha=sha,
        cid=cid,
        base=base_sha,
        included=len(included),
        rejected=rejected,
        seconds=round_s(merge_s),
    )
    return ctx.state.update_round(
        ctx.run_id,
        rnd,
        merged_sha=sha,
        merged_cid=cid,
        included=json.dumps(included),
        rejected=json.dumps(rejected, sort_keys=True),
    )


def _open_update(ctx: NodeContext, sub: Any, data: bytes, unopened: dict[str, str]) -> bytes | None:
    """Open a members-only update with this member's key; on failure record and log why, return ``None``.

    The ciphertext already matched the sha256 on chain (the fetcher checked it), so a failure here is the
    writer's fault or a key this member lacks, and is final for the round: the update is excluded.
    """
    rnd = int(sub.round)
    what = f"update of {sub.member} in round {rnd}"
    try:
        return open_artifact(data, ctx.view_key, update_label(ctx.run_key, rnd), what=what)
    except ConfidentialError as exc:
        unopened[sub.member] = f"unreadable: {exc}"
        ctx.log.event(
            "round.update_excluded",
            run=ctx.run_id,
            round=rnd,
            member=sub.member,
            sha=sub.sha256.hex(),
            why=f"unreadable: {exc}",
        )
        return None


def score_merged(ctx: NodeContext) -> None:
    """Score the last merged model this node computed on its held-out split (``round.scored``), once."""
    rnd = ctx.state.score_due(ctx.run_id)
    if rnd is None:
        return
    record = ctx.state.round(ctx.run_id, rnd)
    ctx.state.set_score_due(ctx.run_id, None)
    if record.merged_sha is None or record.merged_cid is None or record.merged_loss is not None:
        return
    started = time.perf_counter()
    ctx.loop.trained_round = None  # the model no longer holds the trained adapter
    ctx.runtime.load(ctx.load_state(record.merged_sha, record.merged_cid, round=rnd))
    ctx.score_held_out(rnd, "merged", started)
