"""Honouring unlearning requests in a node: replay, vote, exclude, unpin, and start from the result.

The round loop calls :func:`process_pending` after every step. It reads the run's unlearning requests from
the chain (:mod:`node.protocol.history`) and, for each:

* adds the subject to ``ctx.loop.excluded`` (the contract already refuses its commits and votes once the
  request is filed; the node also leaves its updates out of every merge it still computes);
* while the request is pending and this member is eligible and has not voted: recomputes the request's
  model with :func:`node.unlearning.replay.replay_unlearning` (from the model its first round started from,
  every finalised round it covers merged again without the subject), keeps and pins the result, and votes it
  with ``voteUnlearning`` (a revert saying it was already voted or fulfilled counts as done);
* once fulfilled: unpins the subject's update artifacts (once), and makes the agreed model the one later
  rounds start from — by the lineage rule of :mod:`node.protocol.history`, recorded as an adoption in the
  node's state so that ``NodeContext.base_state`` returns it.

Everything it writes to the state database happens before the transaction it enables, and the chain is
checked first on every call, so a node killed at any point resumes without double-voting.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address

from ledger.errors import ContractRevertError
from ledger.types import RequestId, RequestStatus, RoundId
from node.confidential import opener as make_opener
from node.protocol.history import RequestRecord, RunHistory, base_of_round, read_history
from node.protocol.retrieval import Want
from node.unlearning.replay import ReplayError, RunSetup, replay_unlearning
from p2p.storage import Cid
from training.merge import encode_state

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0
"""Least time between two reads of the run's requests while none is pending."""


class FetcherReader:
    """The read side of a ``Store`` over a node's ``Fetcher`` (own store -> peers -> IPFS)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def get(self, cid: Cid, max_size: int | None = None) -> bytes:
        cap = max_size if max_size is not None else self.ctx.max_state_bytes()
        data, _ = self.ctx.fetcher.get(Want(str(cid), None, cap, "artifact", self.ctx.run_id, None))
        return bytes(data)

    def get_file(self, cid: Cid, dest: Path, max_size: int | None = None) -> int:
        """Link (else copy) the fetcher's verified file of ``cid`` to ``dest``: no copy of it in memory."""
        cap = max_size if max_size is not None else self.ctx.max_state_bytes()
        path, _ = self.ctx.fetcher.get_file(Want(str(cid), None, cap, "artifact", self.ctx.run_id, None))
        try:
            os.link(path, dest)
        except OSError:  # another file system
            shutil.copyfile(path, dest)
        return dest.stat().st_size


def node_setup(ctx: Any) -> RunSetup:
    """Return the replay setup of the node's run: its merge rules, initial state and header run id.

    In an ``artifacts = "members"`` run the replay opens the envelopes with this member's own key.
    """
    opener = None
    if getattr(ctx.spec, "artifacts", "public") == "members":  # ``ctx`` is duck-typed (see the tests)
        opener = make_opener(ctx.view_key, ctx.run_key)
    scratch = ctx.home.run_dir(ctx.run_id) if hasattr(ctx, "home") else None
    return RunSetup(
        ctx.spec.merge_spec(), ctx.runtime.initial_state(), ctx.run_key, opener=opener, scratch=scratch
    )


@dataclass
class _Memo:
    checked_at: float = 0.0
    requests: int = -1
    round: int = -1


_MEMO: dict[tuple[int, str], _Memo] = {}


def process_pending(ctx: Any) -> None:
    """Run the round loop's unlearning hook (see the module docstring); one bad request never raises."""
    memo = _MEMO.setdefault((ctx.run_id, ctx.address), _Memo())
    now = time.monotonic()
    count = int(ctx.client.request_count())
    open_work = ctx.state.unlearning_open(ctx.run_id)
    unchanged = count == memo.requests and ctx.loop.current_round == memo.round
    if unchanged and not open_work and now - memo.checked_at < 30 * CHECK_INTERVAL_S:
        return
    memo.requests, memo.checked_at, memo.round = count, now, ctx.loop.current_round
    history = read_history(ctx.client, ctx.run_id)
    if not history.requests:
        return
    pending = False
    for rec in history.requests:
        ctx.loop.excluded.add(to_checksum_address(rec.request.subject))
        try:
            if rec.request.status == RequestStatus.PENDING:
                pending = True
                _vote(ctx, history, rec)
            elif rec.fulfilled:
                _apply(ctx, history, rec)
        except (ReplayError, ValueError, LookupError) as exc:
            pending = True
            ctx.log.event("unlearning.error", run=ctx.run_id, request=rec.request_id, why=str(exc)[:500])
    ctx.state.set_unlearning_open(ctx.run_id, pending)
    adopt_lineage(ctx, history)


def _eligible(ctx: Any, rec: RequestRecord) -> bool:
    member = ctx.client.member_info(ctx.run_id, ctx.address)
    return bool(member.is_member and not member.banned and member.index < rec.request.member_snapshot)


def _vote(ctx: Any, history: RunHistory, rec: RequestRecord) -> None:
    me = to_checksum_address(ctx.address)
    if any(to_checksum_address(v.member) == me for v in rec.votes):
        ctx.state.set_unlearning_vote(rec.request_id, "on-chain")
        return
    if not _eligible(ctx, rec):
        return
    result = replay_unlearning(history, rec.request_id, FetcherReader(ctx), node_setup(ctx))

    cid = ctx.fetcher.keep(encode_state(result.state), "unlearned", ctx.run_id, None)
    ctx.remember(result.sha256, result.state)
    ctx.state.set_unlearning_vote(rec.request_id, f"intent:{result.sha256}:{cid}")
    ctx.log.event(
        "unlearning.replayed",
        run=ctx.run_id,
        request=rec.request_id,
        subject=rec.request.subject,
        base=result.base.describe(),
        rounds=[s.round for s in result.steps],
        sha=result.sha256,
        cid=cid,
    )
    try:
        tx = ctx.client.vote_unlearning(RequestId(rec.request_id), bytes.fromhex(result.sha256), cid)
        ctx.state.set_unlearning_vote(rec.request_id, bytes(tx.tx_hash).hex())
        ctx.log.event("unlearning.voted", run=ctx.run_id, request=rec.request_id, sha=result.sha256)
    except ContractRevertError as exc:  # voted already (e.g. before a restart) or fulfilled meanwhile
        ctx.state.set_unlearning_vote(rec.request_id, f"refused:{type(exc).__name__}")
        ctx.log.event(
            "unlearning.vote_refused", run=ctx.run_id, request=rec.request_id, why=type(exc).__name__
        )


def _apply(ctx: Any, history: RunHistory, rec: RequestRecord) -> None:
    if ctx.state.unlearning_applied(rec.request_id):
        return
    subject = to_checksum_address(rec.request.subject)
    unpinned = 0
    for round_rec in history.rounds:
        for sub in round_rec.submissions:
            if to_checksum_address(sub.member) != subject:
                continue
            try:
                ctx.store.unpin(sub.cid)
                ctx.state.set_pinned(sub.cid, False)
                unpinned += 1
            except Exception as exc:  # not held here, or the store refuses: nothing to keep
                log.debug("unpin %s: %s", sub.cid, exc)
    ctx.state.mark_unlearning_applied(rec.request_id)
    ctx.log.event(
        "unlearning.fulfilled",
        run=ctx.run_id,
        request=rec.request_id,
        subject=subject,
        sha=rec.request.result_sha256.hex(),
        cid=rec.result_cid,
        unpinned=unpinned,
    )


def adopt_lineage(ctx: Any, history: RunHistory) -> None:
    """Record the unlearned model as the start of the open round when the lineage rule says so.

    ``NodeContext.base_state(r)`` returns the latest adoption before ``r``; when the chain's lineage
    (:func:`node.protocol.history.base_of_round`) makes round ``r`` start from an unlearning result, that
    result is adopted (again, newest wins) as round ``r - 1``'s outcome.
    """
    r = int(history.info.current_round)
    ref = base_of_round(history, r)
    if ref.kind != "unlearning" or ref.sha256 is None or ref.cid is None or r == 0:
        return
    adoption = ctx.state.latest_adoption(ctx.run_id, before=r)
    if adoption is not None and adoption.sha == ref.sha256.hex():
        return
    ctx.state.adopt(ctx.run_id, r - 1, ref.sha256.hex(), ref.cid, f"unlearning:{ref.source}")
    ctx.log.event("unlearning.adopted", run=ctx.run_id, round=r, request=ref.source, sha=ref.sha256.hex())


# ---- used by the CLI -------------------------------------------------------------------------------------


def request_rows(client: Any, run: int | None = None) -> list[dict[str, Any]]:
    """Every unlearning request (of one run, or of all) as JSON-ready rows, with its vote tally."""
    rows: list[dict[str, Any]] = []
    for request_id in range(1, int(client.request_count()) + 1):
        req = client.unlearning_request(RequestId(request_id))
        if run is not None and int(req.run_id) != run:
            continue
        rows.append(
            {
                "request": request_id,
                "run": int(req.run_id),
                "subject": req.subject,
                "requester": req.requester,
                "from_round": int(req.from_round),
                "status": RequestStatus(req.status).name.lower(),
                "eligible": req.eligible,
                "quorum": req.quorum,
                "request_block": req.request_block,
                "fulfilled_block": req.fulfilled_block or None,
                "result_sha256": req.result_sha256.hex() if req.fulfilled_block else None,
            }
        )
    return rows


__all__ = ["RoundId", "adopt_lineage", "node_setup", "process_pending", "request_rows"]
