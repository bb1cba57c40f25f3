"""The launcher's child-side helpers: fresh seeds and thread count per fork, exit statuses, paths."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest
import torch

from node.devnet.launcher import NETNS_DIR, Launcher, _exit_status, _fresh_state, _running, enter_netns


def _forked_draws(env: dict[str, str]) -> dict[str, object]:
    """Fork this process, run ``_fresh_state(env)`` in the child and return what its generators draw."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        try:
            _fresh_state(env)
            draws = {
                "random": random.random(),
                "numpy": float(numpy.random.random()),
                "torch": float(torch.rand(1).item()),
                "threads": torch.get_num_threads(),
            }
            os.write(write, json.dumps(draws).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return dict(json.loads(text))


def test_forked_children_draw_different_numbers_from_every_global_generator() -> None:
    random.seed(1)
    numpy.random.seed(1)
    torch.manual_seed(1)  # the parent's state, which a plain fork would hand to every child

    first, second = _forked_draws({}), _forked_draws({})

    for name in ("random", "numpy", "torch"):
        assert first[name] != second[name], name
    assert first["random"] != random.Random(1).random()


def test_a_forked_child_takes_its_thread_count_from_omp_num_threads() -> None:
    assert _forked_draws({"OMP_NUM_THREADS": "1"})["threads"] == 1


def test_exit_status_follows_the_interpreter() -> None:
    assert _exit_status(None) == 0
    assert _exit_status(3) == 3
    assert _exit_status("a message") == 1


def test_running_tells_a_live_process_from_a_reaped_one() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)

    assert _running(os.getpid())
    assert not _running(pid)


def test_a_socket_path_past_the_unix_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long for a Unix socket"):
        Launcher(tmp_path / ("x" * 120))


def test_entering_a_missing_namespace_fails_naming_it() -> None:
    with pytest.raises(FileNotFoundError, match="fedchain-no-such-ns"):
        enter_netns("fedchain-no-such-ns")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_a_forked_child_enters_the_named_network_namespace() -> None:
    name = f"fedchain-launcher-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=30)
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                enter_netns(name)
                os.write(write, str(os.stat("/proc/self/ns/net").st_ino).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            inode = pipe.read()
        os.waitpid(pid, 0)

        assert inode == str((NETNS_DIR / name).stat().st_ino)
        assert inode != str(os.stat("/proc/self/ns/net").st_ino)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
