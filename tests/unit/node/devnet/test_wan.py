"""The WAN emulator's pure parts: link delays, the learning switch, loss, config checks and refusals."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from node.devnet import wan
from node.devnet.relay import Port, Relay, RelaySpec, link_delays
from node.devnet.wan import WanConfig, WanNetwork, WanUnavailableError


def _relay(n: int, loss: float = 0.0, delay: tuple[float, float] = (50.0, 150.0)) -> Relay:
    ports = tuple(Port(f"ns{i}", f"10.77.0.{i + 1}", f"tap{i}") for i in range(n))
    relay = Relay(RelaySpec(ports, delay, loss, None, seed=5, max_lifetime_s=10.0, parent_pid=1))
    relay.fds = list(range(100, 100 + n))  # never written: only the queue is inspected
    return relay


def _frame(dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x08\x00" + b"payload"


A, B, C = (bytes([0x02, 0, 0, 0, 0, k]) for k in (1, 2, 3))
BROADCAST = b"\xff" * 6


def test_link_delays_are_seeded_symmetric_and_in_range() -> None:
    delays = link_delays(4, (50.0, 150.0), random.Random(1))

    assert delays == link_delays(4, (50.0, 150.0), random.Random(1))
    assert delays != link_delays(4, (50.0, 150.0), random.Random(2))
    assert len(delays) == 12 and all(delays[(i, j)] == delays[(j, i)] for i, j in delays)
    assert all(0.050 <= d <= 0.150 for d in delays.values())


def test_the_switch_floods_unknown_and_broadcast_frames_then_learns_each_mac() -> None:
    relay = _relay(3)

    relay._switch(0, _frame(BROADCAST, A), now=0.0)  # ARP request from A: to B and C
    relay._switch(1, _frame(A, B), now=1.0)  # B answers: A was learnt on port 0
    relay._switch(0, _frame(B, A), now=2.0)  # A to B: B was learnt on port 1
    relay._switch(2, _frame(C, C), now=3.0)  # a frame to its own port goes nowhere

    sent = sorted((seq, dst, round(due, 6)) for due, seq, dst, _ in relay.queue)
    d01, d02 = relay.delays[(0, 1)], relay.delays[(0, 2)]
    assert sent == [(1, 1, round(d01, 6)), (2, 2, round(d02, 6)), (3, 0, round(1 + d01, 6)),
                    (4, 1, round(2 + d01, 6))]  # fmt: skip
    assert relay.macs == {A: 0, B: 1, C: 2}


def test_loss_drops_about_the_configured_share_with_a_fixed_seed() -> None:
    counts = []
    for _ in range(2):
        relay = _relay(2, loss=0.01)
        relay.macs = {A: 0, B: 1}
        for i in range(20_000):
            relay._switch(0, _frame(B, A), now=float(i))
        counts.append(relay.dropped)

    assert counts[0] == counts[1]
    assert 150 <= counts[0] <= 250
    assert len(relay.queue) == 20_000 - counts[0]


def test_a_bad_config_or_label_is_refused_naming_the_field() -> None:
    for kwargs, field in (
        ({"loss": 1.0}, "loss"),
        ({"delay_ms": (100.0, 50.0)}, "delay_ms"),
        ({"rate_mbit": 0.0}, "rate_mbit"),
        ({"max_lifetime_s": 0.0}, "max_lifetime_s"),
        ({"subnet": "10.77"}, "subnet"),
    ):
        with pytest.raises(ValueError, match=f"`{field}`"):
            WanConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="label 'Node_0'"):
        WanNetwork(Path("/tmp"), ["Node_0"])
    with pytest.raises(ValueError, match="distinct"):
        WanNetwork(Path("/tmp"), ["a", "a"])


def test_addresses_and_prefixes_follow_the_label_order() -> None:
    net = WanNetwork(Path("/tmp"), ["svc", "n0"], WanConfig(subnet="10.9.8"))

    assert [net.address("svc"), net.address("n0")] == ["10.9.8.1", "10.9.8.2"]
    assert net.prefix("n0")[:3] == ["ip", "netns", "exec"] and net.prefix("n0")[3].endswith("-n0")
    with pytest.raises(KeyError, match="no namespace labelled 'n1'"):
        net.address("n1")


def test_without_root_or_tools_it_refuses_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wan.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(wan.shutil, "which", lambda tool: None if tool == "tc" else "/usr/sbin/ip")

    with pytest.raises(WanUnavailableError, match=r"root .*the `tc` command"):
        wan.check_available()


def test_a_cluster_takes_one_listen_host_and_prefix_per_member(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from node.devnet.cluster import LocalCluster, Member

    devnet = SimpleNamespace(accounts=["0x"] * 3)
    with pytest.raises(ValueError, match=r"`hosts` must have one entry per member \(2\), got 1"):
        LocalCluster(tmp_path, devnet, 2, hosts=["10.77.0.2"], node_memory_mib=1)
    with pytest.raises(ValueError, match=r"`prefixes` must have one entry per member \(2\), got 3"):
        LocalCluster(tmp_path, devnet, 2, prefixes=[[], [], []], node_memory_mib=1)
    cluster = LocalCluster(tmp_path, devnet, 2, hosts=["10.77.0.2", "10.77.0.3"],
                           prefixes=[["ip", "netns", "exec", "x"], []], node_memory_mib=1)  # fmt: skip
    cluster.members = [
        Member(
            i, tmp_path / f"node{i}", "0x", f"16Uiu2peer{i}", 4000 + i, cluster.hosts[i], cluster.prefixes[i]
        )
        for i in range(2)
    ]

    argv = cluster.process(0, 1, "synthetic:arithmetic:4").argv

    assert argv[:4] == ["ip", "netns", "exec", "x"]
    assert argv[argv.index("--bootstrap") + 1] == "/ip4/10.77.0.3/tcp/4001/p2p/16Uiu2peer1"
    assert cluster.process(1, 1, "synthetic:arithmetic:4").argv[0] != "ip"
