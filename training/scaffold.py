"""SCAFFOLD's server control variate update, bit-exact so that every peer computes the same ``c``.

``c <- c + (|S| / N) * mean_i(delta_c_i)`` over the round's accepted control deltas. The mean is taken per
coordinate over the deltas sorted by value and accumulated in float64 one row at a time: every operation is
a correctly rounded elementwise float64 add or divide, so the result depends neither on the input order nor
on the thread count or instruction set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.errors import ConfigError


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
    if not torch.isfinite(control_deltas).all():
        raise ConfigError("control deltas contain NaN or Inf")
    ordered = torch.sort(control_deltas.to(torch.float64), dim=0).values
    total = torch.zeros(control.shape[0], dtype=torch.float64)
    for row in ordered:
        total = total + row
    mean = total / control_deltas.shape[0]
    return (control.to(torch.float64) + mean * participation).to(torch.float32)
