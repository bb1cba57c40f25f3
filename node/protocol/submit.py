"""The submit phase: train from the round's base state, store and pin the update, commit it, announce it.

Re-entrant: an update already trained and stored for the round (state DB + own store) is committed as is,
and a commit already on chain (``memberInfo.lastSubmittedRound``) is not sent again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from typing import Any

from ledger.errors import ContractRevertError
from ledger.reverts import AlreadySubmittedError
from ledger.types import RoundId
from node.confidential import ConfidentialError, reader_keys, seal_for, update_label
from node.protocol.confirm import ON_CHAIN, still_on_chain, tx_hex
from node.protocol.context import NodeContext
from node.protocol.gossip import publish
from node.protocol.privacy import privatize
from node.protocol.state import round_s
from p2p.messages import UpdateAnnouncement
from p2p.storage.base import Cid


def submit(ctx: NodeContext, info: Any, member: Any = None) -> bool:
    """Train, store and commit this member's update for the open round; ``False`` if already done.

    ``member`` is this member's ``MemberInfo`` as just read by the caller (read here when ``None``).
    """
    rnd = int(info.round)
    member = member or ctx.client.member_info(ctx.run_id, ctx.address)
    record = ctx.state.round(ctx.run_id, rnd)
    if member.last_submitted_round == rnd:
        if record.submit_tx is None:
            ctx.state.update_round(ctx.run_id, rnd, submit_tx="on-chain")
        return False
    if record.submit_tx not in (None, ON_CHAIN) and still_on_chain(ctx, record.submit_tx, rnd, "submit"):
        return False  # mined, not yet `confirmations` deep: wait (a dropped one is sent again below)
    if record.update_cid is None or not ctx.store.has(Cid(record.update_cid)):
        record = train_and_store(ctx, rnd)
    if record.update_sha is None or record.update_cid is None or record.num_samples is None:
        return False
    started = time.perf_counter()
    try:
        tx = ctx.client.submit_update(
            ctx.run_id, RoundId(rnd), bytes.fromhex(record.update_sha), record.update_cid, record.num_samples
        )
        sent = tx_hex(tx)
    except AlreadySubmittedError:
        if record.submit_tx == ON_CHAIN:
            return False  # known: in the latest state, not yet in the confirmed one
        sent = ON_CHAIN
    except ContractRevertError as exc:
        ctx.log.event("round.submit_refused", run=ctx.run_id, round=rnd, why=str(exc))
        return False
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.state.update_round(ctx.run_id, rnd, submit_tx=sent)
    ctx.log.event(
        "round.submitted", run=ctx.run_id, round=rnd, sha=record.update_sha, cid=record.update_cid, tx=sent
    )
    _announce_update(ctx, rnd, record.update_sha, record.update_cid, record.update_size or 0)
    return True


def score_local(ctx: NodeContext) -> None:
    """Score the adapter this process last trained on the held-out split, once (reporting only).

    A chore (see :func:`node.protocol.round.do_chores`): it runs while this member waits, never between its
    commit and its vote. The model holds the trained adapter until the merged model is loaded for scoring,
    which the chores do after this; after a restart it may not, so only an update this process trained is
    scored.
    """
    rnd = ctx.loop.trained_round
    if rnd is None:
        return
    ctx.loop.trained_round = None
    if ctx.config.training.evaluate and ctx.state.round(ctx.run_id, rnd).local_loss is None:
        ctx.score_held_out(rnd, "local", time.perf_counter())


def train_and_store(ctx: NodeContext, rnd: int) -> Any:
    """Train this member's update of ``rnd`` from the round's base state, store and pin it, record it.

    Shared by the ordinary submit phase and the committee commit (:mod:`node.protocol.committee_round`).
    """
    from node.protocol.model import member_seed

    base, base_sha = ctx.base_state(rnd)
    examples = ctx.data.train
    lr = ctx.spec.train.for_round(rnd, ctx.spec.rounds).lr  # [train] lr_schedule
    ctx.log.event("round.training", run=ctx.run_id, round=rnd, base=base_sha, examples=len(examples), lr=lr)
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
        from training.attacks import flip_answers, flip_preferences, get_attack

        if get_attack(ctx.byzantine[0]).level == "data":
            dpo = ctx.spec.train.task == "dpo"
            examples = flip_preferences(examples) if dpo else flip_answers(examples, seed=seed)
    inner = _load_inner_state(ctx, rnd)
    result = ctx.runtime.train(
        base, examples, seed=seed, client_control=control, progress=progress, round=rnd, inner_state=inner
    )
    ctx.loop.trained_round = rnd
    if result.inner_state is not None:  # pre-training: this member's AdamW state for its next round
        from node.protocol.inner_state import save_inner_state

        run_dir = ctx.home.run_dir(ctx.run_id)
        save_inner_state(run_dir, ctx.run_id, rnd, result.inner_state, ctx.runtime.flat_spec, ctx.log.event)
    if ctx.spec.privacy is not None:  # clip and noise before anything leaves here (node.protocol.privacy)
        result = privatize(ctx, rnd, result)
    if ctx.byzantine is not None:
        result = _attack(ctx, rnd, result, seed)
    ctx.state.add_timing(ctx.run_id, rnd, "train", result.seconds)
    residual = _load_residual(ctx, rnd)
    from training.codec import FEEDBACK_CODECS

    if ctx.spec.artifacts != "members" and ctx.spec.codec not in FEEDBACK_CODECS:
        sha, cid, size = _keep_update_file(ctx, rnd, result)
    else:  # encoded in memory: top-k decodes it again for its residual, an envelope seals the bytes
        data, residual = ctx.runtime.encode_with_feedback(result, residual, run=ctx.run_key, round=rnd)
        plain_sha = hashlib.sha256(data).hexdigest()
        if ctx.spec.artifacts == "members":  # the chain gets the envelope's hash, it commits to the plaintext
            try:
                readers = reader_keys(ctx)
                data = seal_for(readers, data, update_label(ctx.run_key, rnd))
            except ConfidentialError as exc:  # e.g. a member's key not recoverable: nothing is committed
                ctx.log.event("round.seal_failed", run=ctx.run_id, round=rnd, why=str(exc))
                return ctx.state.round(ctx.run_id, rnd)
            ctx.log.event(
                "round.sealed", run=ctx.run_id, round=rnd, readers=len(readers), plain_sha=plain_sha
            )
        sha, size = hashlib.sha256(data).hexdigest(), len(data)
        cid = ctx.fetcher.keep(data, "update", ctx.run_id, rnd)
    if result.client_control is not None:
        _save_client_control(ctx, result.client_control)
    if residual is not None:  # top-k error feedback: what this update did not carry, for the next round
        ctx.state.set_residual(ctx.run_id, rnd, residual.numpy().tobytes())
    ctx.log.event(
        "round.trained",
        run=ctx.run_id,
        round=rnd,
        loss=round(result.mean_loss, 5),
        steps=result.steps,
        seconds=round_s(result.seconds),
        sha=sha,
        cid=cid,
        size=size,
    )
    return ctx.state.update_round(
        ctx.run_id,
        rnd,
        base_sha=base_sha,
        update_sha=sha,
        update_cid=cid,
        update_size=size,
        num_samples=len(examples),
    )


def _keep_update_file(ctx: NodeContext, rnd: int, result: Any) -> tuple[str, str, int]:
    """Encode this member's update straight to a file and keep it; return its ``(sha256, cid, size)``.

    The bytes are those ``runtime.encode_with_feedback`` returns for a codec without error feedback (the
    same ``training.codec`` encoding), written tensor by tensor and moved into the own store: the update is
    never held as bytes in memory.
    """
    from training.codec import encode_file

    path = ctx.fetcher.scratch / f"update-{ctx.run_id}-{rnd}.safetensors"
    extra = {"control_delta": result.control_delta} if result.control_delta is not None else None
    encode_file(
        result.delta,
        ctx.runtime.flat_spec,
        path,
        run=ctx.run_key,
        round=rnd,
        codec=ctx.spec.codec,  # type: ignore[arg-type]  # validated by RunSpec
        extra=extra,
        params=ctx.spec.codec_params(),
    )
    kept = ctx.fetcher.keep_file(path, "update", ctx.run_id, rnd)
    return kept.sha256, kept.cid, kept.size


def _attack(ctx: NodeContext, rnd: int, result: Any, seed: int) -> Any:
    """Rewrite a (testing) Byzantine member's update with its attack; its own update stands for the benign."""
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


def _load_residual(ctx: NodeContext, rnd: int) -> Any:
    """Return the top-k residual kept after this member's latest earlier round (``None``: none)."""
    from training.codec import FEEDBACK_CODECS

    if ctx.spec.codec not in FEEDBACK_CODECS:
        return None
    data = ctx.state.residual(ctx.run_id, before=rnd)
    if data is None:
        return None
    import torch

    numel = ctx.runtime.flat_spec.numel
    if len(data) != 4 * numel:  # another layout (cannot happen within one run): start from zero
        ctx.log.event("round.residual_ignored", run=ctx.run_id, round=rnd, size=len(data), numel=numel)
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.float32)


def _load_inner_state(ctx: NodeContext, rnd: int) -> Any:
    """Pre-training: the AdamW state this member kept after its latest earlier round (``None``: fresh)."""
    if ctx.spec.train.task != "pretrain":
        return None
    from node.protocol.inner_state import load_inner_state

    run_dir = ctx.home.run_dir(ctx.run_id)
    return load_inner_state(run_dir, ctx.run_id, rnd, ctx.runtime.flat_spec, ctx.log.event)


def _load_client_control(ctx: NodeContext) -> Any:
    if not ctx.spec.scaffold or not _control_path(ctx).exists():
        return None
    from safetensors.torch import load_file

    return dict(load_file(str(_control_path(ctx))))


def _save_client_control(ctx: NodeContext, control: Any) -> None:
    from safetensors.torch import save_file

    tmp = _control_path(ctx).with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in control.items()}, str(tmp))
    os.replace(tmp, _control_path(ctx))


def _announce_update(ctx: NodeContext, rnd: int, sha: str, cid: str, size: int) -> None:
    if ctx.p2p is None:
        return

    publish(
        ctx,
        UpdateAnnouncement(
            run=ctx.run_key,
            round=rnd,
            sender=ctx.address,
            sha256=sha,
            cid=cid,
            size=size,
            providers=(ctx.p2p.peer_id,),
        ),
    )
