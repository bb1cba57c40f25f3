"""The consensus-critical merge: one pure function from (global state, received updates) to the next state.

Every peer of a run calls :func:`merge` on the same on-chain update set and must get the same bytes: the
merged state's :func:`state_hash` is what peers vote on chain, and the content id of :func:`encode_state`'s
bytes is the merged model's CID. The in-process simulation and the node both use it, so what is simulated is
what runs.

A :class:`ModelState` is the whole global state a round changes: the flat float32 adapter parameters, the
server optimiser's state (``m``, ``v``) and, for SCAFFOLD, the server control variate, with the
:class:`training.flat.FlatSpec` that gives the vectors their layout.

:func:`merge` decodes every update with :func:`training.codec.decode` (hostile input: a bad update is
rejected with its reason, never raised), orders the accepted ones by key, aggregates them with the run's
robust aggregator weighted by sample counts (equal weights for the adaptive optimisers under the
``openfedllm`` convention), applies the server optimiser step of the run's convention and the SCAFFOLD
control step (``c + sum(delta_c_i) / N``, ``N`` the round's eligible members). Every step is bit-exact
(see :mod:`training.aggregate`, :mod:`training.server_opt`), and the inputs are sorted by key first, so the
result is the same for any input order.

Encoded state (safetensors, canonical: equal states give equal bytes): metadata ``format``
(:data:`STATE_FORMAT`) and ``spec`` (:meth:`FlatSpec.to_json`); tensors ``params``, ``server/<name>`` and
optionally ``control``, all float32 of length ``spec.numel``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from training.compress import CodecParams
from training.conventions import DEFAULT_CONVENTION
from training.errors import TrainingError
from training.flat import FlatSpec
from training.safetensors_io import load_file, read_header, write, write_file

STATE_FORMAT = "fedchain-state/1"

ARITHMETIC = "fedchain-arith/3"
"""Version of the consensus arithmetic (decode, aggregate, server step): peers of a run must share it.

Bump it whenever any of those can give other bytes for the same inputs, so that a node on other arithmetic
refuses the run (:class:`node.runspec.RunSpec` checks it) instead of voting for hashes nobody else computes.

- ``fedchain-arith/1``: the exact 18-bit-grid Gram matrix (run specs written before this field existed).
- ``fedchain-arith/2``: the canonical float32 Gram matrix (:mod:`training.robust.gram_kernel`); changes the
  bytes of Krum, Multi-Krum, geometric median, centered clipping, ``norm_bound`` and the codec's norm check.
- ``fedchain-arith/3``: algorithm conventions (:mod:`training.conventions`; ``openfedllm`` by default changes
  FedAvgM, FedAdagrad, FedYogi and FedAdam) and SCAFFOLD's server control ``c + sum(delta_c) / N`` with ``N``
  the round's eligible members (was the mean over the accepted updates).
"""

LEGACY_ARITHMETIC = "fedchain-arith/1"
"""What a run spec without an ``arithmetic`` key was written for."""
DEFAULT_MAX_SAMPLES = 1_000_000
WEIGHTINGS = ("samples", "equal")
"""Aggregation weights of accepted updates: their self-reported ``num_samples``, or 1 each."""
_MAX_HEADER_BYTES = 1 << 22


class MergeError(TrainingError, ValueError):
    """The merge cannot produce a state (e.g. the aggregator needs more updates than were accepted)."""


class StateFormatError(TrainingError, ValueError):
    """Encoded model-state bytes are malformed or do not match the expected layout."""


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(sorted(value.items())))


@dataclass(frozen=True)
class ModelState:
    """The global state of a run after a round.

    Attributes
    ----------
    params
        Flat float32 adapter parameters, length ``spec.numel``.
    server_state
        Server optimiser state tensors by name (``m``, ``v``; empty for FedAvg), each like ``params``.
    control
        SCAFFOLD's server control variate (``None`` when the run does not use control variates).
    spec
        Layout of the flat vectors.
    """

    params: Tensor
    server_state: Mapping[str, Tensor]
    control: Tensor | None
    spec: FlatSpec

    def __post_init__(self) -> None:
        object.__setattr__(self, "server_state", _frozen_mapping(self.server_state))
        d = self.spec.numel
        for name, tensor in self.tensors().items():
            if tensor.dtype != torch.float32 or tuple(tensor.shape) != (d,):
                raise StateFormatError(
                    f"state tensor {name!r} must be float32 of shape ({d},), got "
                    f"{tensor.dtype} {tuple(tensor.shape)}"
                )

    def tensors(self) -> dict[str, Tensor]:
        """All tensors by their encoded name: ``params``, ``server/<name>``, ``control``."""
        out = {"params": self.params}
        out.update({f"server/{k}": v for k, v in self.server_state.items()})
        if self.control is not None:
            out["control"] = self.control
        return out

    def adapter_state(self) -> dict[str, Tensor]:
        """Return the adapter parameters as named tensors (for ``load_trainable_state`` or export)."""
        return self.spec.unflatten(self.params)


@dataclass(frozen=True)
class MergeSpec:
    """How a run merges a round: from the run spec, identical on every peer.

    Attributes
    ----------
    aggregator, aggregator_params
        Robust aggregator name (a key of ``training.aggregate.AGGREGATORS``) and its keyword parameters.
    server_optimizer, server_params
        Server optimiser name (``training.server_opt.SERVER_OPTIMIZERS``) and overrides of its defaults.
    codec
        The update codec every update of the run must use (``training.codec.CODECS``).
    codec_params
        The int4 block size and top-k fraction the run's updates must have (:mod:`training.compress`).
    max_norm
        Updates whose L2 norm exceeds this are rejected (``None``: no bound).
    scaffold
        Whether updates carry a SCAFFOLD ``control_delta`` and the state a server control variate.
    max_samples
        Updates claiming more samples than this are rejected (bounds one member's weight).
    convention
        Which formulas the server optimiser follows (:mod:`training.conventions`): ``openfedllm`` (default)
        or ``reddi``; under ``openfedllm`` the adaptive optimisers aggregate with equal weights.
    weighting
        ``"samples"`` (default): each accepted update weighs its committed ``num_samples``, a number its
        sender reports and nobody checks; ``"equal"``: every accepted update weighs 1, whatever it claims.
    """

    aggregator: str = "mean"
    aggregator_params: Mapping[str, Any] = field(default_factory=dict)
    server_optimizer: str = "fedavg"
    server_params: Mapping[str, float] = field(default_factory=dict)
    codec: str = "fp32"
    codec_params: CodecParams = field(default_factory=CodecParams)
    max_norm: float | None = None
    scaffold: bool = False
    max_samples: int = DEFAULT_MAX_SAMPLES
    convention: str = DEFAULT_CONVENTION
    weighting: str = "samples"

    def __post_init__(self) -> None:
        from training.aggregate import AGGREGATORS
        from training.codec import CODECS
        from training.conventions import check_convention
        from training.server_opt import make_config

        try:
            check_convention(self.convention)
        except TrainingError as exc:
            raise MergeError(str(exc)) from exc

        object.__setattr__(self, "aggregator_params", _frozen_mapping(self.aggregator_params))
        object.__setattr__(self, "server_params", _frozen_mapping(self.server_params))
        if self.aggregator not in AGGREGATORS:
            raise MergeError(
                f"`aggregator` must be one of {', '.join(sorted(AGGREGATORS))}, got {self.aggregator!r}"
            )
        make_config(self.server_optimizer, **dict(self.server_params))
        if self.codec not in CODECS:
            raise MergeError(f"`codec` must be one of {', '.join(CODECS)}, got {self.codec!r}")
        if self.max_norm is not None and not (math.isfinite(self.max_norm) and self.max_norm > 0):
            raise MergeError(f"`max_norm` must be a finite number > 0 or None, got {self.max_norm!r}")
        if not isinstance(self.max_samples, int) or not 1 <= self.max_samples <= 1 << 30:
            raise MergeError(f"`max_samples` must be an integer in [1, 2**30], got {self.max_samples!r}")
        if self.weighting not in WEIGHTINGS:
            raise MergeError(f"`weighting` must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")


@dataclass(frozen=True)
class UpdateInput:
    """One committed update as a peer received it.

    Attributes
    ----------
    key
        Who sent it, unique in a merge (the node uses the member's checksummed address); the canonical
        order of the merge.
    data
        The update's bytes (untrusted, as produced by ``training.codec.encode``), or the file holding
        them (decoded through a memory map; the same tensors).
    num_samples
        The sample count the member committed on chain (its aggregation weight).
    """

    key: str
    data: bytes | Path
    num_samples: int

    @property
    def size(self) -> int:
        """The update's size in bytes."""
        return self.data.stat().st_size if isinstance(self.data, Path) else len(self.data)


@dataclass(frozen=True)
class MergeOutcome:
    """Result of :func:`merge`.

    Attributes
    ----------
    state
        The new global state.
    included
        Keys of the accepted updates, sorted.
    rejected
        Reason for each rejected update, by key.
    aggregate_norm
        L2 norm of the aggregated delta (``None`` when nothing was accepted).
    """

    state: ModelState
    included: tuple[str, ...]
    rejected: Mapping[str, str]
    aggregate_norm: float | None = None


def initial_state(spec: MergeSpec, params_flat: Tensor, flat_spec: FlatSpec) -> ModelState:
    """Round-0 state: the run-seeded adapter init, initial server optimiser state, zero control variate.

    The server optimiser's state is zeros, except ``v = tau**2`` for the adaptive optimisers under the
    ``openfedllm`` convention.

    Raises
    ------
    StateFormatError
        If ``params_flat`` does not match ``flat_spec``.
    """
    from training.server_opt import init_state, make_config

    d = flat_spec.numel
    params = params_flat.detach().to(torch.float32).clone()
    control = torch.zeros(d, dtype=torch.float32) if spec.scaffold else None
    cfg = make_config(spec.server_optimizer, **dict(spec.server_params))
    server = init_state(spec.server_optimizer, d, cfg, convention=spec.convention)
    return ModelState(params, server, control, flat_spec)


def state_hash(state: ModelState) -> str:
    """Hex sha256 of the state (``training.determinism.state_sha256`` of :meth:`ModelState.tensors`).

    This is the ``mergedSha256`` peers vote on chain.
    """
    from training.determinism import state_sha256

    return state_sha256(state.tensors())


def encode_state(state: ModelState) -> bytes:
    """Canonical safetensors bytes of ``state`` (sorted keys, fixed layout): equal states, equal bytes."""
    return write(state.tensors(), {"format": STATE_FORMAT, "spec": state.spec.to_json()})


def encode_state_file(state: ModelState, path: Path) -> int:
    """Write :func:`encode_state`'s bytes to ``path`` tensor by tensor (no copy); return the size."""
    return write_file(state.tensors(), {"format": STATE_FORMAT, "spec": state.spec.to_json()}, Path(path))


def _parse_spec(text: str) -> FlatSpec:
    try:
        body = json.loads(text)
        return FlatSpec(
            names=tuple(str(n) for n in body["names"]),
            shapes=tuple(tuple(int(s) for s in shape) for shape in body["shapes"]),
            dtypes=tuple(str(d) for d in body["dtypes"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StateFormatError(f"metadata `spec` is not a valid layout: {exc}") from exc


def _state_header(data: bytes | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    meta, header = read_header(data, max_header_bytes=_MAX_HEADER_BYTES, error=StateFormatError, what="state")
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise StateFormatError(f"metadata `format` must be {STATE_FORMAT!r}, got {got!r}")
    return meta, header


def decode_state(
    data: bytes | Path,
    *,
    flat_spec: FlatSpec | None = None,
    merge_spec: MergeSpec | None = None,
) -> ModelState:
    """Decode and check bytes produced by :func:`encode_state` (untrusted input; never pickle).

    Parameters
    ----------
    data
        The bytes, or the file holding them: its header is read alone and its tensors through
        ``safetensors.safe_open`` (a memory map), so the bytes are never held whole; the tensors are equal.
    flat_spec
        If given, the layout the state must have.
    merge_spec
        If given, the server-state tensors and control variate must be exactly those this spec uses.

    Raises
    ------
    StateFormatError
        On any mismatch or malformed input; the message names the field.
    """
    from safetensors.torch import load as st_load

    from training.server_opt import init_state

    if isinstance(data, Path):
        try:
            size = data.stat().st_size
        except OSError as exc:
            raise StateFormatError(f"state file {data} cannot be read: {exc}") from exc
    else:
        data = bytes(data)
        size = len(data)
    meta, header = _state_header(data)
    spec = _parse_spec(str(meta.get("spec", "")))
    if flat_spec is not None and spec != flat_spec:
        raise StateFormatError(
            f"state layout {spec.digest()[:12]} differs from the run's {flat_spec.digest()[:12]}"
        )
    d = spec.numel
    if size > 8 + _MAX_HEADER_BYTES + 4 * d * 8:
        raise StateFormatError(f"state is {size} bytes, too large for {d} parameters")
    names = set(header)
    if "params" not in names or not all(
        n == "control" or n.startswith("server/") for n in names - {"params"}
    ):
        raise StateFormatError(f"state tensors must be params, server/* and control, got {sorted(names)[:8]}")
    if merge_spec is not None:
        want = {"params"} | {f"server/{k}" for k in init_state(merge_spec.server_optimizer, 0)}
        want |= {"control"} if merge_spec.scaffold else set()
        if names != want:
            raise StateFormatError(f"state tensors must be {sorted(want)}, got {sorted(names)}")
    for name in names:
        info = header[name]
        if not isinstance(info, dict) or info.get("dtype") != "F32" or info.get("shape") != [d]:
            raise StateFormatError(f"tensor {name!r} must be F32 of shape [{d}], got {info!r}"[:300])
    if isinstance(data, Path):
        tensors = load_file(data, error=StateFormatError)
    else:
        try:
            tensors = st_load(data)
        except Exception as exc:  # the parser's own errors on hostile bytes
            raise StateFormatError(f"safetensors payload is malformed: {exc}") from exc
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise StateFormatError(f"state tensor {name!r} contains NaN or Inf")
    server = {n.removeprefix("server/"): t for n, t in tensors.items() if n.startswith("server/")}
    return ModelState(tensors["params"], server, tensors.get("control"), spec)


def _decode_one(
    update: UpdateInput, state: ModelState, spec: MergeSpec, run: str, round: int
) -> tuple[Tensor, Tensor | None]:
    """Decode one update; raise ``UpdateRejected`` with the reason when it must be left out."""
    from training.codec import UpdateRejected, decode

    if not isinstance(update.num_samples, int) or not 1 <= update.num_samples <= spec.max_samples:
        raise UpdateRejected(f"`num_samples` must be in [1, {spec.max_samples}], got {update.num_samples!r}")
    decoded = decode(
        update.data,
        state.spec,
        max_norm=spec.max_norm,
        expect_run=run,
        expect_round=round,
        params=spec.codec_params,
    )
    if decoded.codec != spec.codec:
        raise UpdateRejected(f"codec must be {spec.codec!r}, got {decoded.codec!r}")
    want_extra = {"control_delta"} if spec.scaffold else set()
    if set(decoded.extra) != want_extra:
        raise UpdateRejected(f"extra tensors must be {sorted(want_extra)}, got {sorted(decoded.extra)}")
    control_delta = decoded.extra.get("control_delta")
    if control_delta is not None and tuple(control_delta.shape) != (state.spec.numel,):
        raise UpdateRejected(
            f"control_delta must have shape ({state.spec.numel},), got {tuple(control_delta.shape)}"
        )
    return decoded.delta, control_delta


def merge(
    state: ModelState,
    updates: Sequence[UpdateInput],
    spec: MergeSpec,
    *,
    run: str,
    round: int,
    eligible: int,
) -> MergeOutcome:
    """Merge one round's updates into the global state, bit-exactly for any order of ``updates``.

    Parameters
    ----------
    state
        The global state the round started from (the finalised state of the previous round).
    updates
        The round's committed updates; each is decoded and checked, bad ones are rejected with a reason.
    spec
        The run's merge rules.
    run, round
        Every update must carry this run id and round number in its header.
    eligible
        ``N``, the round's eligible members (on the network: the chain's ``eligible`` count of the round;
        in a simulation: all clients). SCAFFOLD's server control moves by ``sum(delta_c_i) / N``; more
        accepted updates than ``N`` is an error.

    Returns
    -------
    MergeOutcome
        The new state (``state`` itself when nothing was accepted), included keys and rejection reasons.

    Raises
    ------
    MergeError
        If two updates share a key, the state does not match ``spec`` (server state or control variate),
        ``eligible`` is below 1 or below the number of accepted updates, or the aggregator refuses the
        accepted set (e.g. Krum with ``n <= 2f + 2``); every peer raises alike.
    """
    from training import server_opt
    from training.aggregate import aggregate
    from training.codec import UpdateRejected
    from training.robust.exact import canonical_zero
    from training.scaffold import server_control_step

    keys = [u.key for u in updates]
    if len(set(keys)) != len(keys):
        raise MergeError(
            f"update keys must be unique, got duplicates {sorted({k for k in keys if keys.count(k) > 1})}"
        )
    if not isinstance(eligible, int) or eligible < 1:
        raise MergeError(f"`eligible` must be an integer >= 1, got {eligible!r}")
    if (state.control is not None) != spec.scaffold:
        raise MergeError(
            f"state control variate present={state.control is not None} but scaffold={spec.scaffold}"
        )
    # row k: the k-th accepted delta, copied in as it is decoded (no list of deltas and stack of them at once)
    rows = torch.empty((len(updates), state.spec.numel), dtype=torch.float32)
    controls: list[Tensor] = []
    weights: list[int] = []
    included: list[str] = []
    rejected: dict[str, str] = {}
    for update in sorted(updates, key=lambda u: u.key):
        try:
            delta, control_delta = _decode_one(update, state, spec, run, round)
        except UpdateRejected as exc:
            rejected[update.key] = str(exc)
            continue
        rows[len(included)] = delta
        del delta
        included.append(update.key)
        weights.append(update.num_samples)
        if control_delta is not None:
            controls.append(control_delta)
    if not included:
        return MergeOutcome(state, (), MappingProxyType(rejected), None)
    if len(included) > eligible:
        raise MergeError(f"{len(included)} accepted updates but only `eligible`={eligible} members")
    deltas = rows[: len(included)]
    if spec.weighting == "equal" or server_opt.unweighted(spec.server_optimizer, spec.convention):
        weights = [1] * len(weights)  # equal weights; the reference's adaptive optimisers take the plain mean
    try:
        agg = aggregate(
            spec.aggregator,
            deltas,
            torch.tensor(weights, dtype=torch.float64),
            **dict(spec.aggregator_params),
        )
    except (TypeError, ValueError) as exc:
        raise MergeError(
            f"aggregator {spec.aggregator!r} with {len(deltas)} accepted updates: {exc}"
        ) from exc
    server_cfg = server_opt.make_config(spec.server_optimizer, **dict(spec.server_params))
    try:
        params, server_state = server_opt.server_step(
            spec.server_optimizer,
            state.params,
            agg,
            dict(state.server_state),
            server_cfg,
            convention=spec.convention,
        )
    except TrainingError as exc:
        raise MergeError(f"server step {spec.server_optimizer!r}: {exc}") from exc
    control = state.control
    if control is not None:
        control = server_control_step(control, torch.stack(controls), eligible=eligible)
    new = ModelState(canonical_zero(params), server_state, control, state.spec)
    return MergeOutcome(new, tuple(included), MappingProxyType(rejected), float(agg.norm()))
