"""A run's state as one JSON-ready dict, read from the chain only (``fedchain status``)."""

from __future__ import annotations

from typing import Any

from training.privacy import epsilon_spent


def run_status(client: Any, run_id: int, privacy: Any = None) -> dict[str, Any]:
    """Return rounds (windows, updates, votes, results), members' contributions, open unlearning requests.

    Parameters
    ----------
    client
        A (read-only) ``ledger.client.RunsClient``.
    run_id
        The run.
    privacy
        The run's ``training.privacy.PrivacyConfig``, if it has one: every member then also shows the
        (epsilon, delta) its updates on chain have spent (``privacy``; whether a member submitted is public,
        so this is what anyone can compute: a lower bound of its spend).
    """
    from ledger.types import RequestStatus, RoundStatus

    info = client.run_info(run_id)
    rounds = []
    for rnd in range(int(info.current_round) + 1):
        ri = client.round_info(run_id, rnd)
        entry: dict[str, Any] = {
            "round": rnd,
            "status": ri.status.name.lower(),
            "start_block": ri.start_block,
            "submit_end": ri.submit_end,
            "vote_end": ri.vote_end,
            "eligible": ri.eligible,
            "quorum": ri.quorum,
            "submissions": [
                {"member": s.member, "sha256": s.sha256.hex(), "cid": s.cid, "num_samples": s.num_samples}
                for s in client.submissions(run_id, rnd, ri.start_block)
            ],
            "votes": [
                {
                    "member": v.member,
                    "merged_sha256": v.merged_sha256.hex(),
                    "merged_cid": v.merged_cid,
                    "included_set_hash": v.included_set_hash.hex(),
                    "tally": v.votes,
                }
                for v in client.votes(run_id, rnd, ri.start_block)
            ],
        }
        if ri.status == RoundStatus.FINALIZED:
            result = client.round_result(run_id, rnd)
            entry.update(
                merged_sha256=result.merged_sha256.hex(),
                merged_cid=result.merged_cid,
                included_set_hash=result.included_set_hash.hex(),
                finalized_block=result.block_number,
                contributions_recorded=ri.contributions_recorded,
                late_votes=[
                    {"member": v.voter, "merged_sha256": v.merged_sha256.hex(), "agrees": v.agrees}
                    for v in client.late_votes(run_id, rnd, ri.closed_block)
                ],
            )
        elif ri.status == RoundStatus.FAILED:
            entry["closed_block"] = ri.closed_block
        rounds.append(entry)
    members = []
    for address in client.members(run_id):
        m = client.member_info(run_id, address)
        members.append(
            {
                "address": address,
                "index": m.index,
                "banned": m.banned,
                "submitted_rounds": m.submitted_rounds,
                "accepted_contributions": m.accepted_contributions,
                **({"privacy": _spent(privacy, m.submitted_rounds)} if privacy is not None else {}),
            }
        )
    requests = []
    for request_id in range(1, client.request_count() + 1):
        req = client.unlearning_request(request_id)
        if req.run_id == run_id and req.status != RequestStatus.NONE:
            requests.append(
                {
                    "request_id": request_id,
                    "subject": req.subject,
                    "from_round": req.from_round,
                    "status": req.status.name.lower(),
                    "result_sha256": req.result_sha256.hex(),
                }
            )
    return {
        "run_id": run_id,
        "spec_sha256": info.spec_sha256.hex(),
        "spec_cid": info.spec_cid,
        "creator": info.creator,
        "quorum_bps": info.quorum_bps,
        "submit_blocks": info.submit_blocks,
        "vote_blocks": info.vote_blocks,
        "min_updates": info.min_updates,
        "status": info.status.name.lower(),
        "planned_rounds": int(info.rounds),
        "current_round": int(info.current_round),
        "finalized_rounds": sum(1 for r in rounds if r["status"] == "finalized"),
        "rounds": rounds,
        "members": members,
        "unlearning_requests": requests,
        "open_unlearning_requests": sum(1 for r in requests if r["status"] == "pending"),
    }


def _spent(privacy: Any, releases: int) -> dict[str, float]:
    return {"epsilon": round(epsilon_spent(privacy, releases), 4), "delta": privacy.delta}
