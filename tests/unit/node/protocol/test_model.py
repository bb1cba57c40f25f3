"""Tests for node.protocol.model's data sources and seeds (the model itself is exercised by test_round.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.protocol.model import DataSourceError, load_local_data, member_seed


def test_synthetic_source_is_split_into_train_and_held_out_reproducibly() -> None:
    a = load_local_data("synthetic:reverse:20", held_out_fraction=0.25, max_examples=0, seed=5)
    b = load_local_data("synthetic:reverse:20", held_out_fraction=0.25, max_examples=0, seed=5)

    assert (len(a.train), len(a.held_out)) == (15, 5)
    assert a == b


def test_chatterbot_category_and_example_cap() -> None:
    data = load_local_data("chatterbot:ai", held_out_fraction=0.2, max_examples=10, seed=1)

    assert len(data.train) + len(data.held_out) == 10
    assert data.train[0].prompt and data.train[0].response


def test_jsonl_file_source(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    data = load_local_data(str(path), held_out_fraction=0.2, max_examples=0, seed=0)

    assert len(data.train) == 4 and len(data.held_out) == 1


@pytest.mark.parametrize(
    "source", ["chatterbot:no-such-category", "synthetic:juggling", "/no/such/file.jsonl"]
)
def test_bad_sources_are_clear_errors(source: str) -> None:
    with pytest.raises(DataSourceError, match="cannot load data"):
        load_local_data(source, held_out_fraction=0.2, max_examples=0, seed=0)


def test_member_seed_is_stable_and_differs_by_member_and_round() -> None:
    a = member_seed(7, 1, "0xAbC")

    assert a == member_seed(7, 1, "0xabc")
    assert len({a, member_seed(7, 2, "0xabc"), member_seed(7, 1, "0xabd"), member_seed(8, 1, "0xabc")}) == 4
