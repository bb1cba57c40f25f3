"""The OpenFedLLM reference's prompt templates (its ``utils/template.py``) and their prompt/response split.

Each template is the reference's format string with three slots, ``instruction``, ``response`` and the EOS
token, and the reference's response marker: the loss covers only what follows the marker (TRL's
completion-only collator). :func:`render_template` returns the two parts, whose concatenation is exactly
the reference's text.
"""

from __future__ import annotations

from training.errors import ConfigError

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the "
    "request.\n\n### Instruction:\n{} \n\n### Response: {}{}"
)
VICUNA = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: {} ASSISTANT: {}{}"
)
TEMPLATES: dict[str, tuple[str, str]] = {
    "alpaca": (ALPACA, "\n### Response:"),
    "vicuna": (VICUNA, " ASSISTANT:"),
}
"""Name -> (format string with instruction/response/eos slots, the response marker)."""


def render_template(name: str, instruction: str, response: str, eos: str) -> tuple[str, str]:
    """Split the reference's text for one example into ``(prompt, response)`` at the response marker.

    ``prompt + response == TEMPLATES[name][0].format(instruction, response, eos)``; the prompt ends with
    the marker, the response is what the model learns (the reference's completion-only loss).
    """
    if name not in TEMPLATES:
        raise ConfigError(f"`template` must be one of {', '.join(TEMPLATES)}, got {name!r}")
    text, marker = TEMPLATES[name]
    head = text.format(instruction, "\0", "")  # the instruction may itself contain the marker
    cut = head.rindex(marker, 0, head.index("\0")) + len(marker)
    full = text.format(instruction, response, eos)
    return full[:cut], full[cut:]
