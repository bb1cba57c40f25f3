"""Round time under WAN conditions against loopback: same run, same N, one after the other in one invocation.

Both runs use the tiny-model spec (``node/specs/tiny.toml``, ``--rounds`` rounds, ``--local-steps`` local
steps, windows long enough for slow starts; voting opens once every member has committed, so a long submit
window costs nothing) over a fresh devnet (anvil with ``--block-time`` blocks + an IPFS daemon) and N
``fedchain node`` processes, each with its own embedded store:

* ``loopback``: everything on 127.0.0.1 (``node.devnet.harness.Devnet``);
* ``wan``: anvil and IPFS in a services namespace, each node in its own namespace, every link through the
  userspace emulator (``node.devnet.wan``): one-way delay drawn per link in ``--delay-ms`` (seeded),
  ``--loss`` frame loss, ``--rate-mbit`` uplink cap per namespace.

Per condition it reports the mean round time and its split (``train``, ``transfer``, ``aggregate``,
``chain``, ``wait``, ``other``) over nodes and rounds 1.. exactly as ``bench/round.py`` does (round 0 also
waits out the join window), and the WAN / loopback ratio of each. ``rpc_per_round`` is the mean node's
JSON-RPC requests per round over the same rounds, by method, from the counts each node's ``round.finalized``
carries (``ledger.rpc.CALLS``); every one of them crosses the services link under WAN conditions. Needs root
(see ``node.devnet.wan``).

    python bench/wan.py                      # 4 nodes, 3 rounds, 50-150 ms, 1 % loss, 100 Mbit/s
    python bench/wan.py --sizes 4 8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.round import PHASES, SKILLS, _round_rows, summarise  # noqa: E402
from bench.round import _spec as round_spec  # noqa: E402

COLUMNS = (*PHASES, "other", "round")


def _spec(folder: Path, rounds: int, size: int, local_steps: int, block_time: float) -> Path:
    """bench/round.py's spec with windows wide enough for WAN round trips."""
    join_s = 90 + 10 * size  # node processes start (and import torch) inside this window
    submit_s = 240 + 2 * size * local_steps  # an upper bound: voting opens once all have submitted
    vote_s = 90 + 5 * size
    return round_spec(folder, rounds, size, local_steps, block_time, (join_s, submit_s, vote_s))


def rpc_per_round(events: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean JSON-RPC requests of a node per round, rounds 1.. (as ``_round_rows``), in total and by method.

    ``events`` holds each node's event log; a ``round.finalized`` event's ``rpc`` maps a method to
    ``[requests, sent bytes, received bytes]`` since the node's previous one. Rounds without counts are left
    out; ``rounds`` says how many (node, round) pairs were counted.
    """
    counted: list[dict[str, int]] = []
    for log in events:
        finals = [e for e in log if e.get("event") == "round.finalized"]
        for e in finals[1:]:
            rpc = e.get("rpc")
            if isinstance(rpc, dict):
                counted.append({str(m): int(v[0]) for m, v in rpc.items()})
    if not counted:
        return {"rounds": 0, "total": None, "by_method": {}}
    methods = sorted({m for c in counted for m in c})
    by_method = {m: round(sum(c.get(m, 0) for c in counted) / len(counted), 1) for m in methods}
    total = round(sum(sum(c.values()) for c in counted) / len(counted), 1)
    return {"rounds": len(counted), "total": total, "by_method": by_method}


def _run_cluster(
    cluster: Any, spec: Path, size: int, rounds: int, keep: Path | None
) -> list[list[dict[str, Any]]]:
    cluster.init()
    run_id = cluster.create_run(spec)
    try:
        cluster.start(run_id, [f"synthetic:{SKILLS[i % len(SKILLS)]}:40" for i in range(size)])
        cluster.wait_until(
            lambda: all(cluster.events(i, "run.done") for i in range(size)),
            600.0 + 120.0 * rounds,
            "run.done",
        )
    finally:
        cluster.stop()
        if keep is not None:  # each node's event log and output, also when the run failed
            keep.mkdir(parents=True, exist_ok=True)
            for member in cluster.members:
                for source in (member.log_path, member.home / "stdout.log"):
                    if source.exists():
                        shutil.copyfile(source, keep / f"node{member.index}-{source.name}")
    return [cluster.events(i) for i in range(size)]


def measure(condition: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one cluster of ``size`` nodes under ``condition`` (``loopback`` or ``wan``); its time split."""
    from node.devnet.anvil import AnvilConfig
    from node.devnet.cluster import LocalCluster
    from node.devnet.harness import Devnet
    from node.devnet.wan import WanConfig, WanNetwork
    from node.devnet.wan_devnet import WanDevnet

    anvil = AnvilConfig(block_time=args.block_time, accounts=size + 1)
    started = time.monotonic()
    extra: dict[str, Any] = {}
    keep = args.keep / f"{size}-nodes-{condition}" if args.keep is not None else None
    with tempfile.TemporaryDirectory(prefix=f"fedchain-bench-wan-{condition}-") as tmp:
        folder = Path(tmp)
        spec = _spec(folder, args.rounds, size, args.local_steps, args.block_time)
        if condition == "loopback":
            with Devnet(folder / "devnet", anvil, ipfs=True) as devnet:
                events = _run_cluster(
                    LocalCluster(folder / "nodes", devnet, size), spec, size, args.rounds, keep
                )
        else:
            labels = ["svc", *(f"n{i}" for i in range(size))]
            config = WanConfig(
                delay_ms=(args.delay_ms[0], args.delay_ms[1]),
                loss=args.loss,
                rate_mbit=args.rate_mbit,
                seed=args.seed,
                max_lifetime_s=7200.0,
            )
            with WanNetwork(folder / "wan", labels, config) as net:
                with WanDevnet(folder / "devnet", net, anvil) as (_, nodes):
                    names = labels[1:]
                    cluster = LocalCluster(
                        folder / "nodes",
                        nodes,
                        size,
                        hosts=[net.address(n) for n in names],
                        prefixes=[net.prefix(n) for n in names],
                    )
                    events = _run_cluster(cluster, spec, size, args.rounds, keep)
                net.stop()
                delays = [net.delays_ms[(a, b)] for a in labels for b in labels if a < b]
                extra = {"frames": net.stats(), "delay_ms_mean": round(sum(delays) / len(delays), 1)}
    return {
        "condition": condition,
        "nodes": size,
        **summarise([_round_rows(log) for log in events]),
        "rpc_per_round": rpc_per_round(events),
        **extra,
        "load_average": [round(x, 2) for x in os.getloadavg()],  # this machine's load as the run ended
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the with blocks then stop the nodes, services and namespaces


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4], help="cluster sizes (>= 1)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (>= 2)")
    parser.add_argument("--local-steps", type=int, default=4, help="local training steps per round")
    parser.add_argument("--block-time", type=float, default=1.0, help="devnet seconds per block")
    parser.add_argument("--delay-ms", type=float, nargs=2, default=[50.0, 150.0], help="one-way delay range")
    parser.add_argument("--loss", type=float, default=0.01, help="frame loss probability")
    parser.add_argument("--rate-mbit", type=float, default=100.0, help="uplink cap per namespace")
    parser.add_argument("--seed", type=int, default=0, help="seed of the link delays and drops")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, default=None, help="copy the nodes' event logs and output here")
    args = parser.parse_args()
    if args.rounds < 2 or args.local_steps < 1 or args.block_time <= 0 or min(args.sizes) < 1:
        parser.error("--rounds must be >= 2, --local-steps and --sizes >= 1, --block-time > 0")
    rows = []
    for size in args.sizes:
        base = measure("loopback", size, args)
        print(json.dumps(base), file=sys.stderr, flush=True)  # kept should the WAN run fail
        wan = measure("wan", size, args)
        ratio = {k: round(wan["seconds"][k] / base["seconds"][k], 2) if base["seconds"][k] > 0 else None
                 for k in COLUMNS}  # fmt: skip
        rows.append({"nodes": size, "loopback": base, "wan": wan, "ratio": ratio})
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "block_time_s": args.block_time,
        "local_steps": args.local_steps,
        "wan": {"delay_ms": args.delay_ms, "loss": args.loss, "rate_mbit": args.rate_mbit, "seed": args.seed},
        "results": rows,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"round time, WAN ({args.delay_ms[0]:g}-{args.delay_ms[1]:g} ms one way, {args.loss:.0%} loss, "
        f"{args.rate_mbit:g} Mbit/s) vs loopback; tiny model, {args.local_steps} local steps, "
        f"{args.block_time:g} s blocks ({report['machine']['cpus']} CPUs, load {report['load_average']})"
    )
    print(f"{'nodes':>5} {'condition':>9} " + " ".join(f"{c:>9}" for c in COLUMNS))
    for row in rows:
        for name in ("loopback", "wan"):
            s = row[name]["seconds"]
            print(f"{row['nodes']:>5} {name:>9} " + " ".join(f"{s[c]:>9.3f}" for c in COLUMNS))
        r = row["ratio"]
        print(f"{row['nodes']:>5} {'ratio':>9} " + " ".join(f"{r[c]:>9}" for c in COLUMNS))
        calls = [row[name]["rpc_per_round"]["total"] for name in ("loopback", "wan")]
        print(f"      JSON-RPC requests per node per round: loopback {calls[0]}, WAN {calls[1]}")
        wan = row["wan"]
        if "frames" in wan:
            print(f"      WAN frames: {wan['frames']}, mean one-way delay {wan['delay_ms_mean']} ms")


if __name__ == "__main__":
    main()
