"""Acting on confirmed state: the config key, the update-set check and the dropped-transaction check."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ledger.client import RunsClient
from node.config import NodeConfigError, load_config
from node.console.eventlog import EventLog, read_events
from node.protocol.confirm import ON_CHAIN, still_on_chain
from node.protocol.round import _update_set_confirmed
from tests.fixtures.chain import ChainEnv


def test_confirmations_default_to_zero_and_load_from_the_chain_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[chain]\nconfirmations = 12\n")

    assert load_config(path).chain.confirmations == 12
    path.write_text("")
    assert load_config(path).chain.confirmations == 0


@pytest.mark.parametrize("value", ["-1", "10001", '"6"', "1.5", "true"])
def test_bad_confirmations_name_the_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[chain]\nconfirmations = {value}\n")

    with pytest.raises(NodeConfigError, match=r"\[chain\].*`confirmations` must be an integer in \[0, 1"):
        load_config(path)


def _round(submit_end: int, submissions: int, eligible: int = 3) -> SimpleNamespace:
    return SimpleNamespace(submit_end=submit_end, submissions=submissions, eligible=eligible)


@pytest.mark.parametrize(
    ("confirmations", "head", "submissions", "final"),
    [
        (0, 19, 1, True),  # no confirmations: the vote phase (head + 1 >= submit_end) is final at once
        (4, 19, 1, False),  # the window's last block (19) is not 4 deep yet
        (4, 22, 1, False),
        (4, 23, 1, True),  # 23 - 4 = 19: the last block a commit can land in is confirmed
        (4, 19, 3, True),  # every eligible member's commit is confirmed: nothing else can join
    ],
)
def test_update_set_is_final_once_its_window_end_is_confirmed(
    confirmations: int, head: int, submissions: int, final: bool
) -> None:
    ctx = SimpleNamespace(client=SimpleNamespace(confirmations=confirmations))

    assert _update_set_confirmed(ctx, _round(20, submissions), head) is final  # type: ignore[arg-type]


def test_a_dropped_transaction_is_logged_and_a_mined_one_kept(pyevm_chain: ChainEnv, tmp_path: Path) -> None:
    env = pyevm_chain
    run = env.new_run(members=1, join=False)
    mined = env.client(1).join(run)
    log = EventLog(tmp_path / "node.jsonl", console="none")
    ctx = SimpleNamespace(client=RunsClient(env.w3, env.runs_address, env.accounts[1]), log=log, run_id=run)

    assert still_on_chain(ctx, bytes(mined.tx_hash).hex(), 0, "vote")  # type: ignore[arg-type]
    assert still_on_chain(ctx, ON_CHAIN, 0, "vote")  # type: ignore[arg-type]
    assert not still_on_chain(ctx, None, 0, "vote")  # type: ignore[arg-type]
    assert not still_on_chain(ctx, "42" * 32, 0, "submit")  # type: ignore[arg-type]
    log.close()
    dropped = [e for e in read_events(tmp_path / "node.jsonl") if e["event"] == "round.tx_dropped"]
    assert [(e["round"], e["what"], e["tx"]) for e in dropped] == [(0, "submit", "42" * 32)]
