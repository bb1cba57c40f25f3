"""Server optimisers: FedAvg identity, bit-identical numpy float64 references of both conventions, config
validation, SCAFFOLD's server control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.errors import ConfigError
from training.scaffold import server_control_step
from training.server_opt import SERVER_OPTIMIZERS, init_state, make_config, server_step


def _np_step(
    name: str,
    x: np.ndarray,
    d: np.ndarray,
    st: dict[str, np.ndarray],
    lr: float,
    b1: float,
    b2: float,
    tau: float,
    convention: str = "reddi",
    first: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reference in numpy float64, one correctly rounded operation at a time (the documented formulas)."""
    if name == "fedavg":
        return x + d * lr, {}
    if name == "diloco":
        m = st["m"] * b1 + d
        return x + (d + m * b1) * lr, {"m": m}
    if convention == "openfedllm":
        m = d if first or name == "fedadagrad" else st["m"] * b1 + d * (1.0 - b1)
        if name == "fedavgm":
            return x + m * lr, {"m": m}
        v, sq = st["v"], m * m
        if name == "fedadagrad":
            v = v + sq
        elif name == "fedyogi":
            v = v - sq * (1.0 - b2) * np.sign(v - sq)
        else:
            v = v * b2 + sq * (1.0 - b2)
        return x + m / (np.sqrt(v) + tau) * lr, {"m": m, "v": v}
    if name == "fedavgm":
        m = st["m"] * b1 + d
        return x + m * lr, {"m": m}
    m = st["m"] * b1 + d * (1.0 - b1)
    v, sq = st["v"], d * d
    if name == "fedadagrad":
        v = v + sq
    elif name == "fedyogi":
        v = v - sq * (1.0 - b2) * np.sign(v - sq)
    else:
        v = v * b2 + sq * (1.0 - b2)
    return x + m / (np.sqrt(v) + tau) * lr, {"m": m, "v": v}


@pytest.mark.parametrize("convention", ["openfedllm", "reddi"])
@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_three_steps_bit_identical_to_numpy(name: str, convention: str) -> None:
    gen = torch.Generator().manual_seed(5)
    d = 40_000
    params = torch.randn(d, generator=gen)
    cfg = make_config(name)
    state = init_state(name, d, cfg, convention=convention)
    x = params.numpy().astype(np.float32)
    ref_state = {k: np.zeros(d, dtype=np.float32) for k in state}
    if convention == "openfedllm" and "v" in ref_state:
        ref_state["v"][:] = np.float32(cfg.tau * cfg.tau)
    for step in range(3):
        delta = torch.randn(d, generator=gen) * 1e-2
        params, state = server_step(name, params, delta, state, cfg, convention=convention)
        x64, st64 = _np_step(
            name,
            x.astype(np.float64),
            delta.double().numpy(),
            {k: v.astype(np.float64) for k, v in ref_state.items()},
            cfg.server_lr,
            cfg.beta1,
            cfg.beta2,
            cfg.tau,
            convention,
            first=step == 0,
        )
        x = x64.astype(np.float32)
        x[x == 0] = 0.0
        ref_state = {k: v.astype(np.float32) for k, v in st64.items()}

    assert params.numpy().tobytes() == x.tobytes()
    assert sorted(state) == sorted(ref_state)
    for key in state:
        assert state[key].numpy().tobytes() == ref_state[key].tobytes()


def test_fedavg_with_unit_lr_adds_the_delta() -> None:
    params, delta = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.25, 2.0, -1.5])

    out, state = server_step("fedavg", params, delta, init_state("fedavg", 3), make_config("fedavg"))

    assert out.tolist() == [1.25, 0.0, -1.0]
    assert state == {}


def test_diloco_is_torch_nesterov_sgd_on_the_pseudo_gradient() -> None:
    gen = torch.Generator().manual_seed(3)
    start = torch.randn(50, generator=gen, dtype=torch.float64)
    ref = start.clone().requires_grad_(True)
    opt = torch.optim.SGD([ref], lr=0.7, momentum=0.9, nesterov=True)
    cfg = make_config("diloco")
    params, state = start.to(torch.float32), init_state("diloco", 50, cfg)
    for _ in range(4):
        delta = torch.randn(50, generator=gen).to(torch.float64) * 0.1  # end - start of the local steps
        ref.grad = -delta  # DiLoCo's pseudo-gradient: start - end
        opt.step()
        params, state = server_step("diloco", params, delta.to(torch.float32), state, cfg)

    assert (cfg.server_lr, cfg.beta1) == (0.7, 0.9)
    assert torch.allclose(params.double(), ref.detach(), atol=1e-5)
    assert set(state) == {"m"}


def test_inputs_are_not_modified() -> None:
    params, delta = torch.randn(10), torch.randn(10)
    state = init_state("fedadam", 10)
    before = (params.clone(), delta.clone(), {k: v.clone() for k, v in state.items()})

    server_step("fedadam", params, delta, state, make_config("fedadam"))

    assert torch.equal(params, before[0]) and torch.equal(delta, before[1])
    assert all(torch.equal(state[k], before[2][k]) for k in state)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server_lr": 0.0}, r"`server_lr` must be > 0, got 0.0"),
        ({"beta1": 1.0}, r"`beta1` must be in \[0, 1\), got 1.0"),
        ({"beta2": -0.1}, r"`beta2` must be in \[0, 1\), got -0.1"),
        ({"tau": 0.0}, r"`tau` must be > 0, got 0.0"),
        ({"lr": 1.0}, r"unknown server optimiser option"),
    ],
)
def test_config_is_validated(overrides: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("fedadam", **overrides)


def test_bad_step_inputs_are_rejected() -> None:
    cfg = make_config("fedyogi")
    with pytest.raises(ConfigError, match="unknown server optimiser 'sgd'"):
        init_state("sgd", 3)
    with pytest.raises(ConfigError, match="state needs a tensor 'v'"):
        server_step("fedyogi", torch.zeros(3), torch.zeros(3), {"m": torch.zeros(3)}, cfg)
    with pytest.raises(ConfigError, match="NaN or Inf"):
        server_step(
            "fedyogi", torch.zeros(3), torch.tensor([1.0, float("inf"), 0]), init_state("fedyogi", 3), cfg
        )
    with pytest.raises(ConfigError, match="1-D of one length"):
        server_step("fedyogi", torch.zeros(3), torch.zeros(4), init_state("fedyogi", 3), cfg)


def test_scaffold_server_control_is_the_sum_over_all_eligible() -> None:
    control = torch.tensor([1.0, 0.0])
    deltas = torch.tensor([[1.0, 2.0], [3.0, -2.0], [2.0, 3.0]])

    out = server_control_step(control, deltas, eligible=6)  # 3 of 6 took part: c + sum / 6
    out_perm = server_control_step(control, deltas.flip(0), eligible=6)

    assert out.tolist() == [2.0, 0.5]
    assert out.numpy().tobytes() == out_perm.numpy().tobytes()


def test_scaffold_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="`eligible` must be an integer >= the 2 control deltas, got 1"):
        server_control_step(torch.zeros(2), torch.zeros(2, 2), eligible=1)
    with pytest.raises(ConfigError, match="shapes"):
        server_control_step(torch.zeros(2), torch.zeros(1, 3))


@pytest.mark.parametrize("convention", ["openfedllm", "reddi"])
@pytest.mark.parametrize("name", sorted(SERVER_OPTIMIZERS))
def test_the_bytes_do_not_depend_on_the_block_size(name: str, convention: str) -> None:
    gen = torch.Generator().manual_seed(11)
    d = 10_007
    cfg = make_config(name)
    state = init_state(name, d, cfg, convention=convention)
    if "m" in state:  # a momentum that is zero in the first blocks only: the first-step rule is global
        state["m"][d // 2 :] = torch.randn(d - d // 2, generator=gen) * 1e-3
    params, delta = torch.randn(d, generator=gen), torch.randn(d, generator=gen) * 1e-2
    whole = server_step(name, params, delta, state, cfg, convention=convention, block=d)
    for block in (1_000, 4_096, 9_999):
        blocked = server_step(name, params, delta, state, cfg, convention=convention, block=block)
        assert blocked[0].numpy().tobytes() == whole[0].numpy().tobytes()
        assert sorted(blocked[1]) == sorted(whole[1])
        for key in whole[1]:
            assert blocked[1][key].numpy().tobytes() == whole[1][key].numpy().tobytes()


def test_a_block_size_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="block"):
        server_step("fedavg", torch.zeros(3), torch.zeros(3), {}, make_config("fedavg"), block=0)
