"""The FL algorithms, each a pair (client algorithm, server optimiser).

The seven of the research line, and DiLoCo (local AdamW steps, then a Nesterov-momentum outer step; the
pre-training algorithm of ``task = "pretrain"``, usable for adapters too).

The client side lives in :mod:`training.client` (``local``, ``fedprox``, ``scaffold``); the server side
is a name in the server-optimiser registry (``training.server_opt.SERVER_OPTIMIZERS``). SCAFFOLD also
exchanges control-variate deltas next to each update, and every peer updates the server control variate
with :func:`training.scaffold.server_control_step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from training.config import ClientAlgorithm
from training.errors import ConfigError


@dataclass(frozen=True)
class Algorithm:
    """An FL algorithm: what each client runs locally and how peers apply the aggregate."""

    name: str
    client: ClientAlgorithm
    server_optimizer: str
    control_variates: bool = False


ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    {
        "fedavg": Algorithm("fedavg", "local", "fedavg"),
        "fedprox": Algorithm("fedprox", "fedprox", "fedavg"),
        "scaffold": Algorithm("scaffold", "scaffold", "fedavg", control_variates=True),
        "fedavgm": Algorithm("fedavgm", "local", "fedavgm"),
        "fedadagrad": Algorithm("fedadagrad", "local", "fedadagrad"),
        "fedyogi": Algorithm("fedyogi", "local", "fedyogi"),
        "fedadam": Algorithm("fedadam", "local", "fedadam"),
        "diloco": Algorithm("diloco", "local", "diloco"),
    }
)


def get_algorithm(name: str) -> Algorithm:
    """Look up an algorithm by name, with an error listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"`algorithm` must be one of {', '.join(ALGORITHMS)}, got {name!r}") from None
