"""Decoding states and updates from files (safetensors.safe_open): the same tensors, the same checks."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from training import codec
from training.codec import UpdateRejected
from training.flat import FlatSpec
from training.merge import (
    MergeSpec,
    StateFormatError,
    UpdateInput,
    decode_state,
    encode_state,
    encode_state_file,
    initial_state,
    merge,
    state_hash,
)

SPEC = FlatSpec(names=("a", "b"), shapes=((3, 5), (7,)), dtypes=("float32", "float32"))
RUN, ROUND = "run-1", 2


def _delta(seed: int) -> torch.Tensor:
    return torch.randn(SPEC.numel, generator=torch.Generator().manual_seed(seed)) * 0.01


def test_a_state_written_to_a_file_has_the_bytes_and_decodes_to_the_same_tensors(tmp_path: Path) -> None:
    spec = MergeSpec(server_optimizer="fedadam")
    state = initial_state(spec, torch.linspace(-1, 1, SPEC.numel), SPEC)
    path = tmp_path / "state.safetensors"

    size = encode_state_file(state, path)

    assert path.read_bytes() == encode_state(state) and size == path.stat().st_size
    from_file = decode_state(path, flat_spec=SPEC, merge_spec=spec)
    from_bytes = decode_state(encode_state(state), flat_spec=SPEC, merge_spec=spec)
    assert state_hash(from_file) == state_hash(from_bytes) == state_hash(state)


@pytest.mark.parametrize("codec_name", ["fp32", "int8", "int4"])
def test_a_merge_of_update_files_is_bit_identical_to_the_merge_of_their_bytes(
    tmp_path: Path, codec_name: str
) -> None:
    spec = MergeSpec(codec=codec_name)
    state = initial_state(spec, torch.linspace(-1, 1, SPEC.numel), SPEC)
    blobs = [codec.encode(_delta(i), SPEC, run=RUN, round=ROUND, codec=codec_name) for i in range(3)]
    paths = []
    for i, data in enumerate(blobs):
        paths.append(tmp_path / f"u{i}")
        paths[-1].write_bytes(data)

    by_bytes = merge(
        state,
        [UpdateInput(f"k{i}", d, 5) for i, d in enumerate(blobs)],
        spec,
        run=RUN,
        round=ROUND,
        eligible=3,
    )
    by_file = merge(
        state,
        [UpdateInput(f"k{i}", p, 5) for i, p in enumerate(paths)],
        spec,
        run=RUN,
        round=ROUND,
        eligible=3,
    )

    assert by_file.included == by_bytes.included == ("k0", "k1", "k2")
    assert state_hash(by_file.state) == state_hash(by_bytes.state)


def _corrupt(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        del raw[-5:]
    elif how == "header_too_long":
        raw[:8] = struct.pack("<Q", 1 << 40)
    elif how == "not_json":
        raw[8:12] = b"\xff\xfe\x00\x01"
    else:  # "nan": a NaN in the first tensor's data
        raw[-4:] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "header_too_long", "not_json", "nan"])
def test_a_corrupt_state_file_is_refused_with_a_reason(tmp_path: Path, how: str) -> None:
    spec = MergeSpec()
    state = initial_state(spec, torch.linspace(-1, 1, SPEC.numel), SPEC)
    path = tmp_path / "state.safetensors"
    encode_state_file(state, path)
    _corrupt(path, how)

    with pytest.raises(StateFormatError) as info:
        decode_state(path, flat_spec=SPEC, merge_spec=spec)
    assert str(info.value)


@pytest.mark.parametrize("how", ["truncated", "header_too_long", "not_json", "nan"])
def test_a_corrupt_update_file_is_rejected_like_corrupt_bytes(tmp_path: Path, how: str) -> None:
    path = tmp_path / "update"
    path.write_bytes(codec.encode(_delta(1), SPEC, run=RUN, round=ROUND))
    _corrupt(path, how)

    with pytest.raises(UpdateRejected) as from_file:
        codec.decode(path, SPEC)
    with pytest.raises(UpdateRejected) as from_bytes:
        codec.decode(path.read_bytes(), SPEC)
    # the same check refuses both (the safetensors parser words its own detail per entry point)
    assert str(from_file.value).split(":")[0] == str(from_bytes.value).split(":")[0]


def test_an_oversized_update_file_is_rejected_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "update"
    with open(path, "wb") as f:  # a sparse 8 GiB file: parsing it would be slow, reading it worse
        f.truncate(8 << 30)

    with pytest.raises(UpdateRejected, match="over the"):
        codec.decode(path, SPEC)
    with pytest.raises(UpdateRejected, match="cannot be read"):
        codec.decode(tmp_path / "missing", SPEC)


@pytest.mark.parametrize("codec_name", ["fp32", "int8", "int4", "topk"])
def test_encode_file_writes_the_bytes_encode_returns(tmp_path: Path, codec_name: str) -> None:
    extra = {"control_delta": _delta(9)}
    path = tmp_path / "update"

    size = codec.encode_file(_delta(3), SPEC, path, run=RUN, round=ROUND, codec=codec_name, extra=extra)

    assert path.read_bytes() == codec.encode(
        _delta(3), SPEC, run=RUN, round=ROUND, codec=codec_name, extra=extra
    )
    assert size == path.stat().st_size
