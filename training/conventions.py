"""Algorithm conventions: which published formulas the FL algorithms follow (docs/algorithms.md).

- ``"openfedllm"`` (the default): the formulas of the OpenFedLLM reference implementation
  (``federated_learning/fed_global.py`` and ``fed_local_sft.py``), so that a run reproduces the paper's
  algorithms: FedAvgM ``m = beta1 m + (1 - beta1) delta`` (``m = delta`` on the first step) with no server
  learning rate; FedAdagrad / FedYogi / FedAdam on the *unweighted* client mean, ``v`` starting at
  ``tau**2``, Yogi / Adam updating ``v`` from ``m**2`` and ``m = delta`` on the first step; SCAFFOLD's
  local correction ``w -= lr (c - c_i)`` applied after every optimiser step.
- ``"reddi"``: Reddi et al. 2021 ("Adaptive Federated Optimization") on the sample-weighted mean, ``v``
  from 0 and ``delta**2``, FedAvgM ``m = beta1 m + delta`` times the server learning rate, and SCAFFOLD's
  correction added to the gradient before clipping and the optimiser.

SCAFFOLD's server control variate is ``c + sum_i(delta_c_i) / N`` with ``N`` the round's eligible members
under both conventions.
"""

from __future__ import annotations

from typing import Literal

from training.errors import ConfigError

Convention = Literal["openfedllm", "reddi"]

CONVENTIONS: tuple[str, ...] = ("openfedllm", "reddi")
"""Known conventions."""

DEFAULT_CONVENTION: Convention = "openfedllm"
"""What a run, a simulation and local training use unless told otherwise."""


def check_convention(value: object, name: str = "convention") -> Convention:
    """Return ``value`` if it names a convention.

    Raises
    ------
    ConfigError
        Naming the field ``name`` and the known conventions otherwise.
    """
    if value == "openfedllm":
        return "openfedllm"
    if value == "reddi":
        return "reddi"
    raise ConfigError(f"`{name}` must be one of {', '.join(CONVENTIONS)}, got {value!r}")
