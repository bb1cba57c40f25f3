"""WAN conditions on one machine: network namespaces joined by a userspace link emulator.

:class:`WanNetwork` starts :mod:`node.devnet.relay` as a root child process, which creates one network
namespace per label (``fcwan-<pid>-<n>-<label>``), each with a TAP device ``wan0`` holding ``<subnet>.<k>/24``
(k = 1, 2, ... in label order), caps each namespace's uplink with a ``tbf`` qdisc, and switches frames
between them with a seeded per-link one-way delay and per-frame loss. Processes join a namespace through
:meth:`WanNetwork.prefix` (``ip netns exec NS``); the harness in the root namespace reaches a service inside
one through :meth:`WanNetwork.forward` (a TCP forward from ``127.0.0.1``). All traffic stays on loopback
or on addresses inside the namespaces created here, which the relay removes when it stops (also on
SIGTERM, on errors, when this process dies, and after ``max_lifetime_s``).

This needs root, ``ip`` and ``tc`` (iproute2), ``/dev/net/tun`` and a kernel that allows network
namespaces, TAP devices and the ``tbf`` qdisc; :func:`check_available` and :meth:`WanNetwork.start` raise
:class:`WanUnavailableError` naming what is missing. The kernel's ``netem`` qdisc is not needed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from node.devnet.services import ManagedProcess, ServiceError, pid_alive

PREFIX = "fcwan"
_COUNTER = itertools.count()
_STALE = re.compile(rf"^{PREFIX}-(\d+)-")


class WanUnavailableError(ServiceError):
    """The emulated network cannot be built here (not root, tools or kernel features missing)."""


@dataclass(frozen=True)
class WanConfig:
    """Link conditions of the emulated network.

    ``delay_ms`` bounds the one-way delay of each link (drawn once per pair of namespaces, so a round trip
    takes twice that), ``loss`` is the probability that a frame is dropped, ``rate_mbit`` caps each
    namespace's uplink (``None``: no cap), ``seed`` fixes delays and drops, and ``max_lifetime_s`` bounds
    how long the emulator runs.
    """

    delay_ms: tuple[float, float] = (50.0, 150.0)
    loss: float = 0.01
    rate_mbit: float | None = 100.0
    seed: int = 0
    max_lifetime_s: float = 3600.0
    subnet: str = "10.77.0"

    def __post_init__(self) -> None:
        lo, hi = self.delay_ms
        if not 0 <= lo <= hi <= 10_000:
            raise ValueError(f"`delay_ms` must satisfy 0 <= low <= high <= 10000, got {self.delay_ms}")
        if not 0 <= self.loss < 1:
            raise ValueError(f"`loss` must be in [0, 1), got {self.loss}")
        if self.rate_mbit is not None and not 0.1 <= self.rate_mbit <= 10_000:
            raise ValueError(f"`rate_mbit` must be in [0.1, 10000] or None, got {self.rate_mbit}")
        if self.max_lifetime_s <= 0:
            raise ValueError(f"`max_lifetime_s` must be > 0, got {self.max_lifetime_s}")
        parts = self.subnet.split(".")
        if len(parts) != 3 or not all(p.isdigit() and int(p) < 256 for p in parts):
            raise ValueError(f"`subnet` must be the first three octets of an IPv4 /24, got {self.subnet!r}")


def check_available() -> None:
    """Raise :class:`WanUnavailableError` naming everything missing for :class:`WanNetwork`."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces and TAP devices need CAP_NET_ADMIN and CAP_SYS_ADMIN)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` command (iproute2)")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        missing.append("a readable and writable /dev/net/tun")
    if missing:
        raise WanUnavailableError("WAN emulation needs " + ", ".join(missing))


def remove_stale_namespaces() -> list[str]:
    """Delete ``fcwan-*`` namespaces whose creating process is gone (a SIGKILLed harness); return them."""
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False)
    removed = []
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _STALE.match(name)
        if match and not pid_alive(int(match.group(1))):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)
            removed.append(name)
    return removed


def namespaces() -> list[str]:
    """Names of the network namespaces that exist now."""
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.split()]


class WanNetwork:
    """Namespaces joined by the link emulator; a service with ``start``/``wait_until_ready``/``stop``.

    Parameters
    ----------
    folder
        Where the relay's spec and log go.
    labels
        One namespace per label, in address order (``labels[0]`` gets ``<subnet>.1``).
    config
        Link conditions.
    """

    def __init__(self, folder: Path, labels: Sequence[str], config: WanConfig = WanConfig()) -> None:
        if not labels or len(labels) > 250 or len(set(labels)) != len(labels):
            raise ValueError(f"`labels` must be 1-250 distinct names, got {list(labels)}")
        for label in labels:
            if not re.fullmatch(r"[a-z0-9]{1,12}", label):
                raise ValueError(f"label {label!r} must be 1-12 lowercase letters or digits")
        self.folder = Path(folder)
        self.labels = list(labels)
        self.config = config
        n = next(_COUNTER)
        self._tag = f"{PREFIX}-{os.getpid()}-{n}"
        self._tap = f"fw{os.getpid() % 10_000_000}x{n % 100}p"
        self._proc: ManagedProcess | None = None
        self._forwards: list[ManagedProcess] = []
        self.delays_ms: dict[tuple[str, str], float] = {}

    def netns(self, label: str) -> str:
        """Return the namespace of ``label``."""
        self._index(label)
        return f"{self._tag}-{label}"

    def address(self, label: str) -> str:
        """Return the IPv4 address of ``label`` inside its namespace."""
        return f"{self.config.subnet}.{self._index(label) + 1}"

    def prefix(self, label: str) -> list[str]:
        """Return the command prefix that runs a program inside ``label``'s namespace."""
        return ["ip", "netns", "exec", self.netns(label)]

    def _index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise KeyError(f"no namespace labelled {label!r}; labels are {self.labels}") from None

    def start(self, timeout: float = 60.0) -> None:
        """Start the relay and wait until every namespace is up.

        Raises
        ------
        WanUnavailableError
            If this machine cannot build the network (the message names what refused).
        ServiceError
            If the relay fails otherwise.
        """
        check_available()
        remove_stale_namespaces()
        self.folder.mkdir(parents=True, exist_ok=True)
        ports = [
            {"netns": self.netns(label), "address": self.address(label), "tap": f"{self._tap}{i}"}
            for i, label in enumerate(self.labels)
        ]
        spec = {**asdict(self.config), "ports": ports, "parent_pid": os.getpid()}
        spec_path = self.folder / "relay.json"
        spec_path.write_text(json.dumps(spec))
        log_path = self.folder / "relay.log"
        log_path.unlink(missing_ok=True)  # readiness is read from this log
        self._proc = ManagedProcess(
            "wan-relay",
            [sys.executable, "-m", "node.devnet.relay", str(spec_path)],
            log_path,
            ready=lambda proc: '"wan.ready"' in proc.log_text(),
            cwd=Path(__file__).resolve().parents[2],
        )
        self._proc.start()
        try:
            self._proc.wait_until_ready(timeout=timeout, interval=0.05)
        except ServiceError as exc:
            self.stop()
            refused = [e for e in _events(log_path) if e.get("event") == "wan.refused"]
            if refused:
                raise WanUnavailableError(f"WAN emulation refused: {refused[-1]['error']}") from exc
            raise
        ready = [e for e in _events(log_path) if e.get("event") == "wan.ready"][-1]
        for key, ms in ready["delays_ms"].items():
            i, j = (int(x) for x in key.split("-"))
            a, b = self.labels[i], self.labels[j]
            self.delays_ms[(a, b)] = self.delays_ms[(b, a)] = float(ms)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Wait until the relay reported the network up (``start`` already does)."""
        if self._proc is None:
            raise ServiceError("wan: not started")
        self._proc.wait_until_ready(timeout=timeout)

    def forward(self, label: str, port: int, timeout: float = 30.0) -> int:
        """Forward a free ``127.0.0.1`` port of this namespace to ``address(label):port``; return it."""
        log_path = self.folder / f"forward-{label}-{port}.log"
        log_path.unlink(missing_ok=True)
        found: list[int] = []

        def ready(proc: ManagedProcess) -> bool:
            for e in _events(log_path):
                if e.get("event") == "forward.ready":
                    found.append(int(e["port"]))
                    return True
            return False

        argv = [
            sys.executable,
            "-m",
            "node.devnet.forward",
            self.netns(label),
            self.address(label),
            str(port),
        ]
        argv += [str(os.getpid()), str(self.config.max_lifetime_s)]
        proc = ManagedProcess(f"wan-forward-{label}-{port}", argv, log_path, ready=ready,
                              cwd=Path(__file__).resolve().parents[2])  # fmt: skip
        proc.start()
        self._forwards.append(proc)
        proc.wait_until_ready(timeout=timeout)
        return found[0]

    def stats(self) -> dict[str, int]:
        """Frames forwarded and dropped, as the relay reported them when it stopped (empty before)."""
        if self._proc is None:
            return {}
        last = [e for e in _events(self._proc.log_path) if e.get("event") == "wan.stats"]
        return {k: int(v) for k, v in last[-1].items() if k != "event"} if last else {}

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the forwards and the relay (which removes its namespaces); remove any it left behind."""
        for proc in self._forwards:
            proc.stop(timeout=5.0)
        self._forwards.clear()
        if self._proc is not None:
            self._proc.stop(timeout=timeout)
        left = [name for name in namespaces() if name.startswith(self._tag + "-")]
        for name in left:  # the relay was killed before its cleanup
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30, check=False)

    def __enter__(self) -> WanNetwork:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _events(path: Path) -> list[dict[str, Any]]:
    """Return the JSON lines of a relay or forward log (other lines are skipped)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
