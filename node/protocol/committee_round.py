"""The open round of a committee run (``committeeSize = k > 0`` on chain): the node's side of docs/scale.md.

:func:`committee_step` replaces the submit and vote phases of :func:`node.protocol.round.step` in a committee
run. It draws the round's committee from the start block's hash, checks the messages that arrived since the
last step (``ctx.loop.inbox``: commits, proposals, votes; anything malformed, unsigned, from a non-eligible
or non-committee member or for another round is dropped with ``committee.dropped``), then does the one thing
this member owes the round. Only the committee uses these messages, so each goes to the
committee members directly (``P2PNode.send``, :func:`_send_committee`), by gossip only to a committee member
whose peer id this node does not know: a member's traffic does not grow with the run's size.

1. **Commit** (every eligible member): train, store and pin the update as in an ordinary run, sign its
   EIP-712 ``UpdateCommit``, record the commit in the state database, then send it to the committee. A
   recorded commit is sent again as is after a restart: a member never signs two commits for a round.
2. **Propose** (committee members, in leader order): once the submit window closed (or every eligible
   member's commit is in hand) the leader stores the manifest of the commits it holds and sends the
   proposal; fallback leader ``j`` proposes only after ``j * proposal_timeout_blocks`` blocks without a
   valid better-ranked proposal.
3. **Vote** (committee members, once): take the best-ranked valid proposal, fetch and check the manifest
   and every update it names, merge exactly as an ordinary round does, store the merged state, sign the
   ``CommitteeVote`` and send the signature (recorded before it leaves).
4. **Finalise** (committee members holding a quorum of equal signatures): the proposer sends
   ``finalizeCommitteeRound`` first; each other committee member waits ``finalize_grace_blocks`` more per
   member ahead of it.

Members outside the committee only commit, and wait: they never fetch updates. Settling the finalised
round (:func:`node.protocol.round.settle_closed_rounds`) fetches its merged state by CID, hash-checked.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from eth_utils.address import to_checksum_address

from ledger.committee import bitmap, bitmap_indices, committee_seed, quorum
from ledger.errors import ContractRevertError
from ledger.types import CommitteeResult, RoundId, included_set_hash
from node.errors import ArtifactUnavailableError
from node.protocol.committee import (
    MAX_MANIFEST_BYTES,
    Commit,
    CommitteeError,
    Eligibility,
    Manifest,
    Proposal,
    SignedVote,
    VoteBook,
    best_proposal,
    bitmap_from_hex,
    bitmap_to_hex,
    build_manifest,
    check_commit,
    check_vote,
    finalizer_due,
    finalizer_order,
    leader_order,
    proposal_opens,
    proposer_due,
    sign_commit,
    sign_vote,
)
from node.protocol.context import NodeContext
from node.protocol.gossip import publish
from node.protocol.privacy import member_refusal
from node.protocol.retrieval import Want
from node.protocol.state import round_s
from node.protocol.submit import train_and_store
from node.protocol.vote import record_merge
from node.protocol.waiting import wait
from p2p.messages import CommitAnnouncement, CommitteeVoteAnnouncement, ProposalAnnouncement
from p2p.storage.base import Cid

REGOSSIP_S = 4.0
"""Seconds between re-publications of this member's own commit, proposal and vote (a send may fail).

They stop as soon as they are no longer needed: the commit once a proposal is seen (or every committee
member accepted it), the proposal and the vote once this member sees a quorum of equal votes."""
DIRECT_TRIES = 3
"""Re-sends of the commit to a committee member that did not accept it before it is gossiped instead."""
DIRECT_TIMEOUT_S = 5.0
"""Seconds one direct send of the commit to one committee member may take."""


@dataclass
class RoundBook:
    """What one node knows of one open committee round (memory; the durable parts are in the state DB)."""

    round: int
    committee: list[int] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    members: list[str] = field(default_factory=list)
    snapshot: int = 0
    own_index: int | None = None
    eligible: bool = False
    commits: dict[int, Commit] = field(default_factory=dict)
    ready_block: int | None = None
    proposals: dict[tuple[int, str], Proposal] = field(default_factory=dict)
    refused: set[tuple[int, str]] = field(default_factory=set)
    votes: VoteBook = field(default_factory=VoteBook)
    needed: int = 1
    quorum_block: int | None = None
    finalize_sent: int | None = None
    last_gossip: float = 0.0
    manifests: dict[str, Manifest] = field(default_factory=dict)
    stale: set[tuple[str, str, int]] = field(default_factory=set)
    delivered: set[int] = field(default_factory=set)
    direct_tries: int = 0

    @property
    def in_committee(self) -> bool:
        """Whether this member is in the round's committee."""
        return self.own_index is not None and self.own_index in self.committee

    def rank_of(self, index: int) -> int | None:
        """Leader rank of committee member ``index`` (``None``: not in the committee)."""
        return self.order.index(index) if index in self.order else None


def _registry(ctx: NodeContext) -> str:
    return to_checksum_address(ctx.client.address)


def committee_step(ctx: NodeContext, info: Any, head: int) -> bool:
    """Do what this member owes the open committee round ``info`` at block ``head``; ``True`` if it acted."""
    rnd = int(info.round)
    book = _book(ctx, info)
    if book is None:
        wait(ctx, rnd, f"committee: waiting for block {info.start_block}, whose hash draws the committee")
        return False
    _drain_inbox(ctx, book)
    if book.eligible and _commit(ctx, info, book):
        return True
    _regossip(ctx, book)
    if not book.in_committee:
        owed = [i for i in book.committee if i != book.own_index and i not in book.delivered]
        ctx.loop.watch.idle = not book.eligible or not owed  # until the chain or gossip changes (node watch)
        why = "not eligible this round; " if not book.eligible else ""
        wait(ctx, rnd, f"{why}outside the committee ({len(book.committee)} members); waiting for its result")
        return False
    if len(book.commits) >= int(info.eligible) and book.ready_block is None:
        book.ready_block = head
    for action in (_propose, _vote, _finalize):
        if action(ctx, info, head, book):
            return True
    wait(ctx, rnd, _why(ctx, info, book))
    return False


def _why(ctx: NodeContext, info: Any, book: RoundBook) -> str:
    if _own_vote(ctx, book.round) is None:
        if not any(p not in book.refused for p in book.proposals):
            return f"committee: waiting for the leader's proposal ({len(book.commits)} commits in hand)"
        return "committee: merging the proposal"
    if book.votes.quorum(book.needed) is None:
        return f"committee: waiting for votes ({len(book.votes)} in, {book.needed} equal needed)"
    return "committee: quorum reached; waiting for the finalisation"


# ---- drawing the committee -------------------------------------------------------------------------------


def _book(ctx: NodeContext, info: Any) -> RoundBook | None:
    """Return the open round's bookkeeping, drawing its committee once the start block's hash is known."""
    rnd = int(info.round)
    book: RoundBook | None = ctx.loop.committee
    if book is not None and book.round == rnd:
        return book

    block_hash = ctx.client.block_hash(int(info.start_block))
    if block_hash is None:
        return None
    try:  # the contract reads blockhash(startBlock), which a block sees only from the next block on
        committee = sorted(int(i) for i in ctx.client.committee_of(ctx.run_id, RoundId(rnd)))
    except ContractRevertError:
        return None
    info = ctx.client.round_info(ctx.run_id, RoundId(rnd))  # the snapshot as of now, after the start block
    seed = committee_seed(block_hash, ctx.run_id, rnd)
    members = list(ctx.client.members(ctx.run_id))
    me = ctx.client.member_info(ctx.run_id, ctx.address)
    book = RoundBook(
        round=rnd,
        committee=committee,
        order=leader_order(seed, committee),
        members=members,
        snapshot=int(info.member_snapshot),
        own_index=int(me.index) if me.is_member else None,
    )
    book.needed = quorum(ctx.committee_size, book.snapshot, int(ctx.client.run_info(ctx.run_id).quorum_bps))
    book.eligible = bool(me.is_member and not me.banned and me.index < book.snapshot)
    saved = ctx.state.committee_record(ctx.run_id, rnd, "commits")
    for doc in json.loads(saved or "[]"):  # commits checked before they were kept
        commit = Commit.from_json(doc)
        book.commits[commit.index] = commit
    vote = _own_vote(ctx, rnd)
    if vote is not None:
        book.votes.add(vote)
    proposal = ctx.state.committee_record(ctx.run_id, rnd, "proposal")
    if proposal:
        p = Proposal(**json.loads(proposal))
        book.proposals[(p.rank, p.manifest_cid)] = p
    ctx.loop.committee = book
    ctx.log.event(
        "committee.drawn",
        run=ctx.run_id,
        round=rnd,
        committee=committee,
        leaders=book.order,
        ours=book.in_committee,
        index=book.own_index,
        block_hash=block_hash.hex(),
    )
    return book


def _eligibility(ctx: NodeContext, book: RoundBook) -> Eligibility:
    """Who may commit in the round: members below the snapshot, minus banned and excluded members."""
    logs = ctx.client.logs("UnlearningRequested", {"runId": ctx.run_id}, 0)
    banned = {str(e["args"]["subject"]).lower() for e in logs} | {m.lower() for m in ctx.loop.excluded}
    return Eligibility(tuple(book.members), book.snapshot, frozenset(banned))


# ---- gossip in -------------------------------------------------------------------------------------------


def _drain_inbox(ctx: NodeContext, book: RoundBook) -> None:
    """Check every committee message received since the last step; keep the valid ones of this round."""
    later: list[Any] = []
    eligibility = None
    while ctx.loop.inbox:
        message = ctx.loop.inbox.popleft()
        if message.round > book.round:
            later.append(message)  # the chain has not shown this node the next round yet
            continue
        stale = (message.type, message.sender, message.round)
        if message.round < book.round and stale in book.stale:
            continue  # an earlier round's re-publication: logged once per sender and kind
        try:
            if message.round != book.round:
                book.stale.add(stale)
                raise CommitteeError(
                    f"{message.type} of round {message.round}, the open round is {book.round}"
                )
            if message.type == "commit":
                if not book.in_committee:
                    continue  # only the committee uses commits: outside it they are not even checked
                eligibility = eligibility or _eligibility(ctx, book)
                _take_commit(ctx, book, message, eligibility)
            elif message.type == "proposal":
                _take_proposal(ctx, book, message)
            elif message.type == "committee_vote":
                _take_vote(ctx, book, message)
        except CommitteeError as exc:
            ctx.log.event(
                "committee.dropped",
                run=ctx.run_id,
                round=book.round,
                type=message.type,
                sender=message.sender,
                why=str(exc)[:300],
            )
    ctx.loop.inbox.extend(later)


def _take_commit(ctx: NodeContext, book: RoundBook, message: Any, eligibility: Eligibility) -> None:
    if message.index in book.commits:
        return
    commit = Commit(
        message.index,
        to_checksum_address(message.sender),
        message.sha256,
        message.cid,
        message.num_samples,
        message.signature,
    )
    registry = _registry(ctx)
    check_commit(
        commit, eligibility, chain_id=ctx.client.chain_id, registry=registry, run=ctx.run_id, round=book.round
    )
    book.commits[commit.index] = commit
    peers = ctx.loop.providers.setdefault(commit.cid, [])
    peers.extend(p for p in message.providers if p not in peers)
    ctx.state.set_committee_record(
        ctx.run_id, book.round, "commits", json.dumps([c.to_json() for c in book.commits.values()])
    )


def _take_proposal(ctx: NodeContext, book: RoundBook, message: Any) -> None:
    """Keep a leader's proposal; the peers it names (the leader) are asked first for its manifest."""
    sender = message.sender.lower()
    rank = message.rank
    if rank >= len(book.order) or book.members[book.order[rank]].lower() != sender:
        raise CommitteeError(f"proposal of leader rank {rank} from {message.sender}, who is not that leader")
    book.proposals.setdefault(
        (rank, message.manifest_cid),
        Proposal(rank, book.order[rank], message.manifest_cid, message.manifest_sha256),
    )
    _ask_first(ctx, message.manifest_cid, list(message.providers))


def _take_vote(ctx: NodeContext, book: RoundBook, message: Any) -> None:
    if message.index >= len(book.members) or book.members[message.index].lower() != message.sender.lower():
        raise CommitteeError(f"vote of index {message.index} sent by {message.sender}, not that member")
    result = CommitteeResult(
        run_id=ctx.run_id,
        round=message.round,
        merged_sha256=bytes.fromhex(message.merged_sha256),
        merged_cid=message.merged_cid,
        included_set_hash=bytes.fromhex(message.included_set_hash),
        manifest_cid=message.manifest_cid,
        included_bitmap=bitmap_from_hex(message.included_bitmap),
    )
    vote = SignedVote(message.index, result, bytes.fromhex(message.signature))
    check_vote(
        vote,
        committee=book.committee,
        members=book.members,
        chain_id=ctx.client.chain_id,
        registry=_registry(ctx),
        run=ctx.run_id,
        round=book.round,
    )
    book.votes.add(vote)


# ---- gossip out ------------------------------------------------------------------------------------------


def _providers(ctx: NodeContext) -> tuple[str, ...]:
    return (ctx.p2p.peer_id,) if ctx.p2p is not None else ()


def _own_commit(ctx: NodeContext, rnd: int) -> Commit | None:
    saved = ctx.state.committee_record(ctx.run_id, rnd, "commit")
    return Commit.from_json(json.loads(saved)) if saved else None


def _own_vote(ctx: NodeContext, rnd: int) -> SignedVote | None:
    saved = ctx.state.committee_record(ctx.run_id, rnd, "vote")
    if not saved:
        return None
    doc = json.loads(saved)
    result = CommitteeResult(
        run_id=doc["run"],
        round=doc["round"],
        merged_sha256=bytes.fromhex(doc["merged_sha256"]),
        merged_cid=doc["merged_cid"],
        included_set_hash=bytes.fromhex(doc["included_set_hash"]),
        manifest_cid=doc["manifest_cid"],
        included_bitmap=[int(w) for w in doc["included_bitmap"]],
    )
    return SignedVote(int(doc["index"]), result, bytes.fromhex(doc["signature"]))


def _commit_message(ctx: NodeContext, rnd: int, commit: Commit) -> CommitAnnouncement:
    size = ctx.state.round(ctx.run_id, rnd).update_size or 0
    return CommitAnnouncement(
        run=ctx.run_key,
        round=rnd,
        sender=ctx.address,
        index=commit.index,
        sha256=commit.sha256,
        cid=commit.cid,
        num_samples=commit.num_samples,
        size=size,
        signature=commit.signature,
        providers=_providers(ctx),
    )


def _proposal_message(ctx: NodeContext, rnd: int, proposal: Proposal, commits: int) -> ProposalAnnouncement:
    return ProposalAnnouncement(
        run=ctx.run_key,
        round=rnd,
        sender=ctx.address,
        rank=proposal.rank,
        manifest_cid=proposal.manifest_cid,
        manifest_sha256=proposal.manifest_sha256,
        commits=commits,
        providers=_providers(ctx),
    )


def _vote_message(ctx: NodeContext, vote: SignedVote) -> CommitteeVoteAnnouncement:
    r = vote.result
    return CommitteeVoteAnnouncement(
        run=ctx.run_key,
        round=r.round,
        sender=ctx.address,
        index=vote.index,
        merged_sha256=r.merged_sha256.hex(),
        merged_cid=r.merged_cid,
        included_set_hash=r.included_set_hash.hex(),
        manifest_cid=r.manifest_cid,
        included_bitmap=bitmap_to_hex(r.included_bitmap),
        signature=vote.signature.hex(),
    )


def _regossip(ctx: NodeContext, book: RoundBook) -> None:
    """Publish this member's own commit, proposal and vote of the open round again, every few seconds."""
    if time.monotonic() - book.last_gossip < REGOSSIP_S:
        return
    book.last_gossip = time.monotonic()
    commit = _own_commit(ctx, book.round)
    proposed = any(key not in book.refused for key in book.proposals)
    if commit is not None and not proposed:  # once a leader proposed, the commit is in or out for good
        _send_commit(ctx, book, commit)
    if book.votes.quorum(book.needed) is not None:
        return  # a quorum is out: the finaliser has it or gets it from those who hold it
    own = [p for p in book.proposals.values() if p.proposer == book.own_index]
    for proposal in own:
        _send_committee(ctx, book, _proposal_message(ctx, book.round, proposal, len(book.commits)))
    vote = _own_vote(ctx, book.round)
    if vote is not None:
        _send_committee(ctx, book, _vote_message(ctx, vote))


# ---- 1. commit -------------------------------------------------------------------------------------------


def _commit(ctx: NodeContext, info: Any, book: RoundBook) -> bool:
    """Train, store, sign and send this member's commit once; ``True`` if it did so now."""
    rnd = book.round
    if _own_commit(ctx, rnd) is not None or book.own_index is None:
        return False
    if ctx.spec.privacy is not None:
        member = ctx.client.member_info(ctx.run_id, ctx.address)
        refused = member_refusal(ctx, rnd, member)
        if refused is not None:
            wait(ctx, rnd, refused)
            return False
    record = ctx.state.round(ctx.run_id, rnd)
    if record.update_cid is None or not ctx.store.has(Cid(record.update_cid)):
        record = train_and_store(ctx, rnd)
    if record.update_sha is None or record.update_cid is None or record.num_samples is None:
        return False
    commit = sign_commit(
        _key_bytes(ctx),
        chain_id=ctx.client.chain_id,
        registry=_registry(ctx),
        run=ctx.run_id,
        round=rnd,
        index=book.own_index,
        sha256=record.update_sha,
        cid=record.update_cid,
        num_samples=record.num_samples,
    )
    # durable before it leaves
    ctx.state.set_committee_record(ctx.run_id, rnd, "commit", json.dumps(commit.to_json()))
    ctx.state.update_round(ctx.run_id, rnd, submit_tx="signed")
    book.commits.setdefault(commit.index, commit)
    ctx.log.event(
        "committee.committed",
        run=ctx.run_id,
        round=rnd,
        index=commit.index,
        sha=commit.sha256,
        cid=commit.cid,
    )
    _send_commit(ctx, book, commit)
    book.last_gossip = time.monotonic()
    return True


def _send_commit(ctx: NodeContext, book: RoundBook, commit: Commit) -> None:
    """Send this member's commit to the committee members that have not accepted it yet.

    A committee member that did not accept it in :data:`DIRECT_TRIES` tries gets it by gossip instead
    (everyone does then); see :func:`_send_committee`.
    """
    if ctx.p2p is None:
        return
    message = _commit_message(ctx, book.round, commit)
    wanted = [i for i in book.committee if i != book.own_index and i not in book.delivered]
    if not wanted:
        return
    book.direct_tries += 1
    if book.direct_tries > DIRECT_TRIES:
        publish(ctx, message)
        return
    book.delivered |= _send_committee(ctx, book, message, wanted, attempt=book.direct_tries)


def _send_committee(
    ctx: NodeContext,
    book: RoundBook,
    message: CommitAnnouncement | ProposalAnnouncement | CommitteeVoteAnnouncement,
    wanted: list[int] | None = None,
    attempt: int = 1,
) -> set[int]:
    """Send a commit, proposal or vote to committee members (``wanted``: all but this one); who accepted it.

    Only the committee uses these messages (members outside it adopt the result from the chain), so they
    go to its members directly (``P2PNode.send``), not by gossip to every member: a member's traffic then
    does not grow with the run's size. A committee member whose peer id this node does not know gets the
    message by gossip (everyone does then); one that did not accept it gets it again at the next
    re-publication (:data:`REGOSSIP_S`). Logged as ``committee.sent``.
    """
    if ctx.p2p is None:
        return set()
    if wanted is None:
        wanted = [i for i in book.committee if i != book.own_index]
    if not wanted:
        return set()
    known = ctx.p2p.peer_ids()
    peers = {known[a]: i for i in wanted if (a := to_checksum_address(book.members[i])) in known}
    unknown = [i for i in wanted if i not in peers.values()]
    try:
        results = ctx.p2p.send(message, list(peers), timeout_s=DIRECT_TIMEOUT_S) if peers else {}
    except Exception as exc:  # the p2p node stopped or timed out: the next re-send tries again
        results = {peer: str(exc)[:200] for peer in peers}
    accepted = {peers[peer] for peer, why in results.items() if why is None}
    ctx.log.event(
        "committee.sent",
        run=ctx.run_id,
        round=book.round,
        type=message.type,
        accepted=sorted(accepted),
        failed={str(peers[peer]): why for peer, why in results.items() if why is not None},
        unknown=unknown,
        attempt=attempt,
    )
    if unknown:
        publish(ctx, message)  # no way to reach them directly: gossip reaches them through others
    return accepted


def _key_bytes(ctx: NodeContext) -> bytes:
    if ctx.view_key is None:
        raise CommitteeError("this node has no signing key for committee messages")
    return ctx.view_key


# ---- 2. propose ------------------------------------------------------------------------------------------


def _propose(ctx: NodeContext, info: Any, head: int, book: RoundBook) -> bool:
    """Publish this leader's manifest when its turn came and no better-ranked valid proposal exists."""
    rnd = book.round
    rank = book.rank_of(book.own_index) if book.own_index is not None else None
    if rank is None or ctx.state.committee_record(ctx.run_id, rnd, "proposal"):
        return False
    if any(p.rank < rank for key, p in book.proposals.items() if key not in book.refused):
        return False
    opens = proposal_opens(int(info.submit_end), book.ready_block if rank == 0 else None)
    if not proposer_due(rank, opens, head, ctx.config.chain.proposal_timeout_blocks):
        return False
    eligibility = _eligibility(ctx, book)
    held = [c for c in book.commits.values() if eligibility.member(c.index) is not None]
    if len(held) < max(1, int(ctx.spec.chain.min_updates)):
        return False
    manifest = build_manifest(
        held, run=ctx.run_id, round=rnd, registry=_registry(ctx), chain_id=ctx.client.chain_id
    )
    data = manifest.canonical_bytes()
    cid = ctx.fetcher.keep(data, "manifest", ctx.run_id, rnd)
    proposal = Proposal(rank, int(book.own_index or 0), cid, hashlib.sha256(data).hexdigest())
    # durable before it leaves
    ctx.state.set_committee_record(ctx.run_id, rnd, "proposal", json.dumps(proposal.__dict__))
    book.proposals[(rank, cid)] = proposal
    book.manifests[cid] = manifest
    ctx.log.event(
        "committee.proposed",
        run=ctx.run_id,
        round=rnd,
        rank=rank,
        manifest=cid,
        commits=len(manifest.commits),
        indices=manifest.indices,
    )
    _send_committee(ctx, book, _proposal_message(ctx, rnd, proposal, len(manifest.commits)))
    return True


# ---- 3. vote ---------------------------------------------------------------------------------------------


def _manifest_of(ctx: NodeContext, book: RoundBook, proposal: Proposal) -> Manifest:
    """Fetch, parse and verify a proposal's manifest (raises :class:`CommitteeError` if it is bad)."""
    if proposal.manifest_cid in book.manifests:
        return book.manifests[proposal.manifest_cid]
    want = Want(
        proposal.manifest_cid,
        proposal.manifest_sha256,
        MAX_MANIFEST_BYTES,
        "manifest",
        ctx.run_id,
        book.round,
    )
    data, _ = ctx.fetcher.get(want)
    manifest = Manifest.from_bytes(data)
    manifest.check_for(
        run=ctx.run_id, round=book.round, registry=_registry(ctx), chain_id=ctx.client.chain_id
    )
    manifest.verify(_eligibility(ctx, book))
    book.manifests[proposal.manifest_cid] = manifest
    return manifest


def _vote(ctx: NodeContext, info: Any, head: int, book: RoundBook) -> bool:
    """Merge the best valid proposal's manifest, sign the result and send the vote, once per round."""
    rnd = book.round
    if _own_vote(ctx, rnd) is not None or ctx.state.merge_failure(ctx.run_id, rnd) is not None:
        return False
    candidates = [p for key, p in book.proposals.items() if key not in book.refused]
    proposal = best_proposal(candidates)
    if proposal is None:
        return False
    try:
        manifest = _manifest_of(ctx, book, proposal)
    except CommitteeError as exc:
        book.refused.add((proposal.rank, proposal.manifest_cid))
        ctx.log.event(
            "committee.proposal_refused",
            run=ctx.run_id,
            round=rnd,
            rank=proposal.rank,
            manifest=proposal.manifest_cid,
            why=str(exc)[:300],
        )
        return True
    except ArtifactUnavailableError as exc:
        ctx.log.event("committee.manifest_unavailable", run=ctx.run_id, round=rnd, why=str(exc)[:300])
        return False
    result = _merge(ctx, info, book, manifest, proposal)
    if result is None:
        return False
    vote = sign_vote(
        _key_bytes(ctx),
        int(book.own_index or 0),
        result,
        chain_id=ctx.client.chain_id,
        registry=_registry(ctx),
    )
    doc = {
        "index": vote.index,
        "run": result.run_id,
        "round": result.round,
        "merged_sha256": result.merged_sha256.hex(),
        "merged_cid": result.merged_cid,
        "included_set_hash": result.included_set_hash.hex(),
        "manifest_cid": result.manifest_cid,
        "included_bitmap": [str(w) for w in result.included_bitmap],
        "signature": vote.signature.hex(),
    }
    # one vote per round, durable before it leaves
    ctx.state.set_committee_record(ctx.run_id, rnd, "vote", json.dumps(doc))
    book.votes.add(vote)
    ctx.log.event(
        "committee.voted",
        run=ctx.run_id,
        round=rnd,
        sha=result.merged_sha256.hex(),
        cid=result.merged_cid,
        manifest=result.manifest_cid,
        rank=proposal.rank,
        included=len(_indices(result.included_bitmap)),
    )
    _send_committee(ctx, book, _vote_message(ctx, vote))
    return True


def _indices(words: list[int]) -> list[int]:
    return bitmap_indices(words)


def _merge(ctx: NodeContext, info: Any, book: RoundBook, manifest: Manifest, proposal: Proposal) -> Any:
    """Fetch the manifest's updates and merge them as an ordinary round does; the result to sign."""
    from training.codec import default_max_bytes
    from training.merge import MergeError, UpdateInput, encode_state_file, merge, state_hash

    rnd = book.round
    cap = default_max_bytes(ctx.runtime.flat_spec)
    wants = [Want(c.cid, c.sha256, cap, "update", ctx.run_id, rnd) for c in manifest.commits]
    base, base_sha = ctx.base_state(rnd)
    started = time.perf_counter()
    got = ctx.fetcher.get_files(wants, raise_errors=False)  # files: decoded through a memory map
    fetch_s = time.perf_counter() - started
    ctx.state.add_timing(ctx.run_id, rnd, "transfer", fetch_s)
    updates, unavailable = [], {}
    for c in manifest.commits:
        value = got.get(c.cid)
        if isinstance(value, tuple):
            updates.append(UpdateInput(c.member, value[0], int(c.num_samples)))
        else:
            unavailable[c.member] = f"unavailable: {value}"
    ctx.log.event("round.fetched", run=ctx.run_id, round=rnd, updates=len(updates), seconds=round_s(fetch_s))
    started = time.perf_counter()
    try:
        outcome = merge(
            base, updates, ctx.spec.merge_spec(), run=ctx.run_key, round=rnd, eligible=int(info.eligible)
        )
    except MergeError as exc:
        if not unavailable:
            ctx.state.mark_merge_failed(ctx.run_id, rnd, str(exc))
        ctx.log.event("round.merge_failed", run=ctx.run_id, round=rnd, why=str(exc))
        return None
    data = ctx.fetcher.scratch / f"merged-{ctx.run_id}-{rnd}.safetensors"
    encode_state_file(outcome.state, data)  # moved into the own store by record_merge
    sha = state_hash(outcome.state)
    merge_s = time.perf_counter() - started
    by_member = {c.member: c for c in manifest.commits}
    chosen = [by_member[m] for m in outcome.included]
    included = [[c.member, c.sha256] for c in chosen]
    rejected = {**unavailable, **dict(outcome.rejected)}
    record = record_merge(ctx, rnd, data, sha, outcome.state, base_sha, included, rejected, merge_s)
    cid = str(record.merged_cid)
    return CommitteeResult(
        run_id=ctx.run_id,
        round=rnd,
        merged_sha256=bytes.fromhex(sha),
        merged_cid=cid,
        included_set_hash=included_set_hash([(c.member, bytes.fromhex(c.sha256)) for c in chosen]),
        manifest_cid=proposal.manifest_cid,
        included_bitmap=bitmap(sorted(c.index for c in chosen)),
    )


# ---- 4. finalise -----------------------------------------------------------------------------------------


def _finalize(ctx: NodeContext, info: Any, head: int, book: RoundBook) -> bool:
    """Send ``finalizeCommitteeRound`` with a quorum of equal signatures when it is this member's turn."""
    rnd = book.round
    needed = book.needed
    got = book.votes.quorum(needed)
    if got is None:
        return False
    result, signers, signatures = got
    signers, signatures = signers[:needed], signatures[:needed]  # each signature beyond quorum costs ~9k gas
    if book.quorum_block is None:
        book.quorum_block = head
        ctx.log.event("committee.quorum", run=ctx.run_id, round=rnd, votes=len(signers), needed=needed)
    proposer = next(
        (p.proposer for p in book.proposals.values() if p.manifest_cid == result.manifest_cid), None
    )
    order = finalizer_order(book.order, proposer)
    position = order.index(int(book.own_index or 0))
    if not finalizer_due(position, book.quorum_block, head, ctx.config.chain.finalize_grace_blocks):
        return False
    grace = max(1, ctx.config.chain.finalize_grace_blocks)
    if book.finalize_sent is not None and head < book.finalize_sent + grace:
        return False  # sent recently: wait for it to be mined and seen
    book.finalize_sent = head
    started = time.perf_counter()
    try:
        tx = ctx.client.finalize_committee_round(result, signers, signatures)
    except ContractRevertError as exc:  # another member's finalisation came first, or the window closed
        ctx.log.event("committee.finalize_refused", run=ctx.run_id, round=rnd, why=str(exc)[:300])
        return False
    ctx.state.add_timing(ctx.run_id, rnd, "chain", time.perf_counter() - started)
    ctx.state.update_round(ctx.run_id, rnd, vote_tx=bytes(tx.tx_hash).hex())
    ctx.log.event(
        "committee.finalized",
        run=ctx.run_id,
        round=rnd,
        sha=result.merged_sha256.hex(),
        cid=result.merged_cid,
        signers=signers,
        position=position,
        tx=bytes(tx.tx_hash).hex(),
        gas=int(getattr(tx, "gas_used", 0)),
    )
    return True


# ---- after the round -------------------------------------------------------------------------------------


def holders_first(
    signers: list[int], committee: list[int], members: list[str], known: dict[str, str]
) -> list[str]:
    """Peer ids holding a finalised committee round's merged state: its signers, then its other members.

    ``signers`` and ``committee`` are member indices (the ``CommitteeFinalized`` event's signers; the
    round's committee, empty when unknown), ``members`` the run's members in index order, ``known`` the
    peer id of each connected member by checksummed address (``P2PNode.peer_ids``). Every signer stored the
    merged state before it signed; a committee member that did not sign may hold it too (the finalisation
    carries only a quorum of signatures). Members without a known peer id are left out.
    """
    peers: list[str] = []
    for index in dict.fromkeys([*signers, *committee]):
        if 0 <= index < len(members):
            peer = known.get(to_checksum_address(members[index]))
            if peer is not None and peer not in peers:
                peers.append(peer)
    return peers


def _ask_first(ctx: NodeContext, cid: str, peers: list[str]) -> None:
    """Put ``peers`` ahead of everyone else that ``ctx.providers_of(cid)`` names for ``cid``."""
    if peers:
        ctx.loop.providers[cid] = list(dict.fromkeys([*peers, *ctx.loop.providers.get(cid, [])]))


def _known_peers(ctx: NodeContext) -> dict[str, str]:
    if ctx.p2p is None:
        return {}
    try:
        return dict(ctx.p2p.peer_ids())
    except Exception:  # a stopped or failing host knows no one: the fetcher asks whom it can
        return {}


def adopt(ctx: NodeContext, rnd: int, sha: str, cid: str) -> None:
    """Fetch a finalised committee round's merged state by CID (hash-checked), then run the spot checks.

    A member outside the committee computed nothing for the round; it takes the committee's result, as a
    member whose vote lost does in an ordinary run. No one announces the merged state to it (the votes go
    to the committee only), so it asks the members that signed the finalisation first, then the rest of the
    round's committee (:func:`holders_first`), before the other peers and IPFS. A failure is logged: the
    next round's training loads the state again (and retries the fetch).
    """
    try:
        event = ctx.client.committee_finalized(ctx.run_id, RoundId(rnd))
    except Exception:  # the chain read failed: the fetch still asks every peer (and logs if none has it)
        event = None
    book: RoundBook | None = ctx.loop.committee
    members = list(book.members) if book is not None else []
    committee = list(book.committee) if book is not None and book.round == rnd else []
    signers = list(event.signers) if event is not None else []
    if any(i >= len(members) for i in [*signers, *committee]):
        members = list(ctx.client.members(ctx.run_id))
    _ask_first(ctx, cid, holders_first(signers, committee, members, _known_peers(ctx)))
    try:
        ctx.load_state(sha, cid, round=rnd)
    except Exception as exc:  # unavailable now: the next round's base loads it again
        ctx.log.event("round.adopt_failed", run=ctx.run_id, round=rnd, cid=cid, why=str(exc)[:300])
        return
    ctx.log.event("round.adopted", run=ctx.run_id, round=rnd, sha=sha, cid=cid, committee=True)
    if ctx.config.chain.spot_checks > 0 and event is not None:
        spot_check(ctx, rnd, event, members)


def spot_check(ctx: NodeContext, rnd: int, event: Any = None, members: list[str] | None = None) -> None:
    """Fetch ``spot_checks`` random included updates of a finalised round; check them against the manifest.

    ``event``: the round's ``CommitteeFinalized`` event (read from the chain when ``None``); ``members``:
    the run's members in index order. Each update is asked of its committer first, then of the signers.
    """
    from training.codec import default_max_bytes

    if event is None:
        event = ctx.client.committee_finalized(ctx.run_id, RoundId(rnd))
    if event is None:
        return
    try:
        known = _known_peers(ctx)
        members = members if members is not None else list(ctx.client.members(ctx.run_id))
        signers = holders_first(list(event.signers), [], members, known)
        _ask_first(ctx, event.manifest_cid, signers)
        data, _ = ctx.fetcher.get(
            Want(event.manifest_cid, None, MAX_MANIFEST_BYTES, "manifest", ctx.run_id, rnd)
        )
        manifest = Manifest.from_bytes(data)
        by_index = {c.index: c for c in manifest.commits}
        included = [by_index[i] for i in bitmap_indices(event.included_bitmap) if i in by_index]
        picks = random.SystemRandom().sample(included, min(len(included), ctx.config.chain.spot_checks))
        for c in picks:
            committer = known.get(to_checksum_address(c.member))
            _ask_first(ctx, c.cid, [*([committer] if committer else []), *signers])
        cap = default_max_bytes(ctx.runtime.flat_spec)
        got = ctx.fetcher.get_files(
            [Want(c.cid, c.sha256, cap, "update", ctx.run_id, rnd) for c in picks], raise_errors=False
        )
    except Exception as exc:
        ctx.log.event("round.spot_check_failed", run=ctx.run_id, round=rnd, why=str(exc)[:300])
        return
    bad = {c.member: str(got[c.cid])[:200] for c in picks if not isinstance(got.get(c.cid), tuple)}
    if bad:
        ctx.log.event("round.spot_check_failed", run=ctx.run_id, round=rnd, failed=bad)
    else:
        ctx.log.event("round.spot_checked", run=ctx.run_id, round=rnd, updates=len(picks))
