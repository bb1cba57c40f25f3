"""The WAN link emulator on its own: real kernel packets between namespaces, delayed, dropped and rate-capped.

Each test builds its own namespaces with :class:`node.devnet.wan.WanNetwork` and runs probes
(``tests/fixtures/netprobe.py``) inside them with ``ip netns exec``. Checked: TCP round trips take twice the
link's configured one-way delay; UDP datagrams are lost at close to the configured rate; TCP throughput is
capped near the configured rate; the namespaces are gone after ``stop``, when the relay is killed by
SIGTERM, and when the process that started it is killed by SIGKILL. Skipped, with the reason, where the
machine refuses (not root, no iproute2, no /dev/net/tun).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.devnet.wan import WanConfig, WanNetwork, WanUnavailableError, namespaces

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PROBE = [sys.executable, "-m", "tests.fixtures.netprobe"]
ROOT = Path(__file__).resolve().parents[3]


def _network(folder: Path, labels: list[str], config: WanConfig) -> WanNetwork:
    net = WanNetwork(folder, labels, config)
    try:
        net.start()
    except WanUnavailableError as exc:
        pytest.skip(str(exc))
    return net


@pytest.fixture
def wan(tmp_path: Path) -> Iterator[WanNetwork]:
    net = _network(tmp_path, ["a", "b", "c"], WanConfig(delay_ms=(50.0, 150.0), loss=0.01, seed=7))
    try:
        yield net
    finally:
        net.stop()


def _server(net: WanNetwork, label: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*net.prefix(label), *PROBE, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    return proc


def _client(net: WanNetwork, label: str, *args: str, timeout: float = 60.0) -> dict[str, object]:
    done = subprocess.run([*net.prefix(label), *PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, check=True)  # fmt: skip
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_round_trips_take_twice_each_links_delay(wan: WanNetwork) -> None:
    delays = {pair: wan.delays_ms[pair] for pair in (("b", "a"), ("c", "a"))}
    assert all(50.0 <= d <= 150.0 for d in delays.values()) and len(set(delays.values())) == 2
    server = _server(wan, "a", "echo-server", wan.address("a"), "7001")
    try:
        for (src, _), one_way in delays.items():
            rtts = _client(wan, src, "rtt", wan.address("a"), "7001", "15")["rtt_ms"]
            assert isinstance(rtts, list)
            median = statistics.median(rtts)
            assert 2 * one_way - 2.0 <= median <= 2 * one_way + 30.0, (src, one_way, rtts)
    finally:
        server.kill()
        server.wait()


def test_datagrams_are_lost_at_about_the_configured_rate(wan: WanNetwork) -> None:
    sent = 3000
    sink = _server(wan, "a", "udp-sink", wan.address("a"), "7002", "5.0")
    _client(wan, "b", "udp-send", wan.address("a"), "7002", str(sent), "0.0005")
    out, _ = sink.communicate(timeout=60)
    lost = sent - json.loads(out.splitlines()[-1])["received"]
    # 1 % of 3000 is 30 (sd about 5.5); ARP and other frames share the RNG, so the count is not fixed
    assert 8 <= lost <= 60, lost


def test_throughput_is_capped_near_the_rate(tmp_path: Path) -> None:
    # 20 Mbit/s: the relay (one Python process) keeps up with that even on a loaded machine
    net = _network(tmp_path, ["a", "b"], WanConfig(delay_ms=(0.0, 0.0), loss=0.0, rate_mbit=20.0))
    try:
        sink = _server(net, "a", "sink", net.address("a"), "7003")
        _client(net, "b", "blast", net.address("a"), "7003", "3")
        out, _ = sink.communicate(timeout=60)
        result = json.loads(out.splitlines()[-1])
        mbit = result["bytes"] * 8 / result["seconds"] / 1e6
    finally:
        net.stop()
    assert 12.0 <= mbit <= 21.0, mbit


def test_namespaces_are_removed_on_stop_and_on_sigterm(tmp_path: Path) -> None:
    net = _network(tmp_path / "stop", ["a", "b"], WanConfig())
    names = [net.netns("a"), net.netns("b")]
    assert set(names) <= set(namespaces())
    net.stop()
    assert not set(names) & set(namespaces())

    net = _network(tmp_path / "term", ["a"], WanConfig())
    try:
        relay = net._proc
        assert relay is not None and relay.pid is not None
        os.kill(relay.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while relay.is_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not relay.is_running()
        assert net.netns("a") not in namespaces()
        assert net.stats()["dropped"] >= 0
    finally:
        net.stop()


HARNESS = """
import sys, time
from pathlib import Path
from node.devnet.wan import WanConfig, WanNetwork
net = WanNetwork(Path(sys.argv[1]), ["a", "b"], WanConfig())
net.start()
print(net.netns("a"), net.netns("b"), flush=True)
time.sleep(120)
"""


def test_the_relay_removes_its_namespaces_when_its_parent_is_killed(tmp_path: Path) -> None:
    try:
        from node.devnet.wan import check_available

        check_available()
    except WanUnavailableError as exc:
        pytest.skip(str(exc))
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path)], stdout=subprocess.PIPE,
                               text=True, cwd=ROOT)  # fmt: skip
    assert harness.stdout is not None
    names = harness.stdout.readline().split()
    assert len(names) == 2 and set(names) <= set(namespaces())

    harness.kill()  # SIGKILL: no cleanup code of the harness runs
    harness.wait()
    deadline = time.monotonic() + 20
    while set(names) & set(namespaces()) and time.monotonic() < deadline:
        time.sleep(0.2)

    assert not set(names) & set(namespaces())


def test_a_bad_config_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="`loss`"):
        WanConfig(loss=1.5)
    with pytest.raises(ValueError, match="`delay_ms`"):
        WanConfig(delay_ms=(150.0, 50.0))
