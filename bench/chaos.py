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
from dataclasses import asdict, dataclass
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
        self.cluster = LocalCluster(
            nodes_folder, for_nodes, size, store="ipfs", hosts=hosts, prefixes=prefixes
        )
        self._stack.callback(self.cluster.stop)
        self.cluster.init()
        self.kinds = tuple(k for k in KINDS if k not in self.skipped)

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
    def _applied(self, fault: Fault, run_id: int, data: list[str]) -> Iterator[None]:
        """Apply ``fault`` for the body; heal it on the way out, whatever happens."""
        proc = self.cluster.processes.get(fault.node)
        if fault.kind == "kill":
            if proc is not None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.stop(timeout=5.0)
            try:
                yield
            finally:
                self.cluster.start(run_id, data, indices=[fault.node])
        elif fault.kind == "pause":
            pid = proc.pid if proc is not None else None
            if pid is not None:
                os.kill(pid, signal.SIGSTOP)
            try:
                yield
            finally:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
        elif fault.kind == "ipfs":
            ipfs = self._ipfs()
            if ipfs.pid is not None:
                os.kill(ipfs.pid, signal.SIGKILL)
            ipfs.stop(timeout=5.0)
            try:
                yield
            finally:
                ipfs.start(timeout=120.0)
        elif fault.kind == "partition":
            try:
                self._routes(fault, "add")
                yield
            finally:
                self._routes(fault, "del")
        elif fault.kind == "disk_full":
            assert self.disk is not None  # the kind is skipped without the tmpfs
            filler = _fill(self.disk)
            try:
                yield
            finally:
                filler.unlink(missing_ok=True)
        else:  # pragma: no cover - KINDS is closed
            raise ValueError(f"unknown perturbation {fault.kind!r}")

    # ---- one run -----------------------------------------------------------------------------------------

    def run(self, index: int, seed: int) -> dict[str, Any]:
        """Run one seeded run: a new on-chain run, its perturbations, then the invariant checks."""
        from ledger.chain import connect
        from ledger.client import RunsClient
        from ledger.types import RoundId, RunId
        from node.protocol.history import read_history
        from p2p.storage.base import Cid
        from p2p.storage.ipfs import IpfsStore

        a, size = self.args, self.args.nodes
        started = time.monotonic()
        w3 = connect(self.host.rpc_url)
        client = RunsClient(w3, self.host.runs_address)
        spec_dir = self.folder / f"spec-{index}"
        spec_dir.mkdir()
        spec = round_spec(
            spec_dir, a.rounds, size, a.local_steps, a.block_time, (a.join_s, a.submit_s, a.vote_s)
        )
        run_id = self.cluster.create_run(spec)
        data = [f"synthetic:{SKILLS[i % len(SKILLS)]}:40" for i in range(size)]
        faults = schedule(seed, size, self.kinds, a.max_faults)
        applied: list[str] = []
        errors: list[str] = []
        try:
            self.cluster.start(run_id, data)
            opens = client.round_info(RunId(run_id), RoundId(0)).start_block
            while w3.eth.block_number < opens:
                time.sleep(0.2)
            for fault in faults:
                time.sleep(fault.gap_s)
                with self._applied(fault, run_id, data):
                    applied.append(fault.label())
                    time.sleep(fault.duration_s)
            faults_end = int(w3.eth.block_number)
            errors += self._wait_done(run_id)
        except Exception as exc:  # the run's own failure is a finding too: keep its logs
            errors.append(f"harness: {type(exc).__name__}: {exc}")
            faults_end = int(w3.eth.block_number)
        finally:
            self.cluster.stop()
        store = IpfsStore(self.host.ipfs_api, timeout=30.0)
        try:
            history = read_history(client, RunId(run_id))
            views = [
                NodeView(m.index, m.address, m.home / "state.db", m.log_path) for m in self.cluster.members
            ]
            result = check_run(
                history, views, lambda cid: store.get(Cid(cid)), rounds=a.rounds, faults_end_block=faults_end
            )
        finally:
            store.close()
        violations = errors + result.violations
        row = {
            "run": index,
            "seed": seed,
            "run_id": run_id,
            "perturbations": applied,
            "scheduled": [asdict(f) for f in faults],
            "rounds_finalized": result.rounds_finalized,
            "rounds": result.rounds,
            "liveness_checked": result.liveness_checked,
            "violations": violations,
            "seconds": round(time.monotonic() - started, 1),
        }
        if violations and a.keep_logs is not None:
            self._keep(a.keep_logs / f"seed-{seed}", row)
        return row

    def _wait_done(self, run_id: int) -> list[str]:
        """Wait until every node logged ``run.done`` for ``run_id`` or exited; return what went wrong."""
        a = self.args
        deadline = time.monotonic() + a.join_s + a.rounds * (a.submit_s + a.vote_s) + 120.0
        pending = set(range(self.args.nodes))
        problems = []
        while pending and time.monotonic() < deadline:
            for i in sorted(pending):
                proc = self.cluster.processes[i]
                if any(e.get("run") == run_id for e in self.cluster.events(i, "run.done")):
                    pending.discard(i)
                elif not proc.is_running():  # the others go on: a quorum may still finish the run
                    pending.discard(i)
                    fatal = [e for e in self.cluster.events(i, "error") if e.get("fatal")]
                    why = f"{fatal[-1].get('kind')}: {fatal[-1].get('message')}" if fatal else proc.tail(3)
                    problems.append(f"node{i} exited (code {proc.stop(timeout=1.0)}) before run.done: {why}")
            time.sleep(0.5)
        return problems + [f"node{i} did not finish the run in time" for i in sorted(pending)]

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


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into ``SystemExit`` so the campaign heals, stops its processes and unmounts."""
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="seeded runs (run k uses seed + k)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--nodes", type=int, default=3, help="members (>= 3: a quorum survives one fault)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per run")
    p.add_argument("--local-steps", type=int, default=2, help="local training steps per round")
    p.add_argument("--block-time", type=float, default=1.0, help="devnet seconds per block")
    p.add_argument(
        "--join-s", type=float, default=60.0, help="join window (seconds): node processes start inside it"
    )
    p.add_argument("--submit-s", type=float, default=20.0, help="submit window (seconds)")
    p.add_argument("--vote-s", type=float, default=20.0, help="vote window (seconds)")
    p.add_argument("--max-faults", type=int, default=3, help="most perturbations per run")
    p.add_argument("--keep-logs", type=Path, default=None, help="copy each failing seed's logs here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
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
        for k in range(args.runs):
            row = c.run(k, args.seed + k)
            rows.append(row)
            if progress and not args.json:
                print(_row_line(row), flush=True)
        skipped = dict(c.skipped)
    per_run = sum(r["seconds"] for r in rows) / len(rows)
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
