"""Plain text for pre-training: read UTF-8 text files (or local ``datasets`` folders) and pack token blocks.

Pre-training (``task = "pretrain"``) trains on raw text rather than examples. A member's text is one or more
sources, each read whole:

- a UTF-8 text file (any name): its whole content is one document;
- a folder written by ``datasets.Dataset.save_to_disk`` (or a ``DatasetDict`` with a ``train`` split): each
  row's ``text`` column is one document.

Documents are tokenised with the model's tokenizer (no special tokens), each followed by the EOS token,
concatenated and cut into fixed-length blocks of ``block_size`` tokens (:func:`pack_blocks`); the tail that
does not fill a block is dropped. Bad input (an empty file, bytes that are not UTF-8, a dataset without a
``text`` column) raises :class:`~training.errors.DataFormatError` naming the file, and for UTF-8 errors the
byte offset.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from training.errors import DataFormatError

log = logging.getLogger(__name__)


def read_text_file(path: str | Path) -> str:
    """Return the content of a UTF-8 text file.

    Raises
    ------
    DataFormatError
        If the file cannot be read, is empty (or only whitespace), or is not valid UTF-8 (the message gives
        the byte offset of the first bad byte).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(f"{path}: cannot read text file: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(
            f"{path}: not UTF-8 text: byte offset {exc.start} (0x{data[exc.start]:02x}): {exc.reason}"
        ) from exc
    if not text.strip():
        raise DataFormatError(f"{path}: text file is empty")
    return text.removeprefix("\ufeff")


def _dataset_documents(path: Path) -> list[str]:
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise DataFormatError(f"{path}: reading a dataset folder needs the `datasets` package") from exc
    try:
        ds: Any = load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise DataFormatError(f"{path}: not a text file or a `save_to_disk` dataset folder: {exc}") from exc
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataFormatError(f"{path}: dataset has no `train` split (splits: {sorted(ds)})")
        ds = ds["train"]
    if "text" not in ds.column_names:
        raise DataFormatError(f"{path}: dataset has no `text` column (columns: {ds.column_names})")
    docs = []
    for i, value in enumerate(ds["text"]):
        if not isinstance(value, str):
            raise DataFormatError(f"{path}: row {i}: `text` must be a string, got {type(value).__name__}")
        if value.strip():
            docs.append(value)
    if not docs:
        raise DataFormatError(f"{path}: dataset has no non-empty `text` rows")
    return docs


def read_documents(path: str | Path) -> list[str]:
    """Return the documents of one text source: a UTF-8 file (one document) or a dataset folder (rows).

    Raises
    ------
    DataFormatError
        As :func:`read_text_file`, or for a folder that is not a dataset with a ``text`` column.
    """
    path = Path(path)
    if path.is_dir():
        return _dataset_documents(path)
    return [read_text_file(path)]


def chatterbot_texts(categories: Sequence[str]) -> dict[str, str]:
    """Each chatterbot-corpus category's conversations as plain text (a turn per line, blank line between).

    Raises
    ------
    DataFormatError
        If a category is unknown or the corpus is not installed.
    """
    from training.datasets.chatterbot import chatterbot_clients

    out = {}
    for name, examples in chatterbot_clients(list(categories)).items():
        out[name] = "\n\n".join(f"{e.prompt}\n{e.response}" for e in examples)
    return out


def source_blocks(source: str, tokenizer: Any, block_size: int) -> Tensor:
    """Blocks of one member's text source: ``chatterbot:<category>``, a UTF-8 file or a dataset folder.

    Raises
    ------
    DataFormatError
        As :func:`load_blocks`, or for an unknown chatterbot category.
    """
    if source.startswith("chatterbot:"):
        name = source.split(":", 1)[1]
        text = chatterbot_texts([name])[name]
        return pack_blocks(tokenize_documents([text], tokenizer), block_size, where=source)
    return load_blocks([source], tokenizer, block_size)


def tokenize_documents(documents: Sequence[str], tokenizer: Any) -> list[int]:
    """Token ids of ``documents`` concatenated, each document followed by the EOS token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataFormatError("the tokenizer has no EOS token to separate documents")
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        ids.append(int(eos))
    return ids


def pack_blocks(ids: Sequence[int], block_size: int, *, where: str = "text") -> Tensor:
    """Cut ``ids`` into ``[n, block_size]`` int64 blocks (the incomplete tail is dropped).

    Raises
    ------
    DataFormatError
        If there are fewer than ``block_size`` tokens (``where`` names the source in the message).
    """
    if block_size < 2:
        raise DataFormatError(f"`block_size` must be >= 2, got {block_size!r}")
    n = len(ids) // block_size
    if n < 1:
        raise DataFormatError(
            f"{where}: {len(ids)} tokens, fewer than one block of {block_size} (`max_len`); add text"
        )
    return torch.tensor(list(ids[: n * block_size]), dtype=torch.int64).reshape(n, block_size)


def load_blocks(paths: Sequence[str | Path], tokenizer: Any, block_size: int) -> Tensor:
    """Read, tokenise and pack every source in ``paths`` (in order) into one ``[n, block_size]`` tensor.

    Raises
    ------
    DataFormatError
        If a source is bad (see :func:`read_documents`) or all of them give less than one block.
    """
    if not paths:
        raise DataFormatError("no text sources given")
    ids: list[int] = []
    for path in paths:
        ids.extend(tokenize_documents(read_documents(path), tokenizer))
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
    blocks = pack_blocks(ids, block_size, where=where)
    log.info("%s: %d tokens, %d blocks of %d", where, len(ids), blocks.shape[0], block_size)
    return blocks
