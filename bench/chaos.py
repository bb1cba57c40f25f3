"""Fault campaign: seeded perturbations of a live tiny-model federation, then invariant checks on every run.

One devnet (anvil with ``--block-time`` blocks + the js-ipfs daemon) and ``--nodes`` member homes serve the
whole campaign; each of the ``--runs`` runs is a new on-chain run of the tiny spec (``node/specs/tiny.toml``
with ``--rounds`` rounds, ``--local-steps`` steps, the join / submit / vote windows given in seconds), started
on every member as a ``fedchain node`` process storing in the IPFS daemon. Run ``k`` draws its schedule from
``random.Random(seed + k)``: one to ``--max-faults`` distinct perturbations, applied one after the other
once round 0 has opened, each on a drawn member:

* ``kill``: SIGKILL the node, wait 0-4 s, restart it with the same command (it resumes from its state);
* ``pause``: SIGSTOP the node for 3-12 s, then SIGCONT;
* ``ipfs``: SIGKILL the IPFS daemon, wait 2-6 s, restart it on the same repository and address;
* ``partition``: cut the member off the other members for 4-12 s (blackhole routes inside the network
  namespaces, both ways; chain and IPFS stay reachable);
* ``disk_full``: fill the tmpfs that holds the last member's home for 4-12 s, then free it.

Partitions need each member in its own network namespace (:mod:`node.devnet.wan`, links without delay or
loss here), so the devnet runs in a services namespace; the disk needs ``mount -t tmpfs``. Both need root:
where the machine refuses, the campaign runs on loopback without them and names the reason. After each run
:func:`bench.chaos_check.check_run` checks the invariants (finality, availability, no double action,
liveness once the faults healed, database integrity) and a table row is printed; the logs, databases and
schedule of every run with a violation are copied under ``--keep-logs``.

Every member's ``fedchain`` commands are forked from one pre-imported launcher (:mod:`node.devnet.launcher`,
started with the campaign), each node process into its member's network namespace: a node process, or a
killed node's restart, is ready seconds after it starts instead of importing torch, transformers, web3 and
libp2p first. ``--fresh-processes`` starts fresh interpreters instead.

Runs follow each other without idle time: before a run, the campaign checks that anvil answers and that the
shared IPFS daemon stores and serves a block (restarting the daemon, and saying so in the row, when it does
not); it creates the run inside its own process (the steps of ``fedchain run create`` without a new
interpreter loading torch and the model each time); and it creates the next run and starts its nodes as soon
as this run's nodes have stopped, so their start-up overlaps this run's checks. Every row carries
``phases``: seconds from the run's preparation to the end of each phase (created, nodes ready, round 0
open, faults healed, run done, stopped, checked) and the nodes' own join, ready and finality times.

    python bench/chaos.py --runs 20 --seed 1
    python bench/chaos.py --runs 3 --seed 100 --json --keep-logs /tmp/chaos-failures
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chaos_check import NodeView, check_run  # noqa: E402
from bench.round import SKILLS  # noqa: E402
from bench.round import _spec as round_spec  # noqa: E402

KINDS = ("kill", "pause", "ipfs", "partition", "disk_full")
DURATIONS_S = {
    "kill": (0.0, 4.0),
    "pause": (3.0, 12.0),
    "ipfs": (2.0, 6.0),
    "partition": (4.0, 12.0),
    "disk_full": (4.0, 12.0),
}
"""How long each perturbation lasts (seconds, drawn uniformly): the kill's downtime before the restart."""
GAP_S = (0.0, 3.0)
"""Seconds between round 0's opening (or the previous perturbation's end) and the next perturbation."""
DISK_MIB = 64
"""Size of the tmpfs that holds the last member's home (its database, log, key and config)."""


@dataclass(frozen=True)
class Fault:
    """One scheduled perturbation."""

    kind: str
    node: int
    gap_s: float
    duration_s: float

    def label(self) -> str:
        """A short table label, e.g. ``pause:n1:7s``."""
        where = "" if self.kind == "ipfs" else f":n{self.node}"
        return f"{self.kind}{where}:{self.duration_s:.0f}s"


def schedule(seed: int, nodes: int, kinds: tuple[str, ...], max_faults: int) -> list[Fault]:
    """Draw one run's perturbations from ``random.Random(seed)``: 1..``max_faults`` distinct kinds.

    ``disk_full`` always targets the last member (whose home is on the tmpfs).
    """
    if not kinds:
        return []
    rng = random.Random(seed)
    picked = rng.sample(kinds, k=rng.randint(1, min(max_faults, len(kinds))))
    faults = []
    for kind in picked:
        node = nodes - 1 if kind == "disk_full" else rng.randrange(nodes)
        lo, hi = DURATIONS_S[kind]
        faults.append(Fault(kind, node, round(rng.uniform(*GAP_S), 1), round(rng.uniform(lo, hi), 1)))
    return faults


def _signalled(proc: Any, sig: int) -> bool:
    """Send ``sig`` to a node's process; ``False`` when it has no process or its process has ended."""
    if proc is None or proc.pid is None or proc.returncode is not None:
        return False
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system is full; return the file."""
    path = folder / "chaos-filler"
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        for size in (len(chunk), 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk[:size])
    return path


@dataclass
class Pending:
    """A run that :meth:`Campaign.prepare` created and whose nodes it started."""

    index: int
    seed: int
    started: float
    faults: list[Fault]
    data: list[str] = field(default_factory=list)
    run_id: int | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, phase: str) -> None:
        """Record that ``phase`` ended now (seconds since the run's preparation began)."""
        self.marks[phase] = round(time.monotonic() - self.started, 1)


class Campaign:
    """The campaign's devnet, network and member homes (a context manager); :meth:`run` runs one seed."""

    def __init__(self, folder: Path, args: argparse.Namespace) -> None:
        self.folder = folder
        self.args = args
        self.skipped: dict[str, str] = {}
        self.kinds: tuple[str, ...] = ()
        self._stack = contextlib.ExitStack()
        self.net: Any = None
        self.devnet: Any = None
        self.host: Any = None
        self.cluster: Any = None
        self.launchers: list[Any] = []
        self.disk: Path | None = None

    def __enter__(self) -> Campaign:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        from node.devnet.anvil import AnvilConfig
        from node.devnet.cluster import LocalCluster
        from node.devnet.harness import Devnet
        from node.devnet.wan import WanConfig, WanNetwork, WanUnavailableError, check_available

        size = self.args.nodes
        launcher = self._start_launcher()
        anvil = AnvilConfig(block_time=self.args.block_time, accounts=size + 1)
        labels = ["svc", *(f"n{i}" for i in range(size))]
        try:
            check_available()
            wan = WanConfig(
                delay_ms=(0.0, 0.0), loss=0.0, rate_mbit=None, seed=self.args.seed, max_lifetime_s=86400.0
            )
            self.net = WanNetwork(self.folder / "wan", labels, wan)
            self.net.start()
            self._stack.callback(self.net.stop)
        except WanUnavailableError as exc:
            self.net = None
            self.skipped["partition"] = f"no network namespaces: {exc}"
            self.skipped["ipfs"] = "the loopback IPFS daemon gets a new API port on restart"
        nodes_folder = self.folder / "nodes"
        self.disk = nodes_folder / f"node{size - 1}"
        self.disk.mkdir(parents=True)
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(self.disk)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if mount.returncode != 0:
            self.skipped["disk_full"] = f"mount -t tmpfs refused: {mount.stderr.strip() or mount.returncode}"
            self.disk = None
        else:
            disk = self.disk
            self._stack.callback(
                lambda: subprocess.run(
                    ["umount", "-l", str(disk)], capture_output=True, timeout=30, check=False
                )
            )
        if self.net is not None:
            from node.devnet.wan_devnet import WanDevnet

            self.devnet = WanDevnet(self.folder / "devnet", self.net, anvil)
            self.host, for_nodes = self.devnet.start()
            hosts = [self.net.address(n) for n in labels[1:]]
            prefixes: list[list[str]] | None = [self.net.prefix(n) for n in labels[1:]]
        else:
            self.devnet = Devnet(self.folder / "devnet", anvil, ipfs=True)
            self.host = for_nodes = self.devnet.start()
            hosts, prefixes = None, None
        self._stack.callback(self.devnet.stop)
        if launcher is not None:
            launcher.wait_until_ready()
        launchers = [launcher] * size if launcher is not None else None
        self.cluster = LocalCluster(
            nodes_folder, for_nodes, size, store="ipfs", hosts=hosts, prefixes=prefixes, launchers=launchers
        )
        self._stack.callback(self.cluster.stop)
        self.cluster.init()
        self.kinds = tuple(k for k in KINDS if k not in self.skipped)

    def _start_launcher(self) -> Any:
        """Start (not waiting for it) the launcher that forks every member's commands; ``None`` if fresh ones.

        Its imports then overlap the namespaces' and the devnet's start; :meth:`_start` waits for it before
        the member homes are made.
        """
        from node.devnet.launcher import Launcher

        if self.args.fresh_processes:
            return None
        launcher = Launcher(
            self.folder / "launcher", env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        )
        self._stack.callback(launcher.stop)
        launcher.start(timeout=300.0, wait=False)
        self.launchers = [launcher]
        return launcher

    # ---- perturbations -----------------------------------------------------------------------------------

    def _ipfs(self) -> Any:
        return self.devnet.ipfs

    def _routes(self, fault: Fault, action: str) -> None:
        """Add or delete the blackhole routes that cut member ``fault.node`` off the other members."""
        me = f"n{fault.node}"
        others = [f"n{i}" for i in range(self.args.nodes) if i != fault.node]
        pairs = [(me, o) for o in others] + [(o, me) for o in others]
        for src, dst in pairs:
            subprocess.run(
                [*self.net.prefix(src), "ip", "route", action, "blackhole", f"{self.net.address(dst)}/32"],
                capture_output=True,
                timeout=30,
                check=action == "add",
            )

    @contextlib.contextmanager
    def _applied(self, fault: Fault, run_id: int, data: list[str], notes: list[str]) -> Iterator[bool]:
        """Apply ``fault`` for the body; heal it on the way out, whatever happens.

        Yields whether it was applied: a ``kill`` or ``pause`` of a node whose process has already ended
        (it exits once the run is complete) is not, and ``notes`` say so.
        """
        proc = self.cluster.processes.get(fault.node)
        if fault.kind in ("kill", "pause"):
            sig = signal.SIGKILL if fault.kind == "kill" else signal.SIGSTOP
            if not _signalled(proc, sig):
                notes.append(f"{fault.label()} not applied: node{fault.node} had already exited")
                yield False
                return
            assert proc is not None and proc.pid is not None  # _signalled checked both
            pid = proc.pid
            if fault.kind == "kill":
                proc.stop(timeout=5.0)
            try:
                yield True
            finally:
                if fault.kind == "kill":
                    self._restart(fault, run_id, data, notes)
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
        elif fault.kind == "ipfs":
            ipfs = self._ipfs()
            if ipfs.pid is not None:
                os.kill(ipfs.pid, signal.SIGKILL)
            ipfs.stop(timeout=5.0)
            try:
                yield True
            finally:
                ipfs.start(timeout=120.0)
        elif fault.kind == "partition":
            try:
                self._routes(fault, "add")
                yield True
            finally:
                self._routes(fault, "del")
        elif fault.kind == "disk_full":
            assert self.disk is not None  # the kind is skipped without the tmpfs
            filler = _fill(self.disk)
            try:
                yield True
            finally:
                filler.unlink(missing_ok=True)
        else:  # pragma: no cover - KINDS is closed
            raise ValueError(f"unknown perturbation {fault.kind!r}")

    # ---- one run -----------------------------------------------------------------------------------------

    def _healthy_ipfs(self) -> str | None:
        """Store and read back a block through the shared IPFS daemon: ``None`` if it works, else why not."""
        from p2p.storage.ipfs import IpfsStore

        probe = f"chaos health probe {time.time_ns()}".encode()
        store = IpfsStore(self.host.ipfs_api, timeout=15.0)
        try:
            return None if store.get(store.put(probe)) == probe else "the daemon returned other bytes"
        except Exception as exc:  # any failure is a daemon that is not usable
            return f"{type(exc).__name__}: {exc}"
        finally:
            store.close()

    def _ensure_devnet(self) -> list[str]:
        """Check that anvil answers and the IPFS daemon stores and serves; restart the daemon if it does not.

        Returns notes for the run's row (an IPFS restart done here, never silently). Raises when anvil does
        not answer or the daemon stays unusable after a restart: the campaign cannot go on.
        """
        from ledger.chain import connect

        _ = connect(self.host.rpc_url).eth.block_number  # raises if anvil is gone
        problem = self._healthy_ipfs()
        if problem is None:
            return []
        ipfs = self._ipfs()
        ipfs.stop(timeout=5.0)
        ipfs.start(timeout=120.0)
        again = self._healthy_ipfs()
        if again is not None:
            raise RuntimeError(f"the IPFS daemon is unusable after a restart: {again} (before: {problem})")
        return [f"ipfs restarted before the run: {problem}"]

    def _create_run(self, spec_path: Path) -> int:
        """Create a run as ``fedchain run create`` does, from member 0's key, inside this process.

        The same steps as the command (``record_start`` fills the spec's starting point, the canonical bytes
        go to the IPFS daemon and are pinned, ``createRun`` with the spec's windows), without a fresh
        interpreter importing torch and loading the model for every run; the URLs are the campaign's own
        (the member's config names addresses inside its network namespace).
        """
        from ledger.types import Admission, RunConfig
        from node.home import NodeHome
        from node.protocol.model import record_start
        from node.protocol.runner import open_chain, open_stores
        from node.runspec import RunSpec

        home = NodeHome(self.cluster.members[0].home)
        config = home.load_config().replace(
            **{
                "chain.rpc_url": self.host.rpc_url,
                "storage.store": f"ipfs:{self.host.ipfs_api}",
                "storage.ipfs_api": self.host.ipfs_api,
            }
        )
        spec = record_start(RunSpec.from_toml(spec_path))
        data = spec.canonical_bytes()
        chain = open_chain(home, config, latest=True)
        own, _ = open_stores(home, config)
        try:
            cid = str(own.put(data))
            own.pin(cid)
        finally:
            with contextlib.suppress(Exception):
                own.close()
        params = spec.chain
        run_config = RunConfig(
            spec_sha256=spec.sha256(),
            spec_cid=cid,
            quorum_bps=params.quorum_bps,
            submit_blocks=params.submit_blocks,
            vote_blocks=params.vote_blocks,
            min_updates=params.min_updates,
            admission=Admission.ALLOWLIST if params.admission == "allowlist" else Admission.OPEN,
            committee_size=params.committee_size,
            rounds=spec.rounds,
        )
        return int(chain.client.create_run(run_config, join_blocks=params.join_blocks))

    def prepare(self, index: int, seed: int) -> Pending:
        """Check the devnet, create run ``index`` on chain and start its nodes (not waiting for them)."""
        a, size = self.args, self.args.nodes
        pending = Pending(index, seed, time.monotonic(), schedule(seed, size, self.kinds, a.max_faults))
        pending.data = [f"synthetic:{SKILLS[i % len(SKILLS)]}:40" for i in range(size)]
        try:
            pending.notes += self._ensure_devnet()
            pending.mark("healthy")
            spec_dir = self.folder / f"spec-{index}"
            spec_dir.mkdir()
            spec = round_spec(
                spec_dir, a.rounds, size, a.local_steps, a.block_time, (a.join_s, a.submit_s, a.vote_s)
            )
            pending.run_id = self._create_run(spec)
            pending.mark("created")
            for i in range(size):
                proc = self.cluster.process(i, pending.run_id, pending.data[i])
                proc.start()
                self.cluster.processes[i] = proc
            pending.mark("nodes_started")
        except Exception as exc:  # recorded as the run's finding; the campaign goes on with the next seed
            pending.errors.append(f"harness: {type(exc).__name__}: {exc}")
        return pending

    def execute(
        self, p: Pending, following: tuple[int, int] | None = None
    ) -> tuple[dict[str, Any], Pending | None]:
        """Run ``p`` to its end: perturbations, the nodes' ``run.done``, then the invariant checks.

        When ``following`` (index, seed) is given, that run is prepared (created, its nodes started) as soon
        as this run's nodes have stopped, so its nodes start up while this run is checked.
        """
        from ledger.chain import connect
        from ledger.client import RunsClient
        from ledger.types import RoundId, RunId
        from node.protocol.history import read_history
        from p2p.storage.base import Cid
        from p2p.storage.ipfs import IpfsStore

        a, size = self.args, self.args.nodes
        w3 = connect(self.host.rpc_url)
        client = RunsClient(w3, self.host.runs_address)
        applied: list[str] = []
        faults_end = int(w3.eth.block_number)
        run_id = p.run_id
        try:
            if run_id is None:
                raise RuntimeError("the run was not created")
            for i in range(size):  # N processes import torch at once on a few cores: allow for it
                try:
                    self.cluster.processes[i].wait_until_ready(timeout=180.0 + 10.0 * size, interval=0.2)
                except Exception as exc:  # name the node's own fatal error, not only its output's tail
                    raise RuntimeError(f"node{i} not ready: {self._fatal(i) or exc}") from exc
            p.mark("nodes_ready")
            opens = client.round_info(RunId(run_id), RoundId(0)).start_block
            while w3.eth.block_number < opens:
                time.sleep(0.2)
            p.mark("round0_open")
            for fault in p.faults:
                time.sleep(fault.gap_s)
                with self._applied(fault, run_id, p.data, p.notes) as done:
                    if done:
                        applied.append(fault.label())
                        time.sleep(fault.duration_s)
            faults_end = int(w3.eth.block_number)
            p.mark("faults_healed")
            p.errors += self._wait_done(run_id)
            p.mark("run_done")
        except Exception as exc:  # the run's own failure is a finding too: keep its logs
            p.errors.append(f"harness: {type(exc).__name__}: {exc}")
            faults_end = int(w3.eth.block_number)
        finally:
            self.cluster.stop()
        p.mark("stopped")
        nxt = self.prepare(*following) if following is not None else None
        result = None
        if run_id is not None:
            store = IpfsStore(self.host.ipfs_api, timeout=30.0)
            try:
                history = read_history(client, RunId(run_id))
                views = [
                    NodeView(m.index, m.address, m.home / "state.db", m.log_path)
                    for m in self.cluster.members
                ]
                result = check_run(
                    history,
                    views,
                    lambda cid: store.get(Cid(cid)),
                    rounds=a.rounds,
                    faults_end_block=faults_end,
                )
            except Exception as exc:  # a check that cannot run is a finding, not a crash of the campaign
                p.errors.append(f"check: {type(exc).__name__}: {exc}")
            finally:
                store.close()
        p.mark("checked")
        if run_id is not None:
            self._mark_events(p, run_id)
        violations = p.errors + (result.violations if result is not None else [])
        row = {
            "run": p.index,
            "seed": p.seed,
            "run_id": run_id,
            "perturbations": applied,
            "scheduled": [asdict(f) for f in p.faults],
            "rounds_finalized": result.rounds_finalized if result is not None else 0,
            "rounds": result.rounds if result is not None else 0,
            "liveness_checked": result.liveness_checked if result is not None else False,
            "violations": violations,
            "notes": p.notes,
            "seconds": p.marks["checked"],
            "phases": p.marks,
        }
        if violations and a.keep_logs is not None:
            self._keep(a.keep_logs / f"seed-{p.seed}", row)
        return row, nxt

    def _mark_events(self, p: Pending, run_id: int) -> None:
        """Add the nodes' own timestamps to the run's phases: each join, each ready, each round's finality."""
        wall0 = time.time() - (time.monotonic() - p.started)
        for i in range(self.args.nodes):
            events = [e for e in self.cluster.events(i) if e.get("run") == run_id]
            for name in ("node.joined", "node.ready"):
                seen = [e["ts"] for e in events if e.get("event") == name]
                if seen:
                    p.marks[f"n{i}_{name.split('.')[1]}"] = round(seen[0] - wall0, 1)
            if i == 0:
                for e in events:
                    if e.get("event") == "round.finalized":
                        p.marks.setdefault(f"round{e['round']}_final", round(e["ts"] - wall0, 1))

    def _restart(self, fault: Fault, run_id: int, data: list[str], notes: list[str]) -> None:
        """Start a killed node again; one that finds its run complete and exits 0 at once is only noted."""
        from node.devnet.services import ServiceError

        i = fault.node
        try:
            self.cluster.start(run_id, data, indices=[i])
        except ServiceError:
            proc = self.cluster.processes.get(i)
            if proc is None or proc.returncode != 0 or not self._logged_done(i, run_id):
                raise
            notes.append(f"{fault.label()}: node{i} restarted after the run was complete and exited 0")

    def _logged_done(self, i: int, run_id: int) -> bool:
        return any(e.get("run") == run_id for e in self.cluster.events(i, "run.done"))

    def _wait_done(self, run_id: int) -> list[str]:
        """Wait until every node logged ``run.done`` for ``run_id`` or exited; return what went wrong."""
        a = self.args
        deadline = time.monotonic() + a.join_s + a.rounds * (a.submit_s + a.vote_s) + 120.0
        pending = set(range(self.args.nodes))
        problems = []
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                proc = self.cluster.processes[i]
                if self._logged_done(i, run_id):
                    pending.discard(i)
                elif not proc.is_running():  # the others go on: a quorum may still finish the run
                    pending.discard(i)
                    if self._logged_done(i, run_id):  # it logged run.done and exited since the read above
                        continue
                    why = self._fatal(i) or proc.tail(3)
                    problems.append(f"node{i} exited (code {proc.stop(timeout=1.0)}) before run.done: {why}")
            time.sleep(0.5)
        return problems + [f"node{i} did not finish the run in time" for i in sorted(pending)]

    def _fatal(self, i: int) -> str | None:
        """Member ``i``'s last fatal error event (logged without a run id), as ``kind: message``."""
        fatal = [e for e in self.cluster.events(i, "error") if e.get("fatal")]
        return f"{fatal[-1].get('kind')}: {fatal[-1].get('message')}" if fatal else None

    def _keep(self, target: Path, row: dict[str, Any]) -> None:
        """Copy the nodes' logs and databases, the devnet's logs and the row into ``target``."""
        target.mkdir(parents=True, exist_ok=True)
        (target / "run.json").write_text(json.dumps(row, indent=2) + "\n")
        for m in self.cluster.members:
            for name in ("node.jsonl", "stdout.log", "state.db", "state.db-wal"):
                if (m.home / name).is_file():
                    shutil.copyfile(m.home / name, target / f"node{m.index}-{name}")
        for log in ("anvil.log", "ipfs.log"):
            if (self.folder / "devnet" / log).is_file():
                shutil.copyfile(self.folder / "devnet" / log, target / log)
        for launcher in self.launchers:
            if launcher.service.log_path.is_file():
                shutil.copyfile(launcher.service.log_path, target / f"{launcher.name}.log")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into ``SystemExit`` so the campaign heals, stops its processes and unmounts."""
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="seeded runs (run k uses seed + k)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--nodes", type=int, default=3, help="members (>= 3: a quorum survives one fault)")
    p.add_argument("--rounds", type=int, default=6, help="rounds per run")
    p.add_argument("--local-steps", type=int, default=2, help="local training steps per round")
    p.add_argument("--block-time", type=float, default=1.0, help="devnet seconds per block")
    p.add_argument(
        "--join-s",
        type=float,
        default=15.0,
        help="join window (seconds): node processes start inside it (raise it with --fresh-processes)",
    )
    p.add_argument("--submit-s", type=float, default=15.0, help="submit window (seconds)")
    p.add_argument("--vote-s", type=float, default=15.0, help="vote window (seconds)")
    p.add_argument("--max-faults", type=int, default=3, help="most perturbations per run")
    p.add_argument("--keep-logs", type=Path, default=None, help="copy each failing seed's logs here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rows", type=Path, default=None, help="append each run's row to this JSON-lines file")
    p.add_argument(
        "--fresh-processes",
        action="store_true",
        help="start every node as a fresh interpreter instead of forking it from a pre-imported launcher",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.nodes < 3 or args.rounds < 2 or args.max_faults < 1 or args.local_steps < 1:
        p.error("--runs, --max-faults and --local-steps must be >= 1, --nodes >= 3 and --rounds >= 2")
    if min(args.block_time, args.join_s, args.submit_s, args.vote_s) <= 0:
        p.error("--block-time and the window seconds must be > 0")
    return args


def campaign(args: argparse.Namespace, progress: bool = True) -> dict[str, Any]:
    """Run the campaign; return the report (rows, skipped perturbations, timing)."""
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedchain-chaos-") as tmp, Campaign(Path(tmp), args) as c:
        setup_s = time.monotonic() - started
        pending: Pending | None = c.prepare(0, args.seed)
        for k in range(args.runs):
            assert pending is not None
            following = (k + 1, args.seed + k + 1) if k + 1 < args.runs else None
            row, pending = c.execute(pending, following)
            rows.append(row)
            if args.rows is not None:
                with open(args.rows, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if progress and not args.json:
                print(_row_line(row), flush=True)
        runs_s = time.monotonic() - started - setup_s
        skipped = dict(c.skipped)
    per_run = runs_s / len(rows)
    return {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "block_time_s": args.block_time,
        "windows_s": {"join": args.join_s, "submit": args.submit_s, "vote": args.vote_s},
        "skipped": skipped,
        "rows": rows,
        "runs": len(rows),
        "runs_with_violations": sum(1 for r in rows if r["violations"]),
        "setup_s": round(setup_s, 1),
        "seconds_per_run": round(per_run, 1),
        "liveness_checked": sum(1 for r in rows if r["liveness_checked"]),
        "estimate_200_runs_h": round((setup_s + 200 * per_run) / 3600, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


HEADER = f"{'run':>4} {'seed':>6} {'perturbations':<52} {'final':>5} {'s':>6}  violations"


def _row_line(row: dict[str, Any]) -> str:
    kinds = " ".join(row["perturbations"]) or "-"
    final = f"{row['rounds_finalized']}/{row['rounds']}"
    text = f"{row['run']:>4} {row['seed']:>6} {kinds:<52} {final:>5} {row['seconds']:>6.0f}"
    text += f"  {len(row['violations'])}"
    return text + "".join(f"\n       - {v}" for v in row["violations"])


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 1 when any run broke an invariant."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse_args(argv)
    if not args.json:
        print(HEADER, flush=True)
    report = campaign(args)
    if args.json:
        print(json.dumps(report))
    else:
        for kind, why in report["skipped"].items():
            print(f"skipped {kind}: {why}")
        print(
            f"{report['runs']} runs, {report['runs_with_violations']} with violations; "
            f"{report['seconds_per_run']} s per run after {report['setup_s']} s setup: 200 runs take about "
            f"{report['estimate_200_runs_h']} h here"
        )
    return 1 if report["runs_with_violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
