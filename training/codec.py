"""Update codec: an adapter delta (flat vector or named tensors) to safetensors bytes and back, with checks.

Layout (safetensors, never pickle; canonical: equal updates encode to equal bytes). Header metadata
(str -> str): ``format`` (:data:`FORMAT`), ``run``,
``round``, ``codec``, ``spec`` (:meth:`training.flat.FlatSpec.digest`), ``shapes`` (JSON list, spec order),
``numel``, ``extra`` (JSON ``{key: shape}``) and, for ``int4``, ``block``. Tensors by codec:

- ``fp32``: ``delta/<name>`` float32 of the tensor's shape, for each tensor of the spec;
- ``int8``: ``delta/<name>`` int8 of the tensor's shape and a float32 ``scale/<name>`` of shape ``[1]``;
- ``int4``: ``delta/<name>`` uint8 ``[ceil(n / 2)]`` (two values per byte) and float32 ``scale/<name>``
  ``[ceil(n / block)]`` (:mod:`training.compress`);
- ``topk``: ``topk/indices`` int32 ``[k]`` (ascending, into the flat vector) and ``topk/values`` float32
  ``[k]``, ``k <= CodecParams.max_k(numel)``;

and ``extra/<key>`` float32 tensors (e.g. SCAFFOLD's ``control_delta``), always fp32, with every codec.

int8: per tensor, ``scale = max|x| / 127`` (float32) and ``q = clamp(round(x / scale), -127, 127)``. Decoding
is ``q * scale`` in float32, one correctly rounded multiply, so every peer decodes the same bytes to the
same floats (how a peer quantised its own update is its own business). int4 decodes the same way per block;
top-k decoding only places values (:mod:`training.compress`).

:func:`decode` treats its input as hostile: it caps the size before parsing, reads the JSON header itself,
checks format, run, round, codec, spec digest, the exact tensor set, dtypes and shapes before loading any
data, then rejects NaN/Inf and deltas whose L2 norm exceeds ``max_norm`` (norm computed as in
:func:`training.robust.exact.sq_norms`, bit-identical on every peer, so all peers agree on the verdict).
Every failure is :class:`UpdateRejected` with a message naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load as st_load
from torch import Tensor

from training import compress
from training.compress import CodecParams
from training.errors import TrainingError
from training.flat import FlatSpec
from training.robust.exact import sq_norms
from training.safetensors_io import load_file, read_header, write, write_file

FORMAT = "fedchain-update/1"
CODECS = ("fp32", "int8", "int4", "topk")
Codec = Literal["fp32", "int8", "int4", "topk"]
FEEDBACK_CODECS = ("topk",)
"""Codecs whose senders keep an error-feedback residual (:func:`encode_with_feedback`)."""
MAX_HEADER_BYTES = 1 << 22


class UpdateRejected(TrainingError, ValueError):  # noqa: N818 - the name the other layers use
    """An encoded update failed a check (format, metadata, tensors, values or norm bound)."""


@dataclass(frozen=True)
class DecodedUpdate:
    """A decoded, checked update."""

    delta: Tensor
    """Flat float32 delta of length ``spec.numel``."""
    extra: dict[str, Tensor]
    """Extra float32 tensors (e.g. ``control_delta``)."""
    run: str
    round: int
    codec: str
    norm: float
    """L2 norm of ``delta`` (from :func:`training.robust.exact.sq_norms`: the same bits on every peer)."""


def default_max_bytes(spec: FlatSpec) -> int:
    """Return the default size cap: the delta and three more fp32 vectors of its length, plus 1 MiB."""
    return 16 * spec.numel + (1 << 20)


def _as_flat(delta: Tensor | Mapping[str, Tensor], spec: FlatSpec) -> Tensor:
    if isinstance(delta, Mapping):
        if sorted(delta) != list(spec.names):
            raise TrainingError(
                f"delta tensors {sorted(delta)} do not match the spec names {list(spec.names)}"
            )
        parts = [delta[n].detach().reshape(-1).to(torch.float32) for n in spec.names]
        flat = torch.cat(parts) if parts else torch.zeros(0)
    else:
        flat = delta.detach().to(torch.float32)
    if flat.shape != (spec.numel,):
        raise TrainingError(f"delta must have {spec.numel} elements, got shape {tuple(flat.shape)}")
    return flat


def _int8(piece: Tensor) -> tuple[Tensor, Tensor]:
    top = piece.abs().max() if piece.numel() else torch.tensor(0.0)
    scale = (top / 127.0).to(torch.float32).reshape(1)
    if float(scale) == 0.0:
        return torch.zeros_like(piece, dtype=torch.int8), scale
    q = torch.round(piece / scale).clamp_(-127, 127).to(torch.int8)
    return q, scale


def encode(
    delta: Tensor | Mapping[str, Tensor],
    spec: FlatSpec,
    *,
    run: str,
    round: int,
    codec: Codec = "fp32",
    extra: Mapping[str, Tensor] | None = None,
    params: CodecParams | None = None,
) -> bytes:
    """Encode an update as safetensors bytes (:func:`encode_file` writes the same bytes to a file).

    Parameters
    ----------
    delta
        Flat float32 delta of length ``spec.numel``, or the named tensors of ``spec``.
    spec
        Layout of the adapter state.
    run, round
        Run id and round number, written to the header and checked by :func:`decode`.
    codec
        ``"fp32"`` (lossless), ``"int8"`` (per-tensor scale), ``"int4"`` (per-block scale) or ``"topk"``
        (the ``params.max_k(d)`` largest-magnitude values; see :func:`encode_with_feedback`).
    extra
        Extra tensors sent along (always fp32), e.g. ``{"control_delta": c_delta}`` for SCAFFOLD.
    params
        The run's int4 block size and top-k fraction (default :class:`training.compress.CodecParams`).

    Raises
    ------
    TrainingError
        If the codec is unknown, the delta does not match ``spec``, or a value is not finite.
    """
    return write(*_encoded(delta, spec, run=run, round=round, codec=codec, extra=extra, params=params))


def encode_file(
    delta: Tensor | Mapping[str, Tensor],
    spec: FlatSpec,
    path: Path,
    *,
    run: str,
    round: int,
    codec: Codec = "fp32",
    extra: Mapping[str, Tensor] | None = None,
    params: CodecParams | None = None,
) -> int:
    """Write :func:`encode`'s bytes to ``path`` tensor by tensor, never holding them whole; return the size.

    An fp32 update's tensors are views of ``delta``, so nothing of the update is copied in memory.
    """
    tensors, metadata = _encoded(delta, spec, run=run, round=round, codec=codec, extra=extra, params=params)
    return write_file(tensors, metadata, Path(path))


def _encoded(
    delta: Tensor | Mapping[str, Tensor],
    spec: FlatSpec,
    *,
    run: str,
    round: int,
    codec: Codec,
    extra: Mapping[str, Tensor] | None,
    params: CodecParams | None,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Return the tensors and metadata of an encoded update (see :func:`encode`)."""
    if codec not in CODECS:
        raise TrainingError(f"`codec` must be one of {', '.join(CODECS)}, got {codec!r}")
    flat = _as_flat(delta, spec)
    if not bool(torch.isfinite(flat).all()):
        raise TrainingError("delta contains NaN or Inf")
    params = params or CodecParams()
    tensors: dict[str, Tensor] = {}
    if codec == "topk":
        indices, values = compress.topk_select(flat, params.max_k(spec.numel))
        tensors["topk/indices"], tensors["topk/values"] = indices, values
    pieces = torch.split(flat, list(spec.sizes))
    for name, shape, piece in zip(spec.names, spec.shapes, pieces, strict=True):
        if codec == "topk":
            break
        if codec == "fp32":
            tensors[f"delta/{name}"] = piece.reshape(shape).contiguous()
        elif codec == "int8":
            q, scale = _int8(piece)
            tensors[f"delta/{name}"] = q.reshape(shape).contiguous()
            tensors[f"scale/{name}"] = scale
        else:
            tensors[f"delta/{name}"], tensors[f"scale/{name}"] = compress.int4_encode(piece, params.block)
    extra_shapes: dict[str, list[int]] = {}
    for key, value in sorted((extra or {}).items()):
        tensors[f"extra/{key}"] = value.detach().to(torch.float32).contiguous()
        extra_shapes[key] = list(value.shape)
    metadata = {
        "format": FORMAT,
        "run": str(run),
        "round": str(int(round)),
        "codec": codec,
        "spec": spec.digest(),
        "numel": str(spec.numel),
        "shapes": json.dumps([list(s) for s in spec.shapes], separators=(",", ":")),
        "extra": json.dumps(extra_shapes, sort_keys=True, separators=(",", ":")),
    }
    if codec == "int4":
        metadata["block"] = str(params.block)
    return tensors, metadata


def encode_with_feedback(
    delta: Tensor | Mapping[str, Tensor],
    residual: Tensor | None,
    spec: FlatSpec,
    *,
    run: str,
    round: int,
    codec: Codec,
    extra: Mapping[str, Tensor] | None = None,
    params: CodecParams | None = None,
) -> tuple[bytes, Tensor | None]:
    """Encode ``delta`` plus the sender's error-feedback ``residual``; return the bytes and the new residual.

    For a codec in :data:`FEEDBACK_CODECS` the member encodes ``u = delta + residual`` and keeps
    ``u - decode(bytes)`` (what it did not send) for the next round, so nothing is dropped for good, only
    delayed. Other codecs encode ``delta`` as :func:`encode` does and return ``None`` as the residual.
    ``residual`` ``None`` is a zero residual (the first round).

    Raises
    ------
    TrainingError
        As :func:`encode`, or if ``residual`` is not a finite float32 vector of length ``spec.numel``.
    """
    if codec not in FEEDBACK_CODECS:
        return encode(delta, spec, run=run, round=round, codec=codec, extra=extra, params=params), None
    flat = _as_flat(delta, spec)
    if residual is not None:
        if residual.dtype != torch.float32 or tuple(residual.shape) != (spec.numel,):
            raise TrainingError(
                f"error-feedback residual must be float32 of shape ({spec.numel},), got "
                f"{residual.dtype} {tuple(residual.shape)}"
            )
        if not bool(torch.isfinite(residual).all()):
            raise TrainingError("error-feedback residual contains NaN or Inf")
        flat = flat + residual
    data = encode(flat, spec, run=run, round=round, codec=codec, extra=extra, params=params)
    sent = decode(data, spec, params=params, max_bytes=len(data)).delta
    return data, flat - sent


def _size(data: bytes | Path) -> int:
    if not isinstance(data, Path):
        return len(data)
    try:
        return data.stat().st_size
    except OSError as exc:
        raise UpdateRejected(f"update file {data} cannot be read: {exc}") from exc


def _header(data: bytes | Path) -> tuple[dict[str, str], dict[str, Any]]:
    meta, header = read_header(data, max_header_bytes=MAX_HEADER_BYTES, error=UpdateRejected, what="update")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise UpdateRejected("header has no string metadata")
    return meta, header


def _expect(meta: Mapping[str, str], key: str, want: str) -> None:
    got = meta.get(key)
    if got != want:
        raise UpdateRejected(f"metadata `{key}` must be {want!r}, got {got!r}")


def _check_metadata(
    meta: Mapping[str, str],
    spec: FlatSpec,
    expect_run: str | None,
    expect_round: int | None,
    params: CodecParams,
) -> tuple[str, int, dict[str, list[int]]]:
    _expect(meta, "format", FORMAT)
    codec = meta.get("codec")
    if codec not in CODECS:
        raise UpdateRejected(f"metadata `codec` must be one of {', '.join(CODECS)}, got {codec!r}")
    _expect(meta, "spec", spec.digest())
    _expect(meta, "numel", str(spec.numel))
    if expect_run is not None:
        _expect(meta, "run", expect_run)
    if expect_round is not None:
        _expect(meta, "round", str(expect_round))
    if codec == "int4":
        _expect(meta, "block", str(params.block))
    try:
        rnd = int(meta.get("round", ""))
        extra = json.loads(meta.get("extra", ""))
    except ValueError as exc:
        raise UpdateRejected(f"metadata `round` or `extra` is malformed: {exc}") from exc
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(s, int) and s >= 0 for s in v)
        for k, v in extra.items()
    ):
        raise UpdateRejected("metadata `extra` must map names to shapes")
    return codec, rnd, extra


def _topk_count(header: Mapping[str, Any], spec: FlatSpec, params: CodecParams) -> int:
    """``k`` of a top-k update, from its header: both tensors one-dimensional of one length, at most max_k."""
    info = header.get("topk/indices")
    shape = info.get("shape") if isinstance(info, dict) else None
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] >= 0):
        raise UpdateRejected(f"tensor 'topk/indices' must have shape [k], got {shape!r:.80}")
    k: int = shape[0]
    cap = params.max_k(spec.numel)
    if k > cap:
        raise UpdateRejected(
            f"top-k update carries {k} values, over the {cap} allowed for {spec.numel} "
            f"(`topk_fraction` {params.topk_fraction})"
        )
    return k


def _check_tensors(
    header: Mapping[str, Any],
    spec: FlatSpec,
    codec: str,
    extra: Mapping[str, list[int]],
    params: CodecParams,
) -> None:
    want: dict[str, tuple[str, list[int]]] = {}
    shape: list[int]
    if codec == "topk":
        k = _topk_count(header, spec, params)
        want["topk/indices"], want["topk/values"] = ("I32", [k]), ("F32", [k])
    for name, spec_shape, n in zip(spec.names, spec.shapes, spec.sizes, strict=True):
        if codec in ("fp32", "int8"):
            want[f"delta/{name}"] = ("F32" if codec == "fp32" else "I8", list(spec_shape))
        if codec == "int8":
            want[f"scale/{name}"] = ("F32", [1])
        if codec == "int4":
            want[f"delta/{name}"] = ("U8", [-(-n // 2)])
            want[f"scale/{name}"] = ("F32", [compress.int4_blocks(n, params.block)])
    for key, shape in extra.items():
        want[f"extra/{key}"] = ("F32", shape)
    if set(header) != set(want):
        missing, unexpected = sorted(set(want) - set(header)), sorted(set(header) - set(want))
        raise UpdateRejected(f"tensor set mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, (dtype, shape) in want.items():
        info = header[key]
        if not isinstance(info, dict) or info.get("dtype") != dtype or info.get("shape") != shape:
            got = (info.get("dtype"), info.get("shape")) if isinstance(info, dict) else info
            raise UpdateRejected(f"tensor {key!r} must be {dtype} of shape {shape}, got {got}")


def _check_scales(scales: Tensor, name: str) -> None:
    bad = ~(torch.isfinite(scales) & (scales >= 0))
    if bool(bad.any()):
        at = int(bad.nonzero()[0, 0])
        raise UpdateRejected(f"scale {at} of {name!r} must be finite and >= 0, got {float(scales[at])}")


def _decode_piece(
    tensors: Mapping[str, Tensor], name: str, n: int, codec: str, params: CodecParams
) -> Tensor:
    piece = tensors[f"delta/{name}"].reshape(-1)
    if codec == "fp32":
        return piece
    scales = tensors[f"scale/{name}"]
    _check_scales(scales, name)
    if codec == "int8":
        return piece.to(torch.float32) * scales
    if n % 2 and int(piece[-1]) >> 4:
        raise UpdateRejected(f"int4 tensor {name!r}: the padding nibble of its odd length must be 0")
    q = compress.int4_unpack(piece, n)
    if bool((q == -8).any()):
        at = int((q == -8).nonzero()[0, 0])
        raise UpdateRejected(f"int4 value {at} of {name!r} is -8; values must be in [-7, 7]")
    return compress.int4_decode(q, scales, params.block)


def _decode_topk(indices: Tensor, values: Tensor, numel: int) -> Tensor:
    if indices.numel():
        wide = indices.to(torch.int64)
        if int(wide[0]) < 0 or int(wide[-1]) >= numel:
            raise UpdateRejected(
                f"top-k indices must be in [0, {numel}), got {int(wide.min())}..{int(wide.max())}"
            )
        steps = wide[1:] - wide[:-1]
        if bool((steps <= 0).any()):
            at = int((steps <= 0).nonzero()[0, 0]) + 1
            raise UpdateRejected(
                f"top-k indices must be strictly ascending (sorted, no duplicates); index {at} is "
                f"{int(wide[at])} after {int(wide[at - 1])}"
            )
    if not bool(torch.isfinite(values).all()):
        raise UpdateRejected("top-k values contain NaN or Inf")
    return compress.topk_scatter(indices, values, numel)


def decode(
    data: bytes | Path,
    spec: FlatSpec,
    *,
    max_norm: float | None = None,
    expect_run: str | None = None,
    expect_round: int | None = None,
    max_bytes: int | None = None,
    params: CodecParams | None = None,
) -> DecodedUpdate:
    """Decode and check an update produced by :func:`encode`.

    Parameters
    ----------
    data
        The received bytes (untrusted), or the file holding them: its header is read alone and its
        tensors through ``safetensors.safe_open`` (a memory map), so the bytes are never held whole.
    spec
        The layout this run's updates must have.
    max_norm
        Reject deltas whose L2 norm exceeds this (``None``: no bound).
    expect_run, expect_round
        Reject updates for another run or round (``None``: accept any).
    max_bytes
        Reject larger inputs before parsing (default :func:`default_max_bytes`).
    params
        The run's int4 block size and top-k fraction (default :class:`training.compress.CodecParams`):
        an int4 update must have this block size, a top-k update at most ``params.max_k(d)`` values.

    Raises
    ------
    UpdateRejected
        On any failed check; the message names the field.
    """
    if not isinstance(data, bytes | bytearray | memoryview | Path):
        raise UpdateRejected(f"update must be bytes or a file path, got {type(data).__name__}")
    if not isinstance(data, Path):
        data = bytes(data)
    cap = default_max_bytes(spec) if max_bytes is None else max_bytes
    size = _size(data)
    if size > cap:
        raise UpdateRejected(f"update is {size} bytes, over the {cap}-byte cap")
    params = params or CodecParams()
    meta, header = _header(data)
    codec, rnd, extra_shapes = _check_metadata(meta, spec, expect_run, expect_round, params)
    _check_tensors(header, spec, codec, extra_shapes, params)
    if isinstance(data, Path):
        tensors = load_file(data, error=UpdateRejected)
    else:
        try:
            tensors = st_load(data)
        except Exception as exc:  # the parser's own errors on hostile bytes
            raise UpdateRejected(f"safetensors payload is malformed: {exc}") from exc
    if codec == "topk":
        delta = _decode_topk(tensors["topk/indices"], tensors["topk/values"], spec.numel)
    else:
        pieces = [
            _decode_piece(tensors, name, n, codec, params)
            for name, n in zip(spec.names, spec.sizes, strict=True)
        ]
        delta = torch.cat(pieces) if pieces else torch.zeros(0)
    if not bool(torch.isfinite(delta).all()):
        raise UpdateRejected("delta contains NaN or Inf")
    extra = {key: tensors[f"extra/{key}"] for key in sorted(extra_shapes)}
    for key, value in extra.items():
        if not bool(torch.isfinite(value).all()):
            raise UpdateRejected(f"extra tensor {key!r} contains NaN or Inf")
    norm = math.sqrt(sq_norms(delta.unsqueeze(0))[0]) if delta.numel() else 0.0
    if max_norm is not None and norm > max_norm:
        raise UpdateRejected(f"delta L2 norm {norm:.6g} exceeds max_norm {max_norm:.6g}")
    return DecodedUpdate(delta=delta, extra=extra, run=meta.get("run", ""), round=rnd, codec=codec, norm=norm)
