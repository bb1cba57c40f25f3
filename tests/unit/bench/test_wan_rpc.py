"""bench/wan.py's JSON-RPC request count per node and round, from the nodes' round.finalized events."""

from __future__ import annotations

from typing import Any

from bench.wan import rpc_per_round


def _final(rnd: int, rpc: dict[str, list[int]] | None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "round.finalized", "round": rnd, "ts": float(rnd)}
    if rpc is not None:
        event["rpc"] = rpc
    return event


def test_round_0_is_left_out_and_methods_are_averaged_over_counted_rounds() -> None:
    node_a = [
        _final(0, {"eth_call": [500, 1, 1]}),  # joins and the join window: not a measured round
        {"event": "round.submitted", "round": 1},
        _final(1, {"eth_call": [10, 100, 200], "eth_getLogs": [4, 50, 60]}),
        _final(2, {"eth_call": [6, 100, 200]}),
    ]
    node_b = [_final(0, {"eth_call": [300, 1, 1]}), _final(1, {"eth_blockNumber": [8, 10, 10]})]

    result = rpc_per_round([node_a, node_b])

    assert result["rounds"] == 3
    assert result["by_method"] == {"eth_blockNumber": round(8 / 3, 1), "eth_call": round(16 / 3, 1),
                                   "eth_getLogs": round(4 / 3, 1)}  # fmt: skip
    assert result["total"] == round(28 / 3, 1)


def test_rounds_without_counts_are_not_counted() -> None:
    result = rpc_per_round([[_final(0, None), _final(1, None)], []])

    assert result == {"rounds": 0, "total": None, "by_method": {}}
