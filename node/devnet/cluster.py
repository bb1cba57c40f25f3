"""A cluster of node processes on loopback over a running devnet: what tests, the demo and benchmarks start.

:class:`LocalCluster` creates one node home per member with ``fedchain init`` (importing the devnet's funded
dev keys, so members can pay gas), creates a run with ``fedchain run create`` from member 0, and starts each
member as its own ``fedchain node start`` OS process (a :class:`node.devnet.services.ManagedProcess`), every
node dialling every other one. Progress is read from each node's JSON-lines event log.

Each of these commands is a fresh interpreter (``python -c 'from node.cli import main; main()' ...``) unless
a :class:`node.devnet.launcher.Launcher` forks it from its pre-imported state: the cluster's own
``launchers`` (one per member, each under the member's command prefix), else the process-wide one set with
:func:`use_launcher` for members without a command prefix (the test harness sets one; the demo does not).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.console.eventlog import read_events
from node.devnet.launcher import Launcher
from node.devnet.services import ManagedProcess, ServiceError

_CLI = [sys.executable, "-c", "from node.cli import main; main()"]
TINY_NODE_MIB = 450
"""Proportional set size of one tiny-model node process (torch, transformers, the p2p host; measured by
bench/scale.py at about 440 MiB with 4 nodes sharing the libraries), rounded up."""
CLI_TIMEOUT_S = 600.0
"""Upper bound on one ``fedchain init`` / ``run create`` child process."""
NODE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
"""Environment of every node process (over the harness's own): offline hub, one intra-op thread."""
INIT_PARALLELISM = 8
"""``fedchain init`` processes run at once (each imports the CLI and derives a keystore key)."""


def available_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Return the machine's ``MemAvailable`` in MiB (``None`` where the kernel does not report it)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_capacity(size: int, node_memory_mib: int, available_mib: int | None = None) -> None:
    """Refuse ``size`` node processes that cannot possibly fit into the available memory.

    ``available_mib`` defaults to :func:`available_memory_mib`; where it is unknown nothing is refused.

    Raises
    ------
    ValueError
        Naming the size, the estimate and what is available.
    """
    if node_memory_mib < 1:
        raise ValueError(f"`node_memory_mib` must be >= 1, got {node_memory_mib}")
    available = available_memory_mib() if available_mib is None else available_mib
    need = size * node_memory_mib
    if available is not None and need > available:
        raise ValueError(
            f"`size` {size} cannot run on this machine: {size} node processes need about {need} MiB "
            f"({node_memory_mib} MiB each), {available} MiB is available"
        )


def _netns(prefix: Sequence[str]) -> str | None:
    """Return the namespace of an ``ip netns exec NS`` prefix, else ``None``."""
    parts = list(prefix)
    return parts[3] if len(parts) == 4 and parts[:3] == ["ip", "netns", "exec"] else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_launcher: Launcher | None = None


def use_launcher(launcher: Launcher | None) -> Launcher | None:
    """Fork un-prefixed ``fedchain`` commands from ``launcher`` (``None``: fresh processes); return the last.

    Applies to :func:`fedchain` and to the members without a command prefix of every :class:`LocalCluster`
    that has no ``launchers`` of its own.
    """
    global _launcher
    previous, _launcher = _launcher, launcher
    return previous


def current_launcher() -> Launcher | None:
    """Return the launcher set with :func:`use_launcher`, if any."""
    return _launcher


def fedchain(
    *args: str, timeout: float = 120.0, prefix: Sequence[str] = (), launcher: Launcher | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``fedchain`` CLI in a child process and return its completed process (never raises on rc).

    ``prefix`` goes before the command, e.g. ``["ip", "netns", "exec", NS]`` (see :mod:`node.devnet.wan`).
    The child is forked by ``launcher``, else (without a ``prefix``) by the one of :func:`use_launcher`,
    else it is a fresh interpreter.
    """
    chosen = launcher if launcher is not None else (_launcher if not prefix else None)
    if chosen is not None:
        return chosen.run(args, timeout=timeout)
    argv = [*prefix, *_CLI, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class Member:
    """One member's home and identity."""

    index: int
    home: Path
    address: str
    peer_id: str
    port: int
    host: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()  # command prefix of its processes (a network namespace)

    @property
    def multiaddr(self) -> str:
        """Where other members dial this one."""
        return f"/ip4/{self.host}/tcp/{self.port}/p2p/{self.peer_id}"

    @property
    def log_path(self) -> Path:
        """The node's JSON-lines event log."""
        return self.home / "node.jsonl"


class LocalCluster:
    """N members over a devnet, each a separate ``fedchain node`` process.

    Parameters
    ----------
    folder
        Where the member homes go.
    devnet
        A running devnet's ``DevnetState`` (rpc_url, runs_address, ipfs_api).
    size
        Number of members, >= 1. Dev account i + 1 pays member i's gas (account 0 deployed the contracts),
        so the devnet must fund at least ``size + 1`` accounts (``AnvilConfig(accounts=size + 1)``).
    store
        ``"local"``: each node keeps its own embedded store and fetches from peers, IPFS last;
        ``"ipfs"``: every node uses the devnet's IPFS daemon as its store.
    node_memory_mib
        Memory one node process needs (about 450 MiB for the tiny model); the cluster refuses a size whose
        processes cannot fit into the machine's available memory (see :func:`check_capacity`).
    hosts
        Per member, the IPv4 address its libp2p host listens on and is dialled at (default 127.0.0.1).
    prefixes
        Per member, a command prefix for its ``fedchain`` processes, e.g. ``["ip", "netns", "exec", NS]``
        to run each member in its own network namespace (:mod:`node.devnet.wan`); the devnet's URLs must
        then be reachable from there.
    launchers
        Per member, the :class:`~node.devnet.launcher.Launcher` that forks its ``fedchain`` commands (``None``
        for fresh processes); a member whose prefix is ``ip netns exec NS`` is forked into namespace NS.
        Default: the one of :func:`use_launcher` for members without a prefix, fresh processes for the others.

    Raises
    ------
    ValueError
        If ``size`` < 1, the devnet funds too few accounts, or the machine lacks the memory.
    """

    def __init__(
        self,
        folder: Path,
        devnet: Any,
        size: int,
        *,
        store: str = "local",
        node_memory_mib: int = TINY_NODE_MIB,
        hosts: Sequence[str] | None = None,
        prefixes: Sequence[Sequence[str]] | None = None,
        launchers: Sequence[Launcher | None] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"`size` must be >= 1, got {size}")
        if store not in ("local", "ipfs"):
            raise ValueError(f"`store` must be 'local' or 'ipfs', got {store!r}")
        funded = len(getattr(devnet, "accounts", ()))
        if funded < size + 1:
            raise ValueError(
                f"`size` {size} needs {size + 1} funded dev accounts (member i pays with account i + 1), "
                f"the devnet funds {funded}: start it with AnvilConfig(accounts={size + 1}) "
                f"or `fedchain devnet up --accounts {size + 1}`"
            )
        check_capacity(size, node_memory_mib)
        self.folder = Path(folder)
        self.devnet = devnet
        self.size = size
        self.store = store
        for name, given in (("hosts", hosts), ("prefixes", prefixes), ("launchers", launchers)):
            if given is not None and len(given) != size:
                raise ValueError(f"`{name}` must have one entry per member ({size}), got {len(given)}")
        self.hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * size
        self.prefixes = [tuple(p) for p in prefixes] if prefixes is not None else [()] * size
        self.launchers = list(launchers) if launchers is not None else None
        for i, launcher in enumerate(self.launchers or []):
            if launcher is not None and self.prefixes[i] and _netns(self.prefixes[i]) is None:
                raise ValueError(
                    f"a launcher forks member {i} into `ip netns exec NS` only, not {self.prefixes[i]}"
                )
        self.members: list[Member] = []
        self.processes: dict[int, ManagedProcess] = {}

    def launcher(self, i: int) -> Launcher | None:
        """Return the launcher that forks member ``i``'s commands, or ``None`` for fresh processes."""
        if self.launchers is not None:
            return self.launchers[i]
        return _launcher if not self.prefixes[i] else None

    def init(self) -> list[Member]:
        """Create every member's home with ``fedchain init`` (dev key i + 1 imported)."""
        from ledger.chain import dev_accounts

        accounts = dev_accounts("anvil", self.size + 1)[1:]
        ports = [_free_port() for _ in range(self.size)]
        store = "local" if self.store == "local" else f"ipfs:{self.devnet.ipfs_api}"

        def init_one(i: int) -> Member:
            home = self.folder / f"node{i}"
            home.mkdir(parents=True, exist_ok=True)
            key_file = home / "import.key"
            key_file.write_text(bytes(accounts[i].key).hex())
            args = ["init", "--home", str(home), "--import-key-file", str(key_file)]
            args += [
                "--rpc-url",
                self.devnet.rpc_url,
                "--registry",
                self.devnet.runs_address,
                "--store",
                store,
            ]
            args += ["--ipfs-api", self.devnet.ipfs_api or "", "--listen-port", str(ports[i])]
            args += ["--listen-host", self.hosts[i]]
            # a loaded machine (N imports of the CLI at once, other jobs) can take minutes here
            args += ["--kdf-iterations", "1024", "--json"]
            done = fedchain(*args, timeout=CLI_TIMEOUT_S, launcher=self.launcher(i))  # in the root namespace
            key_file.unlink()
            if done.returncode != 0:
                raise ServiceError(f"fedchain init for member {i} failed: {done.stderr.strip()}")
            out = json.loads(done.stdout)
            return Member(i, home, out["address"], out["peer_id"], ports[i], self.hosts[i], self.prefixes[i])

        with ThreadPoolExecutor(max_workers=min(self.size, INIT_PARALLELISM)) as pool:
            self.members = list(pool.map(init_one, range(self.size)))
        return self.members

    def create_run(self, spec: Path) -> int:
        """Create a run from member 0's home; return its id."""
        home, prefix = str(self.members[0].home), self.members[0].prefix
        args = ("run", "create", "--spec", str(spec), "--home", home, "--json")
        launcher = self.launcher(0)
        if launcher is not None:
            done = launcher.run(args, timeout=CLI_TIMEOUT_S, netns=_netns(prefix))
        else:
            done = fedchain(*args, timeout=CLI_TIMEOUT_S, prefix=prefix)
        if done.returncode != 0:
            raise ServiceError(f"fedchain run create failed: {done.stderr.strip()}")
        return int(json.loads(done.stdout)["run_id"])

    def process(self, i: int, run_id: int, data: str, *, extra: Sequence[str] = ()) -> ManagedProcess:
        """Return a (not yet started) node process for member ``i``."""
        member = self.members[i]
        argv = [
            "node",
            "start",
            "--home",
            str(member.home),
            "--run",
            str(run_id),
            "--data",
            data,
            "--quiet",
        ]
        for other in self.members:
            if other.index != i:
                argv += ["--bootstrap", other.multiaddr]
        before = len([e for e in read_events(member.log_path) if e.get("event") == "node.ready"])

        def ready(_: ManagedProcess) -> bool:
            return len([e for e in read_events(member.log_path) if e.get("event") == "node.ready"]) > before

        env = NODE_ENV
        launcher = self.launcher(i)
        if launcher is not None:
            log_path, netns = member.home / "stdout.log", _netns(member.prefix)
            return launcher.process(f"node{i}", [*argv, *extra], log_path, ready, env=env, netns=netns)
        argv = [*member.prefix, *_CLI, *argv, *extra]
        return ManagedProcess(f"node{i}", argv, member.home / "stdout.log", ready, env=env)

    def start(
        self,
        run_id: int,
        data: Sequence[str],
        *,
        indices: Sequence[int] | None = None,
        extra: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        """Start member processes (all, or ``indices``) with their data sources; wait until each is ready.

        ``extra`` adds command-line flags per member, e.g. ``{3: ["--byzantine", "scaling:10"]}``.
        """
        chosen = list(range(self.size)) if indices is None else list(indices)
        for i in chosen:
            proc = self.process(i, run_id, data[i], extra=(extra or {}).get(i, ()))
            proc.start()
            self.processes[i] = proc
        for i in chosen:  # N processes import torch at once on a few cores: allow for it
            self.processes[i].wait_until_ready(timeout=180.0 + 10.0 * len(chosen), interval=0.2)

    def events(self, i: int, name: str | None = None) -> list[dict[str, Any]]:
        """Member ``i``'s logged events (of one name, or all)."""
        events = read_events(self.members[i].log_path)
        return [e for e in events if name is None or e.get("event") == name]

    def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``predicate`` until it holds; after ``timeout`` raise a ServiceError naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            for i, proc in self.processes.items():
                if not proc.is_running() and not self.events(i, "run.done"):
                    raise ServiceError(f"node{i} exited while waiting for {what}:\n{proc.tail(30)}")
            time.sleep(0.5)
        raise ServiceError(f"timed out after {timeout:g} s waiting for {what}")

    def stop(self) -> None:
        """Stop every node process (SIGINT, then SIGTERM, then SIGKILL)."""
        for proc in self.processes.values():
            proc.stop(timeout=15.0)
        self.processes.clear()
