"""Flat vectors: sorted-name concatenation, round trip, layout digest."""

from __future__ import annotations

import pytest
import torch

from training.flat import FlatSpec, FlatSpecError, flatten, spec_of


def _state() -> dict[str, torch.Tensor]:
    return {
        "layers.1.lora_B.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "layers.0.lora_B.weight": torch.tensor([[10.0], [11.0]], dtype=torch.bfloat16),
        "bias": torch.tensor(7.0),
    }


def test_flatten_concatenates_in_sorted_name_order() -> None:
    vec, spec = flatten(_state())

    assert spec.names == ("bias", "layers.0.lora_B.weight", "layers.1.lora_B.weight")
    assert vec.dtype == torch.float32
    assert vec.tolist() == [7.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert spec.numel == 9


def test_unflatten_restores_names_shapes_and_dtypes() -> None:
    state = _state()
    vec, spec = flatten(state)

    back = spec.unflatten(vec)

    assert set(back) == set(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype
        assert torch.equal(back[name], tensor)
    back["bias"].add_(1)  # copies, not views
    assert vec[0] == 7.0


def test_unflatten_rejects_wrong_length() -> None:
    vec, spec = flatten(_state())

    with pytest.raises(FlatSpecError, match="length 9"):
        spec.unflatten(vec[:-1])


def test_digest_names_the_layout() -> None:
    spec = spec_of(_state())
    other = dict(_state(), bias=torch.zeros(2))

    assert spec.digest() == spec_of(_state()).digest()
    assert spec.digest() != spec_of(other).digest()
    assert len(spec.digest()) == 64


def test_spec_validates_its_fields() -> None:
    with pytest.raises(FlatSpecError, match="sorted"):
        FlatSpec(names=("b", "a"), shapes=((1,), (1,)), dtypes=("float32", "float32"))
    with pytest.raises(FlatSpecError, match="one entry per tensor"):
        FlatSpec(names=("a",), shapes=(), dtypes=("float32",))


def test_flatten_rejects_integer_tensors() -> None:
    with pytest.raises(FlatSpecError, match="floating point"):
        flatten({"a": torch.ones(2, dtype=torch.int64)})
