"""What federation buys: a model scored on this node's own held-out split and on other members' data.

A member's own held-out split says how well a model fits the member's distribution; the extra evaluation
sources of ``[training] eval_sources`` (data of the other members' distributions, which this member never
trains on) say how well it generalises beyond it. :func:`score_model` scores one model on both, by loss and
by token F1 of greedy answers (``training.evaluate.answer_f1``). The node scores each merged model with it
(``round.scored``), and ``fedchain demo`` scores its local-only baselines with the same function, so the
two columns compare like with like.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import Example

MAX_NEW_TOKENS = 16
"""Length of the greedy answers scored by token F1 (short: SmolLM2 on a shared CPU is slow)."""
_PREFIXES = ("chatterbot:", "synthetic:")


@dataclass(frozen=True)
class EvalPlan:
    """How much of each data set :func:`score_model` scores.

    Attributes
    ----------
    answers
        Greedy answers scored by token F1 per data set (the first ``answers`` examples; 0: no F1).
    max_new_tokens
        Length limit of each greedy answer.
    """

    answers: int = 8
    max_new_tokens: int = MAX_NEW_TOKENS

    def __post_init__(self) -> None:
        if self.answers < 0:
            raise ValueError(f"`answers` must be >= 0, got {self.answers}")
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}")


def resolve_source(source: str, home: Path) -> str:
    """Make a JSONL path relative to ``home`` absolute; named sources (``chatterbot:``...) stay as is."""
    if source.startswith(_PREFIXES) or Path(source).is_absolute():
        return source
    return str(home / source)


def load_eval_sources(sources: Sequence[str], *, max_examples: int, seed: int) -> list[Example]:
    """Load every example of each source (capped at ``max_examples`` each by a seeded sample), in order.

    Raises
    ------
    node.protocol.model.DataSourceError
        If a source is unknown or unreadable (the message names it).
    """
    from node.protocol.model import load_local_data

    examples: list[Example] = []
    for source in sources:
        data = load_local_data(source, held_out_fraction=0.0, max_examples=max_examples, seed=seed)
        examples += data.train
    return examples


def score_model(
    model: Any,
    tokenizer: Any,
    own: Sequence[Example],
    others: Sequence[Example],
    plan: EvalPlan,
    *,
    max_len: int,
    own_loss: bool = True,
) -> dict[str, float | None]:
    """Score the model on ``own`` (held-out split) and ``others`` (other distributions).

    Returns
    -------
    dict
        ``loss`` and ``others_loss`` (mean per-token loss of the responses), ``f1`` and ``others_f1``
        (mean token F1 of greedy answers to the first ``plan.answers`` examples); ``None`` where the data
        set is empty or ``plan.answers`` is 0. With ``own_loss=False`` there is no ``loss`` key (the
        caller has it already).
    """
    from training.evaluate import answer_f1, evaluate_loss

    out: dict[str, float | None] = {}
    for prefix, examples in (("", own), ("others_", others)):
        if prefix or own_loss:
            out[f"{prefix}loss"] = (
                evaluate_loss(model, tokenizer, examples, max_len=max_len).loss if examples else None
            )
        asked = list(examples[: plan.answers])
        out[f"{prefix}f1"] = (
            answer_f1(model, tokenizer, asked, max_new_tokens=plan.max_new_tokens) if asked else None
        )
    return out


def write_examples(examples: Sequence[Example], path: Path) -> Path:
    """Write ``examples`` as chat-``messages`` JSONL (read back to equal examples by ``load_sft_jsonl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        json.dumps({"messages": [*e.messages(), {"role": "assistant", "content": e.response}]})
        for e in examples
    ]
    path.write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return path
