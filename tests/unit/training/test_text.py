"""Plain text for pre-training: UTF-8 files and dataset folders, errors naming bad shards, block packing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.errors import DataFormatError
from training.text import load_blocks, pack_blocks, read_documents, read_text_file, tokenize_documents


def test_text_file_is_read_as_one_document(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffhello wörld\nsecond line\n".encode())

    assert read_documents(path) == ["hello wörld\nsecond line\n"]


def test_empty_file_is_refused_naming_it(tmp_path: Path) -> None:
    for name, body in (("empty.txt", b""), ("blank.txt", b" \n\n\t")):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(DataFormatError, match=rf"{name}: text file is empty"):
            read_text_file(tmp_path / name)


def test_non_utf8_file_is_refused_with_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf" + "é au lait".encode("latin-1"))

    with pytest.raises(DataFormatError, match=r"latin1.txt: not UTF-8 text: byte offset 3 \(0xe9\)"):
        read_text_file(path)


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="nope.txt: cannot read text file"):
        read_documents(tmp_path / "nope.txt")


def test_dataset_folder_rows_are_documents(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_dict({"text": ["one doc", "", "two doc"]}).save_to_disk(str(tmp_path / "ds"))
    Dataset.from_dict({"body": ["x"]}).save_to_disk(str(tmp_path / "bad"))

    assert read_documents(tmp_path / "ds") == ["one doc", "two doc"]
    with pytest.raises(DataFormatError, match=r"bad: dataset has no `text` column \(columns: \['body'\]\)"):
        read_documents(tmp_path / "bad")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataFormatError, match="plain: not a text file or a `save_to_disk` dataset"):
        read_documents(tmp_path / "plain")


def test_blocks_are_packed_with_eos_between_documents(tiny_tokenizer: Any) -> None:
    ids = tokenize_documents(["hello there", "good bye"], tiny_tokenizer)
    eos = tiny_tokenizer.eos_token_id

    blocks = pack_blocks(ids, 3)

    assert ids.count(eos) == 2 and ids[-1] == eos
    assert blocks.dtype == torch.int64 and blocks.shape == (len(ids) // 3, 3)
    assert blocks.reshape(-1).tolist() == ids[: blocks.numel()]  # the tail that fills no block is dropped


def test_too_little_text_names_the_source(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = tmp_path / "short.txt"
    path.write_text("hi")

    with pytest.raises(DataFormatError, match=r"short.txt: \d+ tokens, fewer than one block of 64"):
        load_blocks([path], tiny_tokenizer, 64)
