"""The node's ``hf:<path>?<field>=<column>&split=<name>`` data source (local Hugging Face datasets)."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from node.protocol.model import DataSourceError, load_local_data, parse_hf_source
from training.data import Example, PreferencePair


def test_parse_hf_source_reads_path_columns_and_split() -> None:
    assert parse_hf_source("hf:data/qa.parquet") == ("data/qa.parquet", {}, None)
    assert parse_hf_source("hf:d?instruction=question&response=answer&split=test") == (
        "d",
        {"instruction": "question", "response": "answer"},
        "test",
    )
    for bad, message in [
        ("hf:", "needs a local path"),
        ("hf:d?instruction", "'instruction' is not <field>=<column>"),
        ("hf:d?split=a&split=b", "'split' given twice"),
    ]:
        with pytest.raises(DataSourceError, match=message):
            parse_hf_source(bad)


def test_hf_sources_for_sft_and_dpo(tmp_path: Path) -> None:
    qa, prefs = tmp_path / "qa.parquet", tmp_path / "prefs"
    datasets.Dataset.from_dict(
        {"q": [f"q{i}" for i in range(5)], "a": [f"a{i}" for i in range(5)]}
    ).to_parquet(str(qa))
    datasets.Dataset.from_dict(
        {"prompt": ["p", "p2"], "chosen": ["c", "c2"], "rejected": ["r", "r2"]}
    ).save_to_disk(str(prefs))

    sft = load_local_data(f"hf:{qa}?instruction=q&response=a", held_out_fraction=0.2, max_examples=0, seed=0)
    dpo = load_local_data(f"hf:{prefs}", held_out_fraction=0.0, max_examples=0, seed=0, task="dpo")

    assert sorted(sft.train + sft.held_out, key=lambda e: e.prompt) == [
        Example(f"q{i}", f"a{i}") for i in range(5)
    ]
    assert len(sft.held_out) == 1
    assert dpo.train == [PreferencePair("p", "c", "r"), PreferencePair("p2", "c2", "r2")]
    with pytest.raises(DataSourceError, match=r"prefs: no column 'good' for field `chosen`"):
        load_local_data(f"hf:{prefs}?chosen=good", held_out_fraction=0.0, max_examples=0, seed=0, task="dpo")
    with pytest.raises(DataSourceError, match="no such file or folder"):
        load_local_data("hf:org/dataset", held_out_fraction=0.0, max_examples=0, seed=0)
