"""Tokenisation with the prompt masked from the loss, and padding into batches.

A tokenizer with a chat template renders examples with it (the response ends with the template's
end-of-turn text); one without gets the plain ``### Instruction:`` / ``### Response:`` template and the
response ends with the EOS token. A named template (``alpaca``, ``vicuna``: the OpenFedLLM reference's,
:mod:`training.datasets.templates`) replaces both. Prompt and response are tokenised separately and
concatenated, so the boundary between masked and trained tokens is exact. Labels are ``-100`` for prompt
and padding tokens.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.data import Example, PreferencePair
from training.errors import ConfigError, DataFormatError

IGNORE_INDEX = -100
PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


@dataclass(frozen=True)
class Encoded:
    """One tokenised example: ``labels`` equals ``input_ids`` on response tokens and ``-100`` elsewhere."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def num_target_tokens(self) -> int:
        """Tokens that count in the loss."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


def render(example: Example, tokenizer: Any, template: str | None = None) -> tuple[str, str]:
    """Return ``(prompt_text, response_text)``: the text the model reads and the text it must produce.

    ``template`` names a reference template (the example's system message and earlier turns, if any,
    come first as plain text); ``None`` uses the tokenizer's chat template or the plain layout.
    """
    if template is not None:
        from training.datasets.templates import render_template

        context = "".join(f"{content}\n\n" for _, content in example.history)
        system = f"{example.system}\n\n" if example.system else ""
        prompt, response = render_template(
            template, example.prompt, example.response, tokenizer.eos_token or ""
        )
        return system + context + prompt, response
    if getattr(tokenizer, "chat_template", None):
        messages = example.messages()
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": example.response}], tokenize=False
        )
        if isinstance(prompt, str) and isinstance(full, str) and full.startswith(prompt):
            return prompt, full[len(prompt) :]
    context = "".join(f"{content}\n\n" for _, content in example.history)
    system = f"{example.system}\n\n" if example.system else ""
    prompt = system + context + PLAIN_TEMPLATE.format(prompt=example.prompt)
    return prompt, example.response + (tokenizer.eos_token or "")


def _ids(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids)


def encode_sft(example: Example, tokenizer: Any, max_len: int, template: str | None = None) -> Encoded:
    """Tokenise one example, masking the prompt (``template`` as in :func:`render`).

    Longer than ``max_len``: the prompt is cut from the left to leave room for the response (keeping at
    least ``max_len // 2`` prompt tokens when it has them), then the response is cut at ``max_len``.
    """
    if max_len < 8:
        raise ConfigError(f"`max_len` must be >= 8, got {max_len!r}")
    prompt_text, response_text = render(example, tokenizer, template)
    prompt, response = _ids(tokenizer, prompt_text), _ids(tokenizer, response_text)
    if not response:
        raise DataFormatError(f"example with prompt {example.prompt[:40]!r} has an empty response")
    if len(prompt) + len(response) > max_len:
        budget = max(max_len - len(response), max_len // 2)
        prompt = prompt[-budget:] if len(prompt) > budget else prompt
        response = response[: max_len - len(prompt)]
    return Encoded(
        input_ids=tuple(prompt + response),
        labels=(IGNORE_INDEX,) * len(prompt) + tuple(response),
    )


def encode_preference(
    pair: PreferencePair, tokenizer: Any, max_len: int, template: str | None = None
) -> tuple[Encoded, Encoded]:
    """Tokenise a preference pair as ``(chosen, rejected)``, each with the shared prompt masked."""
    chosen = encode_sft(Example(prompt=pair.prompt, response=pair.chosen), tokenizer, max_len, template)
    rejected = encode_sft(Example(prompt=pair.prompt, response=pair.rejected), tokenizer, max_len, template)
    return chosen, rejected


def pad_batch(batch: Sequence[Encoded], pad_id: int) -> dict[str, Tensor]:
    """Right-pad to the longest sequence: ``input_ids``, ``attention_mask`` and ``labels`` as int64."""
    if not batch:
        raise ConfigError("cannot pad an empty batch")
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def pad_id_of(tokenizer: Any) -> int:
    """Return the tokenizer's pad id, falling back to EOS (padding is masked out anyway)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("the tokenizer has neither a pad nor an eos token")
    return int(pad)


def batch_order(
    num_items: int, batch_size: int, seed: int, *, steps: int | None, epochs: int
) -> Iterator[list[int]]:
    """Index lists of each step: seeded reshuffle every epoch; ``steps`` (if given) wraps around epochs.

    The last partial batch of an epoch is kept, so every example is seen once per epoch.
    """
    if num_items < 1:
        raise ConfigError("no training examples")
    rng = random.Random(seed)
    done, epoch = 0, 0
    while True:
        order = list(range(num_items))
        rng.shuffle(order)
        for start in range(0, num_items, batch_size):
            if steps is not None and done >= steps:
                return
            yield order[start : start + batch_size]
            done += 1
        epoch += 1
        if steps is None and epoch >= epochs:
            return
