"""SCAFFOLD's server control variate update, bit-exact so that every peer computes the same ``c``.

``c <- c + sum_{i in S}(delta_c_i) / N`` over the round's accepted control deltas ``S``, with ``N`` all
clients of the round (on the network: the round's eligible members), as in Karimireddy et al. 2020
(``c + |S|/N * mean``) and the OpenFedLLM reference. The sum is the exact fixed-point sum of
:func:`training.robust.exact.weighted_sum` divided once by ``N`` (independent of input order, threads and
instruction set); the update is one float64 add, correctly rounded, then one rounding to float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.errors import ConfigError
from training.robust.exact import canonical_zero, weighted_sum


def server_control_step(control: Tensor, control_deltas: Tensor, *, eligible: int | None = None) -> Tensor:
    """Return the new server control variate (float32) from ``control[d]`` and ``control_deltas[n, d]``.

    Parameters
    ----------
    control
        Current server control variate ``c``, 1-D.
    control_deltas
        The accepted clients' ``c_i+ - c_i``, one row each.
    eligible
        ``N``, the number of clients the round could have had (``None``: the ``n`` that took part).

    Raises
    ------
    ConfigError
        If the shapes do not match, ``eligible`` is below ``n``, or a delta is not finite.
    """
    if control.dim() != 1 or control_deltas.dim() != 2 or control_deltas.shape[1] != control.shape[0]:
        raise ConfigError(
            f"shapes must be control[d] and control_deltas[n, d], got {tuple(control.shape)} and "
            f"{tuple(control_deltas.shape)}"
        )
    n = control_deltas.shape[0]
    if n == 0:
        return control.to(torch.float32).clone()
    total = n if eligible is None else eligible
    if not isinstance(total, int) or total < n:
        raise ConfigError(f"`eligible` must be an integer >= the {n} control deltas, got {eligible!r}")
    deltas = control_deltas.to(torch.float32)
    if not bool(torch.isfinite(deltas).all()):
        raise ConfigError("control deltas contain NaN or Inf")
    step = weighted_sum(deltas, [1] * n, float(total))
    updated = control.to(torch.float64) + step.to(torch.float64)
    return canonical_zero(updated.to(torch.float32))
