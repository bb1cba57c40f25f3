"""The fault campaign of ``bench/chaos.py``, reduced to two seeds that between them apply every perturbation.

Seed 19 draws a SIGKILL + restart, a full disk and an IPFS daemon kill; seed 20 a SIGSTOP pause, an IPFS
kill and a partition (where the machine cannot build network namespaces or mount a tmpfs, the campaign
skips those kinds and says why; the seeds then draw from the rest). Every invariant of
``bench/chaos_check.py`` must hold after each run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import KINDS, campaign, parse_args

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_two_seeded_runs_under_faults_keep_every_invariant(tmp_path: Path) -> None:
    args = parse_args(["--runs", "2", "--seed", "19", "--keep-logs", str(tmp_path / "failed")])

    report = campaign(args, progress=False)

    applied = {label.split(":")[0] for row in report["rows"] for label in row["perturbations"]}
    if not report["skipped"]:
        assert applied == set(KINDS), report
    for row in report["rows"]:
        assert row["violations"] == [], f"seed {row['seed']}: {row['violations']} (logs in {tmp_path})"
        assert row["rounds_finalized"] == args.rounds, row
    assert all(row["perturbations"] for row in report["rows"])
