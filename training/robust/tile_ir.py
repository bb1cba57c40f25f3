"""The float32 Gram tile of :mod:`training.robust.gram_kernel`, written as LLVM IR with explicit vectors.

Why IR and not numba
--------------------
The tile sums ``x_a * x_c`` over :data:`TILE` columns for every pair of a 4x4 block of rows, in float32.
Float32 sums round, so the *order* of the additions is part of the result, and it must be the same on every
peer. Numba cannot express that order and still vectorise: its loop vectoriser only splits a float reduction
into SIMD lanes under ``reassoc``, which lets LLVM pick the lanes by vector width (SSE2, AVX2 and AVX-512
machines would disagree). Here the lanes are spelled out: each pair has one ``<8 x float>`` accumulator, and
column ``j`` of the tile always goes to lane ``j % 8``, in column order, as
``acc = fma(x_a, x_c, acc)``: the ``llvm.fma`` intrinsic, whose result is by definition the exact
``x_a * x_c + acc`` rounded once to float32 (IEEE 754 fusedMultiplyAdd). On a CPU with FMA (x86 since 2013,
every ARMv8) that is one ``vfmadd231ps`` per 8 lanes; without one, LLVM calls the C library's correctly
rounded ``fmaf``: slower, same bits. The IR carries no fast-math flags, so nothing is reassociated, and the
explicit vector keeps the lanes whatever the hardware width (SSE2 splits it in two, lane by lane). The float64
part (widening each tile's lanes and adding them to the lane totals) is exact-to-IEEE in the same way. The
tests check the emitted assembly and compare the result with the torch formulation, which emulates the
fused multiply-add exactly (:func:`training.robust.reference.fma32`).

What one call computes
----------------------
``tile_gram(q, stride, rows, lanes)``: ``q`` points at ``rows`` float32 rows of :data:`TILE` values,
``stride`` values apart (``rows`` a multiple of 4): a scaled tile buffer or the input matrix itself;
``lanes`` is a ``[rows, rows, 8]`` float64 array. For every 4x4 block of rows ``(a, c)`` with ``c <= a``
(diagonal blocks whole), and every pair ``(i, k)`` in it::

    acc = 0.0f (8 lanes)
    for j in 0, 8, ..., TILE - 8:  acc = fma(q[i, j:j+8], q[k, j:j+8], acc)   (float32, lane by lane)
    lanes[i, k, :] += float64(acc)                                          (float64, lane by lane)

:func:`training.robust.gram_kernel.gram_range` sums the 8 lanes of a block in a fixed tree at the end of the
block. The IR is compiled once per process for the host CPU (a few tens of milliseconds) and registered as
a symbol that the numba kernels call.
"""

from __future__ import annotations

from typing import Any

import llvmlite.binding as llvm
from numba import types
from numba.core import config

NAME = "fedchain_tile_gram_f32"
"""Symbol of the compiled tile function."""

TILE = 256
"""Columns per tile: ``16 * TILE`` float32 values (16 KiB for 16 rows) stay in L1 cache."""

LANES = 8
"""Float32 lanes per pair accumulator (one 256-bit vector)."""

_VEC = f"<{LANES} x float>"
_DVEC = f"<{LANES} x double>"


def _row_pointers(base: str) -> str:
    """IR for pointers ``%{base}0..3`` to rows ``%{base} + r`` of the tile."""
    return "\n".join(
        f"  %{base}{r}.i = add i64 %{base}, {r}\n"
        f"  %{base}{r}.o = mul i64 %{base}{r}.i, %stride\n"
        f"  %{base}{r} = getelementptr float, float* %q, i64 %{base}{r}.o"
        for r in range(4)
    )


def _block_body() -> tuple[str, str, str]:
    """IR of the 4x4 block: accumulator phis, one 8-column step, and the flush into ``lanes``."""
    phis, step, flush = [], [], []
    for side in ("a", "c"):
        for r in range(4):
            step.append(f"  %p{side}{r} = getelementptr float, float* %{side}{r}, i64 %j")
            step.append(f"  %v{side}{r}.p = bitcast float* %p{side}{r} to {_VEC}*")
            step.append(f"  %v{side}{r} = load {_VEC}, {_VEC}* %v{side}{r}.p, align 4")
    for r in range(4):
        for k in range(4):
            t = f"{r}{k}"
            phis.append(f"  %t{t} = phi {_VEC} [ zeroinitializer, %block ], [ %n{t}, %step ]")
            step.append(
                f"  %n{t} = call {_VEC} @llvm.fma.v{LANES}f32({_VEC} %va{r}, {_VEC} %vc{k}, {_VEC} %t{t})"
            )
            flush.append(f"  %w{t} = fpext {_VEC} %n{t} to {_DVEC}")
            flush.append(f"  %o{t}.r = mul i64 %a{r}.i, %m")
            flush.append(f"  %o{t}.c = add i64 %o{t}.r, %c{k}.i")
            flush.append(f"  %o{t} = mul i64 %o{t}.c, {LANES}")
            flush.append(f"  %l{t} = getelementptr double, double* %lanes, i64 %o{t}")
            flush.append(f"  %l{t}.p = bitcast double* %l{t} to {_DVEC}*")
            flush.append(f"  %s{t} = load {_DVEC}, {_DVEC}* %l{t}.p, align 8")
            flush.append(f"  %u{t} = fadd {_DVEC} %s{t}, %w{t}")
            flush.append(f"  store {_DVEC} %u{t}, {_DVEC}* %l{t}.p, align 8")
    return "\n".join(phis), "\n".join(step), "\n".join(flush)


def source() -> str:
    """Return the LLVM IR of ``void NAME(i64 q, i64 stride, i64 rows, i64 lanes)`` (addresses as integers)."""
    phis, step, flush = _block_body()
    return f"""
declare {_VEC} @llvm.fma.v{LANES}f32({_VEC}, {_VEC}, {_VEC})

define void @{NAME}(i64 %qaddr, i64 %stride, i64 %m, i64 %lanesaddr) nounwind {{
entry:
  %q = inttoptr i64 %qaddr to float*
  %lanes = inttoptr i64 %lanesaddr to double*
  br label %rows
rows:
  %a = phi i64 [ 0, %entry ], [ %a.next, %rows.next ]
  %a.more = icmp slt i64 %a, %m
  br i1 %a.more, label %rows.body, label %exit
rows.body:
{_row_pointers("a")}
  br label %cols
cols:
  %c = phi i64 [ 0, %rows.body ], [ %c.next, %flush ]
  %c.more = icmp sle i64 %c, %a
  br i1 %c.more, label %block, label %rows.next
block:
{_row_pointers("c")}
  br label %step
step:
  %j = phi i64 [ 0, %block ], [ %j.next, %step ]
{phis}
{step}
  %j.next = add i64 %j, {LANES}
  %j.more = icmp slt i64 %j.next, {TILE}
  br i1 %j.more, label %step, label %flush
flush:
{flush}
  %c.next = add i64 %c, 4
  br label %cols
rows.next:
  %a.next = add i64 %a, 4
  br label %rows
exit:
  ret void
}}
"""


def cpu() -> tuple[str, str]:
    """CPU name and features the tile is compiled for: numba's own choice (``NUMBA_CPU_NAME``/``_FEATURES``).

    ``NUMBA_CPU_NAME=generic`` therefore builds baseline x86-64 code (SSE2, no FMA unit: ``fmaf`` calls) for
    the tile too, which the determinism test uses to compare against the host's AVX code.
    """
    name = getattr(config, "CPU_NAME", None) or llvm.get_host_cpu_name()  # set at import from the environment
    features = getattr(config, "CPU_FEATURES", None)
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return name, features


def _target_machine() -> Any:
    llvm.initialize_native_target()  # idempotent; numba does the same, but maybe not yet
    llvm.initialize_native_asmprinter()
    name, features = cpu()
    return llvm.Target.from_default_triple().create_target_machine(cpu=name, features=features, opt=3)


def assembly() -> str:
    """Return the host assembly of the tile function (for the tests: packed fused multiply-adds)."""
    module = llvm.parse_assembly(source())
    return str(_target_machine().emit_assembly(module))


def _compile() -> Any:
    module = llvm.parse_assembly(source())
    module.verify()
    engine = llvm.create_mcjit_compiler(module, _target_machine())
    engine.finalize_object()
    llvm.add_symbol(NAME, engine.get_function_address(NAME))
    return engine


_ENGINE = _compile()  # kept alive: it owns the compiled code

tile_gram: Any = types.ExternalFunction(NAME, types.void(types.int64, types.int64, types.int64, types.int64))
"""``tile_gram(address of q[0, 0], row stride of q, rows, lanes.ctypes.data)``, callable from numba."""
