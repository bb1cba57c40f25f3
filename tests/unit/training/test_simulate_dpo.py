"""Federated DPO in the in-process simulation: the shipped config learns its preference, bad configs fail.

The tiny random Llama on synthetic preference pairs (the right answer chosen), three clients, few steps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from training.attacks import flip_preferences
from training.data import PreferencePair
from training.errors import ConfigError
from training.simconfig import config_from_dict, load_config
from training.simulate import run_simulation

CONFIG = Path(__file__).resolve().parents[3] / "training" / "configs" / "dpo-synthetic.toml"


@pytest.mark.slow
def test_federated_dpo_lowers_held_out_dpo_loss_and_raises_reward_accuracy() -> None:
    cfg = load_config(CONFIG).replace(rounds=3)

    result = run_simulation(cfg)

    losses = [r.eval.union_loss for r in result.rounds]
    accuracy = [r.eval.reward_accuracy for r in result.rounds]
    # Round 0 is the base model, which is also the reference: every reward is 0.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6) and accuracy[0] == 0.0
    assert losses[1] < losses[0] and losses[2] < losses[1] and losses[2] < math.log(2) - 0.05
    assert all(a is not None for a in accuracy)
    assert accuracy[2] is not None and accuracy[2] >= 0.75
    assert all(r.eval.exact_match is None for r in result.rounds)
    assert result.final.accepted == 3
    assert set(result.final.eval.per_client) == {"client-0", "client-1", "client-2"}


def test_dpo_local_baseline_and_label_flip_run() -> None:
    cfg = load_config(CONFIG).replace(
        rounds=1, local_baseline=True, **{"byzantine.count": 1, "byzantine.attack": "label_flip"}
    )

    result = run_simulation(cfg)

    assert result.baseline is not None
    assert set(result.baseline.per_client_union_loss) == {"client-0", "client-1", "client-2"}
    assert all(math.isfinite(v) for v in result.baseline.per_client_own_loss.values())
    assert len(result.byzantine) == 1


def test_flip_preferences_swaps_chosen_and_rejected() -> None:
    pairs = [PreferencePair("p", "good", "bad"), PreferencePair("q", "yes", "no")]

    assert flip_preferences(pairs) == [PreferencePair("p", "bad", "good"), PreferencePair("q", "no", "yes")]


def test_bad_dpo_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="`task` must be one of sft, dpo, pretrain, got 'ppo'"):
        config_from_dict({"train": {"task": "ppo"}})
    with pytest.raises(ConfigError, match="chatterbot' has no preference pairs"):
        config_from_dict({"train": {"task": "dpo"}, "data": {"source": "chatterbot"}})
    with pytest.raises(ConfigError, match=r"\[simulation\] `categories` lists 1 names for 3 clients"):
        config_from_dict(
            {"simulation": {"clients": 3}, "train": {"task": "dpo"}, "data": {"categories": ["antonyms"]}}
        )
    with pytest.raises(ConfigError, match="`skill` must be one of"):
        run_simulation(
            config_from_dict(
                {"simulation": {"clients": 1}, "train": {"task": "dpo"}, "data": {"categories": ["poetry"]}}
            )
        )
