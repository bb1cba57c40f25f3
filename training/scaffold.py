"""SCAFFOLD's server control variate update, bit-exact so that every peer computes the same ``c``.

``c <- c + (|S| / N) * mean_i(delta_c_i)`` over the round's accepted control deltas. The mean is the exact
fixed-point mean of :func:`training.robust.exact.weighted_sum` (independent of input order, threads and
instruction set); the update is one float64 multiply and one add, each correctly rounded, then one rounding
to float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.errors import ConfigError
from training.robust.exact import canonical_zero, weighted_sum


def server_control_step(control: Tensor, control_deltas: Tensor, participation: float = 1.0) -> Tensor:
    """Return the new server control variate (float32) from ``control[d]`` and ``control_deltas[n, d]``.

    Parameters
    ----------
    control
        Current server control variate ``c``, 1-D.
    control_deltas
        The accepted clients' ``c_i+ - c_i``, one row each.
    participation
        ``|S| / N``, the fraction of all clients that took part (1.0 when everyone did).

    Raises
    ------
    ConfigError
        If the shapes do not match, ``participation`` is outside ``(0, 1]`` or a delta is not finite.
    """
    if control.dim() != 1 or control_deltas.dim() != 2 or control_deltas.shape[1] != control.shape[0]:
        raise ConfigError(
            f"shapes must be control[d] and control_deltas[n, d], got {tuple(control.shape)} and "
            f"{tuple(control_deltas.shape)}"
        )
    if control_deltas.shape[0] == 0:
        return control.to(torch.float32).clone()
    if not 0.0 < participation <= 1.0:
        raise ConfigError(f"`participation` must be in (0, 1], got {participation!r}")
    deltas = control_deltas.to(torch.float32)
    if not bool(torch.isfinite(deltas).all()):
        raise ConfigError("control deltas contain NaN or Inf")
    n = deltas.shape[0]
    mean = weighted_sum(deltas, [1] * n, float(n))
    updated = control.to(torch.float64) + mean.to(torch.float64) * participation
    return canonical_zero(updated.to(torch.float32))
