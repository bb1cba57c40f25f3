"""Flat vectors: an adapter state (name -> tensor) as one float32 vector, and back.

Every peer flattens the same state the same way: tensors in sorted name order, each reshaped to 1-D and cast
to float32, concatenated. :class:`FlatSpec` records names, shapes and dtypes, so a vector can be turned back
into the state, and :meth:`FlatSpec.digest` names the layout in update headers (two peers with different
adapters never mix their vectors).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from training.errors import TrainingError


class FlatSpecError(TrainingError, ValueError):
    """A vector or state does not match a :class:`FlatSpec`."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class FlatSpec:
    """Layout of a flattened state: sorted tensor names, their shapes and original dtypes.

    Attributes
    ----------
    names
        Tensor names in sorted order (the order of the segments in the flat vector).
    shapes
        Shape of each tensor.
    dtypes
        Original dtype of each tensor, as a string such as ``"float32"`` or ``"bfloat16"``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.shapes) == len(self.dtypes):
            raise FlatSpecError(
                f"`names`, `shapes` and `dtypes` must have one entry per tensor, got "
                f"{len(self.names)}, {len(self.shapes)} and {len(self.dtypes)}"
            )
        if list(self.names) != sorted(set(self.names)):
            raise FlatSpecError("`names` must be sorted and unique")
        for name, shape in zip(self.names, self.shapes, strict=True):
            if any(s < 0 for s in shape):
                raise FlatSpecError(f"shape of {name!r} has a negative size: {shape}")

    @property
    def numel(self) -> int:
        """Length of the flat vector."""
        return sum(self.sizes)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of elements of each tensor, in ``names`` order."""
        return tuple(math.prod(shape) for shape in self.shapes)

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split ``vec`` back into named tensors of the recorded shapes and dtypes (copies, not views).

        Raises
        ------
        FlatSpecError
            If ``vec`` is not a 1-D tensor of length :attr:`numel`.
        """
        if vec.dim() != 1 or vec.shape[0] != self.numel:
            raise FlatSpecError(f"vector must be 1-D of length {self.numel}, got shape {tuple(vec.shape)}")
        out: dict[str, Tensor] = {}
        for name, shape, dtype, piece in zip(
            self.names, self.shapes, self.dtypes, torch.split(vec, list(self.sizes)), strict=True
        ):
            out[name] = piece.reshape(shape).to(getattr(torch, dtype), copy=True)
        return out

    def to_json(self) -> str:
        """Canonical JSON of the layout (sorted keys, no spaces); :meth:`digest` hashes it."""
        body = {
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "dtypes": list(self.dtypes),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """Hex sha256 of :meth:`to_json`: equal for equal layouts on every peer."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def spec_of(state: Mapping[str, Tensor]) -> FlatSpec:
    """Return the :class:`FlatSpec` of ``state`` without flattening it."""
    names = tuple(sorted(state))
    return FlatSpec(
        names=names,
        shapes=tuple(tuple(state[n].shape) for n in names),
        dtypes=tuple(_dtype_name(state[n].dtype) for n in names),
    )


def flatten(state: Mapping[str, Tensor]) -> tuple[Tensor, FlatSpec]:
    """Concatenate ``state``'s tensors in sorted name order into one float32 1-D tensor.

    Returns
    -------
    tuple[Tensor, FlatSpec]
        The flat vector (a new tensor) and its layout.

    Raises
    ------
    FlatSpecError
        If a tensor is not floating point (adapter states are).
    """
    spec = spec_of(state)
    for name in spec.names:
        if not state[name].is_floating_point():
            raise FlatSpecError(f"tensor {name!r} must be floating point, got {state[name].dtype}")
    if not spec.names:
        return torch.zeros(0, dtype=torch.float32), spec
    parts = [state[n].detach().reshape(-1).to(torch.float32) for n in spec.names]
    return torch.cat(parts), spec
