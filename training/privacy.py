"""Client-level differential privacy of a member's update: clip, add Gaussian noise, account (local DP).

Every member privatises its own update before encoding it (DP-FedAvg's clip and noise, applied locally), so
the guarantee holds against anyone who reads the artifact: other members, IPFS gateways, auditors.

What is privatised is the flat adapter delta (every tensor that is exchanged; for LoRA, prompt tuning and
DPO runs alike). SCAFFOLD also exchanges a control-variate delta computed from the same data; it is not
privatised, so a run spec refuses ``[privacy]`` together with a control-variate algorithm.

Mechanism (:func:`privatize`): scale the update to L2 norm at most ``clip_norm`` (float64), then add
``N(0, (noise_multiplier * clip_norm)^2)`` to every coordinate. The noise comes from the operating system's
CSPRNG (:func:`gaussian_noise`): 32 fresh bytes of ``os.urandom`` per update key a ChaCha20 keystream
(``cryptography``), whose 64-bit words become uniform doubles and, by Box-Muller, standard normals. Nothing
public (the run seed, the round, the address) enters it, so peers that know every seed cannot subtract it.

Accounting (:func:`epsilon_spent`): the neighbouring relation is *replace*: one member's data swapped for any
other data. Two clipped updates differ by at most ``2 * clip_norm``, so one release is a Gaussian mechanism
of noise multiplier ``noise_multiplier / 2`` relative to its sensitivity; releases compose in Opacus's RDP
accountant (``opacus.accountants.RDPAccountant``) with sampling rate 1. No amplification by client sampling
is claimed: the selection is seeded by a public block hash and every submission is on chain, so whether a
member took part in a round is public. Only rounds in which the member released an update count.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from training.errors import TrainingError

if TYPE_CHECKING:  # numpy and torch load on first use: the run spec imports this module
    import numpy as np
    from torch import Tensor

NOISE_TAIL = 6.0
"""Standard deviations of slack in :func:`noised_norm_bound` (a Gaussian vector's norm exceeds
``sqrt(d) + t`` standard deviations with probability below ``exp(-t^2 / 2)``, ~1.5e-8 for t = 6)."""


class PrivacyError(TrainingError, ValueError):
    """A privacy setting is out of range, or an update cannot be privatised; the message names the field."""


@dataclass(frozen=True)
class PrivacyConfig:
    """Client-level DP of every member's update (the run spec's ``[privacy]`` table; no table: no DP)."""

    clip_norm: float = field(
        default=1.0, metadata={"help": "L2 bound each member clips its whole flat update to"}
    )
    noise_multiplier: float = field(
        default=1.0,
        metadata={"help": "Gaussian noise std per coordinate, in units of clip_norm (> 0)"},
    )
    delta: float = field(default=1e-5, metadata={"help": "delta of the reported (epsilon, delta) guarantee"})
    epsilon_budget: float | None = field(
        default=None,
        metadata={"help": "a member refuses to train a round that would take its epsilon past this"},
    )

    def __post_init__(self) -> None:
        for name in ("clip_norm", "noise_multiplier"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise PrivacyError(f"`{name}` must be a finite number > 0, got {value!r}")
            if value <= 0:
                raise PrivacyError(f"`{name}` must be > 0, got {value!r}")
        if isinstance(self.delta, bool) or not isinstance(self.delta, int | float) or not 0 < self.delta < 1:
            raise PrivacyError(f"`delta` must be in (0, 1), got {self.delta!r}")
        budget = self.epsilon_budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget)
        ):
            raise PrivacyError(f"`epsilon_budget` must be a finite number > 0, got {budget!r}")
        if budget is not None and budget <= 0:
            raise PrivacyError(f"`epsilon_budget` must be > 0, got {budget!r}")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the noise added to each coordinate."""
        return self.noise_multiplier * self.clip_norm


@dataclass(frozen=True)
class PrivatizedUpdate:
    """A clipped, noised update and what was done to it."""

    delta: Tensor
    """The released update (float32, the input's shape)."""
    norm: float
    """L2 norm of the update before clipping."""
    clipped: bool
    """Whether the update was scaled down to ``clip_norm``."""


def clip_update(update: Tensor, clip_norm: float) -> tuple[Tensor, float]:
    """Scale ``update`` to L2 norm at most ``clip_norm``; return the float64 result and the original norm.

    An update already within the bound is returned unchanged (as float64). The input is not modified.

    Raises
    ------
    PrivacyError
        If ``clip_norm`` is not > 0 or the update has non-finite values.
    """
    import torch

    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise PrivacyError(f"`clip_norm` must be > 0, got {clip_norm!r}")
    flat = update.detach().to(torch.float64).reshape(-1)
    norm = float(torch.linalg.vector_norm(flat))
    if not math.isfinite(norm):
        raise PrivacyError("the update has non-finite values: it cannot be clipped")
    if norm > clip_norm:
        flat = flat * (clip_norm / norm)
    return flat.reshape(update.shape), norm


def _chacha20_normals(key: bytes, count: int) -> np.ndarray:
    """``count`` standard normals from the ChaCha20 keystream of ``key`` (Box-Muller; float64)."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    if len(key) != 32:
        raise PrivacyError(f"the noise key must be 32 bytes, got {len(key)}")
    pairs = (count + 1) // 2
    # A fresh key per update: the all-zero nonce (counter 0) is never reused with the same key.
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(16 * pairs))
    words = np.frombuffer(stream, dtype="<u8")
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1), never 0
    radius = np.sqrt(-2.0 * np.log(uniform[:pairs]))
    angle = (2.0 * math.pi) * uniform[pairs:]
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]


def gaussian_noise(count: int, std: float) -> Tensor:
    """``count`` independent ``N(0, std^2)`` values (float64) from the OS CSPRNG (module docstring).

    Each call draws a new 32-byte ChaCha20 key from ``os.urandom``: two calls never share noise, whatever
    the process's seeds.
    """
    import torch

    if count < 0 or not (math.isfinite(std) and std >= 0):
        raise PrivacyError(f"noise needs count >= 0 and std >= 0, got {count!r}, {std!r}")
    normals = _chacha20_normals(os.urandom(32), count)
    return torch.from_numpy(normals * std)


def privatize(update: Tensor, config: PrivacyConfig) -> PrivatizedUpdate:
    """Clip ``update`` to ``config.clip_norm`` and add Gaussian noise of std ``config.noise_std``.

    Computed in float64, returned as float32 of the input's shape; the input is not modified.

    Raises
    ------
    PrivacyError
        If the update has non-finite values.
    """
    import torch

    clipped, norm = clip_update(update, config.clip_norm)
    noise = gaussian_noise(clipped.numel(), config.noise_std).reshape(clipped.shape)
    released = (clipped + noise).to(torch.float32)
    return PrivatizedUpdate(delta=released, norm=norm, clipped=norm > config.clip_norm)


def noised_norm_bound(config: PrivacyConfig, dim: int) -> float:
    """Return an L2 norm a privatised update of ``dim`` coordinates stays under (failing with p < 2e-8).

    ``clip_norm + noise_std * (sqrt(dim) + NOISE_TAIL)``: the clipped part is at most ``clip_norm`` and the
    Gaussian part's norm concentrates at ``noise_std * sqrt(dim)``.
    """
    return config.clip_norm + config.noise_std * (math.sqrt(dim) + NOISE_TAIL)


def check_norm_bound(config: PrivacyConfig, max_norm: float | None, dim: int) -> None:
    """Refuse a run whose update norm bound would reject honest privatised updates.

    Raises
    ------
    PrivacyError
        If ``max_norm`` is set and below :func:`noised_norm_bound` for ``dim`` coordinates.
    """
    if max_norm is None:
        return
    need = noised_norm_bound(config, dim)
    if max_norm < need:
        raise PrivacyError(
            f"`max_norm` {max_norm:g} is below the norm of a privatised update ({dim} coordinates: "
            f"clip_norm + noise_multiplier * clip_norm * (sqrt(d) + {NOISE_TAIL:g}) = {need:.4g}); every "
            f"honest update would be rejected: raise `max_norm` to at least {need:.4g} or lower the noise"
        )


def accountant_noise_multiplier(config: PrivacyConfig) -> float:
    """Return the accountant's noise multiplier: ``noise_multiplier / 2`` (replace adjacency, module doc)."""
    return config.noise_multiplier / 2.0


def epsilon_spent(config: PrivacyConfig, releases: int) -> float:
    """Epsilon at ``config.delta`` after ``releases`` privatised updates (Opacus RDP accountant).

    ``0.0`` for no release.
    """
    from opacus.accountants import RDPAccountant

    if releases < 0:
        raise PrivacyError(f"`releases` must be >= 0, got {releases!r}")
    if releases == 0:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = [(accountant_noise_multiplier(config), 1.0, releases)]
    return float(accountant.get_epsilon(delta=config.delta))


def budget_refusal(config: PrivacyConfig, releases: int, budget: float | None = None) -> str | None:
    """Why one more release would pass the budget (``None``: it would not, or there is no budget).

    ``budget`` is a stricter budget of the member's own; the smaller of it and ``config.epsilon_budget``
    applies.
    """
    budgets = [b for b in (config.epsilon_budget, budget) if b is not None]
    if not budgets:
        return None
    limit = min(budgets)
    spent, after = epsilon_spent(config, releases), epsilon_spent(config, releases + 1)
    if after <= limit:
        return None
    return (
        f"privacy budget: one more update would spend epsilon {after:.3f} > budget {limit:g} "
        f"(spent {spent:.3f} at delta {config.delta:g} over {releases} update(s))"
    )


def noise_for_epsilon(
    epsilon: float, releases: int, *, delta: float, clip_norm: float = 1.0
) -> PrivacyConfig:
    """Return the :class:`PrivacyConfig` whose ``releases`` updates spend ``epsilon`` at ``delta`` (benches).

    Found by Opacus's own search (``opacus.accountants.utils.get_noise_multiplier``, RDP) on the accountant's
    noise multiplier, then doubled back (replace adjacency).
    """
    from opacus.accountants.utils import get_noise_multiplier

    sigma = get_noise_multiplier(
        target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=releases, accountant="rdp"
    )
    return PrivacyConfig(clip_norm=clip_norm, noise_multiplier=2.0 * float(sigma), delta=delta)
