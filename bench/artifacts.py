"""Peak memory of moving one model-sized artifact through the local store: whole bytes vs streamed files.

Each case runs in a fresh child process (``multiprocessing`` spawn) and reports its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``); the last column is the peak over the first case's
(the interpreter and imports only) as a multiple of the artifact's size. The artifact is a synthetic
safetensors state (float32 tensors of ``--tensor-mb``), so no model is downloaded.

    .venv/bin/python bench/artifacts.py --mb 240
    .venv/bin/python bench/artifacts.py --mb 233 --merge     # the vote's merge, see MERGE_CASES
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
from pathlib import Path
from typing import Any

CASES = (
    "baseline (imports only)",
    "put bytes (read_bytes + put)",
    "put_file (streamed)",
    "get bytes (get)",
    "get_file (streamed)",
    "decode from bytes (safetensors.load)",
    "decode from file (safe_open, mmap)",
)
MERGE_CASES = (
    "merge of 2 updates: bytes in, state bytes out",
    "merge of 2 updates: files in, state file out",
)
"""With ``--merge``: the node's vote-phase merge (``training.merge.merge``, DiLoCo outer step) of two fp32
updates of a state of ``--mb`` parameters' bytes, each update read whole (``read_bytes``) and the merged
state encoded to bytes and put into the store, against the update files decoded through ``safe_open`` and
the state written with ``encode_state_file`` and moved into the store. Multiples are of the parameters'
fp32 size."""


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _case(name: str, work: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load

    from p2p.storage.local import LocalStore

    root = Path(work)
    artifact = root / "state.safetensors"
    store = LocalStore(root / "store")
    cid = store.put_file(artifact) if "get" in name else None
    base = 0.0  # ru_maxrss cannot be reset: report the whole process; the baseline row is the interpreter
    if name.startswith("put bytes"):
        store.put(artifact.read_bytes())
    elif name.startswith("baseline"):
        pass
    elif name.startswith("put_file"):
        store.put_file(artifact)
    elif name.startswith("get bytes"):
        assert cid is not None
        store.get(cid)
    elif name.startswith("get_file"):
        assert cid is not None
        store.get_file(cid, root / "out.safetensors")
    elif name.startswith("decode from bytes"):
        sum(float(np.sum(t)) for t in load(artifact.read_bytes()).values())
    else:
        with safe_open(str(artifact), framework="np") as f:
            sum(float(np.sum(f.get_tensor(k))) for k in f.keys())  # noqa: SIM118
    queue.put(_rss_mb() - base)


def _merge_case(name: str, work: str, numel: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    import torch

    from p2p.storage.local import LocalStore
    from training import codec
    from training.flat import FlatSpec
    from training.merge import MergeSpec, UpdateInput, encode_state, encode_state_file, initial_state, merge

    root = Path(work)
    spec = FlatSpec(names=("w",), shapes=((numel,),), dtypes=("float32",))
    merge_spec = MergeSpec(server_optimizer="diloco")
    state = initial_state(merge_spec, torch.zeros(numel), spec)
    store = LocalStore(root / "merge-store")
    paths = [root / f"update{i}.safetensors" for i in range(2)]
    if name == "make":
        for i, path in enumerate(paths):
            delta = torch.randn(numel, generator=torch.Generator().manual_seed(i)) * 0.01
            codec.encode_file(delta, spec, path, run="1", round=0)
        queue.put((0.0, 0.0))
        return
    before = _rss_mb()  # imports and the base state (params and momentum)
    if "bytes in" in name:
        updates = [UpdateInput(f"k{i}", p.read_bytes(), 1) for i, p in enumerate(paths)]
    else:
        updates = [UpdateInput(f"k{i}", p, 1) for i, p in enumerate(paths)]
    outcome = merge(state, updates, merge_spec, run="1", round=0, eligible=2)
    if "bytes out" in name:
        store.put(encode_state(outcome.state))
    else:
        out = store.tmp_dir / "merged.safetensors"
        encode_state_file(outcome.state, out)
        store.put_file(out, move=True)
    queue.put((before, _rss_mb()))


def _merge_rows(ctx: Any, work: str, mb: float) -> None:
    numel = int(mb * 1e6 / 4)
    print(f"merge: {numel / 1e6:.1f}M parameters ({4 * numel / 1e6:.0f} MB fp32), 2 fp32 updates, diloco")
    print("| case | peak RSS (MB) | over the start, x parameters |")
    print("|---|---:|---:|")
    for name in ("make", *MERGE_CASES):
        queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        proc = ctx.Process(target=_merge_case, args=(name, work, numel, queue))
        proc.start()
        before, peak = queue.get()
        proc.join()
        if name == "make":
            continue
        print(f"| {name} | {peak * 1.048576:.0f} | {(peak - before) * 1.048576 / (4 * numel / 1e6):.2f} |")


def _make(path: str, count: int, n: int) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({f"layer.{i}.weight": rng.standard_normal(n, dtype=np.float32) for i in range(count)}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=240.0, help="artifact MB (240: a 60M fp32 model)")
    parser.add_argument("--tensor-mb", type=float, default=16.0, help="size of each tensor in MB")
    parser.add_argument("--merge", action="store_true", help="measure the merge cases (see MERGE_CASES)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")  # the parent stays small: Linux keeps ru_maxrss across exec
    if args.merge:
        with tempfile.TemporaryDirectory() as work:
            _merge_rows(ctx, work, args.mb)
        return
    with tempfile.TemporaryDirectory() as work:
        n = int(args.tensor_mb * 1e6 / 4)
        count = max(1, round(args.mb / args.tensor_mb))
        maker = ctx.Process(target=_make, args=(str(Path(work) / "state.safetensors"), count, n))
        maker.start()
        maker.join()
        size_mb = (Path(work) / "state.safetensors").stat().st_size / 1e6
        print(f"artifact: {size_mb:.0f} MB ({count} float32 tensors)")
        print("| case | peak RSS (MB) | over the baseline, x artifact |")
        print("|---|---:|---:|")
        baseline = 0.0
        for name in CASES:
            queue: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
            proc = ctx.Process(target=_case, args=(name, work, queue))
            proc.start()
            grew = queue.get()
            proc.join()
            peak = grew * 1.048576  # MiB to MB
            baseline = baseline or peak
            print(f"| {name} | {peak:.0f} | {(peak - baseline) / size_mb:.2f} |")


if __name__ == "__main__":
    main()
