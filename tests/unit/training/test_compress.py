"""int4 and top-k codecs: hand-computed vectors, error feedback over rounds, every rejection, fuzzed bytes."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from training.codec import FORMAT, UpdateRejected, decode, encode, encode_with_feedback
from training.compress import CodecParams, int4_encode, int4_unpack, topk_select
from training.errors import TrainingError
from training.flat import FlatSpec, flatten
from training.merge import MergeSpec, UpdateInput, initial_state, merge
from training.safetensors_io import write


def _meta(spec: FlatSpec, codec: str, **more: str) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "run": "r",
        "round": "1",
        "codec": codec,
        "spec": spec.digest(),
        "numel": str(spec.numel),
        "shapes": "[]",
        "extra": "{}",
    }
    meta.update(more)
    return meta


def _tensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return dict(load(data))


# ---------------------------------------------------------------------------- int4


def test_int4_hand_computed_vector() -> None:
    x = torch.tensor([0.875, -0.4375, 0.0, 0.125, -2.0])
    vec, spec = flatten({"w": x})

    data = encode(vec, spec, run="r", round=1, codec="int4", params=CodecParams(block=4))
    tensors = _tensors(data)
    out = decode(data, spec, params=CodecParams(block=4))

    # block 0: scale 0.875 / 7 = 0.125, q = 7, round(-3.5) = -4 (ties to even), 0, 1; block 1: q = -7
    assert tensors["delta/w"].tolist() == [0xC7, 0x10, 0x09]
    scale1 = torch.tensor(2.0, dtype=torch.float32) / 7
    assert tensors["scale/w"].tolist() == [0.125, float(scale1)]
    expected = torch.tensor([0.875, -0.5, 0.0, 0.125, float(-7 * scale1)], dtype=torch.float32)
    assert out.delta.numpy().tobytes() == expected.numpy().tobytes()
    assert json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"]["block"] == "4"


def test_int4_round_trip_is_within_half_a_step_per_block() -> None:
    gen = torch.Generator().manual_seed(3)
    vec, spec = flatten(
        {"a.lora_B": torch.randn(13, 7, generator=gen), "b.lora_B": torch.randn(9, generator=gen)}
    )

    out = decode(encode(vec, spec, run="r", round=1, codec="int4"), spec)

    for piece, back in zip(
        torch.split(vec, list(spec.sizes)), torch.split(out.delta, list(spec.sizes)), strict=True
    ):
        for start in range(0, piece.numel(), 64):
            block, got = piece[start : start + 64], back[start : start + 64]
            assert float((block - got).abs().max()) <= float(block.abs().max()) / 7 / 2 * (1 + 1e-6)


def test_int4_is_about_an_eighth_of_fp32_and_zero_stays_zero() -> None:
    vec, spec = flatten({"w": torch.randn(200, 100)})

    ratio = len(encode(vec, spec, run="r", round=1, codec="int4")) / len(encode(vec, spec, run="r", round=1))
    zeros = decode(encode(torch.zeros(spec.numel), spec, run="r", round=1, codec="int4"), spec).delta

    assert 0.14 < ratio < 0.16  # 4 bits + a 32-bit scale per 64 values: 4.5 of 32 bits
    assert zeros.numpy().tobytes() == torch.zeros(spec.numel).numpy().tobytes()


def test_int4_nibbles_are_twos_complement_low_first() -> None:
    packed, scales = int4_encode(torch.tensor([-7.0, 7.0, -1.0]), block=8)

    assert packed.tolist() == [0x79, 0x0F] and scales.tolist() == [1.0]
    assert int4_unpack(torch.tensor([0x8F], dtype=torch.uint8), 2).tolist() == [-1, -8]


def _int4_blob(spec: FlatSpec, packed: list[int], scales: list[float], block: int = 4) -> bytes:
    tensors = {
        "delta/w": torch.tensor(packed, dtype=torch.uint8),
        "scale/w": torch.tensor(scales, dtype=torch.float32),
    }
    return write(tensors, _meta(spec, "int4", block=str(block)))


@pytest.mark.parametrize(
    ("packed", "scales", "block", "message"),
    [
        ([0x11, 0x11, 0x01], [1.0, 1.0], 4, None),
        ([0x81, 0x11, 0x01], [1.0, 1.0], 4, r"int4 value 1 of 'w' is -8"),
        ([0x11, 0x11, 0x11], [1.0, 1.0], 4, "padding nibble"),
        ([0x11, 0x11, 0x01], [1.0, float("nan")], 4, r"scale 1 of 'w' must be finite and >= 0, got nan"),
        ([0x11, 0x11, 0x01], [float("inf"), 1.0], 4, r"scale 0 of 'w' must be finite"),
        ([0x11, 0x11, 0x01], [-1.0, 1.0], 4, r"scale 0 of 'w' must be finite and >= 0, got -1.0"),
        ([0x11, 0x11, 0x01], [1.0, 1.0, 1.0], 4, r"'scale/w' must be F32 of shape \[2\]"),
        ([0x11, 0x11], [1.0, 1.0], 4, r"'delta/w' must be U8 of shape \[3\]"),
        ([0x11, 0x11, 0x01], [1.0, 1.0], 2, "`block` must be '4', got '2'"),
    ],
)
def test_bad_int4_updates_are_rejected(
    packed: list[int], scales: list[float], block: int, message: str | None
) -> None:
    _, spec = flatten({"w": torch.zeros(5)})
    data = _int4_blob(spec, packed, scales, block)

    if message is None:
        assert decode(data, spec, params=CodecParams(block=4)).delta.tolist() == [1.0] * 5
        return
    with pytest.raises(UpdateRejected, match=message):
        decode(data, spec, params=CodecParams(block=4))


# ---------------------------------------------------------------------------- top-k


def test_topk_hand_computed_vector() -> None:
    vec, spec = flatten({"a": torch.tensor([0.1, -3.0, 2.0]), "b": torch.tensor([0.0, -2.0, 0.5])})
    params = CodecParams(topk_fraction=2 / 6)

    data = encode(vec, spec, run="r", round=1, codec="topk", params=params)
    tensors = _tensors(data)
    out = decode(data, spec, params=params)

    # |x| = 0.1 3 2 0 2 0.5: the two largest are 3 (index 1) and 2, the tie 2 vs 2 goes to index 2
    assert tensors["topk/indices"].dtype == torch.int32
    assert tensors["topk/indices"].tolist() == [1, 2] and tensors["topk/values"].tolist() == [-3.0, 2.0]
    assert sorted(tensors) == ["topk/indices", "topk/values"]
    assert out.delta.tolist() == [0.0, -3.0, 2.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("fraction", "numel", "k"),
    [(0.01, 1000, 10), (0.01, 1001, 11), (0.01, 50, 1), (0.01, 0, 0), (1.0, 7, 7), (0.1, 30, 3)],
)
def test_max_k_is_the_ceiling_of_the_fraction(fraction: float, numel: int, k: int) -> None:
    assert CodecParams(topk_fraction=fraction).max_k(numel) == k


def test_topk_values_are_sent_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(5)
    vec, spec = flatten({"w": torch.randn(500, generator=gen) * 1e-30})  # subnormal products, odd bits
    vec[7] = -0.0
    params = CodecParams(topk_fraction=0.1)

    out = decode(encode(vec, spec, run="r", round=1, codec="topk", params=params), spec, params=params)
    idx, values = topk_select(vec, params.max_k(spec.numel))

    assert out.delta[idx.long()].numpy().tobytes() == vec[idx.long()].numpy().tobytes()
    assert values.numpy().tobytes() == vec[idx.long()].numpy().tobytes()
    assert int((out.delta != 0).sum()) == 50


def test_error_feedback_sends_everything_eventually() -> None:
    delta = torch.tensor([1.0, 0.25, -0.125, 0.0625, 0.5, -0.375, 0.03, 0.02])  # 0.02 waits 80 rounds
    vec, spec = flatten({"w": delta})
    params = CodecParams(topk_fraction=1 / 8)  # one value per round
    residual = None
    total = torch.zeros(8)
    sent_at: set[int] = set()

    for rnd in range(1, 91):
        data, residual = encode_with_feedback(
            vec, residual, spec, run="r", round=rnd, codec="topk", params=params
        )
        sent = decode(data, spec, params=params, expect_round=rnd).delta
        sent_at |= {int(i) for i in sent.nonzero().reshape(-1)}
        total += sent
        assert residual is not None
        # what was sent plus what is still owed is every round's delta: nothing is lost
        torch.testing.assert_close(total + residual, delta * rnd, rtol=0, atol=1e-5)

    assert sent_at == set(range(8))


def test_error_feedback_residual_is_what_was_not_sent() -> None:
    vec, spec = flatten({"w": torch.tensor([3.0, -1.0, 0.5, 2.0])})
    params = CodecParams(topk_fraction=0.5)

    first, r1 = encode_with_feedback(vec, None, spec, run="r", round=1, codec="topk", params=params)
    second, r2 = encode_with_feedback(vec, r1, spec, run="r", round=2, codec="topk", params=params)

    assert r1 is not None and r1.tolist() == [0.0, -1.0, 0.5, 0.0]
    # round 2 selects from [3, -2, 1, 2]: 3 and the tie -2 / 2 goes to index 1
    assert decode(second, spec, params=params).delta.tolist() == [3.0, -2.0, 0.0, 0.0]
    assert r2 is not None and r2.tolist() == [0.0, 0.0, 1.0, 2.0]
    assert encode_with_feedback(vec, None, spec, run="r", round=1, codec="int8")[1] is None
    with pytest.raises(TrainingError, match="residual must be float32 of shape"):
        encode_with_feedback(vec, torch.zeros(3), spec, run="r", round=1, codec="topk", params=params)
    with pytest.raises(TrainingError, match="residual contains NaN"):
        encode_with_feedback(
            vec, torch.full((4,), float("nan")), spec, run="r", round=1, codec="topk", params=params
        )


def _topk_blob(spec: FlatSpec, indices: list[int], values: list[float]) -> bytes:
    tensors = {
        "topk/indices": torch.tensor(indices, dtype=torch.int32),
        "topk/values": torch.tensor(values, dtype=torch.float32),
    }
    return write(tensors, _meta(spec, "topk"))


@pytest.mark.parametrize(
    ("indices", "values", "message"),
    [
        ([0, 3, 9], [1.0, 2.0, 3.0], None),
        ([], [], None),
        ([3, 0, 9], [1.0, 2.0, 3.0], r"strictly ascending .* index 1 is 0 after 3"),
        ([0, 3, 3], [1.0, 2.0, 3.0], r"no duplicates\); index 2 is 3 after 3"),
        ([-1, 3, 9], [1.0, 2.0, 3.0], r"indices must be in \[0, 10\), got -1\.\.9"),
        ([0, 3, 10], [1.0, 2.0, 3.0], r"indices must be in \[0, 10\), got 0\.\.10"),
        ([0, 11, 5], [1.0, 2.0, 3.0], "strictly ascending"),
        ([0, 3, 9], [1.0, float("nan"), 3.0], "top-k values contain NaN or Inf"),
        ([0, 3, 9], [1.0, 2.0, float("-inf")], "top-k values contain NaN or Inf"),
        ([0, 3, 9], [1.0, 2.0], r"'topk/values' must be F32 of shape \[3\], got \('F32', \[2\]\)"),
        ([0, 1, 2, 3], [1.0] * 4, "carries 4 values, over the 3 allowed for 10"),
    ],
)
def test_bad_topk_updates_are_rejected(indices: list[int], values: list[float], message: str | None) -> None:
    _, spec = flatten({"w": torch.zeros(2, 5)})
    params = CodecParams(topk_fraction=0.3)
    data = _topk_blob(spec, indices, values)

    if message is None:
        out = decode(data, spec, params=params)
        assert out.delta[torch.tensor(indices, dtype=torch.long)].tolist() == values
        return
    with pytest.raises(UpdateRejected, match=message):
        decode(data, spec, params=params)


def test_topk_wrong_dtypes_and_leftover_tensors_are_rejected() -> None:
    _, spec = flatten({"w": torch.zeros(10)})
    meta = _meta(spec, "topk")
    wide = {"topk/indices": torch.tensor([1, 2]), "topk/values": torch.tensor([1.0, 2.0])}  # int64
    mixed = {
        "topk/indices": torch.tensor([1], dtype=torch.int32),
        "topk/values": torch.tensor([1.0]),
        "delta/w": torch.zeros(10),
    }
    scalar = {"topk/indices": torch.tensor(1, dtype=torch.int32), "topk/values": torch.tensor(1.0)}

    with pytest.raises(UpdateRejected, match=r"'topk/indices' must be I32 of shape \[2\], got \('I64'"):
        decode(bytes(save(wide, metadata=meta)), spec, params=CodecParams(topk_fraction=0.5))
    with pytest.raises(UpdateRejected, match=r"unexpected \['delta/w'\]"):
        decode(bytes(save(mixed, metadata=meta)), spec)
    with pytest.raises(UpdateRejected, match=r"'topk/indices' must have shape \[k\], got \[\]"):
        decode(bytes(save(scalar, metadata=meta)), spec)
    with pytest.raises(UpdateRejected, match="must have shape"):
        decode(bytes(save({"topk/values": torch.tensor([1.0])}, metadata=meta)), spec)


def test_codec_params_are_checked() -> None:
    with pytest.raises(TrainingError, match=r"`codec_block` must be an integer in \[1, 1048576\], got 0"):
        CodecParams(block=0)
    for bad in (0.0, 1.5, float("nan"), True):
        with pytest.raises(TrainingError, match=r"`topk_fraction` must be a number in \(0, 1\]"):
            CodecParams(topk_fraction=bad)


# ---------------------------------------------------------------------------- merge


def test_merge_takes_only_the_runs_codec_and_parameters() -> None:
    gen = torch.Generator().manual_seed(9)
    vec, spec = flatten({"w": torch.randn(200, generator=gen)})
    mspec = MergeSpec(codec="int4", codec_params=CodecParams(block=32))
    state = initial_state(mspec, torch.zeros(spec.numel), spec)
    good = encode(vec, spec, run="r", round=1, codec="int4", params=CodecParams(block=32))
    ups = [
        UpdateInput("a", good, 1),
        UpdateInput("b", encode(vec, spec, run="r", round=1, codec="int4"), 1),  # block 64
        UpdateInput("c", encode(vec, spec, run="r", round=1, codec="int8"), 1),
    ]

    out = merge(state, ups, mspec, run="r", round=1, eligible=3)

    assert out.included == ("a",)
    assert "`block` must be '32', got '64'" in out.rejected["b"]
    assert "codec must be 'int4', got 'int8'" in out.rejected["c"]
    assert (
        out.state.params.numpy().tobytes()
        == decode(good, spec, params=CodecParams(block=32)).delta.numpy().tobytes()
    )


# ---------------------------------------------------------------------------- fuzz

_, _SPEC = flatten({"a": torch.zeros(3, 3), "b": torch.zeros(4)})
_PARAMS = CodecParams(block=4, topk_fraction=0.5)
_VALID = {
    codec: encode(torch.linspace(-1, 1, 13), _SPEC, run="r", round=1, codec=codec, params=_PARAMS)  # type: ignore[arg-type]
    for codec in ("int4", "topk")
}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["int4", "topk"]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10_000),
)
def test_mutated_updates_decode_or_raise_update_rejected(
    codec: str, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_VALID[codec])
    for pos, value in edits:
        data[pos % len(data)] = value
    cut %= len(data) + 1
    try:
        out = decode(bytes(data[: max(cut, 8)] if cut < len(data) // 2 else data), _SPEC, params=_PARAMS)
    except UpdateRejected:
        return
    assert out.delta.shape == (13,) and bool(torch.isfinite(out.delta).all())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), max_size=8),
)
def test_arbitrary_topk_tensors_decode_or_raise_update_rejected(
    indices: list[int], values: list[float]
) -> None:
    n = min(len(indices), len(values))
    data = _topk_blob(_SPEC, indices[:n], values[:n])
    try:
        out = decode(data, _SPEC, params=_PARAMS)
    except UpdateRejected:
        return
    assert indices[:n] == sorted(set(indices[:n])) and all(0 <= i < 13 for i in indices[:n])
    assert int((out.delta != 0).sum()) <= n
