"""The pre-imported launcher (node/devnet/launcher.py): forked ``fedchain`` commands behave as fresh ones.

The CLI's output and exit codes match a fresh interpreter's; each child has the request's environment and
working directory and nothing of another child's; a forked node process takes SIGSTOP, SIGCONT, SIGKILL and
SIGINT by PID as a Popen'd one does and is restarted after a kill; a child that dies is reported with its
exit code; a request whose import-time environment differs is refused; stopping the launcher stops the
children it still has. That forked nodes produce the same bytes is test_cluster's (it forks its nodes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.devnet.cluster import LocalCluster
from node.devnet.launcher import Launcher
from node.devnet.services import ServiceError

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[3] / "node" / "specs" / "tiny.toml"
DATA = "synthetic:arithmetic:8"
FRESH = [sys.executable, "-c", "from node.cli import main; main()"]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _state(pid: int) -> str:
    """The process state letter of ``pid`` (``R``, ``S``, ``T`` stopped, ``Z``), from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.fixture(scope="module")
def member(devnet: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalCluster, int]:
    """One member's home (forked ``fedchain init``) and a run of its own that no node has started yet."""
    cluster = LocalCluster(tmp_path_factory.mktemp("launcher-nodes"), devnet, 1)
    cluster.init()
    return cluster, cluster.create_run(SPEC)


def test_cli_output_and_exit_codes_match_a_fresh_interpreter(launcher: Launcher, tmp_path: Path) -> None:
    commands = [["--version"], ["status", "--run", "1", "--home", str(tmp_path / "no-such-home"), "--json"]]

    forked = [launcher.run(args, timeout=120.0) for args in commands]
    fresh = [subprocess.run([*FRESH, *a], capture_output=True, text=True, timeout=300.0) for a in commands]

    assert [f.returncode for f in forked] == [f.returncode for f in fresh]
    assert forked[0].returncode == 0 and forked[1].returncode != 0
    assert [f.stdout for f in forked] == [f.stdout for f in fresh]
    assert forked[1].stderr == fresh[1].stderr


def test_each_child_has_its_own_environment_and_working_directory(launcher: Launcher, tmp_path: Path) -> None:
    (tmp_path / "blob.txt").write_text("launcher env test\n")
    a, b = tmp_path / "a", tmp_path / "b"
    put = ["store", "put", "blob.txt", "--json"]

    first = launcher.run(put, timeout=120.0, env={"FEDCHAIN_HOME": str(a)}, cwd=tmp_path)
    # no FEDCHAIN_HOME: the default store under $HOME, whatever the previous child had
    env = {k: v for k, v in os.environ.items() if k != "FEDCHAIN_HOME"}
    env["HOME"] = str(b)
    pid = launcher.spawn(put, stdout=tmp_path / "second.out", env=env, cwd=tmp_path)
    code = launcher.wait(pid, 120.0)

    assert first.returncode == 0, first.stderr
    assert code == 0, (tmp_path / "second.out").read_text()
    assert str(a / "store") in json.loads(first.stdout)["store"]
    assert str(b / ".fedchain" / "store") in (tmp_path / "second.out").read_text()
    assert (a / "store").is_dir() and (b / ".fedchain" / "store").is_dir()


def test_a_request_with_another_import_time_environment_is_refused(
    launcher: Launcher, tmp_path: Path
) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}

    with pytest.raises(ServiceError, match="HF_HUB_OFFLINE='0'"):
        launcher.spawn(["--version"], stdout=tmp_path / "out", env=env)


def test_a_forked_node_takes_signals_by_pid_like_a_popen_one(member: tuple[LocalCluster, int]) -> None:
    cluster, run_id = member
    proc = cluster.process(0, run_id, DATA)
    assert proc.argv[:2] == ["node", "start"]  # forked: the CLI's arguments, no interpreter
    proc.start()
    try:
        proc.wait_until_ready(timeout=240.0, interval=0.2)
        pid = proc.pid
        assert pid is not None and os.getsid(pid) == pid  # a session of its own, as start_new_session=True

        os.kill(pid, signal.SIGSTOP)
        _wait(lambda: _state(pid) == "T", 10, "the node to stop")
        assert proc.is_running()
        os.kill(pid, signal.SIGCONT)
        _wait(lambda: _state(pid) != "T", 10, "the node to continue")
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: not proc.is_running(), 10, "the killed node to be reaped")

        assert proc.returncode == -signal.SIGKILL
        assert proc.stop(timeout=5.0) == -signal.SIGKILL
        assert "node.ready" in [e["event"] for e in cluster.events(0)]
    finally:
        proc.stop(timeout=5.0)
    again = cluster.process(0, run_id, DATA)  # restarted with the same command, it resumes
    again.start()
    try:
        again.wait_until_ready(timeout=240.0, interval=0.2)
        assert again.pid != pid
    finally:
        code = again.stop(timeout=15.0)
    assert code == 130  # SIGINT: the node's own clean stop
    assert [e["event"] for e in cluster.events(0)][-1] == "node.stopped"


def test_a_child_that_fails_is_reported_with_its_code_and_output(
    member: tuple[LocalCluster, int], launcher: Launcher
) -> None:
    cluster, run_id = member
    folder = cluster.folder / "no-such-home"
    argv = ["node", "start", "--home", str(folder), "--run", str(run_id), "--data", DATA]
    bad = launcher.process("bad", argv, cluster.folder / "bad.log", lambda _: False)
    bad.start()

    with pytest.raises(ServiceError, match=r"bad exited with code [1-9]\d* before it was ready") as failed:
        bad.wait_until_ready(timeout=120.0)

    assert bad.returncode not in (None, 0)
    assert "last" in str(failed.value)  # the log's tail comes with the error
    assert bad.log_text() != ""


def test_stopping_the_launcher_stops_its_children(
    member: tuple[LocalCluster, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster, run_id = member
    own = Launcher(
        tmp_path_factory.mktemp("own-launcher"), env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    )
    own.start(timeout=300.0)
    forked = LocalCluster(cluster.folder, cluster.devnet, 1, launchers=[own])
    forked.members = cluster.members
    proc = forked.process(0, run_id, DATA)
    try:
        before = len(forked.events(0, "node.started"))
        proc.start()
        _wait(lambda: len(forked.events(0, "node.started")) > before, 120, "this node's node.started")
        assert proc.pid in own.children()
        pid = proc.pid
        assert pid is not None

        code = own.stop(timeout=30.0)

        assert code == 0
        assert not proc.is_running()
        assert proc.returncode in (130, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL)
        assert not own.socket_path.exists()
    finally:
        proc.stop(timeout=5.0)
        own.stop()
