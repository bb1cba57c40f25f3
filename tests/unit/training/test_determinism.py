"""Determinism: decode (int8, int4, topk) + aggregate + server step give one sha256 under any input order, any
``torch.set_num_threads``, ``ATEN_CPU_CAPABILITY`` in {default, avx2, avx512} and the numba kernels compiled
for the host CPU or for ``NUMBA_CPU_NAME=generic`` (baseline x86-64), run as subprocesses. The server
optimisers run under both conventions (``reddi`` and ``openfedllm``, three steps each), with the unweighted
mean the ``openfedllm`` adaptive optimisers aggregate, SCAFFOLD's control step with ``N`` eligible, and the
whole merge with ``weighting = "samples"`` and ``"equal"``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from training.codec import encode
from training.determinism import state_sha256
from training.flat import flatten

WORKER = r"""
import hashlib, json, sys
import numba
import torch
from safetensors.torch import load_file
from training.aggregate import AGGREGATORS
from training.codec import decode
from training.determinism import state_sha256
from training.flat import flatten
from training.merge import MergeSpec, UpdateInput, initial_state, merge, state_hash
from training.robust import tile_ir
from training.robust.exact import gram
from training.scaffold import server_control_step
from training.server_opt import SERVER_OPTIMIZERS, init_state, make_config, server_step

folder = sys.argv[1]
data = load_file(folder + "/inputs.safetensors")
updates, weights, params = data["updates"], data["weights"], data["params"]
blobs = [open(f"{folder}/update{i}.bin", "rb").read() for i in range(updates.shape[0])]
_, spec = flatten({"w": params})
PARAMS = {
    "mean": {}, "norm_bound": {"max_norm": 300.0}, "median": {}, "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"f": 2}, "multi_krum": {"f": 2}, "geometric_median": {}, "centered_clip": {"iters": 3},
}
n = updates.shape[0]
ident, rev, shuffled = list(range(n)), list(reversed(range(n))), [3, 0, 6, 2, 5, 1, 4]
out = {}
for threads, perm in ((1, ident), (2, rev), (4, shuffled), (4, ident), (1, shuffled)):
    torch.set_num_threads(threads)
    x, w = updates[perm].contiguous(), weights[perm].contiguous()
    row = {}
    decoded = [decode(blobs[i], spec, max_norm=1e6).delta for i in perm]
    digests = sorted(hashlib.sha256(v.numpy().tobytes()).digest() for v in decoded)
    row["decode"] = hashlib.sha256(b"".join(digests)).hexdigest()
    for codec in ("int4", "topk"):  # the lossy codecs' decode (per-block multiply; placing values)
        lossy = [open(f"{folder}/update{i}.{codec}.bin", "rb").read() for i in perm]
        vectors = [decode(blob, spec, max_norm=1e6).delta.numpy().tobytes() for blob in lossy]
        row["decode_" + codec] = hashlib.sha256(b"".join(sorted(vectors))).hexdigest()
    for name, fn in AGGREGATORS.items():
        row[name] = hashlib.sha256(fn(x, w, **PARAMS[name]).numpy().tobytes()).hexdigest()
    agg = AGGREGATORS["trimmed_mean"](torch.stack(decoded), w, trim_ratio=0.2)
    row["mean_unweighted"] = hashlib.sha256(AGGREGATORS["mean"](x, w * 0 + 1).numpy().tobytes()).hexdigest()
    for convention, suffix in (("reddi", ""), ("openfedllm", "_openfedllm")):
        for opt in SERVER_OPTIMIZERS:
            cfg = make_config(opt)
            p, state = params, init_state(opt, params.shape[0], cfg, convention=convention)
            for step in range(3):  # the first step and two later ones (the openfedllm round-0 branch)
                p, state = server_step(opt, p, agg * (1.0 - 0.25 * step), state, cfg, convention=convention)
            row["server_" + opt + suffix] = state_sha256(dict(state, params=p))
    for weighting in ("samples", "equal"):  # the whole merge, sample-weighted and with equal weights
        mspec = MergeSpec(codec="int8", weighting=weighting)
        ups = [UpdateInput(f"m{i}", blobs[i], int(weights[i])) for i in perm]
        merged = merge(initial_state(mspec, params, spec), ups, mspec, run="r", round=1, eligible=n)
        row["merge_" + weighting] = state_hash(merged.state)
    row["scaffold"] = hashlib.sha256(server_control_step(params, x).numpy().tobytes()).hexdigest()
    scaffold_n = server_control_step(params, x, eligible=20)  # c + sum / N, 7 of 20 took part
    row["scaffold_eligible"] = hashlib.sha256(scaffold_n.numpy().tobytes()).hexdigest()
    eight = torch.cat([x, updates[:1] * 0.5])  # 8 rows: the Gram tile reads the matrix in place
    row["gram8"] = hashlib.sha256(str(sorted(v for r in gram(eight).ints for v in r)).encode()).hexdigest()
    for key, value in row.items():
        out.setdefault(key, []).append(value)
cpu = numba.config.CPU_NAME or "host"
asm = tile_ir.assembly()
tile = {"cpu": tile_ir.cpu()[0], "fma_unit": "vfmadd" in asm, "fmaf_call": "fmaf" in asm}
report = {"capability": torch.backends.cpu.get_cpu_capability(), "numba_cpu": cpu, "tile": tile}
print(json.dumps(dict(report, hashes=out)))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven updates (one far off, some -0.0 and ties) in int8, int4 and topk encodings, written once."""
    folder = tmp_path_factory.mktemp("determinism")
    gen = torch.Generator().manual_seed(2024)
    d = 70_001
    updates = torch.randn(1, d, generator=gen) * 0.1 + torch.randn(7, d, generator=gen) * 0.05
    updates[6] *= 40.0
    updates[:, :10] = 0.0
    updates[2, :5] = -0.0
    updates[4, 10:20] = updates[5, 10:20]
    params = torch.randn(d, generator=gen)
    weights = torch.tensor([120.0, 80, 300, 45, 45, 200, 99])
    save_file({"updates": updates, "weights": weights, "params": params}, str(folder / "inputs.safetensors"))
    _, spec = flatten({"w": params})
    for i in range(7):
        (folder / f"update{i}.bin").write_bytes(encode(updates[i], spec, run="r", round=1, codec="int8"))
        for codec in ("int4", "topk"):
            blob = encode(updates[i], spec, run="r", round=1, codec=codec)  # type: ignore[arg-type]
            (folder / f"update{i}.{codec}.bin").write_bytes(blob)
    return folder


def _run(folder: Path, capability: str, **extra_env: str) -> dict[str, object]:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS="4", **extra_env)
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(folder)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    lines = [line for line in text.splitlines() if line.startswith("flags")]
    return {flag for line in lines for flag in line.split(":")[1].split()}


# (ATEN_CPU_CAPABILITY, extra environment, the capability torch must report, the CPU flag it needs)
LANES = {
    "avx2": ("avx2", {}, "AVX2", "avx2"),
    "avx512": ("avx512", {}, "AVX512", "avx512f"),
    "numba-generic": ("avx2", {"NUMBA_CPU_NAME": "generic"}, "AVX2", "avx2"),
}


@pytest.fixture(scope="module")
def default_run(inputs: Path) -> dict[str, object]:
    run = _run(inputs, "default")
    assert run["capability"] == "DEFAULT"
    assert run["numba_cpu"] == "host"
    return run


@pytest.mark.slow
@pytest.mark.parametrize("lane", sorted(LANES))
def test_same_hashes_for_any_order_threads_and_instruction_set(
    inputs: Path, default_run: dict[str, object], lane: str
) -> None:
    capability, extra_env, reported, flag = LANES[lane]
    if flag not in _cpu_flags():
        pytest.skip(f"this CPU has no {flag}: ATEN_CPU_CAPABILITY={capability} would die of SIGILL")
    run = _run(inputs, capability, **extra_env)

    assert run["capability"] == reported  # the lane really ran the kernels it names
    if lane == "numba-generic":
        assert run["numba_cpu"] == "generic"
        # Baseline x86-64 has no FMA unit: the Gram tile calls the C library's fmaf there, and must agree.
        assert run["tile"] == {"cpu": "generic", "fma_unit": False, "fmaf_call": True}
    reference = default_run["hashes"]
    assert (
        isinstance(reference, dict) and len(reference) == 29
    )  # diloco under both conventions, int4 and topk decode too
    assert reference["merge_equal"] != reference["merge_samples"]  # the weighting changes the merge
    for name, table in (("default", default_run["hashes"]), (lane, run["hashes"])):
        assert isinstance(table, dict) and table.keys() == reference.keys()
        for key, values in table.items():
            assert len(values) == 5  # thread counts 1, 2, 4 x three row orders
            assert set(values) == {reference[key][0]}, f"{key} differs under {name}"


def test_state_sha256_is_canonical() -> None:
    a = {"x": torch.tensor([1.0, 2.0]), "y": torch.zeros(2, 2, dtype=torch.bfloat16)}
    b = {"y": torch.zeros(2, 2, dtype=torch.bfloat16), "x": torch.tensor([1.0, 2.0])}

    assert state_sha256(a) == state_sha256(b)
    assert state_sha256(a) != state_sha256(dict(a, x=torch.tensor([1.0, -2.0])))
    assert state_sha256(a) != state_sha256(dict(a, x=torch.tensor([1.0, 2.0], dtype=torch.float64)))
    assert state_sha256(a) != state_sha256(dict(a, y=torch.zeros(4, dtype=torch.bfloat16)))
    assert state_sha256(a) != state_sha256({"x": a["x"]})
    assert state_sha256({"x": torch.tensor([0.0])}) != state_sha256({"x": torch.tensor([-0.0])})
