"""bench/scale.py's run spec: its join window grows with the members (round 0 waits for every node)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from bench.scale import spec_file
from node.runspec import RunSpec


def test_the_join_window_covers_every_node_start_up(tmp_path: Path) -> None:
    windows = {}
    for size in (4, 32):
        path = spec_file(tmp_path, rounds=3, size=size, local_steps=4, block_time=1.0, committee=3)
        chain = tomllib.loads(path.read_text())["chain"]
        windows[size] = chain["join_blocks"]
        assert chain["committee_size"] == 3
        assert chain["submit_blocks"] + chain["vote_blocks"] <= 255  # the seed's block hash stays readable
        assert RunSpec.from_toml(path).chain.join_blocks == windows[size]  # a valid run spec
    assert windows == {4: 100, 32: 380}  # 60 s + 10 s a member, in 1 s blocks
