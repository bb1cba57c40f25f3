"""Per-member cost of a round as the federation grows: time, socket bytes, CPU seconds and gas (4-32 members).

For each size a fresh devnet (anvil with ``--block-time`` blocks and as many funded accounts as members, +
an IPFS daemon) runs the tiny-model spec with the windows of ``bench/round.py`` (``node/specs/tiny.toml``,
``--rounds`` rounds, 4 local steps) on N ``fedchain node`` processes on loopback, each with its own
embedded store (updates travel over the libp2p blob stream). While it runs, a sampler reads every
``--sample-s`` seconds:

* ``ss -tinpH``: the kernel's ``tcp_info`` of every TCP socket a node process owns, ``bytes_sent`` and
  ``bytes_received`` (TCP payload: libp2p's Noise/yamux frames with gossip and blob streams, JSON-RPC to
  anvil, HTTP to the IPFS API; no IP/TCP headers). A socket's last seen value counts after it closes; a
  socket that opens and closes between two samples is missed (the node's connections are kept alive).
  Each socket is classed by its remote port: ``chain`` (anvil), ``ipfs`` (the daemon's API) or ``p2p``.
* ``/proc/<pid>/stat``: the node process's user + system CPU seconds; ``/proc/<pid>/status`` and
  ``smaps_rollup``: its VmRSS and Pss (resident memory with shared pages split among their users).

Per member, the window is from its log's finalisation of round 0 to that of the last round (round 0 also
waits out the join window and warms up), so per-round figures are the window's difference divided by
``rounds - 1``, from the first sample at or after each end. ``round_s`` is the mean over nodes and rounds
1.. of the time between two finalisations (as in ``bench/round.py``). ``rpc_calls_per_round`` is the mean
member's JSON-RPC requests per round, from the request counts (``ledger.rpc.CALLS``) that each node's
``round.finalized`` event carries for the round. In committee runs ``by_role`` gives the same per member
and round for the rounds a member was in the committee and those it was not: bytes by class, requests by
method, and the blocks and seconds between the two finalisations. Gas comes from the receipts of every
block of the run: the ``gasUsed`` of each member's transactions to ``Runs`` except ``join`` and
``createRun`` (once per run), divided by members x rounds, and split by method.

    python bench/scale.py                          # 4, 8, 16 and 32 members (32 if memory allows)
    python bench/scale.py --sizes 4 8 16 --json
    python bench/scale.py --committee 3 --block-time 1 --sizes 4 8 16   # committee runs, bytes by role
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.round import SKILLS, _round_rows  # noqa: E402

CLASSES = ("p2p", "chain", "ipfs")
ONCE_PER_RUN = ("join", "createRun")  # left out of the per-round gas
_ADDR = re.compile(r"^(?:\[?[0-9a-fA-F:.]+\]?|\*):(\d+)$")
_PID = re.compile(r"pid=(\d+)")
_SENT = re.compile(r"\bbytes_sent:(\d+)")
_RECEIVED = re.compile(r"\bbytes_received:(\d+)")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    """One reading: per node pid, bytes sent / received per class, CPU seconds and resident MiB."""

    t: float
    sent: dict[int, dict[str, int]]
    received: dict[int, dict[str, int]]
    cpu_s: dict[int, float]
    rss_mib: dict[int, float]
    pss_mib: dict[int, float]


def parse_ss(text: str) -> list[tuple[int, str, str, int, int]]:
    """Parse ``ss -tinpH`` output into ``(pid, local, peer, bytes_sent, bytes_received)`` per socket.

    Each socket is a header line (queues, addresses, ``users:((…,pid=N,…))``) followed by an indented
    ``tcp_info`` line; counters the kernel leaves out are 0.
    """
    rows: list[tuple[int, str, str, int, int]] = []
    header: tuple[int, str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            addrs = [tok for tok in line.split() if _ADDR.match(tok)]
            pid = _PID.search(line)
            header = (int(pid.group(1)), addrs[0], addrs[1]) if pid and len(addrs) >= 2 else None
            continue
        if header is None:
            continue
        sent, received = _SENT.search(line), _RECEIVED.search(line)
        rows.append((*header, int(sent.group(1)) if sent else 0, int(received.group(1)) if received else 0))
        header = None
    return rows


def _port(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


@dataclass
class Sampler:
    """Samples the node processes' sockets and CPU in a thread (module docstring)."""

    ports: Mapping[int, str]  # remote port -> class (anvil: chain, the IPFS API: ipfs; others: p2p)
    interval: float
    pids: set[int] = field(default_factory=set)
    samples: list[Sample] = field(default_factory=list)
    _sockets: dict[tuple[int, str, str], tuple[int, int]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scale-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        pids = set(self.pids)
        if not pids:
            return
        out = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=False).stdout
        for pid, local, peer, sent, received in parse_ss(out):
            if pid in pids:
                key = (pid, local, peer)
                old = self._sockets.get(key, (0, 0))
                self._sockets[key] = (max(old[0], sent), max(old[1], received))
        sent_by: dict[int, dict[str, int]] = {p: dict.fromkeys(CLASSES, 0) for p in pids}
        received_by: dict[int, dict[str, int]] = {p: dict.fromkeys(CLASSES, 0) for p in pids}
        for (pid, _, peer), (sent, received) in self._sockets.items():
            if pid in pids:
                kind = self.ports.get(_port(peer), "p2p")
                sent_by[pid][kind] += sent
                received_by[pid][kind] += received
        previous = self.samples[-1] if self.samples else None
        cpu, rss, pss = dict(previous.cpu_s) if previous else {}, {}, {}  # an exited process keeps its last
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
                status = Path(f"/proc/{pid}/status").read_text()
                match = re.search(r"VmRSS:\s+(\d+) kB", status)
                rss[pid] = int(match.group(1)) / 1024 if match else 0.0
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
                match = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
                pss[pid] = int(match.group(1)) / 1024 if match else 0.0
            except (OSError, IndexError, ValueError):
                continue  # exited: its last sample stands
        self.samples.append(Sample(time.time(), sent_by, received_by, cpu, rss, pss))

    def at(self, t: float) -> Sample | None:
        """The first sample taken at or after ``t``."""
        return next((s for s in self.samples if s.t >= t), None)


def _gas(rpc_url: str, runs: str, members: set[str], first_block: int) -> dict[str, int]:
    """Gas of the members' transactions to ``Runs`` per method (from receipts), over the whole run."""
    from eth_utils.abi import function_abi_to_4byte_selector

    from contracts import load_artifact
    from ledger.chain import connect

    w3 = connect(rpc_url)
    names = {
        "0x" + function_abi_to_4byte_selector(fn).hex(): str(fn["name"])  # type: ignore[arg-type]
        for fn in load_artifact("Runs").abi
        if fn.get("type") == "function"
    }
    totals: dict[str, int] = {}
    for number in range(first_block, int(w3.eth.block_number) + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in cast(list[Any], block["transactions"]):
            if str(tx["from"]).lower() not in members or str(tx.get("to") or "").lower() != runs.lower():
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            data = tx["input"]
            selector = "0x" + (bytes(data)[:4].hex() if isinstance(data, bytes) else str(data)[2:10])
            name = names.get(selector, selector)
            totals[name] = totals.get(name, 0) + int(receipt["gasUsed"])
    return totals


def _round0_margin(rpc_url: str, runs: str, run_id: int) -> int:
    """Blocks from now until round 0 of ``run_id`` opens (negative: it opened that many blocks ago)."""
    from ledger.chain import connect
    from ledger.client import RunsClient
    from ledger.types import RoundId, RunId

    client = RunsClient(connect(rpc_url), runs)
    return int(client.round_info(RunId(run_id), RoundId(0)).start_block) - int(client.block_number())


def spec_file(
    folder: Path, rounds: int, size: int, local_steps: int, block_time: float, committee: int = 0
) -> Path:
    """The tiny spec with the bench's rounds and local steps; windows in seconds, converted to blocks.

    The join window (60 s + 10 s a member) covers the start-up of all N node processes (32 tiny-model
    nodes started at once on a 2-core machine were all ready after about 8 s a node), so round 0 opens
    only after every node is ready: ``measure`` reports the margin (``ready_blocks_before_round0``) and
    fails a size whose nodes were not, whose round 0 would not be a round like the others. The submit
    window is only an upper bound
    (voting opens once every eligible member committed). A committee run
    (``committee`` > 0) caps the two windows at 255 blocks together (the committee's seed block hash must
    stay readable), two thirds for submitting.
    """
    join_s, submit_s, vote_s = 60 + 10 * size, 120 + 8 * size + size * local_steps, 60 + 4 * size
    submit_b, vote_b = math.ceil(submit_s / block_time), math.ceil(vote_s / block_time)
    if committee:
        submit_b, vote_b = min(submit_b, 170), min(vote_b, 85)
    text = (ROOT / "node" / "specs" / "tiny.toml").read_text()
    join_line = f"join_blocks = {math.ceil(join_s / block_time)}"
    for old, new in (
        ("rounds = 2", f"rounds = {rounds}"),
        ("local_steps = 4", f"local_steps = {local_steps}"),
        ("join_blocks = 45", join_line + (f"\ncommittee_size = {committee}" if committee else "")),
        ("submit_blocks = 20", f"submit_blocks = {submit_b}"),
        ("vote_blocks = 20", f"vote_blocks = {vote_b}"),
    ):
        if old not in text:
            raise RuntimeError(f"node/specs/tiny.toml no longer contains {old!r}")
        text = text.replace(old, new, 1)
    path = folder / "scale.toml"
    path.write_text(text)
    return path


def measure(
    size: int,
    rounds: int,
    local_steps: int,
    block_time: float,
    sample_s: float,
    keep: Path | None = None,
    committee: int = 0,
) -> dict[str, Any]:
    """Run one cluster of ``size`` members for ``rounds`` rounds and return its per-member costs."""
    from node.devnet.anvil import AnvilConfig
    from node.devnet.cluster import LocalCluster
    from node.devnet.harness import Devnet

    with tempfile.TemporaryDirectory(prefix="fedchain-bench-scale-") as tmp:
        folder = Path(tmp)
        anvil = AnvilConfig(block_time=block_time, accounts=size + 1)
        with Devnet(folder / "devnet", anvil, ipfs=True) as devnet:
            cluster = LocalCluster(folder / "nodes", devnet, size)
            cluster.init()
            run_id = cluster.create_run(spec_file(folder, rounds, size, local_steps, block_time, committee))
            ipfs_port = int(str(devnet.ipfs_api).split("/tcp/")[1].split("/")[0]) if devnet.ipfs_api else -1
            sampler = Sampler({int(devnet.rpc_url.rsplit(":", 1)[1]): "chain", ipfs_port: "ipfs"}, sample_s)
            sampler.start()
            started = time.monotonic()
            try:
                data = [f"synthetic:{SKILLS[i % len(SKILLS)]}:40" for i in range(size)]
                for i in range(size):  # sample from the first process on, not only once all are ready
                    proc = cluster.process(i, run_id, data[i])
                    proc.start()
                    cluster.processes[i] = proc
                    if proc.pid is not None:
                        sampler.pids.add(proc.pid)
                for i in range(size):
                    cluster.processes[i].wait_until_ready(timeout=180.0 + 10.0 * size, interval=0.5)
                ready_margin = _round0_margin(devnet.rpc_url, devnet.runs_address, run_id)
                if ready_margin < 0:  # round 0 opened while nodes were still loading: not the steady state
                    raise RuntimeError(
                        f"{size} members: the last node was ready {-ready_margin} blocks after round 0 "
                        "opened; the join window (spec_file) is too short for this machine's start-up"
                    )
                cluster.wait_until(
                    lambda: all(cluster.events(i, "run.done") for i in range(size)),
                    120.0 + 60.0 * rounds + 4.0 * size * local_steps + ready_margin * block_time,
                    "run.done",
                )
            finally:
                sampler.stop()
                pids = {i: p.pid for i, p in cluster.processes.items()}
                cluster.stop()
                if keep is not None:  # the nodes' event and output logs, also when the run failed
                    for member in cluster.members:
                        target = keep / f"{size}-members" / f"node{member.index}"
                        target.mkdir(parents=True, exist_ok=True)
                        for name in ("node.jsonl", "stdout.log"):
                            if (member.home / name).is_file():
                                shutil.copyfile(member.home / name, target / name)
            wall = time.monotonic() - started
            addresses = {m.address.lower() for m in cluster.members}
            gas = _gas(devnet.rpc_url, devnet.runs_address, addresses, devnet.deploy_block)
            events = [cluster.events(i) for i in range(size)]
    summary = _summary(size, rounds, events, pids, sampler, gas, wall)
    summary["ready_blocks_before_round0"] = ready_margin
    if committee:
        summary["committee_size"] = committee
        summary["by_role"] = _by_role(events, pids, sampler)
    return summary


def _by_role(
    events: list[list[dict[str, Any]]], pids: Mapping[int, int | None], sampler: Sampler
) -> dict[str, Any]:
    """Committee runs: a member's costs per round, for the rounds it was in the committee or not.

    Round r's window for a node runs from its finalisation of round r - 1 to that of round r (its commit,
    the committee's fetches and merge, the adoption of round r - 1's result); the node's role is its
    ``committee.drawn`` of round r. Bytes are split by class (``p2p``, ``chain``, ``ipfs``); ``rpc`` is the
    JSON-RPC requests by method that the node's ``round.finalized`` of round r counts for the same window,
    and ``blocks`` the chain blocks between the two finalisations.
    """
    rows: dict[str, dict[str, list[float]]] = {"committee": {}, "outside": {}}
    rpc: dict[str, dict[str, list[int]]] = {"committee": {}, "outside": {}}
    for i, ev in enumerate(events):
        pid = pids.get(i)
        finals = {int(e["round"]): e for e in ev if e.get("event") == "round.finalized"}
        ours = {int(e["round"]): bool(e["ours"]) for e in ev if e.get("event") == "committee.drawn"}
        for r in sorted(finals):
            if r - 1 not in finals or r not in ours or pid is None:
                continue
            first, last = sampler.at(float(finals[r - 1]["ts"])), sampler.at(float(finals[r]["ts"]))
            if first is None or last is None or pid not in first.sent or pid not in last.sent:
                continue
            role = "committee" if ours[r] else "outside"
            row = rows[role]
            for kind in CLASSES:
                row.setdefault(f"sent_{kind}", []).append(last.sent[pid][kind] - first.sent[pid][kind])
                row.setdefault(f"received_{kind}", []).append(
                    last.received[pid][kind] - first.received[pid][kind]
                )
            row.setdefault("blocks", []).append(int(finals[r]["block"]) - int(finals[r - 1]["block"]))
            row.setdefault("seconds", []).append(float(finals[r]["ts"]) - float(finals[r - 1]["ts"]))
            calls = finals[r].get("rpc")
            if isinstance(calls, dict):
                row.setdefault("rpc_rounds", []).append(1)
                for method, count in calls.items():
                    rpc[role].setdefault(method, []).append(int(count[0]))
    out: dict[str, Any] = {}
    for role, row in rows.items():
        n = len(row.get("blocks", []))
        mean = {name: statistics.fmean(v) for name, v in row.items() if v}
        sent = {k: round(mean.get(f"sent_{k}", 0.0)) for k in CLASSES}
        received = {k: round(mean.get(f"received_{k}", 0.0)) for k in CLASSES}
        measured = len(row.get("rpc_rounds", []))
        calls = {m: round(sum(v) / measured, 1) for m, v in sorted(rpc[role].items())} if measured else {}
        out[role] = {
            "samples": n,
            "sent": sum(sent.values()) if n else None,
            "received": sum(received.values()) if n else None,
            "p2p_received": received["p2p"] if n else None,
            "sent_by_class": sent,
            "received_by_class": received,
            "seconds": round(mean.get("seconds", 0.0), 2),
            "blocks": round(mean.get("blocks", 0.0), 2),
            "rpc_calls": calls,
            "rpc_calls_total": round(sum(calls.values()), 1),
        }
    return out


def _summary(
    size: int,
    rounds: int,
    events: list[list[dict[str, Any]]],
    pids: Mapping[int, int | None],
    sampler: Sampler,
    gas: Mapping[str, int],
    wall: float,
) -> dict[str, Any]:
    per_node = [_round_rows(ev) for ev in events]
    round_s = [row["round"] for rows in per_node for row in rows]
    sent: dict[str, list[float]] = {k: [] for k in CLASSES}
    received: dict[str, list[float]] = {k: [] for k in CLASSES}
    cpu: list[float] = []
    calls: list[float] = []  # JSON-RPC requests per round, from the nodes' round.finalized counts
    opened = 1 + max((int(e["round"]) for ev in events for e in ev
                      if e.get("event") in ("round.finalized", "round.failed")), default=0)  # fmt: skip
    for i, ev in enumerate(events):
        finals = {int(e["round"]): float(e["ts"]) for e in ev if e.get("event") == "round.finalized"}
        pid = pids.get(i)
        if len(finals) < 2 or pid is None:
            continue
        r0, r1 = min(finals), max(finals)  # the window: first to last finalisation, r1 - r0 rounds
        first, last = sampler.at(finals[r0]), sampler.at(finals[r1])
        if first is None or last is None or pid not in first.cpu_s or pid not in last.cpu_s:
            continue
        for kind in CLASSES:
            sent[kind].append((last.sent[pid][kind] - first.sent[pid][kind]) / (r1 - r0))
            received[kind].append((last.received[pid][kind] - first.received[pid][kind]) / (r1 - r0))
        cpu.append((last.cpu_s[pid] - first.cpu_s[pid]) / (r1 - r0))
        raw = [e.get("rpc") for e in ev if e.get("event") == "round.finalized" and r0 < int(e["round"]) <= r1]
        rpc: list[dict[str, Any]] = [c for c in raw if isinstance(c, dict)]
        if rpc and len(rpc) == len(raw):  # every round counted
            calls.append(sum(int(n[0]) for c in rpc for n in c.values()) / (r1 - r0))
    if not round_s or not cpu:
        raise RuntimeError(f"{size} members: no finalised round after round 0, or no sample in its window")
    per_round = size * opened  # failed rounds cost gas too
    by_method = {n: round(total / per_round) for n, total in sorted(gas.items()) if n not in ONCE_PER_RUN}
    rss = [max(s.rss_mib.get(p, 0.0) for s in sampler.samples) for p in pids.values() if p is not None]
    pss = [max(s.pss_mib.get(p, 0.0) for s in sampler.samples) for p in pids.values() if p is not None]
    return {
        "members": size,
        "rounds": rounds,
        "rounds_opened": opened,
        "rounds_failed": opened
        - min(sum(1 for e in ev if e.get("event") == "round.finalized") for ev in events),
        "measured_members": len(cpu),
        "round_s": round(statistics.fmean(round_s), 3),
        "round_s_min_max": [round(min(round_s), 3), round(max(round_s), 3)],
        "sent_bytes_per_round": {k: round(statistics.fmean(v)) for k, v in sent.items()},
        "received_bytes_per_round": {k: round(statistics.fmean(v)) for k, v in received.items()},
        "sent_total_per_round": round(sum(statistics.fmean(v) for v in sent.values())),
        "received_total_per_round": round(sum(statistics.fmean(v) for v in received.values())),
        "cpu_s_per_round": round(statistics.fmean(cpu), 3),
        "rpc_calls_per_round": round(statistics.fmean(calls), 1) if calls else None,
        "gas_per_round": sum(by_method.values()),
        "gas_per_round_by_method": by_method,
        "rss_mib_max": round(max(rss), 1) if rss else None,
        "pss_mib_max": round(max(pss), 1) if pss else None,
        "wall_seconds": round(wall, 1),
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32], help="members (>= 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cluster (>= 2)")
    parser.add_argument("--local-steps", type=int, default=4, help="local training steps per round")
    parser.add_argument("--block-time", type=float, default=0.5, help="devnet seconds per block")
    parser.add_argument("--sample-s", type=float, default=0.5, help="seconds between socket/CPU samples")
    parser.add_argument("--keep", type=Path, default=None, help="copy the nodes' logs into this folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--committee", type=int, default=0, help="committee size k (0: ordinary runs; docs/scale.md)"
    )
    args = parser.parse_args()
    if min(args.sizes) < 1 or args.rounds < 2 or args.local_steps < 1 or args.block_time <= 0:
        parser.error("--sizes and --local-steps must be >= 1, --rounds >= 2 and --block-time > 0")
    from node.devnet.cluster import TINY_NODE_MIB, check_capacity

    results: list[dict[str, Any]] = []
    for size in args.sizes:
        try:
            check_capacity(size, TINY_NODE_MIB)
        except ValueError as exc:
            results.append({"members": size, "skipped": str(exc)})
            continue
        try:
            row = measure(
                size, args.rounds, args.local_steps, args.block_time, args.sample_s, args.keep, args.committee
            )
        except (RuntimeError, OSError, ValueError) as exc:  # ServiceError too: report, go on with the next
            row = {"members": size, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # each size as it finishes
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "block_time_s": args.block_time,
        "local_steps": args.local_steps,
        "model": "tiny-llama",
        "committee_size": args.committee,
        "results": results,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"per member per round, tiny model, {args.block_time:g} s blocks, {args.local_steps} local steps "
        f"({report['machine']['cpus']} CPUs, load {report['load_average']})"
    )
    print(f"{'members':>7} {'round s':>8} {'sent':>10} {'received':>10} {'p2p recv':>10} {'CPU s':>6} "
          f"{'gas':>8} {'PSS MiB':>8}")  # fmt: skip
    for r in results:
        if "skipped" in r or "error" in r:
            why = r.get("skipped", r.get("error"))
            print(f"{r['members']:>7} {'skipped' if 'skipped' in r else 'failed'}: {why}")
            continue
        print(
            f"{r['members']:>7} {r['round_s']:>8.2f} {_fmt_bytes(r['sent_total_per_round']):>10} "
            f"{_fmt_bytes(r['received_total_per_round']):>10} "
            f"{_fmt_bytes(r['received_bytes_per_round']['p2p']):>10} {r['cpu_s_per_round']:>6.2f} "
            f"{r['gas_per_round']:>8} {r['pss_mib_max']:>8}"
        )
        for role, row in r.get("by_role", {}).items():
            if row["sent"] is not None:
                chain = row["sent_by_class"]["chain"] + row["received_by_class"]["chain"]
                print(
                    f"{'':>7} {role:>8} {_fmt_bytes(row['sent']):>10} {_fmt_bytes(row['received']):>10} "
                    f"{_fmt_bytes(row['p2p_received']):>10}   chain {_fmt_bytes(chain)}, "
                    f"{row['rpc_calls_total']:g} RPC calls, {row['blocks']:g} blocks "
                    f"({row['samples']} member-rounds)"
                )


if __name__ == "__main__":
    main()
