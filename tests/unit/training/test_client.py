from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from training.adapters import attach_adapter, trainable_state
from training.algorithms import ALGORITHMS, get_algorithm
from training.client import ScaffoldControls
from training.config import AdapterConfig, TrainConfig
from training.datasets.synthetic import synthetic_task
from training.errors import AdapterStateError, ConfigError, TrainingError
from training.models import load_model
from training.scaffold import server_control_step
from training.sft import train_sft

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DATA = synthetic_task("capitals", 24, seed=0)


def fresh(tiny_model_dir: Path) -> Any:
    return attach_adapter(load_model(str(tiny_model_dir))[0], AdapterConfig(), run_seed=0)


def cfg(**overrides: Any) -> TrainConfig:
    base = {
        "lr": 0.5,
        "optimizer": "sgd",
        "local_steps": 6,
        "batch_size": 8,
        "max_len": 64,
        "max_grad_norm": None,
    }
    return TrainConfig(**{**base, **overrides})


def norm(delta: dict[str, torch.Tensor]) -> float:
    return float(torch.cat([v.double().flatten() for v in delta.values()]).norm())


def test_fedprox_pulls_the_update_towards_the_global_model(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    plain = train_sft(fresh(tiny_model_dir), tiny_tokenizer, DATA, cfg())
    prox_zero = train_sft(
        fresh(tiny_model_dir), tiny_tokenizer, DATA, cfg(client_algorithm="fedprox", prox_mu=0.0)
    )
    prox = train_sft(
        fresh(tiny_model_dir), tiny_tokenizer, DATA, cfg(client_algorithm="fedprox", prox_mu=1.0)
    )

    assert all(torch.equal(plain.state[k], prox_zero.state[k]) for k in plain.state)
    assert norm(prox.delta) < norm(plain.delta)


def test_scaffold_with_zero_controls_equals_plain_training_and_sets_c_i(
    tiny_model_dir: Path, tiny_tokenizer: Any
) -> None:
    model = fresh(tiny_model_dir)
    zeros = {k: torch.zeros_like(v) for k, v in trainable_state(model).items()}
    plain = train_sft(fresh(tiny_model_dir), tiny_tokenizer, DATA, cfg())

    update = train_sft(
        model, tiny_tokenizer, DATA, cfg(client_algorithm="scaffold"), controls=ScaffoldControls(zeros)
    )

    assert update.control is not None and update.control_delta is not None
    assert all(torch.equal(update.state[k], plain.state[k]) for k in plain.state)
    for k, delta in update.delta.items():
        # c_i+ = c_i - c + (w_global - w_local) / (K * lr) with c = c_i = 0
        assert torch.allclose(update.control[k], -delta / (6 * 0.5))
        assert torch.equal(update.control_delta[k], update.control[k])


def test_scaffold_correction_changes_the_trajectory(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    state = trainable_state(model)
    server = {k: torch.full_like(v, 0.01) for k, v in state.items()}
    client = {k: torch.full_like(v, -0.01) for k, v in state.items()}
    plain = train_sft(fresh(tiny_model_dir), tiny_tokenizer, DATA, cfg())

    update = train_sft(
        model,
        tiny_tokenizer,
        DATA,
        cfg(client_algorithm="scaffold"),
        controls=ScaffoldControls(server, client),
    )

    assert update.control is not None and update.control_delta is not None
    assert not all(torch.equal(update.state[k], plain.state[k]) for k in state)
    for k in state:
        expected = client[k] - server[k] - update.delta[k] / 3.0
        assert torch.allclose(update.control[k], expected)
        assert torch.allclose(update.control_delta[k], expected - client[k])


def test_scaffold_needs_matching_controls(tiny_model_dir: Path, tiny_tokenizer: Any) -> None:
    model = fresh(tiny_model_dir)
    with pytest.raises(TrainingError, match="no SCAFFOLD controls"):
        train_sft(model, tiny_tokenizer, DATA, cfg(client_algorithm="scaffold"))
    with pytest.raises(AdapterStateError, match="SCAFFOLD server control: adapter state names differ"):
        train_sft(
            model, tiny_tokenizer, DATA, cfg(client_algorithm="scaffold"), controls=ScaffoldControls({})
        )


def test_server_control_step_is_the_mean_and_order_free() -> None:
    control = torch.tensor([1.0, 0.0, -1.0])
    deltas = torch.tensor([[0.1, 0.2, 0.3], [0.3, -0.2, 1e-8], [1e7, 0.5, -0.3]])

    new = server_control_step(control, deltas)
    shuffled = server_control_step(control, deltas[[2, 0, 1]])
    half = server_control_step(control, deltas, eligible=6)

    expected = control.double() + deltas.double().sum(0) / 3
    assert torch.allclose(new.double(), expected)
    assert new.dtype == torch.float32
    assert new.numpy().tobytes() == shuffled.numpy().tobytes()
    assert torch.allclose(half.double(), control.double() + deltas.double().sum(0) / 6)
    assert torch.equal(server_control_step(control, deltas[:0]), control)
    with pytest.raises(ConfigError, match="shapes must be"):
        server_control_step(control, deltas[:, :2])


def test_algorithms_table() -> None:
    pairs = {name: (a.client, a.server_optimizer) for name, a in ALGORITHMS.items()}

    assert pairs == {
        "fedavg": ("local", "fedavg"),
        "fedprox": ("fedprox", "fedavg"),
        "scaffold": ("scaffold", "fedavg"),
        "fedavgm": ("local", "fedavgm"),
        "fedadagrad": ("local", "fedadagrad"),
        "fedyogi": ("local", "fedyogi"),
        "fedadam": ("local", "fedadam"),
        "diloco": ("local", "diloco"),
    }
    assert [n for n, a in ALGORITHMS.items() if a.control_variates] == ["scaffold"]
    assert get_algorithm("fedyogi").server_optimizer == "fedyogi"
    with pytest.raises(ConfigError, match="`algorithm` must be one of fedavg, fedprox"):
        get_algorithm("fedsgd")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr", 0.0, "`lr` must be > 0, got 0.0"),
        ("local_steps", 0, "`local_steps` must be >= 1 or None, got 0"),
        ("optimizer", "adam", "`optimizer` must be one of adamw, sgd, got 'adam'"),
        ("client_algorithm", "fedyogi", "`client_algorithm` must be one of local, fedprox, scaffold"),
        ("prox_mu", -1.0, "`prox_mu` must be >= 0, got -1.0"),
        ("max_len", 4, "`max_len` must be >= 8, got 4"),
    ],
)
def test_train_config_validation(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TrainConfig(**{field: value})
