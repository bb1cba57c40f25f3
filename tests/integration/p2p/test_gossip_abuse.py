"""The gossip abuse scenario of ``bench/gossip_abuse.py``, reduced: 3 honest members, a flooder, 1 Sybil.

Real peer processes on loopback; the flooder sends correctly signed, distinct messages at 100x the per-member
rate limit straight to every peer, the Sybil (a valid key outside the member list) at 100/s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.gossip_abuse import run
from p2p.guard import GuardConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_honest_announcements_reach_every_honest_peer_while_a_member_floods_and_a_sybil_publishes(
    tmp_path: Path,
) -> None:
    result = run(honest=3, sybils=1, seconds=8.0, interval=0.5, log_dir=tmp_path)

    attack, outcome = result["attack"], result["outcome"]
    assert attack["announcements"] == attack["expected"] == 48
    assert attack["delivered_fraction"] >= 0.999, attack
    assert result["baseline"]["delivered_fraction"] >= 0.999, result["baseline"]
    limits = GuardConfig()
    flooded = [p for p in outcome["per_peer"] if p["guard_dropped"].get("rate limit")]
    assert flooded, outcome  # the flood reached honest peers directly
    for peer in outcome["per_peer"]:
        if peer in flooded:
            assert peer["graylisted_after_heartbeats"] is not None, peer
            assert peer["graylisted_after_heartbeats"] <= 10, peer
            # the flooder got at most its burst plus its rate until it was graylisted, not its flood
            allowed = limits.peer_burst + limits.peer_rate * (peer["graylisted_after_heartbeats"] + 1)
        else:  # reached only through relays, which forward what they accepted
            allowed = limits.peer_burst + limits.peer_rate * 8.0
        assert peer["flood_messages_handled"] <= allowed, peer
        assert peer["sybil_messages_handled"] == 0, peer
    assert (
        sum(p["guard_dropped"].get("non-member peer", 0) for p in outcome["per_peer"]) > 0
    )  # Sybil published
    assert outcome["honest_messages_at_sybils"] == 0  # nothing is forwarded to a non-member
