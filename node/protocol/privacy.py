"""A member's differential-privacy spend in a run: the ledger in the state database, budget decisions.

A run with a ``[privacy]`` table (:class:`training.privacy.PrivacyConfig`) has every member clip and noise
its own update before encoding it. Each privatised update this member produces is a *release*; its rounds
are kept in the state database (``meta`` key ``privacy:<run>``) **before** the update is stored, so a restart
after kill -9 never forgets a spend (an update noised but lost in a crash before storing counts too: it is
conservative, never optimistic). (epsilon, delta) so far follows from the release count
(:func:`training.privacy.epsilon_spent`).

Before training a round the node asks :func:`refusal`: when one more release would pass the budget (the
run's ``epsilon_budget``, or this member's own stricter ``[training] epsilon_budget``), it does not train or
submit that round (event ``privacy.refused``, once per round) and keeps merging and voting.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from node.protocol.context import NodeContext
from node.protocol.state import NodeState
from p2p.storage.base import Cid
from training.privacy import budget_refusal, epsilon_spent
from training.privacy import privatize as privatize_update


def read_ledger(state: NodeState, run: int) -> dict[str, Any] | None:
    """Return the stored ledger of ``run`` (``config``, ``releases``, ``member_budget``) or ``None``."""
    return state.privacy_ledger(run)


def releases(state: NodeState, run: int) -> list[int]:
    """Return the round of every privatised update this member released in ``run`` (repeats possible)."""
    ledger = read_ledger(state, run)
    return [int(r) for r in ledger["releases"]] if ledger else []


def member_budget(ctx: NodeContext) -> float | None:
    """Return the member's own budget (``[training] epsilon_budget``; ``None`` when 0)."""
    budget = float(getattr(ctx.config.training, "epsilon_budget", 0.0) or 0.0)
    return budget or None


def _write(ctx: NodeContext, privacy: Any, spent: list[int]) -> None:
    ledger = {
        "config": dataclasses.asdict(privacy),
        "releases": spent,
        "member_budget": member_budget(ctx),
    }
    ctx.state.set_privacy_ledger(ctx.run_id, ledger)


def spend(ctx: NodeContext) -> dict[str, Any] | None:
    """Return the spend so far: ``epsilon``, ``delta``, ``releases``, ``budget`` (``None`` without DP)."""
    privacy = ctx.spec.privacy
    if privacy is None:
        return None
    count = len(releases(ctx.state, ctx.run_id))
    budgets = [b for b in (privacy.epsilon_budget, member_budget(ctx)) if b is not None]
    return {
        "epsilon": round(epsilon_spent(privacy, count), 4),
        "delta": privacy.delta,
        "releases": count,
        "budget": min(budgets) if budgets else None,
    }


def member_refusal(ctx: NodeContext, rnd: int, member: Any) -> str | None:
    """Return why the budget keeps this member (``member``: its ``MemberInfo``) from training ``rnd``.

    ``None`` when it may train: without a ``[privacy]`` table, and once it submitted ``rnd`` (already spent).
    """
    if ctx.spec.privacy is None or member.last_submitted_round == rnd:
        return None
    return refusal(ctx, rnd)


def refusal(ctx: NodeContext, rnd: int) -> str | None:
    """Return why this member does not train round ``rnd`` (its budget), ``None`` if it may.

    An update of ``rnd`` already privatised and stored is not a new release: it may still be committed.
    The first refusal of a round is logged (``privacy.refused``) with the spend so far.
    """
    privacy = ctx.spec.privacy
    if privacy is None:
        return None
    if read_ledger(ctx.state, ctx.run_id) is None:  # `fedchain status --home` shows the spend from round 0
        _write(ctx, privacy, [])
    record = ctx.state.round(ctx.run_id, rnd)
    if record.update_cid is not None and ctx.store.has(Cid(record.update_cid)):
        return None
    why = budget_refusal(privacy, len(releases(ctx.state, ctx.run_id)), member_budget(ctx))
    if why is None:
        return None
    if ctx.state.privacy_refusal(ctx.run_id, rnd) is None:
        ctx.state.mark_privacy_refused(ctx.run_id, rnd, why)
        ctx.log.event("privacy.refused", run=ctx.run_id, round=rnd, why=why, **(spend(ctx) or {}))
    return f"{why}; not training this round, still merging and voting"


def privatize(ctx: NodeContext, rnd: int, result: Any) -> Any:
    """Clip and noise a trained update (``node.protocol.model.TrainResult``); record the release first.

    The release is written to the state database before the noised update exists outside this function,
    so the spend survives any crash after it. Logs ``privacy.spent`` with (epsilon, delta) so far.
    """
    privacy = ctx.spec.privacy
    if privacy is None:
        return result
    _write(ctx, privacy, [*releases(ctx.state, ctx.run_id), rnd])
    released = privatize_update(result.delta, privacy)
    ctx.log.event(
        "privacy.spent",
        run=ctx.run_id,
        round=rnd,
        norm=round(released.norm, 5),
        clipped=released.clipped,
        **(spend(ctx) or {}),
    )
    return dataclasses.replace(result, delta=released.delta)
