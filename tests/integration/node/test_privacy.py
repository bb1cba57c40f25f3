"""Client-level DP on a real devnet: anvil (1 s blocks), an IPFS daemon, two ``fedchain node`` processes.

The run has ``[privacy]``; member 0's own budget (``[training] epsilon_budget``) allows exactly one update.
It trains the first round it is eligible for (round 0 unless its process started late), refuses the next
with the budget named in its events, still votes, and the run finalises (quorum is every eligible member,
so the refused round needs its vote). ``fedchain status --home`` shows each
member's (epsilon, delta).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.devnet.cluster import LocalCluster, fedchain
from node.runspec import RunSpec
from training.privacy import epsilon_spent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = ["synthetic:arithmetic:40", "synthetic:reverse:40"]
PRIVACY = "\n[privacy]\nclip_norm = 0.05\nnoise_multiplier = 2.0\ndelta = 1e-5\n"


def test_a_member_out_of_budget_refuses_a_round_still_votes_and_the_run_finalises(
    devnet: Any, tmp_path: Path
) -> None:
    spec_path = tmp_path / "private.toml"
    text = (
        SPEC.read_text()
        .replace("quorum_bps = 6666", "quorum_bps = 10000")
        .replace("rounds = 2", "rounds = 3")
        .replace("submit_blocks = 20", "submit_blocks = 10")
    )
    # A round member 0 refuses lasts its whole submit window (no early vote without its update), so that
    # window is short (member 1 trains in about a second); tiny.toml's join window (45 blocks) covers the
    # nodes' start, and a late start only moves the first round checked
    spec_path.write_text(text + PRIVACY)
    spec = RunSpec.from_toml(spec_path)
    assert spec.privacy is not None
    one = epsilon_spent(spec.privacy, 1)
    cluster = LocalCluster(tmp_path / "nodes", devnet, 2)
    cluster.init()
    config = cluster.members[0].home / "config.toml"
    text = config.read_text()
    assert "epsilon_budget = 0.0" in text
    config.write_text(text.replace("epsilon_budget = 0.0", f"epsilon_budget = {one * 1.01!r}"))
    run_id = cluster.create_run(spec_path)
    try:
        cluster.start(run_id, DATA)
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(cluster.size)), 300, "every run.done"
        )
    finally:
        cluster.stop()

    # On a loaded machine the nodes may start after round 0 opened (it then fails for want of updates):
    # everything is checked relative to the first round member 0 trained and the last finalised one.
    seen = [(e.get("round"), e["event"], e.get("why")) for e in cluster.events(0) if "round" in e]
    finalized = sorted(e["round"] for e in cluster.events(0, "round.finalized"))
    assert len(finalized) == 3, seen
    spent = [e["round"] for e in cluster.events(0, "privacy.spent")]
    assert len(spent) == 1, seen
    first, last = spent[0], finalized[-1]
    assert first < last, seen
    refused = cluster.events(0, "privacy.refused")
    assert [e["round"] for e in refused] == list(range(first + 1, last + 1)), seen
    assert "privacy budget" in refused[0]["why"]
    assert [e["round"] for e in cluster.events(0, "round.voted")] == list(range(first, last + 1)), seen
    home = str(cluster.members[0].home)
    done = fedchain("status", "--run", str(run_id), "--home", home, "--json", timeout=300.0)  # loaded CI
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["finalized_rounds"] == 3
    zero = cluster.members[0].address
    for r in report["rounds"][first + 1 : last + 1]:  # refused rounds: finalised with its vote, no update
        assert r["status"] == "finalized" and len(r["votes"]) == 2
        assert zero not in {s["member"] for s in r["submissions"]}
    by_address = {m["address"]: m for m in report["members"]}
    assert by_address[zero]["submitted_rounds"] == 1
    assert by_address[zero]["privacy"]["epsilon"] == pytest.approx(one, abs=1e-4)
    other = by_address[cluster.members[1].address]
    assert other["submitted_rounds"] >= 2
    assert other["privacy"]["epsilon"] == pytest.approx(
        epsilon_spent(spec.privacy, other["submitted_rounds"]), abs=1e-4
    )
    assert len(cluster.events(1, "privacy.spent")) == other["submitted_rounds"]
    own = report["privacy"]
    assert own["releases"] == 1 and own["delta"] == 1e-5
    assert own["budget"] == pytest.approx(one * 1.01)
