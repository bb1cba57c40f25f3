"""Tests for training.merge: the consensus merge, its state encoding and its bit-exactness."""

from __future__ import annotations

import itertools

import pytest
import torch

from training import codec
from training.flat import FlatSpec
from training.merge import (
    MergeError,
    MergeSpec,
    ModelState,
    StateFormatError,
    UpdateInput,
    decode_state,
    encode_state,
    initial_state,
    merge,
    state_hash,
)

SPEC = FlatSpec(names=("a", "b"), shapes=((2, 3), (4,)), dtypes=("float32", "float32"))
RUN, ROUND = "run-1", 3
ELIGIBLE = 8


def _delta(seed: int, scale: float = 0.01) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(SPEC.numel, generator=g) * scale


def _update(key: str, seed: int, samples: int = 10, **kw: object) -> UpdateInput:
    data = codec.encode(_delta(seed), SPEC, run=RUN, round=ROUND, **kw)  # type: ignore[arg-type]
    return UpdateInput(key=key, data=data, num_samples=samples)


def _start(spec: MergeSpec) -> ModelState:
    return initial_state(spec, torch.linspace(-1.0, 1.0, SPEC.numel), SPEC)


def test_merge_with_mean_and_fedavg_is_the_weighted_mean_of_the_deltas() -> None:
    spec = MergeSpec()
    state = _start(spec)
    updates = [_update("0xa", 1, samples=1), _update("0xb", 2, samples=3)]

    out = merge(state, updates, spec, run=RUN, round=ROUND, eligible=ELIGIBLE)

    expected = state.params + (_delta(1) * 1 + _delta(2) * 3) / 4
    assert torch.allclose(out.state.params, expected, atol=1e-6)
    assert out.included == ("0xa", "0xb")
    assert dict(out.rejected) == {}
    assert out.aggregate_norm is not None and out.aggregate_norm > 0


@pytest.mark.parametrize(
    ("aggregator", "params", "optimizer"),
    [
        ("mean", {}, "fedavg"),
        ("trimmed_mean", {"trim_ratio": 0.2}, "fedadam"),
        ("krum", {"f": 1}, "fedavgm"),
        ("median", {"f": 1}, "fedyogi"),
        ("geometric_median", {"f": 1}, "fedadagrad"),
    ],
)
def test_merge_is_bit_exact_for_every_input_order(
    aggregator: str, params: dict[str, object], optimizer: str
) -> None:
    spec = MergeSpec(aggregator=aggregator, aggregator_params=params, server_optimizer=optimizer)
    state = _start(spec)
    updates = [_update(f"0x{i}", seed=i, samples=5 + i) for i in range(5)]

    hashes = {
        state_hash(merge(state, list(order), spec, run=RUN, round=ROUND, eligible=ELIGIBLE).state)
        for order in itertools.islice(itertools.permutations(updates), 0, 120, 17)
    }
    encoded = {encode_state(merge(state, updates[::-1], spec, run=RUN, round=ROUND, eligible=ELIGIBLE).state)}
    encoded.add(encode_state(merge(state, updates, spec, run=RUN, round=ROUND, eligible=ELIGIBLE).state))

    assert len(hashes) == 1
    assert len(encoded) == 1


def test_merge_rejects_bad_updates_with_a_reason_and_merges_the_rest() -> None:
    spec = MergeSpec(max_norm=1.0)
    state = _start(spec)
    huge = codec.encode(_delta(9, scale=10.0), SPEC, run=RUN, round=ROUND)
    other_round = codec.encode(_delta(8), SPEC, run=RUN, round=ROUND + 1)
    updates = [
        _update("0xgood", 1),
        UpdateInput("0xhuge", huge, 10),
        UpdateInput("0xround", other_round, 10),
        UpdateInput("0xjunk", b"\x00" * 40, 10),
        _update("0xzero", 2, samples=0),
        _update("0xint8", 3, codec="int8"),
    ]

    out = merge(state, updates, spec, run=RUN, round=ROUND, eligible=ELIGIBLE)

    assert out.included == ("0xgood",)
    assert set(out.rejected) == {"0xhuge", "0xround", "0xjunk", "0xzero", "0xint8"}
    assert "max_norm" in out.rejected["0xhuge"]
    assert "round" in out.rejected["0xround"]
    assert "num_samples" in out.rejected["0xzero"]
    assert "codec" in out.rejected["0xint8"]
    assert torch.allclose(out.state.params, state.params + _delta(1), atol=1e-7)


def test_merge_with_nothing_accepted_keeps_the_state() -> None:
    spec = MergeSpec(server_optimizer="fedavgm")
    state = _start(spec)

    out = merge(state, [UpdateInput("0xjunk", b"junk", 1)], spec, run=RUN, round=ROUND, eligible=ELIGIBLE)

    assert out.included == ()
    assert state_hash(out.state) == state_hash(state)


def test_merge_raises_when_the_aggregator_needs_more_updates() -> None:
    spec = MergeSpec(aggregator="krum", aggregator_params={"f": 1})
    state = _start(spec)

    with pytest.raises(MergeError, match="krum"):
        merge(state, [_update("0xa", 1), _update("0xb", 2)], spec, run=RUN, round=ROUND, eligible=ELIGIBLE)


def test_merge_refuses_duplicate_keys() -> None:
    spec = MergeSpec()
    with pytest.raises(MergeError, match="unique"):
        merge(
            _start(spec),
            [_update("0xa", 1), _update("0xa", 2)],
            spec,
            run=RUN,
            round=ROUND,
            eligible=ELIGIBLE,
        )


def test_scaffold_merge_updates_the_control_variate_and_needs_control_deltas() -> None:
    spec = MergeSpec(scaffold=True)
    state = _start(spec)
    control_delta = torch.full((SPEC.numel,), 0.5)
    with_control = codec.encode(_delta(1), SPEC, run=RUN, round=ROUND, extra={"control_delta": control_delta})
    updates = [UpdateInput("0xa", with_control, 4), _update("0xb", 2)]

    out = merge(state, updates, spec, run=RUN, round=ROUND, eligible=ELIGIBLE)

    assert out.included == ("0xa",)
    assert "control_delta" in out.rejected["0xb"]
    assert out.state.control is not None
    assert torch.equal(out.state.control, control_delta / ELIGIBLE)  # c + sum(delta_c) / N, N eligible


def test_encode_decode_state_round_trips_and_keeps_the_hash() -> None:
    spec = MergeSpec(server_optimizer="fedadam", scaffold=True)
    state = merge(
        _start(spec),
        [
            UpdateInput(
                "0xa",
                codec.encode(_delta(1), SPEC, run=RUN, round=ROUND, extra={"control_delta": _delta(5)}),
                3,
            )
        ],
        spec,
        run=RUN,
        round=ROUND,
        eligible=ELIGIBLE,
    ).state

    data = encode_state(state)
    back = decode_state(data, flat_spec=SPEC, merge_spec=spec)

    assert state_hash(back) == state_hash(state)
    assert encode_state(back) == data
    assert set(back.server_state) == {"m", "v"}
    assert back.adapter_state()["a"].shape == (2, 3)


def test_state_hash_changes_with_any_tensor() -> None:
    spec = MergeSpec(server_optimizer="fedavgm")
    state = _start(spec)
    bumped = ModelState(state.params, {"m": torch.full((SPEC.numel,), 1e-8)}, None, SPEC)

    assert state_hash(bumped) != state_hash(state)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:5], "shorter"),
        (lambda b: b.replace(b"fedchain-state/1", b"fedchain-state/9"), "format"),
        (lambda b: b[:-4], "malformed"),
    ],
)
def test_decode_state_rejects_malformed_bytes(mutate: object, message: str) -> None:
    data = encode_state(_start(MergeSpec()))

    with pytest.raises(StateFormatError, match=message):
        decode_state(mutate(data))  # type: ignore[operator]


def test_decode_state_rejects_another_layout_or_optimiser() -> None:
    data = encode_state(_start(MergeSpec()))
    other = FlatSpec(names=("a",), shapes=((10,),), dtypes=("float32",))

    with pytest.raises(StateFormatError, match="layout"):
        decode_state(data, flat_spec=other)
    with pytest.raises(StateFormatError, match="server/m"):
        decode_state(data, merge_spec=MergeSpec(server_optimizer="fedavgm"))


def test_decode_state_rejects_nan() -> None:
    state = _start(MergeSpec())
    data = bytearray(encode_state(state))
    data[-4:] = torch.tensor([float("nan")]).view(torch.uint8).numpy().tobytes()

    with pytest.raises(StateFormatError, match="NaN"):
        decode_state(bytes(data))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggregator": "nope"}, "aggregator"),
        ({"codec": "fp8"}, "codec"),
        ({"max_norm": -1.0}, "max_norm"),
        ({"max_samples": 0}, "max_samples"),
    ],
)
def test_merge_spec_validates_its_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(MergeError, match=message):
        MergeSpec(**kwargs)  # type: ignore[arg-type]
