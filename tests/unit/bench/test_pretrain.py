"""bench/pretrain.py's arithmetic: one token budget for every setting, and the data-parallel byte count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.pretrain import data_parallel_bytes, main, run, settings, write_shards
from bench.pretrain import table as render


def _ring_all_reduce(grads: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """Sum ``grads`` over a ring of workers, chunk by chunk; the result of each worker and the bytes sent.

    Reduce-scatter: in step ``s`` worker ``w`` sends its running sum of chunk ``(w - s) % n`` to worker
    ``w + 1``; after ``n - 1`` steps worker ``w`` holds the full sum of chunk ``(w + 1) % n``. All-gather:
    ``n - 1`` more steps pass the finished chunks round the ring.
    """
    n = len(grads)
    chunks = [list(torch.tensor_split(g.clone(), n)) for g in grads]
    sent = 0
    for s in range(n - 1):
        outgoing = [(w, (w - s) % n, chunks[w][(w - s) % n].clone()) for w in range(n)]
        for w, c, value in outgoing:
            chunks[(w + 1) % n][c] += value
            sent += value.numel() * value.element_size()
    for s in range(n - 1):
        outgoing = [(w, (w + 1 - s) % n, chunks[w][(w + 1 - s) % n].clone()) for w in range(n)]
        for w, c, value in outgoing:
            chunks[(w + 1) % n][c] = value
            sent += value.numel() * value.element_size()
    return [torch.cat(c) for c in chunks], sent


@pytest.mark.parametrize(("members", "numel"), [(2, 10), (4, 210_240), (4, 12), (8, 64)])
def test_data_parallel_bytes_is_what_a_ring_all_reduce_sends(members: int, numel: int) -> None:
    generator = torch.Generator().manual_seed(members * 1_000 + numel)
    grads = [torch.randn(numel, generator=generator) for _ in range(members)]

    reduced, sent = _ring_all_reduce(grads)

    expected = torch.stack(grads).sum(dim=0)
    for result in reduced:  # the ring computes the sum on every worker
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
    assert data_parallel_bytes(members, 1, numel) == sent
    assert data_parallel_bytes(members, 320, numel) == 320 * sent  # one all-reduce per step


def test_data_parallel_bytes_of_the_documented_run() -> None:
    # tiny-llama (210,240 parameters), 4 members, 8 rounds x 40 steps: 2 * 3/4 * 4 * d per worker per step
    assert data_parallel_bytes(4, 320, 210_240) == 320 * 4 * 1.5 * 4 * 210_240 == 1_614_643_200
    assert data_parallel_bytes(1, 320, 210_240) == 0  # one worker exchanges nothing
    with pytest.raises(ValueError, match="members >= 1"):
        data_parallel_bytes(0, 1, 1)


@pytest.mark.parametrize(
    ("members", "rounds", "local_steps", "batch"), [(4, 8, 40, 8), (4, 32, 10, 8), (3, 2, 5, 2)]
)
def test_every_setting_trains_on_the_same_token_budget(
    members: int, rounds: int, local_steps: int, batch: int
) -> None:
    plan = settings(members, rounds, local_steps, batch)
    budget = members * rounds * local_steps * batch

    assert {s.blocks for s in plan.values()} == {budget}
    dp, central, federated, alone = plan["dp"], plan["central"], plan["federated"], plan["alone"]
    # data-parallel: the members' steps run as one, each step the members' batches together
    assert (dp.steps, dp.batch) == (federated.steps, members * federated.batch)
    assert (central.steps, central.batch) == (members * federated.steps, federated.batch)
    assert federated.steps == rounds * local_steps and federated.workers == members
    # each member alone: its own steps, a quarter (1 / members) of the budget per model
    assert (alone.models, alone.blocks_per_model) == (members, budget // members)
    assert dp.shape() == f"{rounds * local_steps} x {members * batch}"
    assert federated.shape() == f"{members} members x {rounds * local_steps} x {batch}"
    assert alone.shape() == f"{rounds * local_steps} x {batch} each"


@pytest.mark.slow
def test_a_short_bench_run_reports_the_budget_and_ratio_it_trained() -> None:
    import argparse

    args = argparse.Namespace(
        model="tiny-llama",
        rounds=2,
        local_steps=2,
        batch_size=2,
        max_len=32,
        lr=3e-3,
        held_out=0.02,
        lr_schedule="constant",
        min_lr=1e-6,
        warmup_steps=0,
        inner_state="keep",
        outer_lr=0.7,
        outer_momentum=0.9,
        codecs="int8",
        split="topic",
        settings="dp,central,federated",
        seed=0,
        threads=1,
        json=True,
    )

    report = run(args)

    rows = {r.get("key", "initial"): r for r in report["rows"]}
    assert set(rows) == {"initial", "dp", "central", "federated"}
    assert {rows[k]["blocks"] for k in ("dp", "central", "federated")} == {4 * 2 * 2 * 2}
    assert report["tokens_per_setting"] == 4 * 2 * 2 * 2 * 32
    assert (rows["dp"]["steps"], rows["dp"]["batch"]) == (4, 8)
    assert (rows["central"]["steps"], rows["central"]["batch"]) == (16, 2)
    assert report["data_parallel_bytes"] == data_parallel_bytes(4, 4, report["parameters"])
    federated = rows["federated"]
    assert federated["setting"] == "(b) federated, int8"
    # two rounds of four int8 updates: a byte per value plus headers and scales, about a quarter of fp32
    assert 2 * 4 * report["parameters"] < federated["bytes"] < 2 * 4 * report["parameters"] * 1.2
    assert len(federated["round_losses"]) == 3  # the initial model and each round's merged model
    assert federated["round_losses"][-1] == federated["loss"]
    assert federated["dp_ratio"] == pytest.approx(report["data_parallel_bytes"] / federated["bytes"])
    assert rows["dp"]["vs_dp"] == 0.0 and rows["central"]["vs_central"] == 0.0
    assert federated["vs_dp"] == pytest.approx(federated["perplexity"] / rows["dp"]["perplexity"] - 1)
    text = render(report)
    assert "| (a) central, data-parallel equivalent | 4 x 8 |" in text
    assert "| (b) federated, int8 | 4 members x 4 x 2 |" in text


def test_the_command_line_refuses_an_unknown_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--settings", "dp,ddp"])
    assert exc.value.code == 2
    assert "unknown ['ddp']" in capsys.readouterr().err


def test_the_iid_control_holds_out_a_sample_of_every_topic(tmp_path: Path) -> None:
    from training.datasets.chatterbot import chatterbot_categories
    from training.text import chatterbot_texts

    texts = chatterbot_texts(chatterbot_categories())
    category = {conv: c for c, text in texts.items() for conv in text.split("\n\n")}

    paths = write_shards(tmp_path, "iid", seed=0)

    shards = [Path(p).read_text(encoding="utf-8").split("\n\n") for p in paths]
    assert sum(len(s) for s in shards) == sum(len(t.split("\n\n")) for t in texts.values())
    for conversations in shards:
        tail = conversations[-len(conversations) // 10 :]  # what the held-out blocks are cut from
        topics = {category[c] for c in tail}
        assert len(topics) >= 8, sorted(topics)
        assert max(sum(category[c] == t for c in tail) for t in topics) < 0.6 * len(tail)
    topic = [Path(p).read_text(encoding="utf-8").split("\n\n") for p in write_shards(tmp_path, "topic")]
    assert {category[c] for c in topic[0]} == {"tech_support"}  # the non-IID shards stay by topic
