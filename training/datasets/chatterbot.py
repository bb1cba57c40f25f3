"""The English ``chatterbot-corpus`` categories as naturally non-IID clients (one category = one client)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from training.data import Example
from training.errors import DataFormatError


def _english_dir() -> Path:
    try:
        root = resources.files("chatterbot_corpus")
    except ModuleNotFoundError as exc:
        raise DataFormatError("the `chatterbot-corpus` package is not installed") from exc
    return Path(str(root)) / "data" / "english"


def chatterbot_categories() -> list[str]:
    """Names of the English categories, sorted (e.g. ``["ai", "botprofile", ...]``)."""
    return sorted(p.stem for p in _english_dir().glob("*.yml"))


def load_chatterbot_category(category: str) -> list[Example]:
    """Read one category as examples: every consecutive (statement, reply) pair of each conversation.

    Earlier turns of a conversation become the example's ``history`` (alternating user/assistant).
    """
    path = _english_dir() / f"{category}.yml"
    if not path.is_file():
        raise DataFormatError(f"unknown chatterbot category {category!r}; known: {chatterbot_categories()}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataFormatError(f"{path}: invalid YAML: {exc}") from exc
    conversations = doc.get("conversations") if isinstance(doc, dict) else None
    if not isinstance(conversations, list):
        raise DataFormatError(f"{path}: no `conversations` list")
    examples: list[Example] = []
    for conv in conversations:
        if not isinstance(conv, list):
            continue
        turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
        for i in range(len(turns) - 1):
            # Turns alternate back from the prompt (user): the one before it is the assistant's.
            history = tuple(("assistant" if (i - j) % 2 == 1 else "user", turns[j]) for j in range(i))
            if history and history[0][0] == "assistant":
                history = history[1:]  # a conversation starts with the user
            examples.append(Example(prompt=turns[i], response=turns[i + 1], history=history))
    return examples


def chatterbot_clients(categories: list[str] | None = None) -> dict[str, list[Example]]:
    """Every requested category (default: all English ones) as ``{category: examples}``, sorted by name."""
    names = chatterbot_categories() if categories is None else sorted(categories)
    return {name: load_chatterbot_category(name) for name in names}
