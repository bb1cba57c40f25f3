"""Users' local datasets through Hugging Face ``datasets``: every format, column mapping, the reference's
templates, and bad records named by file, row and field. Every file is written in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pytest

from training.config import TrainConfig
from training.data import Example, PreferencePair
from training.datasets.hf import load_hf_records
from training.datasets.templates import render_template
from training.datasets.tokenize import IGNORE_INDEX, encode_sft, render
from training.errors import ConfigError, DataFormatError

QA = {"question": ["What is 2 + 2?", "Name a colour."], "answer": ["4", "red"]}
PREFS = {
    "prompt": ["Opposite of hot?", "Capital of Peru?"],
    "chosen": ["cold", "Lima"],
    "rejected": ["hot", "Oslo"],
}
QA_EXAMPLES = [Example("What is 2 + 2?", "4"), Example("Name a colour.", "red")]

# The OpenFedLLM reference's utils/template.py, copied by hand: the loader must reproduce it exactly.
REFERENCE_ALPACA = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
    "\n\n### Instruction:\n{} \n\n### Response: {}{}"
)
REFERENCE_VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: {} ASSISTANT: {}{}"
)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(columns: dict[str, list[str]]) -> list[dict[str, str]]:
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "save_to_disk", "save_to_disk_dict"])
def test_each_format_with_a_column_mapping(tmp_path: Path, kind: str) -> None:
    dataset = datasets.Dataset.from_dict(QA)
    if kind == "jsonl":
        path = _jsonl(tmp_path / "qa.jsonl", _rows(QA))
    elif kind == "json":
        path = tmp_path / "qa.json"
        path.write_text(json.dumps(_rows(QA)))
    elif kind == "parquet":
        path = tmp_path / "qa.parquet"
        dataset.to_parquet(str(path))
    elif kind == "save_to_disk":
        path = tmp_path / "qa"
        dataset.save_to_disk(str(path))
    else:
        path = tmp_path / "qa-dict"
        datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(path))

    got = load_hf_records(path, columns={"instruction": "question", "response": "answer"})

    assert got == QA_EXAMPLES
    if kind == "save_to_disk_dict":
        test = load_hf_records(path, columns={"instruction": "question", "response": "answer"}, split="test")
        assert test == QA_EXAMPLES[:1]
        with pytest.raises(DataFormatError, match=r"qa-dict: no split 'dev'; its splits: test, train"):
            load_hf_records(path, columns={"instruction": "question", "response": "answer"}, split="dev")


def test_default_columns_alpaca_output_and_input(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Add", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hi", "input": "", "output": "hi"},
        ],
    )

    got = load_hf_records(path)

    # The reference's Alpaca processing joins instruction and a non-empty input with one space.
    assert got == [Example("Add 2 and 3", "5"), Example("Say hi", "hi")]


def test_preference_dataset_with_mapping(tmp_path: Path) -> None:
    path = tmp_path / "prefs.parquet"
    renamed = {"question": PREFS["prompt"], "good": PREFS["chosen"], "bad": PREFS["rejected"]}
    datasets.Dataset.from_dict(renamed).to_parquet(str(path))

    got = load_hf_records(
        path, task="dpo", columns={"prompt": "question", "chosen": "good", "rejected": "bad"}
    )

    assert got == [
        PreferencePair("Opposite of hot?", "cold", "hot"),
        PreferencePair("Capital of Peru?", "Lima", "Oslo"),
    ]


def test_a_dpo_record_without_chosen_names_file_row_and_field(tmp_path: Path) -> None:
    rows = _rows(PREFS)
    del rows[1]["chosen"]
    path = _jsonl(tmp_path / "prefs.jsonl", rows)

    with pytest.raises(DataFormatError, match=r"prefs\.jsonl: row 1: field `chosen` is missing"):
        load_hf_records(path, task="dpo")


def test_bad_records_and_columns_are_named(tmp_path: Path) -> None:
    numbers = _jsonl(tmp_path / "n.jsonl", [{"q": "a", "a": "b"}, {"q": "c", "a": 7}])
    with pytest.raises(DataFormatError, match=r"n\.jsonl: row 1: field `response` \(column 'a'\) is a int"):
        load_hf_records(numbers, columns={"instruction": "q", "response": "a"})
    with pytest.raises(
        DataFormatError, match=r"n\.jsonl: no column 'question' for field `instruction`; its columns: a, q"
    ):
        load_hf_records(numbers, columns={"instruction": "question", "response": "a"})
    with pytest.raises(
        ConfigError, match="`columns` names unknown field.* answer; known: instruction, input, response"
    ):
        load_hf_records(numbers, columns={"answer": "a"})
    with pytest.raises(DataFormatError, match=r"n\.jsonl: no column 'prompt' for field `prompt`"):
        load_hf_records(numbers, task="dpo")
    with pytest.raises(ConfigError, match="`task` must be 'sft' or 'dpo', got 'rl'"):
        load_hf_records(numbers, task="rl")


@pytest.mark.parametrize("source", ["tatsu-lab/alpaca", "missing.parquet", "nowhere/"])
def test_a_path_that_does_not_exist_is_refused_not_downloaded(
    tmp_path: Path, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataFormatError, match="no such file or folder .*never downloaded"):
        load_hf_records(source)


def test_unsupported_and_broken_files(tmp_path: Path) -> None:
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer\n")
    folder = tmp_path / "plain"
    folder.mkdir()
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")

    with pytest.raises(DataFormatError, match=r"qa\.csv: unsupported file type '\.csv'"):
        load_hf_records(csv)
    with pytest.raises(DataFormatError, match=r"plain: a folder must be written by `save_to_disk`"):
        load_hf_records(folder)
    with pytest.raises(DataFormatError, match=r"broken\.parquet: cannot read as a dataset"):
        load_hf_records(broken)
    with pytest.raises(DataFormatError, match=r"empty\.jsonl: (no rows|cannot read)"):
        load_hf_records(empty)


@pytest.mark.parametrize(("name", "reference"), [("alpaca", REFERENCE_ALPACA), ("vicuna", REFERENCE_VICUNA)])
def test_templates_render_the_reference_text_exactly(name: str, reference: str) -> None:
    prompt, response = render_template(name, "Name a colour.", "red", "</s>")

    assert prompt + response == reference.format("Name a colour.", "red", "</s>")
    assert response == " red</s>"  # what follows the reference's response marker is what is learnt
    assert prompt.endswith("\n### Response:" if name == "alpaca" else " ASSISTANT:")


def test_a_template_in_training_masks_everything_up_to_the_marker(tiny_tokenizer: Any) -> None:
    example = Example("Name a colour.", "red")

    prompt, response = render(example, tiny_tokenizer, "alpaca")
    encoded = encode_sft(example, tiny_tokenizer, 128, "alpaca")

    assert prompt + response == REFERENCE_ALPACA.format("Name a colour.", "red", tiny_tokenizer.eos_token)
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE_INDEX]
    assert tiny_tokenizer.decode(trained) == tiny_tokenizer.decode(
        tiny_tokenizer(response, add_special_tokens=False)["input_ids"]
    )
    assert render(example, tiny_tokenizer) != (prompt, response)  # no template: the tokenizer's own layout


def test_an_unknown_template_names_the_field() -> None:
    with pytest.raises(ConfigError, match="`template` must be one of alpaca, vicuna, got 'chatml'"):
        TrainConfig(template="chatml")
    with pytest.raises(ConfigError, match="`template` must be one of alpaca, vicuna"):
        render_template("chatml", "a", "b", "")


@pytest.mark.slow
@pytest.mark.usefixtures("torch_one_thread")
def test_a_simulation_over_hf_datasets_with_a_template_learns(tmp_path: Path) -> None:
    from training.datasets.synthetic import synthetic_task
    from training.simconfig import config_from_dict
    from training.simulate import run_simulation

    paths = []
    for i, skill in enumerate(("antonyms", "capitals")):
        rows = [{"question": e.prompt, "answer": e.response} for e in synthetic_task(skill, 16, seed=i)]
        paths.append(str(_jsonl(tmp_path / f"client{i}.jsonl", rows)))
    cfg = config_from_dict(
        {
            "simulation": {"clients": 2, "rounds": 1, "threads": 1},
            "data": {
                "source": "hf",
                "paths": paths,
                "columns": {"instruction": "question", "response": "answer"},
            },
            "model": {"name_or_path": "tiny-llama"},
            "train": {"template": "alpaca", "lr": 0.02, "local_steps": 4, "batch_size": 4, "max_len": 96},
        }
    )

    result = run_simulation(cfg)

    assert result.rounds[1].eval.union_loss < result.rounds[0].eval.union_loss
    with pytest.raises(ConfigError, match="`columns` applies to `source` 'hf' only"):
        config_from_dict({"data": {"columns": {"instruction": "q"}}})
    with pytest.raises(ConfigError, match=r"`paths` lists 1 files for 2 clients"):
        config_from_dict({"simulation": {"clients": 2}, "data": {"source": "hf", "paths": paths[:1]}})
