"""Update codec: round trips, every rejection with a clear message, and fuzzed bytes."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from training.codec import FORMAT, UpdateRejected, decode, encode
from training.errors import TrainingError
from training.flat import FlatSpec, flatten


@pytest.fixture
def spec_and_delta() -> tuple[FlatSpec, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    state = {"a.lora_B": torch.randn(4, 3, generator=gen), "b.lora_B": torch.randn(5, generator=gen)}
    vec, spec = flatten(state)
    return spec, vec * 0.01


def _rebuild(data: bytes, **meta_changes: str) -> bytes:
    """Re-encode ``data``'s tensors with changed metadata (an attacker's tampering)."""
    from safetensors.torch import load

    size = struct.unpack("<Q", data[:8])[0]
    meta = json.loads(data[8 : 8 + size])["__metadata__"]
    meta.update(meta_changes)
    return bytes(save(load(data), metadata=meta))


def test_fp32_round_trip_is_bit_exact(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, delta = spec_and_delta
    control = torch.randn(spec.numel)

    data = encode(delta, spec, run="r1", round=3, extra={"control_delta": control})
    out = decode(data, spec, expect_run="r1", expect_round=3)

    assert out.delta.numpy().tobytes() == delta.numpy().tobytes()
    assert torch.equal(out.extra["control_delta"], control)
    assert (out.run, out.round, out.codec) == ("r1", 3, "fp32")
    assert out.norm == pytest.approx(float(delta.norm()), rel=1e-5)


def test_named_tensors_encode_like_the_flat_vector(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, delta = spec_and_delta

    assert encode(spec.unflatten(delta), spec, run="r", round=1) == encode(delta, spec, run="r", round=1)


def test_int8_round_trip_is_within_half_a_step(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, delta = spec_and_delta

    data = encode(delta, spec, run="r", round=1, codec="int8")
    out = decode(data, spec)

    assert out.codec == "int8"
    for piece, back in zip(
        torch.split(delta, list(spec.sizes)), torch.split(out.delta, list(spec.sizes)), strict=True
    ):
        step = float(piece.abs().max()) / 127
        assert float((piece - back).abs().max()) <= step / 2 + 1e-9
    assert decode(data, spec).delta.numpy().tobytes() == out.delta.numpy().tobytes()


def test_int8_is_about_a_quarter_of_fp32() -> None:
    vec, spec = flatten({"w": torch.randn(100, 40)})

    ratio = len(encode(vec, spec, run="r", round=1, codec="int8")) / len(encode(vec, spec, run="r", round=1))

    assert 0.25 < ratio < 0.3


def test_int8_of_a_zero_delta_decodes_to_zeros(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, _ = spec_and_delta

    out = decode(encode(torch.zeros(spec.numel), spec, run="r", round=1, codec="int8"), spec)

    assert torch.equal(out.delta, torch.zeros(spec.numel))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other/1"}, "`format` must be 'fedchain-update/1'"),
        ({"codec": "fp16"}, "`codec` must be one of fp32, int8, int4, topk, got 'fp16'"),
        ({"spec": "00" * 32}, "`spec` must be"),
        ({"run": "other"}, "`run` must be 'r'"),
        ({"round": "8"}, "`round` must be '7'"),
        ({"extra": "not json"}, "`round` or `extra` is malformed"),
    ],
)
def test_metadata_mismatch_is_rejected(
    spec_and_delta: tuple[FlatSpec, torch.Tensor], changes: dict[str, str], message: str
) -> None:
    spec, delta = spec_and_delta
    data = _rebuild(encode(delta, spec, run="r", round=7), **changes)

    with pytest.raises(UpdateRejected, match=message):
        decode(data, spec, expect_run="r", expect_round=7)


def test_wrong_spec_is_rejected(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, delta = spec_and_delta
    _, other = flatten({"a.lora_B": torch.zeros(4, 3), "b.lora_B": torch.zeros(6)})

    with pytest.raises(UpdateRejected, match="`spec` must be"):
        decode(encode(delta, spec, run="r", round=1), other)


def _tampered(spec: FlatSpec, tensors: dict[str, torch.Tensor]) -> bytes:
    meta = {
        "format": FORMAT,
        "run": "r",
        "round": "1",
        "codec": "fp32",
        "spec": spec.digest(),
        "numel": str(spec.numel),
        "shapes": "[]",
        "extra": "{}",
    }
    return bytes(save(tensors, metadata=meta))


def test_wrong_tensors_are_rejected(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, _ = spec_and_delta
    good = {"delta/a.lora_B": torch.zeros(4, 3), "delta/b.lora_B": torch.zeros(5)}

    with pytest.raises(UpdateRejected, match=r"missing \['delta/b.lora_B'\]"):
        decode(_tampered(spec, {"delta/a.lora_B": torch.zeros(4, 3)}), spec)
    with pytest.raises(UpdateRejected, match=r"unexpected \['delta/c'\]"):
        decode(_tampered(spec, dict(good, **{"delta/c": torch.zeros(1)})), spec)
    with pytest.raises(
        UpdateRejected, match=r"'delta/b.lora_B' must be F32 of shape \[5\], got \('F32', \[6\]\)"
    ):
        decode(_tampered(spec, dict(good, **{"delta/b.lora_B": torch.zeros(6)})), spec)
    with pytest.raises(UpdateRejected, match=r"must be F32 of shape \[5\], got \('F64', \[5\]\)"):
        decode(_tampered(spec, dict(good, **{"delta/b.lora_B": torch.zeros(5, dtype=torch.float64)})), spec)
    with pytest.raises(UpdateRejected, match="NaN or Inf"):
        decode(
            _tampered(spec, dict(good, **{"delta/b.lora_B": torch.tensor([0, 0, float("nan"), 0, 0])})), spec
        )


def test_norm_bound_and_size_cap(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, delta = spec_and_delta
    data = encode(delta, spec, run="r", round=1)
    norm = float(delta.norm())

    assert decode(data, spec, max_norm=norm * 1.001).norm <= norm * 1.001
    with pytest.raises(UpdateRejected, match="L2 norm .* exceeds max_norm"):
        decode(data, spec, max_norm=norm * 0.999)
    with pytest.raises(UpdateRejected, match=r"over the 100-byte cap"):
        decode(data, spec, max_bytes=100)
    with pytest.raises(UpdateRejected, match="shorter than a safetensors header"):
        decode(b"abc", spec)
    with pytest.raises(UpdateRejected, match="header length"):
        decode(struct.pack("<Q", 10**9) + b"{}", spec)


def test_encode_refuses_bad_deltas(spec_and_delta: tuple[FlatSpec, torch.Tensor]) -> None:
    spec, delta = spec_and_delta
    with pytest.raises(TrainingError, match="NaN or Inf"):
        encode(torch.full_like(delta, float("inf")), spec, run="r", round=1)
    with pytest.raises(TrainingError, match=f"{spec.numel} elements"):
        encode(delta[:-1], spec, run="r", round=1)
    with pytest.raises(TrainingError, match="`codec` must be one of"):
        encode(delta, spec, run="r", round=1, codec="zip")  # type: ignore[arg-type]


_, _SPEC = flatten({"w": torch.zeros(3, 2)})
_VALID = encode(torch.arange(6.0), _SPEC, run="r", round=1, extra={"c": torch.ones(2)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_update_rejected(data: bytes) -> None:
    with pytest.raises(UpdateRejected):
        decode(data, _SPEC)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, len(_VALID)),
)
def test_mutated_updates_decode_or_raise_update_rejected(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_VALID)
    for pos, value in edits:
        data[pos] = value
    try:
        out = decode(bytes(data[: max(cut, 8)] if cut < len(_VALID) // 2 else data), _SPEC)
    except UpdateRejected:
        return
    assert out.delta.shape == (6,) and bool(torch.isfinite(out.delta).all())
