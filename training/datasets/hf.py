"""Users' datasets from local files through Hugging Face ``datasets``: never a hub download.

A source is a local path:

- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``split`` picks the split
  of a ``DatasetDict``, ``train`` by default);
- a ``.parquet`` file;
- a ``.json`` or ``.jsonl`` file (JSON lines, or one JSON array of objects).

A path that does not exist is refused (``datasets`` would otherwise take it for a hub id). Columns are
mapped onto the record's fields by ``columns`` (field -> column):

- SFT: ``instruction`` and ``response`` (required), ``input`` (optional, appended to the instruction with a
  space, as the OpenFedLLM reference's Alpaca processing does). Unmapped, ``instruction``, ``input`` and
  ``response`` (or ``output`` when there is no ``response`` column) are used.
- DPO: ``prompt``, ``chosen`` and ``rejected`` (all required; unmapped, the columns of those names).

A bad record raises :class:`~training.errors.DataFormatError` naming the file, the row (0-based, as
``dataset[row]``) and the field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from training.data import Example, PreferencePair
from training.errors import ConfigError, DataFormatError

log = logging.getLogger(__name__)

SFT_FIELDS = ("instruction", "input", "response")
DPO_FIELDS = ("prompt", "chosen", "rejected")
SUFFIXES = (".parquet", ".json", ".jsonl")


def _open(path: Path, split: str | None) -> Any:
    import datasets

    if not path.exists():
        raise DataFormatError(
            f"{path}: no such file or folder (datasets are read from local files only, never downloaded)"
        )
    try:
        if path.is_dir():
            if not any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json")):
                raise DataFormatError(
                    f"{path}: a folder must be written by `save_to_disk` (no dataset_info.json or "
                    "dataset_dict.json in it)"
                )
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                name = split or "train"
                if name not in loaded:
                    raise DataFormatError(
                        f"{path}: no split {name!r}; its splits: {', '.join(sorted(loaded))}"
                    )
                return loaded[name]
            return loaded
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            return datasets.Dataset.from_parquet(str(path))
        if suffix in (".json", ".jsonl"):
            return datasets.Dataset.from_json(str(path))
    except DataFormatError:
        raise
    except Exception as exc:  # pyarrow / datasets parse errors: the file is not what it claims to be
        raise DataFormatError(f"{path}: cannot read as a dataset: {type(exc).__name__}: {exc}") from exc
    raise DataFormatError(
        f"{path}: unsupported file type {path.suffix!r}; expected a save_to_disk folder or "
        f"{', '.join(SUFFIXES)}"
    )


def _mapping(
    columns: Mapping[str, str] | None, fields: tuple[str, ...], present: Iterable[str], path: Path
) -> dict[str, str]:
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise ConfigError(
            f"`columns` names unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    have = set(present)
    mapping = {f: columns.get(f, f) for f in fields}
    if fields == SFT_FIELDS and "response" not in columns and "response" not in have and "output" in have:
        mapping["response"] = "output"
    for name, column in mapping.items():
        if column not in have and not (name == "input" and name not in columns):
            raise DataFormatError(
                f"{path}: no column {column!r} for field `{name}`; its columns: {', '.join(sorted(have))}"
            )
    return mapping


def _text(row: Mapping[str, Any], field: str, column: str, where: str, *, required: bool = True) -> str:
    value = row.get(column)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"a {type(value).__name__}, not a string"
        named = f"field `{field}`" if field == column else f"field `{field}` (column {column!r})"
        raise DataFormatError(f"{where}: {named} is {kind}")
    return value


def load_hf_records(
    path: str | Path,
    *,
    task: str = "sft",
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
) -> list[Any]:
    """Read SFT examples (``task="sft"``) or DPO preference pairs (``task="dpo"``) from a local dataset.

    Returns
    -------
    list
        :class:`~training.data.Example` or :class:`~training.data.PreferencePair` records, in row order.

    Raises
    ------
    DataFormatError
        If the path does not exist or cannot be read, a mapped column is absent, a record lacks a field
        or holds a non-string (the message names the file, the row and the field), or there are no rows.
    ConfigError
        If ``task`` is unknown or ``columns`` names an unknown field.
    """
    if task not in ("sft", "dpo"):
        raise ConfigError(f"`task` must be 'sft' or 'dpo', got {task!r}")
    path = Path(path)
    dataset = _open(path, split)
    fields = DPO_FIELDS if task == "dpo" else SFT_FIELDS
    mapping = _mapping(columns, fields, dataset.column_names, path)
    records: list[Any] = []
    try:
        for i, row in enumerate(dataset):
            where = f"{path}: row {i}"
            if task == "dpo":
                records.append(PreferencePair(*(_text(row, f, mapping[f], where) for f in DPO_FIELDS)))
                continue
            instruction = _text(row, "instruction", mapping["instruction"], where)
            extra = _text(row, "input", mapping["input"], where, required=False)
            records.append(
                Example(
                    prompt=f"{instruction} {extra}" if extra else instruction,
                    response=_text(row, "response", mapping["response"], where),
                )
            )
    except DataFormatError as exc:
        log.error("rejected dataset: %s", exc)
        raise
    if not records:
        raise DataFormatError(f"{path}: no rows")
    return records
