from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from training.data import (
    Example,
    PreferencePair,
    dirichlet_split,
    load_preference_jsonl,
    load_sft_jsonl,
    split_held_out,
)
from training.datasets.chatterbot import chatterbot_categories, chatterbot_clients
from training.datasets.synthetic import SKILLS, synthetic_clients, synthetic_preferences, synthetic_task
from training.datasets.tokenize import (
    IGNORE_INDEX,
    PLAIN_TEMPLATE,
    batch_order,
    encode_preference,
    encode_sft,
    pad_batch,
)
from training.errors import ConfigError, DataFormatError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_load_sft_jsonl_reads_all_three_formats(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"instruction": "Add", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hi", "output": "hi"},
            {"prompt": "Q?", "completion": "A."},
            "",
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi"},
                    {"role": "user", "content": "How are you?"},
                    {"role": "assistant", "content": "Fine."},
                ]
            },
        ],
    )

    examples = load_sft_jsonl(path)

    assert examples == [
        Example("Add\n\n2 and 3", "5"),
        Example("Say hi", "hi"),
        Example("Q?", "A."),
        Example(
            "How are you?", "Fine.", system="Be brief.", history=(("user", "Hello"), ("assistant", "Hi"))
        ),
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "d.jsonl:2: invalid JSON"),
        ({"instruction": "x"}, "d.jsonl:2: field `output` is missing"),
        ({"prompt": "x", "completion": 3}, "d.jsonl:2: field `completion` is a int"),
        ({"text": "x"}, "d.jsonl:2: unknown row format"),
        ([1, 2], "d.jsonl:2: expected a JSON object"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]},
            "role must be one of",
        ),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]},
            "must end with",
        ),
    ],
)
def test_malformed_sft_rows_name_the_line(tmp_path: Path, row: Any, message: str) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "ok", "completion": "ok"}, row])

    with pytest.raises(DataFormatError, match=message.replace("?", r"\?")):
        load_sft_jsonl(path)


def test_empty_or_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no examples"):
        load_sft_jsonl(write_jsonl(tmp_path / "e.jsonl", [""]))
    with pytest.raises(DataFormatError, match="cannot read"):
        load_sft_jsonl(tmp_path / "missing.jsonl")


def test_load_preference_jsonl(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "p", "chosen": "c"}])

    assert load_preference_jsonl(good) == [PreferencePair("p", "c", "r")]
    with pytest.raises(DataFormatError, match=r"b.jsonl:1: field `rejected` is missing"):
        load_preference_jsonl(bad)


def test_split_held_out_is_seeded_disjoint_and_complete() -> None:
    items = list(range(50))

    train, held = split_held_out(items, 0.2, seed=3)

    assert (train, held) == split_held_out(items, 0.2, seed=3)
    assert len(held) == 10 and sorted(train + held) == items
    assert held != split_held_out(items, 0.2, seed=4)[1]
    with pytest.raises(ConfigError, match=r"`fraction` must be in \[0, 1\), got 1.5"):
        split_held_out(items, 1.5, seed=0)


def _mean_label_entropy(labels: list[int], parts: list[list[int]]) -> float:
    entropies = []
    for part in parts:
        counts = Counter(labels[i] for i in part)
        total = sum(counts.values())
        entropies.append(-sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0)
    return sum(entropies) / len(entropies)


def test_dirichlet_split_partitions_and_alpha_controls_skew() -> None:
    labels = [i % 5 for i in range(500)]

    skewed = dirichlet_split(labels, 4, alpha=0.1, seed=0)
    even = dirichlet_split(labels, 4, alpha=100.0, seed=0)

    assert sorted(i for part in skewed for i in part) == list(range(500))
    assert skewed == dirichlet_split(labels, 4, alpha=0.1, seed=0)
    assert _mean_label_entropy(labels, skewed) < _mean_label_entropy(labels, even)
    assert _mean_label_entropy(labels, even) > 0.95 * math.log(5)
    with pytest.raises(ConfigError, match="`alpha` must be > 0"):
        dirichlet_split(labels, 4, alpha=0.0, seed=0)
    with pytest.raises(ConfigError, match="`num_clients` must be in"):
        dirichlet_split(labels[:3], 4, alpha=1.0, seed=0)


def test_synthetic_tasks_are_seeded_and_correct() -> None:
    maths = synthetic_task("arithmetic", 20, seed=1)

    assert maths == synthetic_task("arithmetic", 20, seed=1)
    assert maths != synthetic_task("arithmetic", 20, seed=2)
    for e in maths:
        a, b = e.prompt.removeprefix("What is ").removesuffix("?").split(" + ")
        assert int(e.response) == int(a) + int(b)
    reverse = synthetic_task("reverse", 5, seed=0)[0]
    assert reverse.response.split() == reverse.prompt.split(": ")[1].split()[::-1]
    with pytest.raises(ConfigError, match="`skill` must be one of"):
        synthetic_task("poetry", 1, seed=0)


def test_synthetic_clients_are_non_iid_and_preferences_differ() -> None:
    clients = synthetic_clients(5, 10, seed=0)
    pairs = synthetic_preferences("capitals", 30, seed=0)

    assert list(clients) == [f"client-{i}" for i in range(5)]
    assert clients["client-0"][0].prompt.startswith("What is ") and "+" in clients["client-0"][0].prompt
    assert clients["client-1"][0].prompt.startswith("Reverse")
    assert clients["client-0"] != clients["client-4"]  # same skill, different data
    assert len(SKILLS) == 4
    assert all(p.chosen != p.rejected for p in pairs)


def test_chatterbot_categories_are_clients_with_alternating_history() -> None:
    categories = chatterbot_categories()
    clients = chatterbot_clients(["food", "sports"])

    assert {"food", "sports", "ai", "history"} <= set(categories)
    assert list(clients) == ["food", "sports"]
    assert len(clients["food"]) > 10
    assert Example("do you drink", "My brain does not require any beverages.") in clients["food"]
    for examples in clients.values():
        for e in examples:
            roles = [r for r, _ in e.history]
            assert roles == ["user", "assistant"] * (len(roles) // 2)
    with pytest.raises(DataFormatError, match="unknown chatterbot category"):
        chatterbot_clients(["klingon"])


def test_encode_sft_masks_the_prompt(tiny_tokenizer: Any) -> None:
    example = Example("What is the capital of Peru?", "Lima")

    encoded = encode_sft(example, tiny_tokenizer, max_len=64)
    target = [t for t in encoded.labels if t != IGNORE_INDEX]
    first = encoded.labels.index(target[0])

    assert tiny_tokenizer.decode(target) == "Lima</s>"
    assert all(t == IGNORE_INDEX for t in encoded.labels[:first])
    assert list(encoded.input_ids[first:]) == target
    assert tiny_tokenizer.decode(encoded.input_ids[:first]).endswith("<|assistant|>\n")


def test_encode_sft_plain_template_without_chat_template(tiny_tokenizer: Any) -> None:
    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None

    encoded = encode_sft(Example("Say yes", "yes"), plain, max_len=64)
    prompt_len = encoded.labels.count(IGNORE_INDEX)

    assert plain.decode(encoded.input_ids[:prompt_len]) == PLAIN_TEMPLATE.format(prompt="Say yes")
    assert plain.decode(encoded.input_ids[prompt_len:]) == "yes</s>"


def test_encode_sft_truncates_prompt_first(tiny_tokenizer: Any) -> None:
    long = Example("word " * 200, "short answer")

    encoded = encode_sft(long, tiny_tokenizer, max_len=32)

    assert len(encoded.input_ids) == 32
    assert tiny_tokenizer.decode([t for t in encoded.labels if t != IGNORE_INDEX]) == "short answer</s>"


def test_encode_preference_shares_the_prompt(tiny_tokenizer: Any) -> None:
    chosen, rejected = encode_preference(PreferencePair("What is 2 + 2?", "4", "5"), tiny_tokenizer, 64)

    n = chosen.labels.count(IGNORE_INDEX)

    assert chosen.input_ids[:n] == rejected.input_ids[:n]
    assert chosen.input_ids[n:] != rejected.input_ids[n:]


def test_pad_batch_and_batch_order(tiny_tokenizer: Any) -> None:
    encoded = [encode_sft(e, tiny_tokenizer, 64) for e in synthetic_task("antonyms", 3, seed=0)]
    encoded.append(encode_sft(Example("a much longer prompt than the others here", "x"), tiny_tokenizer, 64))

    batch = pad_batch(encoded, pad_id=0)
    steps = list(batch_order(10, 4, seed=0, steps=7, epochs=1))
    epochs = list(batch_order(10, 4, seed=0, steps=None, epochs=2))

    width = max(len(e.input_ids) for e in encoded)
    assert batch["input_ids"].shape == batch["labels"].shape == (4, width)
    assert batch["attention_mask"].sum().item() == sum(len(e.input_ids) for e in encoded)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert len(steps) == 7 and [len(s) for s in epochs] == [4, 4, 2, 4, 4, 2]
    assert sorted(i for s in epochs[:3] for i in s) == list(range(10))
