"""docs/specification.md is enough to rebuild the consensus bytes: a second implementation agrees bit for bit.

``reimpl`` (numpy, the standard library, eth_hash; none of this project's packages) recomputes decode,
the mean aggregate, the fedavg step, the state artifact and hash, the CID and the included-set hash; these
tests feed it the project's own artifacts and compare every byte.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from eth_utils.address import to_checksum_address

from ledger.types import included_set_hash
from node.protocol.history import base_of_round, read_history
from p2p.storage import LocalStore, compute_cid
from tests.fixtures.chain import ChainEnv
from tests.fixtures.fedrun import ToyRun, toy_setup
from tests.unit.spec import reimpl
from training.codec import encode
from training.flat import FlatSpec
from training.merge import MergeSpec, UpdateInput, encode_state, initial_state, merge, state_hash

ROOT = Path(__file__).resolve().parents[3]
LAYOUT = FlatSpec(
    names=("model.layers.0.q_proj.lora_B.weight", "model.layers.0.v_proj.lora_B.weight", "prompt"),
    shapes=((8, 2), (8, 2), (3, 5)),
    dtypes=("float32", "float32", "bfloat16"),
)
MEMBERS = [to_checksum_address(f"0x{i:040x}") for i in (0xB0B, 0xA11CE, 0xCAFE, 0x5)]


def _wide_rows(seed: int, n: int, d: int) -> np.ndarray:
    """Deltas over ~60 binades, with zeros, signed zeros, subnormals and exact halves on the grid."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * np.exp2(rng.integers(-30, 30, size=(n, d)))
    x = x.astype(np.float32)
    x[0, :3] = [0.0, -0.0, 1e-42]
    if n >= 3:  # with 4 unit weights the grid of a column below 2 is 2**-50: halves of a unit
        x[:3, 3] = [1.5, 2.0**-51, 3 * 2.0**-51]
    x[:, 4] = 0.0
    return x


def _independent_merge(
    params: np.ndarray, blobs: list[tuple[str, bytes, int]], layout: reimpl.Layout, run: str, rnd: int
) -> tuple[dict[str, np.ndarray], bytes]:
    ordered = sorted(blobs, key=lambda b: b[0])
    rows = np.stack([reimpl.decode_update(data, layout, run=run, round=rnd) for _, data, _ in ordered])
    agg = reimpl.mean(rows, [n for _, _, n in ordered])
    state = {"params": reimpl.fedavg_step(params, agg)}
    pairs = [(key, hashlib.sha256(data).digest()) for key, data, _ in ordered]
    return state, reimpl.included_set_hash(pairs)


def test_the_independent_implementation_imports_nothing_of_the_project() -> None:
    code = (
        "import sys; import tests.unit.spec.reimpl; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'training', 'node', 'ledger', 'p2p', 'torch', 'safetensors'}); print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_layout_digest_matches() -> None:
    layout = reimpl.Layout(LAYOUT.names, LAYOUT.shapes, LAYOUT.dtypes)

    assert layout.canonical_json() == LAYOUT.to_json()
    assert layout.digest() == LAYOUT.digest()


@pytest.mark.parametrize("codec", ["fp32", "int8", "int4", "topk"])
@pytest.mark.parametrize("samples", [(1, 1, 1, 1), (7, 1_000_000, 3, 12_345)])
def test_merge_of_wide_range_updates_is_rebuilt_bit_for_bit(codec: str, samples: tuple[int, ...]) -> None:
    d = LAYOUT.numel
    rows = _wide_rows(1, len(MEMBERS), d)
    blobs = [
        (MEMBERS[i], encode(torch.from_numpy(rows[i]), LAYOUT, run="9", round=4, codec=codec), samples[i])  # type: ignore[arg-type]
        for i in range(len(MEMBERS))
    ]
    params = _wide_rows(2, 1, d)[0]
    spec = MergeSpec(aggregator="mean", server_optimizer="fedavg", codec=codec)
    base = initial_state(spec, torch.from_numpy(params.copy()), LAYOUT)
    outcome = merge(base, [UpdateInput(k, b, n) for k, b, n in blobs], spec, run="9", round=4, eligible=4)
    assert len(outcome.included) == 4

    layout = reimpl.Layout(LAYOUT.names, LAYOUT.shapes, LAYOUT.dtypes)
    state, set_hash = _independent_merge(params, blobs, layout, "9", 4)

    assert state["params"].tobytes() == outcome.state.params.numpy().tobytes()
    assert reimpl.state_hash(state) == state_hash(outcome.state)
    artifact = reimpl.state_artifact(state, layout)
    assert artifact == encode_state(outcome.state)
    assert reimpl.raw_cid(artifact) == str(compute_cid(artifact))
    pairs = [(k, hashlib.sha256(b).digest()) for k, b, _ in blobs]
    assert set_hash == included_set_hash(pairs)


def test_equal_weighting_ignores_the_claimed_samples() -> None:
    rows = _wide_rows(4, len(MEMBERS), LAYOUT.numel)
    claims = (7, 1_000_000, 3, 12_345)
    blobs = [
        (m, encode(torch.from_numpy(r), LAYOUT, run="9", round=4), n)
        for m, r, n in zip(MEMBERS, rows, claims, strict=True)
    ]
    params = _wide_rows(5, 1, LAYOUT.numel)[0]
    spec = MergeSpec(weighting="equal")
    base = initial_state(spec, torch.from_numpy(params.copy()), LAYOUT)
    outcome = merge(base, [UpdateInput(k, b, n) for k, b, n in blobs], spec, run="9", round=4, eligible=4)

    layout = reimpl.Layout(LAYOUT.names, LAYOUT.shapes, LAYOUT.dtypes)
    state, _ = _independent_merge(params, [(k, b, 1) for k, b, _ in blobs], layout, "9", 4)
    assert reimpl.state_hash(state) == state_hash(outcome.state)
    weighted, _ = _independent_merge(params, blobs, layout, "9", 4)
    assert reimpl.state_hash(weighted) != state_hash(outcome.state)


def _correctly_rounded(value: Fraction) -> np.float32:
    """The float32 nearest to ``value`` (ties to even)."""
    guess = np.float32(float(value))
    near = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(near, key=lambda z: (abs(Fraction(float(z)) - value), int(np.array(z).view(np.uint32)) & 1))


def test_fixed_point_mean_is_rebuilt_where_it_differs_from_the_correctly_rounded_mean() -> None:
    """The grid keeps 51 bits below each column's largest value and rounds twice (float64, float32)."""
    rng = np.random.default_rng(0)
    rows = (rng.standard_normal((3, 6000)) * np.exp2(rng.integers(-60, 60, size=(3, 6000)))).astype(
        np.float32
    )
    weights = [1, 1, 1]
    from training.aggregate import mean

    ours = reimpl.mean(rows, weights)
    theirs = mean(torch.from_numpy(rows), torch.tensor(weights, dtype=torch.float64)).numpy()

    assert ours.tobytes() == theirs.tobytes()
    exact = [_correctly_rounded(sum(Fraction(float(v)) for v in rows[:, j]) / 3) for j in range(6000)]
    differ = sum(e != o for e, o in zip(exact, ours, strict=True))
    assert 0 < differ < 60  # a few coordinates, each one unit in the last place
    assert all(
        abs(int(np.array(e).view(np.int32)) - int(np.array(o).view(np.int32))) <= 1
        for e, o in zip(exact, ours, strict=True)
    )


def test_a_toy_run_on_chain_is_rebuilt_from_its_artifacts(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    toy = ToyRun([pyevm_chain.client(i) for i in range(4)], LocalStore(tmp_path / "store"))
    toy.create(pyevm_chain.mine_to)
    toy.round(0, [1, 2, 3])
    toy.round(1, [1, 3])
    setup = toy_setup(toy.spec, run=toy.run)
    flat = setup.initial.spec
    layout = reimpl.Layout(flat.names, flat.shapes, flat.dtypes)
    history = read_history(toy.clients[0], toy.run)

    params = setup.initial.params.numpy()
    for r in (0, 1):
        record = history.round(r)
        assert record.result is not None
        if r > 0:  # the base is the previous round's merged artifact, read by the independent parser
            assert base_of_round(history, r) is not None
            _, tensors = reimpl.st_read(toy.store.get(history.round(r - 1).result.merged_cid))  # type: ignore[union-attr]
            params = tensors["params"].astype(np.float32)
        blobs = [
            (to_checksum_address(s.member), toy.store.get(s.cid), s.num_samples) for s in record.submissions
        ]
        for (_, data, _), sub in zip(blobs, record.submissions, strict=True):
            assert hashlib.sha256(data).digest() == sub.sha256
        state, set_hash = _independent_merge(params, blobs, layout, setup.run_label, r)

        assert bytes.fromhex(reimpl.state_hash(state)) == record.result.merged_sha256
        assert reimpl.raw_cid(reimpl.state_artifact(state, layout)) == record.result.merged_cid
        assert any(v.included_set_hash == set_hash for v in record.votes)
