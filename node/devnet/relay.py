"""The WAN link emulator process: one TAP device per network namespace, frames switched with delay and loss.

Run as root by :class:`node.devnet.wan.WanNetwork` (``python -m node.devnet.relay SPEC.json``). For each
port of the spec it creates the namespace, opens a TAP device on ``/dev/net/tun`` (``IFF_TAP | IFF_NO_PI``),
moves it into the namespace as ``wan0`` with the port's ``/24`` address, brings it and ``lo`` up, and, when a
rate is set, puts a ``tbf`` qdisc on ``wan0`` (each namespace's uplink is capped by the kernel). Then it
switches Ethernet frames between the TAP file descriptors like a learning switch (unknown and group
destinations are flooded, ARP included), holding each frame for the one-way delay of its link (one value
per pair of ports, drawn once from the seeded RNG in ``[delay_ms[0], delay_ms[1]]``) and dropping each
delivery with probability ``loss`` (same RNG). Frames of one link leave in arrival order.

It is bounded: it exits when its parent process dies (``PR_SET_PDEATHSIG`` and a ``getppid`` check), after
``max_lifetime_s``, on SIGTERM/SIGINT and on any error; on every exit it closes the TAP devices (the kernel
removes them) and deletes the namespaces it created. It prints one JSON line ``{"event": "wan.ready", ...}``
once the network is up and ``{"event": "wan.stats", ...}`` (frames forwarded and dropped) when it stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
PR_SET_PDEATHSIG = 1
READ_BATCH = 64
"""Frames read from one TAP device per wake-up, so that one busy port cannot starve the others."""
TBF_LATENCY_MS = 100
"""How long a packet may wait in a namespace's ``tbf`` queue before the kernel drops it."""


@dataclass(frozen=True)
class Port:
    """One namespace on the emulated network."""

    netns: str
    address: str  # IPv4 inside the namespace, on a /24 shared by all ports
    tap: str  # TAP name while in the root namespace (renamed to wan0 inside)


@dataclass(frozen=True)
class RelaySpec:
    """What the relay builds; written as JSON by :class:`node.devnet.wan.WanNetwork`."""

    ports: tuple[Port, ...]
    delay_ms: tuple[float, float]
    loss: float
    rate_mbit: float | None
    seed: int
    max_lifetime_s: float
    parent_pid: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RelaySpec:
        """Build the spec from its JSON form."""
        return cls(
            ports=tuple(Port(**p) for p in data["ports"]),
            delay_ms=(float(data["delay_ms"][0]), float(data["delay_ms"][1])),
            loss=float(data["loss"]),
            rate_mbit=None if data["rate_mbit"] is None else float(data["rate_mbit"]),
            seed=int(data["seed"]),
            max_lifetime_s=float(data["max_lifetime_s"]),
            parent_pid=int(data["parent_pid"]),
        )


def link_delays(n: int, delay_ms: tuple[float, float], rng: random.Random) -> dict[tuple[int, int], float]:
    """One-way delay in seconds for every ordered pair of ports, the same in both directions."""
    delays: dict[tuple[int, int], float] = {}
    for i in range(n):
        for j in range(i + 1, n):
            d = rng.uniform(delay_ms[0], delay_ms[1]) / 1000.0
            delays[(i, j)] = delays[(j, i)] = d
    return delays


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _in_ns(netns: str, *argv: str) -> None:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` in {netns} failed: {done.stderr.strip()}")


def open_tap(name: str) -> int:
    """Create a TAP device ``name`` and return its non-blocking file descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class Relay:
    """The switch: namespaces and TAP devices up, frames forwarded until stopped (module docstring)."""

    def __init__(self, spec: RelaySpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.delays = link_delays(len(spec.ports), spec.delay_ms, self.rng)
        self.fds: list[int] = []
        self.created: list[str] = []
        self.macs: dict[bytes, int] = {}
        self.queue: list[tuple[float, int, int, bytes]] = []
        self.seq = 0
        self.forwarded = 0
        self.dropped = 0
        self.stopping = False

    def setup(self) -> None:
        """Create every namespace, TAP device, address and qdisc."""
        for port in self.spec.ports:
            _ip("netns", "add", port.netns)
            self.created.append(port.netns)
            self.fds.append(open_tap(port.tap))
            _ip("link", "set", port.tap, "netns", port.netns)
            _ip("-n", port.netns, "link", "set", port.tap, "name", "wan0")
            _ip("-n", port.netns, "addr", "add", f"{port.address}/24", "dev", "wan0")
            _ip("-n", port.netns, "link", "set", "wan0", "up")
            _ip("-n", port.netns, "link", "set", "lo", "up")
            if self.spec.rate_mbit is not None:
                rate = f"{self.spec.rate_mbit:g}mbit"
                burst = str(max(3200, int(self.spec.rate_mbit * 1e6 / 8 / 250)))  # ~4 ms of traffic
                _in_ns(port.netns, "tc", "qdisc", "add", "dev", "wan0", "root", "tbf", "rate", rate,
                       "burst", burst, "latency", f"{TBF_LATENCY_MS}ms")  # fmt: skip

    def cleanup(self) -> None:
        """Close the TAP devices and delete the namespaces created (never raises)."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        for netns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=30, check=False)
        self.created.clear()

    def _deliver(self, src: int, dst: int, frame: bytes, now: float) -> None:
        if self.spec.loss > 0 and self.rng.random() < self.spec.loss:
            self.dropped += 1
            return
        self.seq += 1
        heapq.heappush(self.queue, (now + self.delays[(src, dst)], self.seq, dst, frame))

    def _switch(self, src: int, frame: bytes, now: float) -> None:
        if len(frame) < 14:
            return
        dst_mac, src_mac = frame[0:6], frame[6:12]
        if not src_mac[0] & 1:
            self.macs[src_mac] = src
        out = None if dst_mac[0] & 1 else self.macs.get(dst_mac)
        if out is None:
            for dst in range(len(self.fds)):
                if dst != src:
                    self._deliver(src, dst, frame, now)
        elif out != src:
            self._deliver(src, out, frame, now)

    def _flush(self, now: float) -> None:
        while self.queue and self.queue[0][0] <= now:
            _, _, dst, frame = heapq.heappop(self.queue)
            try:
                os.write(self.fds[dst], frame)
                self.forwarded += 1
            except OSError:  # the namespace's receive side is full: the frame is lost, as on a wire
                self.dropped += 1

    def run(self) -> None:
        """Forward frames until a signal, the parent's death or the lifetime ends it."""
        poller = select.poll()
        for fd in self.fds:
            poller.register(fd, select.POLLIN)
        index = {fd: i for i, fd in enumerate(self.fds)}
        deadline = time.monotonic() + self.spec.max_lifetime_s
        next_check = 0.0
        while not self.stopping:
            now = time.monotonic()
            if now >= next_check:
                if now > deadline or os.getppid() != self.spec.parent_pid:
                    return
                next_check = now + 0.5
            timeout_ms = 500.0
            if self.queue:
                timeout_ms = max(0.0, (self.queue[0][0] - now) * 1000.0)
            for fd, _ in poller.poll(timeout_ms):
                src = index[fd]
                for _ in range(READ_BATCH):
                    try:
                        frame = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    self._switch(src, frame, time.monotonic())
            self._flush(time.monotonic())


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m node.devnet.relay SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    spec = RelaySpec.from_json(json.loads(Path(args[0]).read_text()))
    with contextlib.suppress(OSError, AttributeError):  # die with the parent even if it is SIGKILLed
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    relay = Relay(spec)

    def stop(signum: int, frame: object) -> None:
        relay.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    try:
        relay.setup()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:  # the kernel or the tools refused
        print(json.dumps({"event": "wan.refused", "error": str(exc)}), flush=True)
        relay.cleanup()
        return 1
    try:
        delays = {f"{i}-{j}": round(d * 1000, 3) for (i, j), d in relay.delays.items() if i < j}
        print(json.dumps({"event": "wan.ready", "pid": os.getpid(), "delays_ms": delays}), flush=True)
        relay.run()
    except Exception as exc:  # reported, then the namespaces are removed all the same
        print(json.dumps({"event": "wan.error", "error": str(exc)}), flush=True)
        code = 1
    finally:
        relay.cleanup()
        print(json.dumps({"event": "wan.stats", "forwarded": relay.forwarded, "dropped": relay.dropped}),
              flush=True)  # fmt: skip
    return code


if __name__ == "__main__":
    sys.exit(main())
