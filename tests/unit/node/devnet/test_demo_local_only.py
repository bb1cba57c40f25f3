"""The demo's local-only comparison model follows the run's ``[train] lr_schedule`` (demo._losses)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.devnet.demo import DemoConfig, _losses, _member_data, held_out_file
from node.protocol.scoring import write_examples

SPEC = """
[run]
rounds = 2
seed = 3
[model]
name_or_path = "tiny-llama"
[adapter]
r = 4
alpha = 8.0
[train]
lr = 0.05
local_steps = 2
batch_size = 4
max_len = 48
"""
MEMBERS = [
    {"index": 0, "address": "0x" + "11" * 20, "data": "synthetic:reverse:16"},
    {"index": 1, "address": "0x" + "22" * 20, "data": "synthetic:arithmetic:16"},
]


def _local_only_losses(folder: Path, schedule: str) -> list[Any]:
    spec = folder / f"{schedule}.toml"
    spec.write_text(SPEC + f'lr_schedule = "{schedule}"\n')
    for m in MEMBERS:
        write_examples(_member_data(m["data"], m["address"]).held_out, held_out_file(folder, m["index"]))
    rows = _losses(DemoConfig(nodes=2, rounds=2, model="tiny"), spec, MEMBERS, [[], []])
    return [(row["local_steps"], row["local_only_loss"]) for row in rows]


@pytest.mark.slow
@pytest.mark.usefixtures("torch_one_thread")
def test_the_local_only_model_trains_round_by_round_at_the_cosine_rates(tmp_path: Path) -> None:
    constant = _local_only_losses(tmp_path, "constant")
    cosine = _local_only_losses(tmp_path, "cosine")

    assert [steps for steps, _ in constant] == [steps for steps, _ in cosine] == [4, 4]
    assert all(a != b for (_, a), (_, b) in zip(constant, cosine, strict=True))
