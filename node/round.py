"""One step of the round state machine (DESIGN.md "A round"), re-entrant after any crash.

:func:`step` reads the run's open round and its phase from the chain and does the next thing this member
owes it: train, store and commit an update (submit phase); fetch the on-chain set, merge, store and vote
(vote phase); close an expired round as failed. Before that it settles every earlier round: a finalised
round's result is adopted (and a divergence from this node's own vote logged), its contributions recorded
on chain; a failed round is noted (the next one restarts from the last finalised state).

Each action first checks the chain (has this member already submitted / voted?) and the state database
(is the update already trained and stored?), so repeating a step after a crash never trains twice,
submits twice or votes twice; the contract's "already" reverts are treated as done.
"""

from __future__ import annotations

import json
import time
from typing import Any

from node.context import NodeContext
from node.fetch import Want
from node.state import round_s


def _tx_hex(result: Any) -> str:
    return bytes(result.tx_hash).hex()


def step(ctx: NodeContext) -> bool:
    """Advance the run by at most one action; return ``True`` once the run's rounds are all finalised."""
    from ledger.types import Phase

    client = ctx.client
    current = int(client.run_info(ctx.run_id).current_round)
    ctx.current_round = current
    settle_closed_rounds(ctx, current)
    finalized = sum(1 for r in ctx.state.rounds(ctx.run_id) if r.status == "finalized")
    if finalized >= ctx.spec.rounds:
        return True
    info = client.round_info(ctx.run_id, current)
    phase = info.phase(client.block_number() + 1)
    _heartbeat(ctx, current, phase.value.replace("-", "_"))
    if phase == Phase.NOT_STARTED:
        _wait(ctx, current, f"round starts at block {info.start_block}")
    elif phase == Phase.SUBMIT:
        if not _eligible(ctx, info):
            _wait(ctx, current, "not eligible for this round (joined after it opened); waiting for the next")
        elif not submit(ctx, info):
            _wait(ctx, current, f"waiting for the vote phase ({info.submissions}/{info.eligible} submitted)")
    elif phase == Phase.VOTE:
        if not _eligible(ctx, info):
            _wait(ctx, current, "not eligible for this round; waiting for the next")
        elif info.submissions < ctx.spec.chain.min_updates:
            _wait(
                ctx,
                current,
                f"too few updates ({info.submissions} < {ctx.spec.chain.min_updates}); round will fail",
            )
        elif not vote(ctx, info):
            _wait(ctx, current, f"waiting for quorum ({info.quorum} of {info.eligible} equal votes)")
    else:
        close_failed(ctx, current)
    return False


def _wait(ctx: NodeContext, round: int, why: str) -> None:
    """Log a wait reason once per change (the loop sleeps between steps)."""
    key = f"wait:{ctx.run_id}:{round}"
    if ctx.state.get(key) != why:
        ctx.state.set(key, why)
        ctx.log.event("round.waiting", run=ctx.run_id, round=round, why=why)


def _heartbeat(ctx: NodeContext, round: int, phase: str, every_s: float = 10.0) -> None:
    """Publish this member's phase on gossip when it changes, else at most every ``every_s`` seconds."""
    if ctx.p2p is None:
        return
    what, last = ctx.heartbeat
    key = f"{round}:{phase}"
    if key == what and time.monotonic() - last < every_s:
        return
    from p2p.messages import Heartbeat

    ctx.heartbeat = (key, time.monotonic())
    try:
        ctx.p2p.publish(Heartbeat(run=ctx.run_key, round=round, sender=ctx.address, phase=phase))
    except Exception as exc:  # liveness information only
        ctx.log.event("gossip.failed", run=ctx.run_id, round=round, why=str(exc)[:200])


def _eligible(ctx: NodeContext, info: Any) -> bool:
    member = ctx.client.member_info(ctx.run_id, ctx.address)
    return bool(member.is_member and not member.banned and member.index < info.member_snapshot)


# ---- settle closed rounds ------------------------------------------------------------------------------


def settle_closed_rounds(ctx: NodeContext, current: int) -> None:
    """Record the outcome of every round before ``current`` not settled yet (adopt, contributions)."""
    from ledger.types import RoundStatus

    key = f"settled:{ctx.run_id}"
    start = int(ctx.state.get(key) or 0)
    for rnd in range(start, current):
        info = ctx.client.round_info(ctx.run_id, rnd)
        record = ctx.state.round(ctx.run_id, rnd)
        if info.status == RoundStatus.FINALIZED:
            result = ctx.client.round_result(ctx.run_id, rnd)
            sha, cid = result.merged_sha256.hex(), result.merged_cid
            if record.merged_sha is not None and record.merged_sha != sha:
                ctx.load_state(sha, cid, round=rnd)  # adopt the agreed model now: fetched, hash-checked
                ctx.log.event("round.adopted", run=ctx.run_id, round=rnd, sha=sha, cid=cid)
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
            )
            if not info.contributions_recorded and record.merged_sha == sha and record.included is not None:
                _record_contributions(ctx, rnd, record.included)
        else:
            ctx.state.update_round(ctx.run_id, rnd, status="failed")
            ctx.log.event("round.failed", run=ctx.run_id, round=rnd, submissions=info.submissions)
        ctx.state.set(key, str(rnd + 1))


def _record_contributions(ctx: NodeContext, rnd: int, included_json: str) -> None:
    from ledger.errors import ContractRevertError

    pairs = [(member, bytes.fromhex(sha)) for member, sha in json.loads(included_json)]
    started = time.perf_counter()
    try:
        tx = ctx.client.record_contributions(ctx.run_id, rnd, pairs)
    except ContractRevertError as exc:  # another member recorded them first
        ctx.log.event(
            "round.contributions", run=ctx.run_id, round=rnd, recorded=False, why=type(exc).__name__
        )
        return
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.log.event(
        "round.contributions", run=ctx.run_id, round=rnd, recorded=True, members=len(pairs), tx=_tx_hex(tx)
    )


# ---- submit --------------------------------------------------------------------------------------------


def submit(ctx: NodeContext, info: Any) -> bool:
    """Train, store and commit this member's update for the open round; ``False`` if already done."""
    from ledger.errors import ContractRevertError
    from ledger.reverts import AlreadySubmittedError

    rnd = int(info.round)
    member = ctx.client.member_info(ctx.run_id, ctx.address)
    record = ctx.state.round(ctx.run_id, rnd)
    if member.last_submitted_round == rnd:
        if record.submit_tx is None:
            ctx.state.update_round(ctx.run_id, rnd, submit_tx="on-chain")
        return False
    if record.update_cid is None or not ctx.store.has(record.update_cid):
        record = _train_and_store(ctx, rnd)
    if record.update_sha is None or record.update_cid is None or record.num_samples is None:
        return False
    started = time.perf_counter()
    try:
        tx = ctx.client.submit_update(
            ctx.run_id, rnd, bytes.fromhex(record.update_sha), record.update_cid, record.num_samples
        )
        tx_hex = _tx_hex(tx)
    except AlreadySubmittedError:
        tx_hex = "on-chain"
    except ContractRevertError as exc:
        ctx.log.event("round.submit_refused", run=ctx.run_id, round=rnd, why=str(exc))
        return False
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.state.update_round(ctx.run_id, rnd, submit_tx=tx_hex)
    ctx.log.event(
        "round.submitted", run=ctx.run_id, round=rnd, sha=record.update_sha, cid=record.update_cid, tx=tx_hex
    )
    _announce_update(ctx, rnd, record.update_sha, record.update_cid, record.update_size or 0)
    return True


def _train_and_store(ctx: NodeContext, rnd: int) -> Any:
    import hashlib

    from node.model import member_seed

    base, base_sha = ctx.base_state(rnd)
    examples = ctx.data.train
    ctx.log.event("round.training", run=ctx.run_id, round=rnd, base=base_sha, examples=len(examples))
    control = _load_client_control(ctx)
    last = [0.0]

    def progress(done: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 2.0:
            last[0] = now
            ctx.log.event(
                "round.train_step", run=ctx.run_id, round=rnd, step=done, steps=total, loss=round(loss, 4)
            )

    seed = member_seed(ctx.spec.seed, rnd, ctx.address)
    if ctx.byzantine is not None:
        from training.attacks import flip_answers, get_attack

        if get_attack(ctx.byzantine[0]).level == "data":
            examples = flip_answers(examples, seed=seed)
    result = ctx.runtime.train(base, examples, seed=seed, client_control=control, progress=progress)
    if ctx.byzantine is not None:
        result = _attack(ctx, rnd, result, seed)
    ctx.state.add_timing(ctx.run_id, rnd, "train", result.seconds)
    local_loss = ctx.runtime.evaluate(ctx.data.held_out) if ctx.config.training.evaluate else None
    data = ctx.runtime.encode_update(result, run=ctx.run_key, round=rnd)
    sha = hashlib.sha256(data).hexdigest()
    cid = ctx.fetcher.keep(data, "update", ctx.run_id, rnd)
    if result.client_control is not None:
        _save_client_control(ctx, result.client_control)
    ctx.log.event(
        "round.trained",
        run=ctx.run_id,
        round=rnd,
        loss=round(result.mean_loss, 5),
        steps=result.steps,
        seconds=round_s(result.seconds),
        local_loss=local_loss,
        sha=sha,
        cid=cid,
        size=len(data),
    )
    return ctx.state.update_round(
        ctx.run_id,
        rnd,
        base_sha=base_sha,
        update_sha=sha,
        update_cid=cid,
        update_size=len(data),
        num_samples=len(examples),
        local_loss=local_loss,
    )


def _attack(ctx: NodeContext, rnd: int, result: Any, seed: int) -> Any:
    """Rewrite a (testing) Byzantine member's update with its attack; its own update stands for the benign."""
    import dataclasses

    from training.attacks import apply_update_attack

    name, strength = ctx.byzantine or ("", None)
    own = result.delta.unsqueeze(0)
    attacked = apply_update_attack(name, own, own, seed=seed, strength=strength)[0]
    ctx.log.event(
        "round.byzantine",
        run=ctx.run_id,
        round=rnd,
        attack=name,
        norm=float(attacked.norm()),
        honest_norm=float(own.norm()),
    )
    return dataclasses.replace(result, delta=attacked)


def _control_path(ctx: NodeContext) -> Any:
    return ctx.home.run_dir(ctx.run_id) / "client_control.safetensors"


def _load_client_control(ctx: NodeContext) -> Any:
    if not ctx.spec.scaffold or not _control_path(ctx).exists():
        return None
    from safetensors.torch import load_file

    return dict(load_file(str(_control_path(ctx))))


def _save_client_control(ctx: NodeContext, control: Any) -> None:
    import os

    from safetensors.torch import save_file

    tmp = _control_path(ctx).with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in control.items()}, str(tmp))
    os.replace(tmp, _control_path(ctx))


def _announce_update(ctx: NodeContext, rnd: int, sha: str, cid: str, size: int) -> None:
    if ctx.p2p is None:
        return
    from p2p.messages import UpdateAnnouncement

    try:
        ctx.p2p.publish(
            UpdateAnnouncement(
                run=ctx.run_key,
                round=rnd,
                sender=ctx.address,
                sha256=sha,
                cid=cid,
                size=size,
                providers=(ctx.p2p.peer_id,),
            )
        )
    except Exception as exc:  # gossip is an optimisation: peers also find the update via the chain
        ctx.log.event("gossip.failed", run=ctx.run_id, round=rnd, why=str(exc))


# ---- vote ----------------------------------------------------------------------------------------------


def vote(ctx: NodeContext, info: Any) -> bool:
    """Fetch the round's on-chain update set, merge it, store the result and vote; ``False`` if done."""
    from ledger.errors import ContractRevertError
    from ledger.reverts import AlreadyVotedError
    from ledger.types import included_set_hash

    rnd = int(info.round)
    if any(
        v.member.lower() == ctx.address.lower() for v in ctx.client.votes(ctx.run_id, rnd, info.start_block)
    ):
        return False
    record = ctx.state.round(ctx.run_id, rnd)
    if record.merged_sha is None or record.merged_cid is None or not ctx.store.has(record.merged_cid):
        record = _merge(ctx, info)
        if record is None:
            return False
    merged_sha, merged_cid = str(record.merged_sha), str(record.merged_cid)
    pairs = [(member, bytes.fromhex(sha)) for member, sha in json.loads(record.included or "[]")]
    set_hash = included_set_hash(pairs)
    started = time.perf_counter()
    try:
        tx = ctx.client.vote(ctx.run_id, rnd, bytes.fromhex(merged_sha), merged_cid, set_hash)
        tx_hex = _tx_hex(tx)
    except AlreadyVotedError:
        tx_hex = "on-chain"
    except ContractRevertError as exc:
        ctx.log.event("round.vote_refused", run=ctx.run_id, round=rnd, why=str(exc))
        return False
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.state.update_round(ctx.run_id, rnd, vote_tx=tx_hex)
    ctx.log.event(
        "round.voted",
        run=ctx.run_id,
        round=rnd,
        sha=record.merged_sha,
        cid=record.merged_cid,
        tx=tx_hex,
        included=len(pairs),
    )
    if ctx.p2p is not None:
        from p2p.messages import VoteAnnouncement

        try:
            ctx.p2p.publish(
                VoteAnnouncement(
                    run=ctx.run_key,
                    round=rnd,
                    sender=ctx.address,
                    merged_sha256=merged_sha,
                    merged_cid=merged_cid,
                    included_set_hash=set_hash.hex(),
                )
            )
        except Exception as exc:  # gossip is informational here
            ctx.log.event("gossip.failed", run=ctx.run_id, round=rnd, why=str(exc))
    return True


def _merge(ctx: NodeContext, info: Any) -> Any:
    from training.codec import default_max_bytes
    from training.merge import MergeError, UpdateInput, encode_state, merge, state_hash

    rnd = int(info.round)
    submissions = ctx.client.submissions(ctx.run_id, rnd, info.start_block)
    excluded = {m.lower() for m in ctx.excluded}
    wanted = [s for s in submissions if s.member.lower() not in excluded]
    base, base_sha = ctx.base_state(rnd)
    cap = default_max_bytes(ctx.runtime.flat_spec)
    started = time.perf_counter()
    got = ctx.fetcher.get_many(
        [Want(s.cid, s.sha256.hex(), cap, "update", ctx.run_id, rnd) for s in wanted], raise_errors=False
    )
    fetch_s = time.perf_counter() - started
    ctx.state.add_timing(ctx.run_id, rnd, "transfer", fetch_s)
    sources: dict[str, int] = {}
    updates, unavailable = [], {}
    for s in wanted:
        value = got.get(s.cid)
        if isinstance(value, tuple):
            sources[value[1]] = sources.get(value[1], 0) + 1
            updates.append(UpdateInput(s.member, value[0], int(s.num_samples)))
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
        outcome = merge(base, updates, ctx.spec.merge_spec(), run=ctx.run_key, round=rnd)
    except MergeError as exc:
        ctx.log.event("round.merge_failed", run=ctx.run_id, round=rnd, why=str(exc))
        return None
    data = encode_state(outcome.state)
    sha = state_hash(outcome.state)
    merge_s = time.perf_counter() - started
    ctx.state.add_timing(ctx.run_id, rnd, "aggregate", merge_s)
    cid = ctx.fetcher.keep(data, "merged", ctx.run_id, rnd)
    ctx.remember(sha, outcome.state)
    by_member = {s.member: s.sha256.hex() for s in wanted}
    included = [[m, by_member[m]] for m in outcome.included]
    rejected = {**unavailable, **dict(outcome.rejected)}
    merged_loss = None
    if ctx.config.training.evaluate:
        ctx.runtime.load(outcome.state)
        merged_loss = ctx.runtime.evaluate(ctx.data.held_out)
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
        merged_loss=merged_loss,
    )
    return ctx.state.update_round(
        ctx.run_id,
        rnd,
        merged_sha=sha,
        merged_cid=cid,
        included=json.dumps(included),
        rejected=json.dumps(rejected, sort_keys=True),
        merged_loss=merged_loss,
    )


def close_failed(ctx: NodeContext, rnd: int) -> None:
    """Close an expired round as failed (anyone may; a lost race is fine)."""
    from ledger.errors import ContractRevertError

    try:
        tx = ctx.client.close_failed(ctx.run_id, rnd)
    except ContractRevertError as exc:
        ctx.log.event("round.close_refused", run=ctx.run_id, round=rnd, why=type(exc).__name__)
        return
    ctx.log.event("round.closed_failed", run=ctx.run_id, round=rnd, tx=_tx_hex(tx))
