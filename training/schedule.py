"""The local learning rate of each round: constant, or the OpenFedLLM reference's cosine decay over rounds.

The reference (``utils/utils.py`` and ``main_sft.py`` of OpenFedLLM) computes, before every round's local
training, ``cosine_learning_rate(round, num_rounds, learning_rate, 1e-6)`` and trains that round at this rate
with a constant schedule inside the round. :func:`round_lr` does the same from ``[train] lr``,
``lr_schedule`` and ``min_lr``; :meth:`training.config.TrainConfig.for_round` applies it to a config.
"""

from __future__ import annotations

import math
from typing import Literal

LrSchedule = Literal["constant", "cosine"]
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
DEFAULT_MIN_LR = 1e-6
"""The reference's floor: ``main_sft.py`` passes ``min_lr = 1e-6``."""


def cosine_learning_rate(current_round: int, total_rounds: int, initial_lr: float, min_lr: float) -> float:
    """Return ``min_lr + (initial_lr - min_lr) / 2 * (1 + cos(pi * current_round / total_rounds))``.

    The reference's formula: ``initial_lr`` in round 0, falling to ``min_lr`` at ``current_round =
    total_rounds`` (the reference's last round, ``total_rounds - 1``, trains slightly above ``min_lr``).

    Raises
    ------
    ValueError
        If ``total_rounds < 1`` or ``current_round`` is outside ``[0, total_rounds]``.
    """
    if total_rounds < 1:
        raise ValueError(f"`total_rounds` must be >= 1, got {total_rounds!r}")
    if not 0 <= current_round <= total_rounds:
        raise ValueError(f"`current_round` must be in [0, {total_rounds}], got {current_round!r}")
    return min_lr + 0.5 * (initial_lr - min_lr) * (1 + math.cos(math.pi * current_round / total_rounds))


def round_lr(schedule: str, lr: float, min_lr: float, current_round: int, total_rounds: int) -> float:
    """Return the local learning rate of round ``current_round`` (0-based) of a run of ``total_rounds``.

    ``"constant"``: ``lr`` every round. ``"cosine"``: :func:`cosine_learning_rate` from ``lr`` to
    ``min_lr``. A round past the schedule (a network run whose early rounds failed goes on until
    ``total_rounds`` rounds are finalised, so its round numbers can exceed ``total_rounds - 1``) trains at
    the rate of the schedule's last round, ``total_rounds - 1``: the rate never rises again.

    Raises
    ------
    ValueError
        If ``schedule`` is unknown, ``current_round < 0`` or ``total_rounds < 1``.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"`lr_schedule` must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if current_round < 0:
        raise ValueError(f"`current_round` must be >= 0, got {current_round!r}")
    if total_rounds < 1:
        raise ValueError(f"`total_rounds` must be >= 1, got {total_rounds!r}")
    if schedule == "constant":
        return lr
    return cosine_learning_rate(min(current_round, total_rounds - 1), total_rounds, lr, min_lr)
