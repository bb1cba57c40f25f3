"""Event records and the listener interface: what the event log emits and what every view consumes.

An event record is a plain dict: ``ts`` (unix seconds), ``event`` (a dotted name such as
``round.submitted``) and the event's own fields (``run``, ``round``, hashes, CIDs, seconds, counts), all
JSON-ready. :class:`node.console.eventlog.EventLog` writes each record and then hands it to its
listeners; the views (:mod:`node.console.view`, :mod:`node.console.progress`) depend on this module only,
never on the log, so the log can start a view without an import cycle.

:data:`EVENTS` is the catalogue of every event name the node emits, with its meaning;
``tests/unit/node/console/test_events.py`` checks that every name emitted anywhere in ``node/``, every name
the views and the terminal styles key on, and every event name the docs mention is in it, and that every
catalogued name is emitted somewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

EVENTS: dict[str, str] = {
    # the node process
    "node.started": "the process is up: address, p2p peer id and listen addresses, store",
    "node.joined": "this member is in the run (``already``: it was before; else the join transaction)",
    "node.ready": "spec checked, model and local data loaded: initial state hash, example counts",
    "node.interrupted": "a signal stopped the node while it was still starting",
    "node.stopped": "the process is stopping (signal or done)",
    "run.done": "every round of the run is finalised; the loop ends",
    "run.completed": "the run is complete on chain (``RunCompleted``: its last round finalised)",
    "error": "a step failed (``fatal``: the node exits; else it retries after ``retry_in_s``)",
    "chain.retry": "a chain call failed and is retried after ``retry_in_s``",
    "gossip.failed": "an announcement could not be published on the run's gossip topic",
    # the round, in the order a member meets its events
    "round.waiting": "this member owes the open round nothing yet; ``why`` says what it waits for",
    "round.selection": "the round's client sample: candidates, the selected members, whether this one is",
    "privacy.refused": "the privacy budget keeps this member from training the round",
    "round.training": "local training starts from the round's base state",
    "round.train_step": "one local training step finished (``step`` of ``steps``, its loss)",
    "round.byzantine": "a test attack replaced this member's update (``--byzantine``)",
    "round.inner_state_resumed": "pre-training: the AdamW state kept from an earlier round is resumed",
    "round.inner_state_ignored": "pre-training: a kept AdamW state was refused (``why``); a fresh one starts",
    "round.inner_state_unsaved": "pre-training: the AdamW state was not written (``why``)",
    "round.residual_ignored": "the kept top-k residual does not fit the layout; the update starts without it",
    "privacy.spent": "the update was clipped and noised; this release is in the privacy ledger",
    "round.sealed": 'the update was sealed for the round\'s readers (``artifacts = "members"``)',
    "round.seal_failed": "an artifact could not be sealed or opened for the run's readers",
    "round.trained": "the update is encoded and stored: loss, steps, hash, CID, size",
    "round.submit_refused": "the contract refused this member's commit (``why``)",
    "round.submitted": "the update's commit is on chain",
    "round.prefetched": "updates committed so far were fetched while waiting for the vote phase",
    "round.prefetch_failed": "fetching updates before the vote phase failed (the vote fetches again)",
    "fetch.progress": "one artifact of a batch arrived (counts and bytes so far, its source)",
    "fetch.done": "a batch of artifacts finished: counts, bytes, failures, sources, seconds",
    "round.fetched": "the round's on-chain update set is fetched and checked",
    "round.update_excluded": "an update is left out of the merge (``why``: not selected, or unreadable)",
    "round.merge_failed": "the aggregator refused the round's set; this member does not vote",
    "round.merged": "the merged state is computed and stored: hash, CID, base, included and rejected",
    "round.scored": "the merged model was scored on the held-out split (reporting only)",
    "round.vote_refused": "the contract refused this member's vote (``why``)",
    "round.vote_late": "this member voted a finalised round: recorded as ``LateVoteCast`` (``agrees``)",
    "round.vote_late_skipped": "a late vote was not sent (``why``: the late window is over)",
    "round.vote_late_refused": "the contract refused this member's late vote (``why``)",
    "round.vote_closed": "the round failed while this member merged: there is no result to vote on",
    "round.voted": "this member's vote for the merged state is on chain",
    "round.tx_dropped": "a transaction of this member is no longer on chain (a reorganisation); due again",
    "round.finalized": "the round is finalised: the adopted state, votes, block, and this node's timings",
    "round.adopted": "this node adopted the finalised state as the next round's base",
    "round.adopt_failed": "the finalised state could not be fetched or checked; the next round retries",
    "round.diverged": "the finalised state differs from the one this node merged",
    "round.failed": "the round closed without a finalised result",
    "round.close_refused": "the contract refused this member's call to close an expired round",
    "round.closed_failed": "this member closed an expired round as failed",
    "round.contributions": "the round's accepted contributions were recorded on chain (or why not)",
    # committee rounds (docs/scale.md)
    "committee.drawn": "the round's committee and leaders, drawn from the start block's hash",
    "committee.committed": "this member signed and gossiped its update commit",
    "committee.sent": "a committee message was sent to the peers (accepted, failed, unknown counts)",
    "committee.dropped": "a received committee message was malformed or invalid and dropped",
    "committee.proposed": "this leader published the round's manifest",
    "committee.proposal_refused": "a leader's manifest was refused (``why``)",
    "committee.manifest_unavailable": "the proposed manifest could not be fetched",
    "committee.voted": "this committee member signed its vote for the merged result",
    "committee.quorum": "enough committee votes for one result were collected",
    "committee.finalize_refused": "the contract refused the committee finalisation",
    "committee.finalized": "this member sent the committee finalisation transaction",
    "round.spot_checked": "this member fetched and checked a sample of a committee round's included updates",
    "round.spot_check_failed": "spot-checked updates of a committee round could not be fetched and checked",
    # unlearning (docs/unlearning.md)
    "unlearning.replayed": "a request's model was recomputed without its subject",
    "unlearning.voted": "this member voted the recomputed model for an unlearning request",
    "unlearning.vote_refused": "the contract refused this member's unlearning vote",
    "unlearning.fulfilled": "an unlearning request is fulfilled; the subject's artifacts are unpinned",
    "unlearning.adopted": "a round starts from an unlearning result (recorded as an adoption)",
    "unlearning.error": "handling an unlearning request failed; it is retried after the next step",
}
"""Every event name the node emits, with what it means (the event's fields are in its emitter)."""

Listener = Callable[[dict[str, Any]], object]
"""Receives each event record (``ts``, ``event`` and the plain fields) after it is written."""


class Display(Protocol):
    """A live view the event log feeds and stops: it gets every record and is stopped when the log closes."""

    def handle(self, record: dict[str, Any]) -> None:
        """Take one event record."""

    def stop(self) -> None:
        """Stop drawing (leaving the permanent lines)."""


def human_line(record: dict[str, Any], name: str = "") -> str:
    """Format an event record as one terminal line: time, node name, round, event, ``key=value`` fields."""
    stamp = time.strftime("%H:%M:%S", time.localtime(record["ts"]))
    where = f"r{record['round']}" if "round" in record else ""
    rest = " ".join(f"{k}={_short(v)}" for k, v in record.items() if k not in ("ts", "event", "round", "run"))
    return f"{stamp} {name} {where:>4} {record['event']:<20} {rest}".rstrip()


def style_of(event: str) -> str | None:
    """Return the terminal style of an event's line (by full name, then by its first part), or ``None``."""
    return _STYLES.get(event, _STYLES.get(event.split(".")[0], "")) or None


_STYLES = {
    "error": "bold red",
    "round.diverged": "bold red",
    "round.failed": "red",
    "round.waiting": "yellow",
    "round.finalized": "bold green",
    "round.voted": "green",
    "round.submitted": "green",
    "round.trained": "cyan",
    "round.train_step": "dim cyan",
    "run.done": "bold green",
}
"""Terminal colour of each event (by full name, then by its first part)."""


def _short(value: Any) -> str:
    text = str(value)
    if isinstance(value, str) and len(text) > 20 and " " not in text:
        return text[:12] + "…"
    return text
