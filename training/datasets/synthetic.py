"""Seeded synthetic skills with exactly one right answer each, for tests, demos and exact-match accuracy.

Each client of :func:`synthetic_clients` practises one skill, so the federation is non-IID by construction
while a tiny model still learns something within a few steps. Everything depends only on the seed.
"""

from __future__ import annotations

import random

from training.data import Example, PreferencePair
from training.errors import ConfigError

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Canada", "Ottawa"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Cuba", "Havana"),
)
ANTONYMS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("up", "down"),
    ("happy", "sad"),
    ("early", "late"),
    ("light", "dark"),
    ("open", "closed"),
    ("full", "empty"),
    ("old", "new"),
)
WORDS: tuple[str, ...] = ("red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird")

SKILLS: tuple[str, ...] = ("arithmetic", "reverse", "capitals", "antonyms")


def _arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    wrong = a + b + rng.choice((-2, -1, 1, 2))
    return f"What is {a} + {b}?", str(a + b), str(wrong)


def _reverse(rng: random.Random) -> tuple[str, str, str]:
    words = rng.sample(WORDS, 3)
    return f"Reverse the words: {' '.join(words)}", " ".join(reversed(words)), " ".join(words)


def _capitals(rng: random.Random) -> tuple[str, str, str]:
    (country, capital), (_, other) = rng.sample(CAPITALS, 2)
    return f"What is the capital of {country}?", capital, other


def _antonyms(rng: random.Random) -> tuple[str, str, str]:
    word, opposite = rng.choice(ANTONYMS)
    return f"What is the opposite of {word}?", opposite, word


_GENERATORS = {"arithmetic": _arithmetic, "reverse": _reverse, "capitals": _capitals, "antonyms": _antonyms}


def _rng(skill: str, seed: int) -> random.Random:
    if skill not in _GENERATORS:
        raise ConfigError(f"`skill` must be one of {', '.join(SKILLS)}, got {skill!r}")
    # String seeds are hashed with SHA-512 by `random`, so this is stable across processes.
    return random.Random(f"fedchain-synthetic:{skill}:{seed}")


def synthetic_task(skill: str, n: int, seed: int) -> list[Example]:
    """``n`` examples of one skill (``"arithmetic"``, ``"reverse"``, ``"capitals"``, ``"antonyms"``)."""
    if n < 0:
        raise ConfigError(f"`n` must be >= 0, got {n!r}")
    rng = _rng(skill, seed)
    examples = []
    for _ in range(n):
        prompt, answer, _wrong = _GENERATORS[skill](rng)
        examples.append(Example(prompt=prompt, response=answer))
    return examples


def synthetic_preferences(skill: str, n: int, seed: int) -> list[PreferencePair]:
    """``n`` preference pairs of one skill: the right answer is chosen, a plausible wrong one rejected."""
    if n < 0:
        raise ConfigError(f"`n` must be >= 0, got {n!r}")
    rng = _rng(skill, seed)
    pairs = []
    for _ in range(n):
        prompt, answer, wrong = _GENERATORS[skill](rng)
        pairs.append(PreferencePair(prompt=prompt, chosen=answer, rejected=wrong))
    return pairs


def _client_skills(num_clients: int, skills: tuple[str, ...]) -> tuple[str, ...]:
    if num_clients < 1:
        raise ConfigError(f"`num_clients` must be >= 1, got {num_clients!r}")
    if skills and len(skills) != num_clients:
        raise ConfigError(f"`skills` lists {len(skills)} names for {num_clients} clients")
    return skills or tuple(SKILLS[i % len(SKILLS)] for i in range(num_clients))


def synthetic_clients(
    num_clients: int, examples_per_client: int, seed: int, skills: tuple[str, ...] = ()
) -> dict[str, list[Example]]:
    """One skill per client, cycling through :data:`SKILLS`: ``{"client-0": [...], ...}``.

    ``skills`` names each client's skill instead (``num_clients`` names). Clients that share a skill get
    different examples (their seeds differ).
    """
    names = _client_skills(num_clients, skills)
    return {
        f"client-{i}": synthetic_task(names[i], examples_per_client, seed * 1009 + i)
        for i in range(num_clients)
    }


def synthetic_preference_clients(
    num_clients: int, pairs_per_client: int, seed: int, skills: tuple[str, ...] = ()
) -> dict[str, list[PreferencePair]]:
    """Preference-pair counterpart of :func:`synthetic_clients`: one skill per client, same seeds.

    ``skills`` names each client's skill (``num_clients`` names); empty cycles through :data:`SKILLS`.
    """
    names = _client_skills(num_clients, skills)
    return {
        f"client-{i}": synthetic_preferences(names[i], pairs_per_client, seed * 1009 + i)
        for i in range(num_clients)
    }


def corpus_text(seed: int = 0, per_skill: int = 200) -> list[str]:
    """Plain text lines covering every skill, used to train the tiny test tokenizer."""
    lines = []
    for skill in SKILLS:
        for pair in synthetic_preferences(skill, per_skill, seed):
            lines.append(f"{pair.prompt} {pair.chosen} {pair.rejected}")
    return lines
