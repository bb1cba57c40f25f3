"""``fedchain store`` on the embedded store: how each command reports storage errors (message, exit code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.cli import app
from p2p.storage.cid import compute_cid

runner = CliRunner()
ABSENT = compute_cid(b"nobody stored this")


def _store(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["store", *args, "--store", str(tmp_path / "store")])
    return result.exit_code, result.stdout, result.stderr


def test_pin_ls_unpin_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(b"adapter bytes" * 100)
    code, out, _ = _store(tmp_path, "put", str(src), "--no-pin")
    cid = out.strip()
    assert code == 0 and cid == compute_cid(src.read_bytes())

    assert _store(tmp_path, "pin", cid, "--json")[:2] == (0, json.dumps({"cid": cid, "pinned": True}) + "\n")
    assert json.loads(_store(tmp_path, "ls", "--json")[1]) == {"pins": [cid]}
    assert _store(tmp_path, "unpin", cid)[:2] == (0, f"unpinned {cid}\n")
    assert json.loads(_store(tmp_path, "ls", "--json")[1]) == {"pins": []}


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (["pin", ABSENT], f"error: pin: cannot pin {ABSENT}"),
        (["get", ABSENT, "-o", "out.bin"], f"error: get: {ABSENT} is not in the local store"),
    ],
)
def test_storage_failures_exit_1_naming_the_action_and_cid(
    tmp_path: Path, args: list[str], prefix: str
) -> None:
    code, out, err = _store(tmp_path, *args)

    assert code == 1
    assert out == ""
    assert err.startswith(prefix)


@pytest.mark.parametrize("command", ["pin", "unpin", "get"])
def test_a_malformed_cid_is_a_usage_error_before_the_store_is_opened(tmp_path: Path, command: str) -> None:
    extra = ["-o", str(tmp_path / "out.bin")] if command == "get" else []

    code, _, err = _store(tmp_path, command, "not-a-cid", *extra)

    assert code == 2
    assert err.startswith("error: 'not-a-cid' is not a CID")
    assert not (tmp_path / "store").exists()
