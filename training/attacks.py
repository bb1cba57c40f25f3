"""Byzantine attacks for the simulation: what a malicious client sends instead of its honest update.

Update-level attacks are pure functions ``fn(own, benign, *, generator, **params) -> Tensor[b, d]``:

``own``
    ``[b, d]`` float32, the honest deltas the ``b`` Byzantine clients computed on their own data.
``benign``
    ``[k, d]`` float32, the honest updates the attackers can see. The simulation passes every honest
    client's update (an omniscient attacker, the strongest threat model used by ALIE and IPM).

They never mutate their inputs. The data-level attack (``label_flip``) instead poisons a Byzantine
client's training data before local training; its update then goes through the honest path.

Every attack is registered in :data:`ATTACKS` under its name.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import torch
from torch import Tensor

from training.data import Example, PreferencePair
from training.errors import TrainingError


class AttackError(TrainingError, ValueError):
    """An attack was asked for with bad inputs (unknown name, wrong shapes, out-of-range parameter)."""


def _check(own: Tensor, benign: Tensor) -> None:
    if own.dim() != 2:
        raise AttackError(f"`own` must be a [b, d] matrix, got shape {tuple(own.shape)}")
    if benign.dim() != 2 or benign.shape[1] != own.shape[1]:
        raise AttackError(f"`benign` must be a [k, {own.shape[1]}] matrix, got shape {tuple(benign.shape)}")


def sign_flip(own: Tensor, benign: Tensor, *, generator: torch.Generator, strength: float = 1.0) -> Tensor:
    """Send the negated honest update, scaled by ``strength`` (``-strength * own``).

    The classic "reverse gradient" attack: it pulls the mean in the opposite direction of the
    attacker's honest progress.
    """
    _check(own, benign)
    return own * (-float(strength))


def scaling(own: Tensor, benign: Tensor, *, generator: torch.Generator, strength: float = 10.0) -> Tensor:
    """Send the honest update multiplied by ``strength`` (a boosting / model-replacement attack).

    A single scaled client dominates a plain mean; robust aggregators should bound its influence.
    """
    _check(own, benign)
    return own * float(strength)


def gaussian_noise(
    own: Tensor, benign: Tensor, *, generator: torch.Generator, strength: float = 1.0
) -> Tensor:
    """Send pure Gaussian noise, ``N(0, sigma^2)`` per coordinate, instead of an update.

    ``sigma = strength * std(benign)`` (the coordinate-wise standard deviation of the benign updates,
    averaged over coordinates), so the noise has a scale comparable to real updates whatever the model.
    """
    _check(own, benign)
    scale = float(benign.std(dim=0, unbiased=False).mean()) if benign.shape[0] > 1 else float(own.std())
    noise = torch.randn(own.shape, generator=generator, dtype=torch.float32)
    return noise * (strength * max(scale, 1e-12))


def alie_z(n: int, f: int) -> float:
    """Return the "A Little Is Enough" deviation ``z_max`` for ``n`` clients of which ``f`` are Byzantine.

    Baruch et al. (NeurIPS 2019): ``s = floor(n / 2 + 1) - f`` honest clients must be convinced, and
    ``z_max = Phi^-1((n - s) / n)``, the largest shift that stays within the spread of enough honest
    coordinates to survive median/trimmed-mean/Krum-style filtering.
    """
    if not 0 < f < n:
        raise AttackError(f"ALIE needs 0 < f < n, got n={n}, f={f}")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    p = min(max(p, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def alie(own: Tensor, benign: Tensor, *, generator: torch.Generator, strength: float = 0.0) -> Tensor:
    """Send ``mu - z * sigma`` from every attacker: A Little Is Enough (Baruch et al., 2019).

    ``mu`` and ``sigma`` are the coordinate-wise mean and standard deviation of the benign updates; a
    small, coordinated shift inside the honest spread that robust aggregators cannot tell apart from
    honest variance. ``strength`` is ``z``; ``0`` (the default) uses :func:`alie_z` for
    ``n = b + k`` clients of which ``f = b`` are Byzantine.
    """
    _check(own, benign)
    if benign.shape[0] < 2:
        raise AttackError(
            f"ALIE needs at least 2 benign updates to estimate their spread, got {benign.shape[0]}"
        )
    b = own.shape[0]
    z = float(strength) if strength > 0 else alie_z(b + benign.shape[0], b)
    mu = benign.mean(dim=0)
    sigma = benign.std(dim=0, unbiased=False)
    return (mu - z * sigma).unsqueeze(0).expand(b, -1).clone()


def ipm(own: Tensor, benign: Tensor, *, generator: torch.Generator, strength: float = 0.5) -> Tensor:
    """Send ``-epsilon * mean(benign)`` from every attacker: Inner Product Manipulation (Xie et al., 2019).

    With small ``epsilon`` (``strength``, default 0.5) the malicious updates look small and benign to
    distance-based rules, yet make the inner product of the aggregate with the true descent direction
    shrink or turn negative; a large ``epsilon`` (e.g. 100) breaks the mean outright.
    """
    _check(own, benign)
    if benign.shape[0] < 1:
        raise AttackError("IPM needs at least one benign update")
    return (benign.mean(dim=0) * (-float(strength))).unsqueeze(0).expand(own.shape[0], -1).clone()


def flip_answers(examples: Sequence[Example], *, seed: int) -> list[Example]:
    """Label/answer flip: give every prompt another example's answer (a seeded derangement).

    Parameters
    ----------
    examples
        The SFT examples of one poisoned client, in order.
    seed
        Seed of the permutation, so a simulation is reproducible.

    Returns
    -------
    list of Example
        The same prompts, each paired with a different example's response: the client then trains,
        honestly, on wrong targets. With fewer than two distinct responses nothing can be swapped, and each
        response is reversed character by character instead, which is still wrong.
    """
    answers = [e.response for e in examples]
    if len(set(answers)) < 2:
        return [dataclasses.replace(e, response=e.response[::-1]) for e in examples]
    rng = random.Random(seed)
    # Sattolo's algorithm yields a single n-cycle: no example keeps its own answer's position.
    order = list(range(len(examples)))
    for i in range(len(order) - 1, 0, -1):
        j = rng.randrange(i)
        order[i], order[j] = order[j], order[i]
    return [dataclasses.replace(e, response=answers[order[i]]) for i, e in enumerate(examples)]


def flip_preferences(pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """Label-flip preference data: every pair's chosen and rejected answers trade places."""
    return [PreferencePair(prompt=p.prompt, chosen=p.rejected, rejected=p.chosen) for p in pairs]


@dataclass(frozen=True)
class Attack:
    """A registered attack.

    Attributes
    ----------
    name
        Registry key, used in simulation configs (``attack = "alie"``).
    level
        ``"update"``: :attr:`update_fn` rewrites the Byzantine clients' updates after local training;
        ``"data"``: the Byzantine clients' data is poisoned with :func:`flip_answers` before training.
    default_strength
        The parameter used when a config leaves ``attack_strength`` unset.
    update_fn
        The update-level function, ``None`` for a data-level attack.
    """

    name: str
    level: Literal["update", "data"]
    default_strength: float
    update_fn: Callable[..., Tensor] | None = None


ATTACKS: dict[str, Attack] = {
    "sign_flip": Attack("sign_flip", "update", 1.0, sign_flip),
    "scaling": Attack("scaling", "update", 10.0, scaling),
    "gaussian_noise": Attack("gaussian_noise", "update", 1.0, gaussian_noise),
    "alie": Attack("alie", "update", 0.0, alie),
    "ipm": Attack("ipm", "update", 0.5, ipm),
    "label_flip": Attack("label_flip", "data", 0.0, None),
}


def get_attack(name: str) -> Attack:
    """Look up an attack by name, with an error listing the known ones."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise AttackError(f"unknown attack {name!r}; known: {', '.join(sorted(ATTACKS))}") from None


def apply_update_attack(
    name: str,
    own: Tensor,
    benign: Tensor,
    *,
    seed: int,
    strength: float | None = None,
) -> Tensor:
    """Apply update-level attack ``name`` (see :data:`ATTACKS`) with a seeded generator.

    A data-level attack leaves the updates unchanged (its effect is already in ``own``).
    """
    attack = get_attack(name)
    if attack.update_fn is None:
        return own.clone()
    generator = torch.Generator().manual_seed(seed)
    value = attack.default_strength if strength is None else float(strength)
    out = attack.update_fn(own, benign, generator=generator, strength=value)
    if out.shape != own.shape:
        raise AttackError(f"attack {name!r} returned shape {tuple(out.shape)}, expected {tuple(own.shape)}")
    return out.to(torch.float32)


def attack_rows(
    sent: Tensor,
    honest_rows: Sequence[int],
    bad_rows: Sequence[int],
    name: str,
    *,
    seed: int,
    strength: float | None = None,
) -> None:
    """Rewrite rows ``bad_rows`` of a round's update matrix ``sent`` in place with update attack ``name``.

    The attackers see the honest rows' updates (their own when no honest client was chosen). No attacker, or
    a data-level attack (already in the attackers' updates), leaves ``sent`` unchanged.
    """
    if not bad_rows or get_attack(name).update_fn is None:
        return
    bad = list(bad_rows)
    benign = sent[list(honest_rows)] if honest_rows else sent[bad]
    sent[bad] = apply_update_attack(name, sent[bad], benign, seed=seed, strength=strength)
