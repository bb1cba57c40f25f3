"""Training examples, the JSONL formats users bring, and the splits that turn one data set into clients.

Supervised (SFT) rows may be in any of three formats, detected per row:

- Alpaca: ``{"instruction": ..., "input": ... (optional), "output": ...}``
- prompt/completion: ``{"prompt": ..., "completion": ...}``
- chat messages: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``; the last
  message must be the assistant's answer, which is the only part trained on.

Preference rows (DPO) are ``{"prompt": ..., "chosen": ..., "rejected": ...}``.
A malformed row raises :class:`~training.errors.DataFormatError` naming the file and line.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from training.errors import ConfigError, DataFormatError

T = TypeVar("T")
log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One supervised example: the model learns ``response`` given everything before it.

    Attributes
    ----------
    prompt
        The user turn answered by ``response``.
    response
        The target text; the only tokens in the loss.
    system
        Optional system message.
    history
        Earlier ``(role, content)`` turns of a conversation, before ``prompt``.
    """

    prompt: str
    response: str
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, str]]:
        """Chat messages up to and including the user turn (the response excluded)."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        msgs += [{"role": role, "content": content} for role, content in self.history]
        msgs.append({"role": "user", "content": self.prompt})
        return msgs


@dataclass(frozen=True)
class PreferencePair:
    """A DPO preference: ``chosen`` is preferred over ``rejected`` as an answer to ``prompt``."""

    prompt: str
    chosen: str
    rejected: str


def _text(row: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        kind = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise DataFormatError(f"{where}: field `{key}` is {kind}")
    return value


def _example_from_messages(messages: object, where: str) -> Example:
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataFormatError(f"{where}: `messages` must be a list of at least a user and an assistant turn")
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DataFormatError(f"{where}: messages[{i}] must be an object with `role` and `content`")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise DataFormatError(
                f"{where}: messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        if not isinstance(content, str):
            raise DataFormatError(f"{where}: messages[{i}].content must be a string")
        turns.append((role, content))
    if turns[-1][0] != "assistant" or turns[-2][0] != "user":
        raise DataFormatError(f"{where}: `messages` must end with a user turn followed by an assistant turn")
    system = turns[0][1] if turns[0][0] == "system" else None
    history = tuple(turns[1 if system is not None else 0 : -2])
    if any(role == "system" for role, _ in history):
        raise DataFormatError(f"{where}: a system message may only come first")
    return Example(prompt=turns[-2][1], response=turns[-1][1], system=system, history=history)


def parse_sft_row(row: object, where: str) -> Example:
    """Parse one decoded JSON row in any supported SFT format.

    Parameters
    ----------
    row
        The decoded JSON value.
    where
        Location for error messages, e.g. ``"data.jsonl:3"``.
    """
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        return _example_from_messages(row["messages"], where)
    if "instruction" in row:
        instruction = _text(row, "instruction", where)
        extra = _text(row, "input", where, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        return Example(prompt=prompt, response=_text(row, "output", where))
    if "prompt" in row and "completion" in row:
        return Example(prompt=_text(row, "prompt", where), response=_text(row, "completion", where))
    raise DataFormatError(
        f"{where}: unknown row format with keys {sorted(row)}; expected Alpaca (instruction/output), "
        "prompt/completion or chat `messages`"
    )


def parse_preference_row(row: object, where: str) -> PreferencePair:
    """Parse one decoded JSON preference row ``{"prompt", "chosen", "rejected"}``."""
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return PreferencePair(
        prompt=_text(row, "prompt", where),
        chosen=_text(row, "chosen", where),
        rejected=_text(row, "rejected", where),
    )


def _json_rows(path: Path) -> Iterator[tuple[object, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: cannot read data file: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{where}: invalid JSON: {exc.msg}") from exc
        yield row, where


def _load(path: Path, parse: Any) -> list[Any]:
    try:
        return [parse(row, where) for row, where in _json_rows(path)]
    except DataFormatError as exc:
        log.error("rejected data file: %s", exc)
        raise


def load_sft_jsonl(path: str | Path) -> list[Example]:
    """Read supervised examples from a JSONL file (formats in the module docstring).

    Raises
    ------
    DataFormatError
        If the file cannot be read, is empty, or a row is malformed (the message names the line).
    """
    path = Path(path)
    examples: list[Example] = _load(path, parse_sft_row)
    if not examples:
        raise DataFormatError(f"{path}: no examples")
    return examples


def load_preference_jsonl(path: str | Path) -> list[PreferencePair]:
    """Read DPO preference pairs from a JSONL file with ``prompt``, ``chosen`` and ``rejected`` fields."""
    path = Path(path)
    pairs: list[PreferencePair] = _load(path, parse_preference_row)
    if not pairs:
        raise DataFormatError(f"{path}: no preference pairs")
    return pairs


def split_held_out(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split ``items`` into (train, held_out) with a seeded shuffle; held_out gets ``round(fraction * n)``.

    At least one item stays in train; held_out is empty only when ``fraction`` is 0 or ``n < 2``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"`fraction` must be in [0, 1), got {fraction!r}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_held = min(round(fraction * len(items)), max(len(items) - 1, 0))
    if fraction > 0 and n_held == 0 and len(items) >= 2:
        n_held = 1
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    return [items[i] for i in train], [items[i] for i in held]


def dirichlet_split(labels: Sequence[Hashable], num_clients: int, alpha: float, seed: int) -> list[list[int]]:
    """Partition example indices among clients with per-label Dirichlet(alpha) proportions.

    Small ``alpha`` (e.g. 0.1) gives each client few labels (strongly non-IID); large ``alpha`` approaches
    an IID split. Labels are processed in sorted order of their ``repr`` so the result depends only on the
    data and ``seed``.

    Parameters
    ----------
    labels
        One label per example (a category, a task name, ...).
    num_clients
        Number of parts, ``1 <= num_clients <= len(labels)``.
    alpha
        Dirichlet concentration, ``> 0``.
    seed
        Seed of the numpy generator.

    Returns
    -------
    list[list[int]]
        ``num_clients`` sorted index lists, disjoint, covering every index. A client may receive no
        examples when ``alpha`` is small; callers that need data on every client should check.
    """
    if num_clients < 1 or num_clients > len(labels):
        raise ConfigError(f"`num_clients` must be in [1, {len(labels)}], got {num_clients!r}")
    if not alpha > 0:
        raise ConfigError(f"`alpha` must be > 0, got {alpha!r}")
    rng = np.random.default_rng(seed)
    by_label: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for label in sorted(by_label, key=repr):
        indices = np.array(by_label[label])
        rng.shuffle(indices)
        proportions = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(indices)).astype(int)
        for client, chunk in enumerate(np.split(indices, cuts)):
            parts[client].extend(int(i) for i in chunk)
    return [sorted(part) for part in parts]
