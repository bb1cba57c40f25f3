"""One step of the round state machine (DESIGN.md "A round"), re-entrant after any crash.

:func:`step` reads the run's open round and its phase from the chain and does the next thing this member
owes it: train, store and commit an update (submit phase); fetch the on-chain set, merge, store and vote
(vote phase); close an expired round as failed. Before that it settles every earlier round: a finalised
round's result is adopted (and a divergence from this node's own vote logged), its contributions recorded
on chain; a failed round is noted (the next one restarts from the last finalised state). A finalised round
this member merged but did not vote gets its vote late (the contract records it as ``LateVoteCast``, agreeing
or not), so a dissent reaches the chain. Once the run is complete on chain (its ``rounds``-th round
finalised, ``RunCompleted``), the last round is settled too and :func:`step` reports the run done.

Each action first checks the chain (has this member already submitted / voted?) and the state database
(is the update already trained and stored?), so repeating a step after a crash never trains twice,
submits twice or votes twice; the contract's "already" reverts are treated as done.

Recording a finalised round's contributions is bookkeeping, not part of the next round's critical path:
settling queues it in the state database, and a later step sends it while this member waits anyway (or
before the run ends). :func:`observe` is the loop's cheap per-block check for whether stepping again can
lead anywhere (the open round's status, submission count or phase changed).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ledger.errors import ContractRevertError
from ledger.types import Phase, RoundId, RoundStatus
from node.errors import NodeError
from node.protocol.committee_round import adopt, committee_step
from node.protocol.confirm import tx_hex
from node.protocol.context import NodeContext, Step
from node.protocol.gossip import publish
from node.protocol.privacy import member_refusal
from node.protocol.sampling import round_selection
from node.protocol.submit import score_local, submit
from node.protocol.vote import late_vote, prefetch, score_merged, vote
from node.protocol.waiting import wait
from node.protocol.watch import changed_since_step
from p2p.messages import Heartbeat


def step(ctx: NodeContext) -> Step:
    """Advance the run by at most one action; say what it did (:class:`Step`: ``DONE`` once all finalised)."""
    client = ctx.client
    ctx.loop.watch.idle = False
    # The run's current round only moves when that round closes: while the last one seen is open, one
    # round read answers both "which round" and "where it stands".
    info = (
        client.round_info(ctx.run_id, RoundId(ctx.loop.current_round))
        if ctx.loop.watched is not None
        else None
    )
    completed = False
    if info is None or info.status != RoundStatus.OPEN:
        run = client.run_info(ctx.run_id)
        ctx.loop.current_round = int(run.current_round)
        completed = run.completed  # the current round is then the last one, finalised
        info = None
    current = ctx.loop.current_round
    acted = settle_closed_rounds(ctx, current + 1 if completed else current)
    if completed:
        _log_completion(ctx)
        do_chores(ctx)
        return Step.DONE
    finalized = sum(1 for r in ctx.state.rounds(ctx.run_id) if r.status == "finalized")
    if finalized >= ctx.spec.rounds:
        do_chores(ctx)
        return Step.DONE
    info = info or client.round_info(ctx.run_id, RoundId(current))
    head = client.block_number()
    phase = info.phase(head + 1)
    _heartbeat(ctx, current, phase.value.replace("-", "_"))
    if ctx.committee_size and phase in (Phase.SUBMIT, Phase.VOTE):  # docs/scale.md
        acted = committee_step(ctx, info, head)
    elif phase == Phase.NOT_STARTED:
        wait(ctx, current, f"round starts at block {info.start_block}")
    elif phase == Phase.SUBMIT:
        member = ctx.client.member_info(ctx.run_id, ctx.address)
        ctx.loop.eligible_round = current if _eligible(member, info) else -1
        unselected = _not_selected(ctx, info) if ctx.loop.eligible_round == current else None
        if ctx.loop.eligible_round != current:
            wait(ctx, current, "not eligible for this round (joined after it opened); waiting for the next")
        elif unselected is not None:
            prefetch(ctx, info)
            wait(ctx, current, unselected)
        elif (refused := member_refusal(ctx, current, member)) is not None:
            prefetch(ctx, info)  # over budget: no update of its own, but it still merges and votes
            wait(ctx, current, refused)
        elif submit(ctx, info, member):
            acted = True
        else:
            prefetch(ctx, info)
            wait(ctx, current, f"waiting for the vote phase ({info.submissions}/{info.eligible} submitted)")
    elif phase == Phase.VOTE:
        # Eligible at submit time stays eligible (a ban in between makes the contract refuse the vote).
        if ctx.loop.eligible_round != current and not _eligible(
            ctx.client.member_info(ctx.run_id, ctx.address), info
        ):
            wait(ctx, current, "not eligible for this round; waiting for the next")
        elif not _update_set_confirmed(ctx, info, head):
            deep = info.submit_end - 1 + int(getattr(client, "confirmations", 0))
            wait(ctx, current, f"waiting for the update set to be confirmed (block {deep})")
        elif info.submissions < ctx.spec.chain.min_updates:
            wait(
                ctx,
                current,
                f"too few updates ({info.submissions} < {ctx.spec.chain.min_updates}); round will fail",
            )
        elif vote(ctx, info):
            acted = True
        else:
            failed = ctx.state.merge_failure(ctx.run_id, current)
            why = f"cannot merge ({failed}); waiting for the round to end" if failed else ""
            wait(ctx, current, why or f"waiting for quorum ({info.quorum} of {info.eligible} equal votes)")
    else:
        acted = close_failed(ctx, current)
    ctx.loop.watched = _watch_key(current, info, head)
    ctx.loop.watch.stepped(info, head - int(getattr(client, "confirmations", 0)))
    if not acted:
        do_chores(ctx)
    return Step.ACTED if acted else Step.WAITED


def _log_completion(ctx: NodeContext) -> None:
    """Log the run's ``RunCompleted`` once (``run.completed``)."""
    if ctx.state.completion_block(ctx.run_id) is not None:
        return
    done = ctx.client.run_completion(ctx.run_id)
    if done is None:  # the event is not readable yet (confirmations): log it on a later step
        return
    ctx.state.mark_completed(ctx.run_id, done.block_number)
    ctx.log.event(
        "run.completed",
        run=ctx.run_id,
        rounds=done.rounds,
        last_round=int(done.last_round),
        sha=done.final_merged_sha256.hex(),
        block=done.block_number,
    )


def do_chores(ctx: NodeContext) -> None:
    """Work no round waits for, done while this member waits anyway: mirroring, scoring, contributions."""
    while ctx.loop.unpublished:  # the merged states this member voted for, to the IPFS daemon (for auditors)
        cid, kind = ctx.loop.unpublished.pop(0)
        ctx.fetcher.publish(cid, kind)
    score_local(ctx)  # first: scoring the merged model replaces the trained adapter in the model
    score_merged(ctx)
    record_due_contributions(ctx)


def _watch_key(current: int, info: Any, head: int) -> tuple[int, int, int, str]:
    return (current, int(info.status), int(info.submissions), info.phase(head + 1).value)


def observe(ctx: NodeContext, head: int) -> bool:
    """Whether the open round looks different at block ``head`` than at the last step (one chain read).

    The loop calls this on every new block while it waits: a log of the run (a round finalised, failed
    or opened, a new submission, a member joined) or a phase boundary means the next step has something
    to do (:func:`node.protocol.watch.changed_since_step`).
    """
    return changed_since_step(ctx, head, lambda info, at: _watch_key(ctx.loop.current_round, info, at))


def _heartbeat(ctx: NodeContext, round: int, phase: str, every_s: float = 10.0) -> None:
    """Publish this member's phase on gossip when it changes, else at most every ``every_s`` seconds.

    Not in committee runs: every member's heartbeat reaches every member, the per-member traffic that a
    committee run keeps from growing with the federation (docs/scale.md).
    """
    if ctx.p2p is None or ctx.committee_size:
        return
    what, last = ctx.loop.heartbeat
    key = f"{round}:{phase}"
    if key == what and time.monotonic() - last < every_s:
        return

    ctx.loop.heartbeat = (key, time.monotonic())
    publish(ctx, Heartbeat(run=ctx.run_key, round=round, sender=ctx.address, phase=phase))


def _not_selected(ctx: NodeContext, info: Any) -> str | None:
    """Why this member does not train this round under client sampling; ``None`` if it does."""
    if ctx.spec.clients_per_round is None:
        return None

    selection = round_selection(ctx, info)
    if selection is None:
        return f"client sampling: waiting for block {info.start_block}, whose hash seeds the selection"
    if selection.includes(ctx.address):
        return None
    k = ctx.spec.clients_per_round
    return f"not selected this round ({k} of {len(selection.candidates)} sampled); waiting to merge and vote"


def _update_set_confirmed(ctx: NodeContext, info: Any, head: int) -> bool:
    """Whether the round's update set in the confirmed state (``info``) is final.

    It is once every eligible member's commit is confirmed, or once the confirmed block reached the last
    block of the submit window (``submit_end - 1``); with ``confirmations = 0`` that holds in every vote
    phase. Until then a commit in the unconfirmed blocks could still join the set (or a reorganisation
    drop one), and a merge of the confirmed part would vote a hash that honest peers do not share.
    """
    confirmations = int(getattr(ctx.client, "confirmations", 0))
    complete = info.eligible > 0 and info.submissions >= info.eligible
    return bool(complete or head - confirmations >= info.submit_end - 1)


def _eligible(member: Any, info: Any) -> bool:
    return bool(member.is_member and not member.banned and member.index < info.member_snapshot)


# ---- settle closed rounds ------------------------------------------------------------------------------


def settle_closed_rounds(ctx: NodeContext, current: int) -> bool:
    """Record the outcome of every round before ``current`` not settled yet (adopt, contributions).

    Returns whether there was one.
    """
    start = ctx.state.settled_rounds(ctx.run_id)
    for rnd in range(start, current):
        info = ctx.client.round_info(ctx.run_id, RoundId(rnd))
        record = ctx.state.round(ctx.run_id, rnd)
        if info.status == RoundStatus.FINALIZED:
            result = ctx.client.round_result(ctx.run_id, RoundId(rnd))
            if result is None:  # read at another block than its status: the loop retries
                raise NodeError(f"round {rnd}: no finalised result on chain yet")
            sha, cid = result.merged_sha256.hex(), result.merged_cid
            if record.merged_sha is not None and record.merged_sha != sha:
                ctx.load_state(sha, cid, round=rnd)  # adopt the agreed model now: fetched, hash-checked
                ctx.log.event("round.adopted", run=ctx.run_id, round=rnd, sha=sha, cid=cid)
            if ctx.committee_size and record.merged_sha is None:  # outside the committee: take its result
                adopt(ctx, rnd, sha, cid)
            if not ctx.committee_size and record.merged_sha is not None and record.vote_tx is None:
                late_vote(ctx, info, record)
            ctx.state.update_round(ctx.run_id, rnd, final_sha=sha, final_cid=cid, status="finalized")
            ctx.state.adopt(ctx.run_id, rnd, sha, cid, "finalized")
            if record.merged_sha is not None and record.merged_sha != sha:
                ctx.log.event(
                    "round.diverged", run=ctx.run_id, round=rnd, ours=record.merged_sha, final=sha, cid=cid
                )
            ctx.log.event(
                "round.finalized",
                run=ctx.run_id,
                round=rnd,
                sha=sha,
                cid=cid,
                votes=result.votes,
                eligible=result.eligible,
                block=result.block_number,
                ours=record.merged_sha == sha,
                timings=ctx.state.round(ctx.run_id, rnd).timing(),
                rpc=ctx.loop.watch.rpc_since_mark(),
            )
            counted = info.contributions_recorded or ctx.committee_size > 0  # committee runs: on chain
            if not counted and record.merged_sha == sha and record.included is not None:
                ctx.state.queue_contributions(ctx.run_id, rnd, record.included)
        else:
            ctx.state.update_round(ctx.run_id, rnd, status="failed")
            ctx.log.event("round.failed", run=ctx.run_id, round=rnd, submissions=info.submissions)
        ctx.state.mark_settled(ctx.run_id, rnd)
    return start < current


def record_due_contributions(ctx: NodeContext) -> None:
    """Record the queued contributions of finalised rounds unless another member already has (chain check)."""
    for rnd, included in sorted(ctx.state.contributions_due(ctx.run_id).items()):
        if not ctx.client.round_info(ctx.run_id, RoundId(rnd)).contributions_recorded:
            _record_contributions(ctx, rnd, included)
        ctx.state.contributions_done(ctx.run_id, rnd)


def _record_contributions(ctx: NodeContext, rnd: int, included_json: str) -> None:
    pairs = [(member, bytes.fromhex(sha)) for member, sha in json.loads(included_json)]
    started = time.perf_counter()
    try:
        tx = ctx.client.record_contributions(ctx.run_id, RoundId(rnd), pairs)
    except ContractRevertError as exc:  # another member recorded them first
        ctx.log.event(
            "round.contributions", run=ctx.run_id, round=rnd, recorded=False, why=type(exc).__name__
        )
        return
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.log.event(
        "round.contributions", run=ctx.run_id, round=rnd, recorded=True, members=len(pairs), tx=tx_hex(tx)
    )


def close_failed(ctx: NodeContext, rnd: int) -> bool:
    """Close an expired round as failed (anyone may; a lost race is fine); ``True`` if this call closed it."""
    try:
        tx = ctx.client.close_failed(ctx.run_id, RoundId(rnd))
    except ContractRevertError as exc:
        ctx.log.event("round.close_refused", run=ctx.run_id, round=rnd, why=type(exc).__name__)
        return False
    ctx.log.event("round.closed_failed", run=ctx.run_id, round=rnd, tx=tx_hex(tx))
    return True
