"""``fedchain store`` against a real IPFS daemon and the embedded store: output, files, exit codes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app
from p2p.storage.cid import CHUNK_SIZE, compute_cid

pytestmark = pytest.mark.integration
runner = CliRunner()


def _file(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(random.Random(size).randbytes(size))
    return path


def test_put_get_ls_unpin_through_the_daemon(ipfs_daemon: str, tmp_path: Path) -> None:
    src = _file(tmp_path, 2 * CHUNK_SIZE + 1)

    put = runner.invoke(app, ["store", "put", str(src), "--ipfs-api", ipfs_daemon, "--json"])
    assert put.exit_code == 0, put.output
    cid = json.loads(put.stdout)["cid"]
    assert cid == compute_cid(src.read_bytes())

    got = runner.invoke(app, ["store", "get", cid, "-o", str(tmp_path / "out"), "--ipfs-api", ipfs_daemon])
    assert got.exit_code == 0, got.output
    assert (tmp_path / "out").read_bytes() == src.read_bytes()

    listed = runner.invoke(app, ["store", "ls", "--ipfs-api", ipfs_daemon, "--json"])
    assert cid in json.loads(listed.stdout)["pins"]

    unpinned = runner.invoke(app, ["store", "unpin", cid, "--ipfs-api", ipfs_daemon])
    assert unpinned.exit_code == 0
    listed = runner.invoke(app, ["store", "ls", "--ipfs-api", ipfs_daemon, "--json"])
    assert cid not in json.loads(listed.stdout)["pins"]


def test_console_script_prints_the_cid(ipfs_daemon: str, tmp_path: Path) -> None:
    src = _file(tmp_path, 1000)
    fedchain = Path(sys.executable).with_name("fedchain")

    result = subprocess.run(
        [str(fedchain), "store", "put", str(src)],
        env={**os.environ, "FEDCHAIN_IPFS_API": ipfs_daemon},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == compute_cid(src.read_bytes())


def test_unknown_cid_fails_with_exit_code_1(ipfs_daemon: str, tmp_path: Path) -> None:
    absent = compute_cid(b"nobody stored this")
    result = runner.invoke(
        app, ["store", "get", absent, "-o", str(tmp_path / "o"), "--ipfs-api", ipfs_daemon]
    )

    assert result.exit_code == 1
    assert absent in result.stderr and "lacks it" in result.stderr
    assert not (tmp_path / "o").exists()


def test_malformed_cid_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["store", "get", "not-a-cid", "-o", str(tmp_path / "o"), "--store", str(tmp_path)]
    )

    assert result.exit_code == 2
    assert "is not a CID" in result.stderr


def test_too_large_is_refused(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    src = _file(tmp_path, 5000)
    cid = runner.invoke(app, ["store", "put", str(src), "--store", str(store_dir)]).stdout.strip()

    result = runner.invoke(
        app, ["store", "get", cid, "-o", str(tmp_path / "o"), "--store", str(store_dir), "--max-size", "4999"]
    )

    assert result.exit_code == 1
    assert "max_size=4999" in result.stderr


def test_default_store_lives_under_fedchain_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDCHAIN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDCHAIN_IPFS_API", raising=False)
    src = _file(tmp_path, 10)

    put = runner.invoke(app, ["store", "put", str(src), "--json"])
    cid_only = runner.invoke(app, ["store", "cid", str(src)])

    assert put.exit_code == 0, put.output
    cid = json.loads(put.stdout)["cid"]
    assert cid_only.stdout.strip() == cid
    assert (tmp_path / "home" / "store" / "blobs" / cid).read_bytes() == src.read_bytes()
    assert (tmp_path / "home" / "store" / "pins" / cid).exists()


def test_both_backends_at_once_is_a_usage_error(tmp_path: Path) -> None:
    src = _file(tmp_path, 10)
    result = runner.invoke(
        app, ["store", "put", str(src), "--store", str(tmp_path), "--ipfs-api", "/ip4/127.0.0.1/tcp/1/http"]
    )
    assert result.exit_code == 2
