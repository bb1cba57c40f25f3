"""Every algorithm under both conventions against values computed by hand from the published formulas.

Three rounds of a four-member federation with partial participation (2, 3 and 2 of 4 submit) and unequal
sample counts go through the real merge (codec bytes, aggregator, server step, SCAFFOLD control). The
expected values are plain numpy float64, written from the formulas of the OpenFedLLM reference
(``federated_learning/fed_global.py``) and of Reddi et al. 2021, not from this code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training import codec
from training.algorithms import ALGORITHMS
from training.errors import ConfigError
from training.flat import FlatSpec
from training.merge import MergeError, MergeSpec, UpdateInput, initial_state, merge
from training.simconfig import SimulationConfig, config_from_dict

SPEC = FlatSpec(names=("w",), shapes=((6,),), dtypes=("float32",))
RUN = "conventions"
SAMPLES = {"0xa": 10, "0xb": 30, "0xc": 5, "0xd": 55}
N = len(SAMPLES)  # every member is eligible in every round
ROUNDS = [["0xa", "0xb"], ["0xa", "0xc", "0xd"], ["0xb", "0xd"]]
X0 = np.linspace(-0.5, 0.5, 6)
ADAPTIVE = {"server_lr": 0.03, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
SERVER = {"fedavgm": {"beta1": 0.9}, "fedadagrad": ADAPTIVE, "fedyogi": ADAPTIVE, "fedadam": ADAPTIVE}


def _vector(seed: int, scale: float) -> torch.Tensor:
    return torch.randn(SPEC.numel, generator=torch.Generator().manual_seed(seed)) * scale


def _delta(r: int, key: str) -> torch.Tensor:
    return _vector(100 * r + int(key, 16), 0.05)


def _control_delta(r: int, key: str) -> torch.Tensor:
    return _vector(7_000 + 100 * r + int(key, 16), 0.1)


def _run_merge(algorithm: str, convention: str) -> dict[str, np.ndarray]:
    alg = ALGORITHMS[algorithm]
    spec = MergeSpec(
        server_optimizer=alg.server_optimizer,
        server_params=SERVER.get(alg.server_optimizer, {}),
        scaffold=alg.control_variates,
        convention=convention,
    )
    state = initial_state(spec, torch.tensor(X0, dtype=torch.float32), SPEC)
    for r, keys in enumerate(ROUNDS):
        updates = []
        for key in reversed(keys):  # any order: the merge sorts
            extra = {"control_delta": _control_delta(r, key)} if alg.control_variates else None
            data = codec.encode(_delta(r, key), SPEC, run=RUN, round=r, extra=extra)
            updates.append(UpdateInput(key, data, SAMPLES[key]))
        outcome = merge(state, updates, spec, run=RUN, round=r, eligible=N)
        assert outcome.included == tuple(sorted(keys))
        state = outcome.state
    out = {"x": state.params.double().numpy()}
    out.update({k: v.double().numpy() for k, v in state.server_state.items()})
    if state.control is not None:
        out["c"] = state.control.double().numpy()
    return out


def _by_hand(algorithm: str, convention: str) -> dict[str, np.ndarray]:
    """The published formulas in float64 over the same inputs."""
    ref = convention == "openfedllm"
    lr, b1, b2, tau = ADAPTIVE["server_lr"], ADAPTIVE["beta1"], ADAPTIVE["beta2"], ADAPTIVE["tau"]
    x, m, c = X0.astype(np.float32).astype(np.float64), np.zeros(6), np.zeros(6)
    v = np.full(6, tau**2) if ref else np.zeros(6)
    for r, keys in enumerate(ROUNDS):
        deltas = np.stack([_delta(r, k).double().numpy() for k in keys])
        n_k = np.array([SAMPLES[k] for k in keys], dtype=np.float64)
        weighted = (deltas * n_k[:, None]).sum(0) / n_k.sum()
        plain = deltas.sum(0) / len(keys)
        if algorithm in ("fedavg", "fedprox", "scaffold"):
            x = x + weighted  # sum_k n_k / n * w_k, the sample-weighted model average
            if algorithm == "scaffold":  # c += sum_k dc_k / N, N all clients
                c = c + np.stack([_control_delta(r, k).double().numpy() for k in keys]).sum(0) / N
        elif algorithm == "diloco":  # DiLoCo: Nesterov SGD on g = start - end, lr 0.7, momentum 0.9
            g = -weighted
            m = 0.9 * m + g
            x = x - 0.7 * (g + 0.9 * m)
        elif algorithm == "fedavgm":
            if ref:
                m = weighted if r == 0 else 0.9 * m + (1 - 0.9) * weighted
                x = x + m
            else:  # Hsu et al.: m = beta m + delta, x += lr m (lr = 1)
                m = 0.9 * m + weighted
                x = x + 1.0 * m
        else:
            d = plain if ref else weighted
            if ref and algorithm == "fedadagrad":
                m = d
            elif ref:
                m = d if r == 0 else b1 * m + (1 - b1) * d
            else:
                m = b1 * m + (1 - b1) * d
            sq = m * m if ref else d * d
            if algorithm == "fedadagrad":
                v = v + sq
            elif algorithm == "fedyogi":
                v = v - (1 - b2) * sq * np.sign(v - sq)
            else:
                v = b2 * v + (1 - b2) * sq
            x = x + lr * m / (np.sqrt(v) + tau)
    out = {"x": x}
    if algorithm == "fedavgm":
        out["m"] = m
    elif algorithm == "diloco":
        out["m"] = -m  # stored as the momentum of end - start
    elif algorithm.startswith("fedad") or algorithm == "fedyogi":
        out.update(m=m, v=v)
    if algorithm == "scaffold":
        out["c"] = c
    return out


def _close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> bool:
    return got.keys() == want.keys() and all(np.allclose(got[k], want[k], rtol=2e-5, atol=1e-7) for k in want)


@pytest.mark.parametrize("convention", ["openfedllm", "reddi"])
@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_three_rounds_match_the_formulas_by_hand(algorithm: str, convention: str) -> None:
    got = _run_merge(algorithm, convention)

    want = _by_hand(algorithm, convention)

    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("algorithm", ["fedavgm", "fedadagrad", "fedyogi", "fedadam"])
def test_the_conventions_differ_where_the_reference_differs(algorithm: str) -> None:
    ours = _run_merge(algorithm, "openfedllm")

    assert _close(ours, _by_hand(algorithm, "openfedllm"))
    assert not _close(ours, _by_hand(algorithm, "reddi"))


@pytest.mark.parametrize("algorithm", ["fedavg", "fedprox", "scaffold"])
def test_the_conventions_agree_on_the_server_side_of_fedavg_fedprox_and_scaffold(algorithm: str) -> None:
    openfedllm, reddi = _run_merge(algorithm, "openfedllm"), _run_merge(algorithm, "reddi")

    assert openfedllm.keys() == reddi.keys()
    assert all(np.array_equal(openfedllm[k], reddi[k]) for k in reddi)


def test_scaffold_control_moves_by_the_sum_over_the_eligible_not_the_mean_over_submitters() -> None:
    got = _run_merge("scaffold", "openfedllm")["c"]
    mean_over_submitters = sum(
        np.stack([_control_delta(r, k).double().numpy() for k in keys]).mean(0)
        for r, keys in enumerate(ROUNDS)
    )

    assert np.allclose(got, _by_hand("scaffold", "openfedllm")["c"], rtol=1e-6, atol=1e-8)
    assert not np.allclose(got, mean_over_submitters, rtol=1e-2)


def test_merge_refuses_an_eligible_count_below_the_accepted_updates() -> None:
    spec = MergeSpec()
    state = initial_state(spec, torch.zeros(SPEC.numel), SPEC)
    updates = [UpdateInput(k, codec.encode(_delta(0, k), SPEC, run=RUN, round=0), 1) for k in ("0xa", "0xb")]

    with pytest.raises(MergeError, match="2 accepted updates but only `eligible`=1 members"):
        merge(state, updates, spec, run=RUN, round=0, eligible=1)
    with pytest.raises(MergeError, match="`eligible` must be an integer >= 1, got 0"):
        merge(state, updates, spec, run=RUN, round=0, eligible=0)


def test_an_unknown_convention_is_a_clear_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match="`convention` must be one of openfedllm, reddi, got 'fedml'"):
        MergeSpec(convention="fedml")
    with pytest.raises(ConfigError, match="`convention` must be one of openfedllm, reddi, got 'x'"):
        SimulationConfig(convention="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"\[simulation\] `convention` must be one of"):
        config_from_dict({"simulation": {"convention": "Reddi"}})
    with pytest.raises(ConfigError, match=r"\[train\] `convention` is 'reddi' but \[simulation\]"):
        config_from_dict({"train": {"convention": "reddi"}})


def test_the_simulation_convention_reaches_local_training() -> None:
    assert SimulationConfig().convention == "openfedllm"
    assert SimulationConfig(convention="reddi").train.convention == "reddi"
    cfg = config_from_dict({"simulation": {"convention": "reddi"}, "train": {"convention": "reddi"}})
    assert cfg.train.convention == "reddi"
    assert cfg.replace(convention="openfedllm").train.convention == "openfedllm"
