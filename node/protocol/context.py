"""The loop's context: what one node process uses to take part in one run.

The round loop (:mod:`node.protocol.round`) and the unlearning hook
(``node.unlearning.requests.process_pending(ctx)``) both work on a :class:`NodeContext`: the services fixed
for the process (chain client, p2p host, artifact retrieval, model runtime, state database, event log, home,
configuration) as its frozen fields, and what the loop learns between steps in its :class:`LoopState`
(``ctx.loop``). A step tells the loop what it did by its return value, a :class:`Step`. The context's helpers
load model states by CID with a hash check (:meth:`NodeContext.load_state`) and give the state a round starts
from (:meth:`NodeContext.base_state`).

The chain client, the p2p host, the model runtime and the training types are named for type checking only:
importing them pulls web3, libp2p or torch, and the node joins its run before it imports any of those.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.types import RunId
from node.confidential import ConfidentialError, merged_label, open_artifact
from node.config import NodeConfig
from node.console.eventlog import EventLog
from node.errors import RunMismatchError
from node.home import NodeHome
from node.protocol.retrieval import Fetcher, Want
from node.protocol.state import NodeState, round_s
from node.protocol.watch import ChainWatch
from node.runspec import RunSpec

if TYPE_CHECKING:
    from ledger.client import RunsClient
    from node.protocol.committee_round import RoundBook
    from node.protocol.model import LocalData, ModelRuntime
    from p2p.host import P2PNode
    from p2p.messages import CommitAnnouncement, CommitteeVoteAnnouncement, ProposalAnnouncement
    from p2p.storage.base import FileStore
    from training.data import Example
    from training.merge import ModelState

    CommitteeMessage = CommitAnnouncement | ProposalAnnouncement | CommitteeVoteAnnouncement


class Step(enum.Enum):
    """What one step of the round loop did (:func:`node.protocol.round.step`'s answer to the loop)."""

    WAITED = "waited"
    """Nothing owed could be done yet: the loop waits for news (gossip, a block that changes the round)."""
    ACTED = "acted"
    """It settled a round, submitted, voted or closed a failed round: the loop steps again at once."""
    DONE = "done"
    """The run's rounds are all finalised."""


@dataclass
class LoopState:
    """What the round loop learns and keeps between steps; reset by nothing but the process ending.

    Attributes
    ----------
    current_round
        The open round as last read from the chain.
    excluded
        Members whose updates this node leaves out of every merge (e.g. subjects of fulfilled unlearning
        requests; the unlearning hook adds to it).
    providers
        Peer ids that announced each CID on gossip.
    members
        Cached member addresses of the run (for gossip validation), refreshed by the loop.
    stop
        Set to ask the loop to stop after its current step.
    wake
        Set when something this node waits for may have happened (an update or vote announcement arrived on
        gossip): the loop stops waiting and steps at once.
    heartbeat
        The last heartbeat published on gossip: ``(round:phase, monotonic time)``.
    watched
        What the last step saw of the open round (round, status, submissions, phase); while waiting, the loop
        steps again as soon as a new block changes it.
    watch
        What the loop watches on the chain between steps (:mod:`node.protocol.watch`).
    eligible_round
        The round this member was last found eligible for (in its submit phase).
    trained_round
        The round whose update the model's adapter holds right after training (for scoring it).
    unpublished
        ``(cid, kind)`` of kept artifacts still to mirror to the IPFS daemon (a chore).
    prefetched
        ``(round, submissions)`` when this member last fetched the round's updates ahead of its vote.
    inbox
        Committee runs: gossip messages (commits, proposals, votes) received, checked by the next step.
    committee
        Committee runs: the open round's bookkeeping (:class:`node.protocol.committee_round.RoundBook`).
    """

    current_round: int = 0
    excluded: set[str] = field(default_factory=set)
    providers: dict[str, list[str]] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)
    heartbeat: tuple[str, float] = ("", 0.0)
    watched: tuple[int, int, int, str] | None = None
    watch: ChainWatch = field(default_factory=ChainWatch)
    eligible_round: int = -1
    trained_round: int | None = None
    unpublished: list[tuple[str, str]] = field(default_factory=list)
    prefetched: tuple[int, int] | None = None
    inbox: deque[CommitteeMessage] = field(default_factory=deque)
    committee: RoundBook | None = None


@dataclass(frozen=True)
class NodeContext:
    """One node's view of one run: the services it works with, fixed for the process, and the loop's state.

    Attributes
    ----------
    run_id
        The run's on-chain id (``str(run_id)`` names its gossip topic and is written in update headers).
    spec
        The run spec, fetched by CID from the chain's run record and hash-checked.
    client
        The chain client, signing as this member.
    address
        This member's checksummed address.
    fetcher
        Artifact retrieval (own store -> peers -> IPFS) that keeps and records what it gets; its ``store``
        is the node's own content store.
    p2p
        The p2p host (``None`` when running without peers).
    runtime
        The base model with the run's adapter; training and evaluation.
    data
        This node's local train / held-out examples.
    state
        The SQLite state database.
    log
        The structured event log.
    home, config
        The node home and its configuration.
    byzantine
        Testing only: ``(attack, strength)`` from ``training.attacks`` this member applies to its updates.
    eval_others
        Examples of the other members' distributions (``[training] eval_sources``), scored, never trained.
    view_key
        This member's private key, to open the envelopes of an ``artifacts = "members"`` run.
    committee_size
        The run's ``committeeSize`` on chain: 0 for an ordinary run, k for a committee run (docs/scale.md).
    loop
        What the round loop keeps between steps (:class:`LoopState`).
    """

    run_id: RunId
    spec: RunSpec
    client: RunsClient
    address: str
    fetcher: Fetcher
    p2p: P2PNode | None
    runtime: ModelRuntime
    data: LocalData
    state: NodeState
    log: EventLog
    home: NodeHome
    config: NodeConfig
    byzantine: tuple[str, float | None] | None = None
    eval_others: list[Example] = field(default_factory=list)
    view_key: bytes | None = field(default=None, repr=False)
    committee_size: int = 0
    loop: LoopState = field(default_factory=LoopState)
    _states: dict[str, ModelState] = field(default_factory=dict, repr=False)
    _bases: dict[int, tuple[str, str, int | None] | None] = field(default_factory=dict, repr=False)

    @property
    def run_key(self) -> str:
        """The run's id as written in update headers and gossip messages."""
        return str(self.run_id)

    @property
    def store(self) -> FileStore:
        """The node's own content store."""
        store: FileStore = self.fetcher.store  # retrieval keeps it untyped
        return store

    def providers_of(self, cid: str) -> list[str]:
        """Peers to ask for ``cid``: those that announced it, then every connected peer."""
        connected: list[str] = []
        if self.p2p is not None:
            try:
                connected = list(self.p2p.peers())
            except Exception:  # a stopped or failing host just has no peers to offer
                connected = []
        return list(dict.fromkeys([*self.loop.providers.get(cid, []), *connected]))

    def max_state_bytes(self) -> int:
        """Size cap for a model-state blob of this run."""
        return int(16 * self.runtime.flat_spec.numel + (1 << 22))

    def load_state(self, sha: str, cid: str, *, round: int | None = None) -> ModelState:
        """Fetch the model state ``cid`` (own store -> peers -> IPFS), decode it strictly, check its hash.

        Raises
        ------
        ArtifactUnavailableError
            If no source has it.
        RunMismatchError
            If it does not decode to this run's layout or its state hash is not ``sha``.
        """
        from training.merge import StateFormatError, decode_state, state_hash

        if sha in self._states:
            return self._states[sha]
        path, _ = self.fetcher.get_file(Want(cid, None, self.max_state_bytes(), "merged", self.run_id, round))
        data: bytes | Path = path  # decoded through a memory map, never read whole
        if self.spec.artifacts == "members":
            from p2p.envelope import is_envelope

            data = path.read_bytes()
            if is_envelope(data):  # integrity comes from the state hash below; the envelope is secrecy
                try:
                    label = None if round is None else merged_label(self.run_key, round)
                    data = open_artifact(data, self.view_key, label, what=f"model state {cid}")
                except ConfidentialError as exc:
                    raise RunMismatchError(str(exc)) from exc
        try:
            loaded = decode_state(data, flat_spec=self.runtime.flat_spec, merge_spec=self.spec.merge_spec())
        except StateFormatError as exc:
            raise RunMismatchError(f"model state {cid}: {exc}") from exc
        got = state_hash(loaded)
        if got != sha:
            raise RunMismatchError(f"model state {cid} hashes to {got[:12]}…, the chain says {sha[:12]}…")
        self.remember(sha, loaded)
        return loaded

    def score_held_out(self, round: int, which: str, started: float) -> float | None:
        """Score the model the runtime holds on the held-out split, record it as ``<which>_loss``, log it.

        ``which`` is ``"local"`` or ``"merged"``; ``started`` (a ``time.perf_counter()`` value) is when the
        scoring work began, so ``round.scored``'s ``seconds`` may include loading the model first. In a DPO
        run the loss is the held-out DPO loss and the event also carries ``<which>_reward_accuracy``.
        """
        if which not in ("local", "merged"):
            raise ValueError(f"`which` must be 'local' or 'merged', got {which!r}")
        scores = self.runtime.scores(self.data.held_out)
        loss = None if scores is None else scores["loss"]
        fields = {f"{which}_loss": loss}
        self.state.update_round(self.run_id, round, **fields)
        extra = {f"{which}_{k}": v for k, v in (scores or {}).items() if k != "loss"}
        wider = {f"merged_{k}": v for k, v in self.score_wider().items()} if which == "merged" else {}
        self.log.event(
            "round.scored",
            run=self.run_id,
            round=round,
            **fields,
            **extra,
            **wider,
            seconds=round_s(time.perf_counter() - started),
        )
        return loss

    def score_wider(self) -> dict[str, float | None]:
        """Token F1 on the held-out split, loss and F1 on :attr:`eval_others` (SFT runs; else nothing)."""
        if getattr(self.spec.train, "task", "sft") != "sft":
            return {}
        from node.protocol.scoring import EvalPlan, score_model

        plan = EvalPlan(answers=self.config.training.eval_answers)
        return score_model(
            self.runtime.model,
            self.runtime.tokenizer,
            self.data.held_out,
            self.eval_others,
            plan,
            max_len=self.spec.train.max_len,
            own_loss=False,
        )

    def remember(self, sha: str, state: ModelState) -> None:
        """Keep a state in memory by hash (the last few only)."""
        self._states[sha] = state
        while len(self._states) > 4:
            self._states.pop(next(iter(self._states)))

    def _bases_from_settled(self, round: int) -> None:
        """Fill the base of ``round`` from the settled rounds when no unlearning request exists at all.

        Without requests the lineage rule is "the last finalised round before ``round``", and settling has
        recorded every earlier round's outcome from the chain: one read (the request count) instead of the
        run's whole history.
        """
        if self.state.settled_rounds(self.run_id) < round or self.client.request_count() != 0:
            return
        finalized = [
            r
            for r in self.state.rounds(self.run_id)
            if r.round < round and r.status == "finalized" and r.final_sha and r.final_cid
        ]
        last = finalized[-1] if finalized else None
        self._bases[round] = None if last is None else (str(last.final_sha), str(last.final_cid), last.round)

    def base_state(self, round: int) -> tuple[ModelState, str]:
        """Return the state ``round`` starts from, by the chain's lineage rule, and its hash.

        The rule is :func:`node.protocol.history.base_of_round` (the last finalised round, or a fulfilled
        unlearning request that replaced it, else the run-seeded initial state) — the same rule the replay and
        the audit use. It is read from the chain, not from this node's own adoptions, so every honest peer
        trains and merges from the same base even when an unlearning result and a round result land close
        together. Once ``round`` has opened, everything the rule looks at is settled (earlier rounds are
        closed, the requests it counts were fulfilled before the round opened), so the answer is kept per
        round and the vote phase does not read the run's history again.
        """
        from node.protocol.history import base_of_round, read_history
        from training.merge import state_hash

        if round not in self._bases and round <= self.loop.current_round:
            self._bases_from_settled(round)
        if round in self._bases:
            known = self._bases[round]
        else:
            history = read_history(self.client, self.run_id)
            ref = base_of_round(history, round)
            known = None
            if ref.sha256 is not None and ref.cid is not None:
                known = (bytes(ref.sha256).hex(), ref.cid, ref.source if ref.kind == "round" else None)
            if round < len(history.rounds):  # the round has opened: its base can no longer change
                self._bases[round] = known
        if known is None:
            initial = self.runtime.initial_state()
            sha = state_hash(initial)
            self.remember(sha, initial)
            return initial, sha
        sha, cid, source_round = known
        return self.load_state(sha, cid, round=source_round), sha
