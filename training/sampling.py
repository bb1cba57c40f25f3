"""Client sampling in simulation: which clients train in a round (``clients_per_round``).

The rule is the network's (``node.protocol.sampling``, docs/sampling.md): every client draws a sha256 ticket
from the round's seed and the ``k`` smallest tickets train. The simulation has no chain, so the simulation
seed stands in for the start block's hash and the client index for the member address::

    seed   = sha256("fedchain-sim-sample/1" || uint64(simulation seed) || uint64(round))
    ticket = sha256(seed || uint64(client index))        (all integers big-endian)
"""

from __future__ import annotations

import hashlib

from training.errors import ConfigError

SIM_SAMPLING = "fedchain-sim-sample/1"


def sample_clients(n: int, k: int | None, seed: int, round: int) -> tuple[int, ...]:
    """Return the indices (ascending) of the clients that train round ``round`` of ``n``.

    ``k`` ``None`` selects every client. Pure: the same arguments always give the same selection, and each
    ``k``-subset is equally likely over seeds.

    Raises
    ------
    ConfigError
        If ``k`` is not in ``[1, n]`` or ``seed`` / ``round`` is outside ``[0, 2**64)``.
    """
    if k is None:
        return tuple(range(n))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ConfigError(f"`clients_per_round` must be in [1, clients = {n}], got {k!r}")
    for name, value in (("seed", seed), ("round", round)):
        if not 0 <= value < 2**64:
            raise ConfigError(f"`{name}` must be in [0, 2**64), got {value}")
    base = hashlib.sha256(SIM_SAMPLING.encode() + seed.to_bytes(8, "big") + round.to_bytes(8, "big")).digest()

    def ticket(i: int) -> bytes:
        return hashlib.sha256(base + i.to_bytes(8, "big")).digest()

    return tuple(sorted(sorted(range(n), key=lambda i: (ticket(i), i))[:k]))
