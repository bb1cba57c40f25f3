"""Evaluation: held-out loss and perplexity (prompt masked) per client and on their union, exact match, F1.

Loss is the mean negative log-likelihood per response token; the union's loss weighs every token equally
(the token-weighted mean of the clients'), which is what evaluating the concatenated data gives.
Exact match greedily generates an answer for each prompt and compares it, stripped, with the reference.
Token F1 (SQuAD's answer metric) scores the same greedy answers by the words they share with the reference,
after :func:`normalize_answer` (lower case, no punctuation, no articles, single spaces).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from training.data import Example
from training.datasets.tokenize import IGNORE_INDEX, encode_sft, pad_batch, pad_id_of, render
from training.errors import ConfigError

UNION = "union"


@dataclass(frozen=True)
class LossResult:
    """Held-out loss over ``tokens`` response tokens of ``examples`` examples."""

    loss: float
    tokens: int
    examples: int

    @property
    def perplexity(self) -> float:
        """``exp(loss)`` (``inf`` on overflow)."""
        return math.exp(self.loss) if self.loss < 700 else math.inf


def token_logprobs(model: Any, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Sum the log-probabilities of the label tokens of each sequence, and count them.

    Returns
    -------
    tuple[Tensor, Tensor]
        ``(logp[b], count[b])``; positions with label ``-100`` are excluded. Works with prompt-tuning
        models, whose logits are longer than the input by the virtual tokens.
    """
    labels = batch["labels"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, -labels.shape[1] :, :]  # drop virtual-token positions, if any
    logits, targets = logits[:, :-1, :].float(), labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    logp = (picked - torch.logsumexp(logits, dim=-1)) * mask
    return logp.sum(dim=-1), mask.sum(dim=-1)


@torch.no_grad()
def evaluate_loss(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_len: int = 256,
    batch_size: int = 16,
    template: str | None = None,
) -> LossResult:
    """Mean per-token loss of the responses of ``examples`` (model left in eval mode).

    ``template``: the prompt template the model was trained with (see ``training.datasets.tokenize.render``).
    """
    if not examples:
        raise ConfigError("no evaluation examples")
    model.eval()
    device = next(p for p in model.parameters()).device
    encoded = [encode_sft(e, tokenizer, max_len, template) for e in examples]
    pad = pad_id_of(tokenizer)
    total, tokens = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(encoded[start : start + batch_size], pad).items()}
        logp, count = token_logprobs(model, batch)
        total -= float(logp.sum())
        tokens += int(count.sum())
    return LossResult(loss=total / max(tokens, 1), tokens=tokens, examples=len(examples))


def evaluate_clients(
    model: Any,
    tokenizer: Any,
    held_out: Mapping[str, Sequence[Example]],
    *,
    max_len: int = 256,
    batch_size: int = 16,
    template: str | None = None,
) -> dict[str, LossResult]:
    """Loss per client and on the union of all held-out data (under the key :data:`UNION`)."""
    if UNION in held_out:
        raise ConfigError(f"a client may not be named {UNION!r}")
    results = {
        name: evaluate_loss(
            model, tokenizer, examples, max_len=max_len, batch_size=batch_size, template=template
        )
        for name, examples in sorted(held_out.items())
        if examples
    }
    if not results:
        raise ConfigError("no evaluation examples")
    tokens = sum(r.tokens for r in results.values())
    loss = sum(r.loss * r.tokens for r in results.values()) / max(tokens, 1)
    results[UNION] = LossResult(loss=loss, tokens=tokens, examples=sum(r.examples for r in results.values()))
    return results


@torch.no_grad()
def generate_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    template: str | None = None,
) -> list[str]:
    """Greedy answers to the prompts of ``examples`` (special tokens removed, whitespace stripped)."""
    model.eval()
    device = next(p for p in model.parameters()).device
    pad = pad_id_of(tokenizer)
    answers: list[str] = []
    for start in range(0, len(examples), batch_size):
        prompts = [
            tokenizer(render(e, tokenizer, template)[0], add_special_tokens=False)["input_ids"]
            for e in examples[start : start + batch_size]
        ]
        width = max(len(p) for p in prompts)
        # Left padding, so that every prompt ends where generation starts.
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
        )
        # Generation from embeddings (some PEFT methods) returns only the new tokens.
        echoed = out.shape[1] >= width and torch.equal(out[:, :width], ids)
        new_tokens = out[:, width:] if echoed else out
        answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return answers


def exact_match(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    max_new_tokens: int = 16,
    batch_size: int = 16,
    template: str | None = None,
) -> float:
    """Fraction of ``examples`` whose greedy answer equals the reference response (both stripped)."""
    if not examples:
        raise ConfigError("no evaluation examples")
    answers = generate_answers(
        model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size, template=template
    )
    hits = sum(a == e.response.strip() for a, e in zip(answers, examples, strict=True))
    return hits / len(examples)


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, punctuation and the articles a/an/the removed, whitespace collapsed (SQuAD's rule)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the words two answers share after :func:`normalize_answer` (repeated words count as often).

    Two answers without words score 1.0; one without words against one with words scores 0.0.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_f1(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, max_new_tokens: int = 16, batch_size: int = 16
) -> float:
    """Mean :func:`token_f1` of the greedy answers to ``examples`` against their reference responses."""
    if not examples:
        raise ConfigError("no evaluation examples")
    answers = generate_answers(
        model, tokenizer, examples, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return sum(token_f1(a, e.response) for a, e in zip(answers, examples, strict=True)) / len(examples)
