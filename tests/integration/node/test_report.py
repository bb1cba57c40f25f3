"""`fedchain report` on real anvil and a real IPFS daemon, opened in headless Chromium.

Rounds are driven from the test process (tests/fixtures/fedrun.py: real contract, store, codec and merge);
one member dissents in round 0. The page must load in Chromium without console errors (it is self-contained:
any resource it tried to load would be an error here, with no network), its plots must render (the
screenshot is not blank), and once a colluding quorum finalises a forged model the page shows the audit's
failure naming the round.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from node.console.eventlog import EventLog
from tests.fixtures.chain import AnvilChain
from tests.fixtures.fedrun import ToyRun, toy_run_on_devnet
from training.merge import ModelState

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "Chromium is not installed: `make setup` installs Debian's chromium package", pytrace=False
        )
    return path


def _browse(page: Path, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = work / f"profile-{len(list(work.glob('profile-*')))}"
    cmd = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run(
        [*cmd, *args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False
    )


def _console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line or "Failed to load resource" in line or "Uncaught" in line
    ]


@pytest.fixture
def toy_run(anvil: AnvilChain, ipfs_daemon: str) -> Iterator[tuple[ToyRun, str]]:
    with toy_run_on_devnet(anvil.rpc_url, anvil.accounts, ipfs_daemon, "report-integration", rounds=4) as run:
        yield run


def _report(
    anvil: AnvilChain, registry: str, ipfs: str, run: int, out: Path, logs: list[Path]
) -> tuple[int, dict[str, object]]:
    cmd = [str(Path(sys.executable).parent / "fedchain"), "report", "--rpc-url", anvil.rpc_url]
    cmd += ["--registry", registry, "--ipfs-api", ipfs, "--run", str(run), "--out", str(out), "--json"]
    for log in logs:
        cmd += ["--node-log", str(log)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.stdout, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def test_report_renders_in_chromium_and_shows_dissent_losses_and_a_tampered_round(
    toy_run: tuple[ToyRun, str], anvil: AnvilChain, ipfs_daemon: str, tmp_path: Path
) -> None:
    toy, registry = toy_run
    for i in (1, 2, 3):
        toy.submit(toy.clients[i], 0, seed=i)
    honest0, pairs0 = toy.honest_merge(0)
    dissent = ModelState(honest0.params + 0.25, honest0.server_state, honest0.control, honest0.spec)
    toy.vote(toy.clients[3], 0, dissent, pairs0)  # member 3 votes another model first
    for i in (1, 2):
        toy.vote(toy.clients[i], 0, honest0, pairs0)
    toy.round(1, [1, 2, 3])
    # member 1's node log, written by the node's own event log class: what it trained and scored
    log_path = tmp_path / "node1" / "node.jsonl"
    log = EventLog(log_path, console="none")
    for r in (0, 1):
        sub = next(
            s for s in toy.clients[0].submissions(toy.run, r) if s.member == toy.clients[1].account_address
        )
        log.event("round.trained", run=toy.run, round=r, loss=2.0 - r, seconds=1.5, sha=sub.sha256.hex())
        log.event("round.merged", run=toy.run, round=r, seconds=0.25)
        log.event("round.scored", run=toy.run, round=r, merged_loss=1.9 - 0.3 * r, seconds=0.5)
    log.close()
    out = tmp_path / "report.html"

    code, summary = _report(anvil, registry, ipfs_daemon, toy.run, out, [log_path])

    assert code == 0 and summary["audit_ok"] is True, summary
    page = out.read_text()
    assert "Audit passed" in page
    assert (
        page.count('class="dissent"') == 2
    )  # round 0 in the rounds table, member 3's vote in the votes table
    for figure in ("timeline", "losses", "contributions", "phases"):
        assert f'<figure id="{figure}"><svg' in page, figure
    assert not re.search(r"(src|href)=[\"']?(https?:|//)|url\((https?:|//)", page)  # nothing to fetch
    shot = tmp_path / "report.png"
    loaded = _browse(out, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    assert shot.is_file(), loaded.stderr[-2000:]
    assert _console_errors(loaded.stderr) == []
    stats = ImageStat.Stat(Image.open(shot).convert("L"))
    assert stats.stddev[0] > 20, "the screenshot is blank"

    for i in (1, 2):  # a colluding quorum finalises round 2 with a forged model
        toy.submit(toy.clients[i], 2, seed=20 + i)
    honest2, pairs2 = toy.honest_merge(2)
    forged = ModelState(honest2.params + 0.5, honest2.server_state, honest2.control, honest2.spec)
    toy.mine(toy.clients[0].round_info(toy.run, 2).submit_end)  # type: ignore[operator]
    for i in (1, 2):
        toy.vote(toy.clients[i], 2, forged, pairs2)

    code, summary = _report(anvil, registry, ipfs_daemon, toy.run, out, [])

    assert code == 3 and summary["audit_ok"] is False, summary
    dom = _browse(out, tmp_path, "--dump-dom")
    assert 'id="verdict"' in dom.stdout and "Audit FAILED" in dom.stdout
    assert "merged-sha256 (round 2)" in dom.stdout
    assert _console_errors(dom.stderr) == []
