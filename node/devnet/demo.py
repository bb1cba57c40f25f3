"""The ``fedchain demo``: a whole federated run on a fresh local devnet, from nothing to an audit that passes.

:func:`run_demo` starts anvil (1 s blocks) and an IPFS daemon in a temporary folder, deploys the contracts,
creates a run from ``node/specs/demo-<model>.toml`` (with the requested number of rounds), starts N
``fedchain node`` processes on loopback (a :class:`node.devnet.cluster.LocalCluster`, every node storing in
the IPFS daemon), each with its own chatterbot category, and waits until every node has finished the run. It
gives every node the other nodes' held-out splits as ``--eval-data`` (data of the other members'
distributions that no member trains on). It then reads the rounds from the chain, scores a local-only
baseline per node (the run's base model trained only on that node's data for as many steps as the node
made in the run) with the same :func:`node.protocol.scoring.score_model` the node scored the merged model with
(loss and token F1, on the node's own held-out split and on the others'), audits the run with
:func:`node.audit.auditor.audit_registry` (the code of ``fedchain audit``) and stops every process it started,
on failure and Ctrl-C too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.devnet.anvil import AnvilConfig
from node.devnet.cluster import LocalCluster
from node.devnet.harness import Devnet
from node.errors import NodeError
from node.runspec import RunSpec
from p2p.storage import open_store

SPECS = Path(__file__).resolve().parents[1] / "specs"
# small categories first: a few held-out examples per node keep the scoring cheap on a CPU; past the last
# one, nodes share categories again (node i gets CATEGORIES[i % len(CATEGORIES)])
CATEGORIES = (
    "computers", "humor", "money", "science", "sports", "greetings", "movies", "literature", "ai",
    "food", "gossip", "botprofile", "politics", "health", "history", "psychology", "conversations",
    "coding", "emotion", "trivia", "tech_support",
)  # fmt: skip
MODELS = ("smollm2", "tiny")
NODE_MEMORY_MIB = {"smollm2": 1200, "tiny": 450}
"""Resident memory of one node process per demo model, rounded up (the demo refuses sizes that cannot fit)."""
ProgressFn = Callable[["DemoProgress"], None]


class DemoError(NodeError, RuntimeError):
    """The demo could not finish (a node died, a wait timed out); carries the failing node's log tail."""


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs.

    Attributes
    ----------
    nodes
        Member node processes (>= 1; node i trains on chatterbot category ``CATEGORIES[i % 21]``).
    rounds
        Rounds to finalise.
    model
        ``"smollm2"`` (SmolLM2-135M-Instruct) or ``"tiny"`` (the tiny random Llama).
    timeout_s
        Upper bound on the wait for every node to finish the run.
    seed
        The run's seed (adapter init and every member's training seed), replacing the spec's; ``None``
        keeps the spec's.
    report
        Where to write the run report (:mod:`node.audit.report`); ``None`` writes none.
    """

    nodes: int = 3
    rounds: int = 3
    model: str = "smollm2"
    timeout_s: float = 900.0
    seed: int | None = None
    report: Path | None = None

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"`nodes` must be >= 1, got {self.nodes}")
        if self.rounds < 1:
            raise ValueError(f"`rounds` must be >= 1, got {self.rounds}")
        if self.model not in MODELS:
            raise ValueError(f"`model` must be smollm2 or tiny, got {self.model!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"`timeout_s` must be > 0, got {self.timeout_s}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError(f"`seed` must be in [0, 2**63), got {self.seed}")

    @property
    def sources(self) -> list[str]:
        """Each node's ``--data`` source: its own chatterbot category (shared again past the 21st node)."""
        return [f"chatterbot:{CATEGORIES[i % len(CATEGORIES)]}" for i in range(self.nodes)]

    @property
    def node_memory_mib(self) -> int:
        """Memory one node process of this demo needs (see :data:`NODE_MEMORY_MIB`)."""
        return NODE_MEMORY_MIB[self.model]


@dataclass(frozen=True)
class DemoProgress:
    """A snapshot while the run goes: the stage, finalised rounds and each node's latest event."""

    stage: str
    finalized: int
    rounds: int
    phases: tuple[str, ...]


def spec_file(config: DemoConfig, folder: Path) -> Path:
    """Write the demo spec of ``config.model`` with ``config.rounds`` rounds (and seed) into ``folder``."""
    text = (SPECS / f"demo-{config.model}.toml").read_text()
    text, count = re.subn(r"(?m)^rounds\s*=\s*\d+", f"rounds = {config.rounds}", text)
    if count != 1:
        raise DemoError(f"demo spec for {config.model!r} has no single `rounds = N` line")
    if config.seed is not None:
        text, count = re.subn(r"(?m)^seed\s*=\s*\d+", f"seed = {config.seed}", text)
        if count != 1:
            raise DemoError(f"demo spec for {config.model!r} has no single `seed = N` line")
    path = folder / "run.toml"
    path.write_text(text)
    return path


def spec_seed(path: Path) -> int:
    """Return the ``[run] seed`` of the spec file the demo wrote."""
    return int(RunSpec.from_toml(path).seed)


def _phase(events: list[dict[str, Any]]) -> str:
    if not events:
        return "starting"
    last = events[-1]
    name = str(last.get("event", "?"))
    rnd = last.get("round")
    detail = ""
    if name == "round.train_step":
        detail = f" {last.get('step')}/{last.get('steps')}"
    elif name == "round.waiting":
        detail = f": {last.get('why', '')}"
    return name + (f" r{rnd}" if rnd is not None else "") + detail


@contextmanager
def _cluster(config: DemoConfig, folder: Path, report: ProgressFn) -> Iterator[tuple[Any, LocalCluster, int]]:
    report(DemoProgress("starting anvil and IPFS, deploying the contracts", 0, config.rounds, ()))
    anvil = AnvilConfig(block_time=1.0, accounts=max(10, config.nodes + 1))
    with Devnet(folder / "devnet", anvil, ipfs=True) as devnet:
        cluster = LocalCluster(
            folder / "nodes", devnet, config.nodes, store="ipfs", node_memory_mib=config.node_memory_mib
        )
        try:
            report(DemoProgress("creating node homes and the run", 0, config.rounds, ()))
            cluster.init()
            run_id = cluster.create_run(spec_file(config, folder))
            report(DemoProgress(f"starting {config.nodes} nodes (run {run_id})", 0, config.rounds, ()))
            cluster.start(run_id, config.sources, extra=_eval_flags(config, folder, cluster.members))
            yield devnet, cluster, run_id
        except BaseException as exc:
            tails = [
                f"--- node{i} ---\n{p.tail(30)}" for i, p in cluster.processes.items() if not p.is_running()
            ]
            cluster.stop()
            if tails and not isinstance(exc, KeyboardInterrupt):
                raise DemoError(f"{exc}\n" + "\n".join(tails)) from exc
            raise
        cluster.stop()


def _member_seed(address: str) -> int:
    """Return a member's data seed (split and sample), the one the node derives from its address."""
    return int(hashlib.sha256(address.lower().encode()).hexdigest()[:8], 16)


def _member_data(source: str, address: str) -> Any:
    from node.config import TrainingSection
    from node.protocol.model import load_local_data

    defaults = TrainingSection()
    return load_local_data(
        source,
        held_out_fraction=defaults.held_out_fraction,
        max_examples=defaults.max_examples,
        seed=_member_seed(address),
    )


def held_out_file(folder: Path, index: int) -> Path:
    """Where the demo writes member ``index``'s held-out split (the other members score models on it)."""
    return folder / "held-out" / f"node{index}.jsonl"


def _eval_flags(config: DemoConfig, folder: Path, members: list[Any]) -> dict[int, list[str]]:
    """Write each member's held-out split; give every member the others' as ``--eval-data``.

    The split is the one the owner's node keeps out of its own training, so no member has trained on any
    example another member scores it on: the other-distribution figures are held out for everyone.
    """
    from node.protocol.scoring import write_examples

    for m in members:
        write_examples(
            _member_data(config.sources[m.index], m.address).held_out, held_out_file(folder, m.index)
        )
    flags: dict[int, list[str]] = {}
    for m in members:
        for other in members:
            if other.index != m.index:
                flags.setdefault(m.index, []).extend(["--eval-data", str(held_out_file(folder, other.index))])
    return flags


def _wait_for_run(cluster: LocalCluster, config: DemoConfig, report: ProgressFn) -> None:
    deadline = time.monotonic() + config.timeout_s
    while True:
        events = [cluster.events(i) for i in range(cluster.size)]
        finalized = min(len({e["round"] for e in ev if e.get("event") == "round.finalized"}) for ev in events)
        report(DemoProgress("running rounds", finalized, config.rounds, tuple(_phase(ev) for ev in events)))
        if all(any(e.get("event") == "run.done" for e in ev) for ev in events):
            return
        for i, proc in cluster.processes.items():
            if not proc.is_running() and not any(e.get("event") == "run.done" for e in events[i]):
                raise DemoError(f"node{i} exited before the end of the run:\n{proc.tail(30)}")
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {config.timeout_s:g} s waiting for {config.rounds} rounds")
        time.sleep(0.5)


def run_demo(
    config: DemoConfig, progress: ProgressFn | None = None, folder: Path | None = None
) -> dict[str, Any]:
    """Run the demo and return its summary (rounds, losses, audit; layout in ``fedchain demo --json``).

    Raises
    ------
    DemoError
        If a node exits, a wait times out, or a round does not finalise.
    """
    report = progress or (lambda _: None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fedchain-demo-") as tmp:
        work = Path(folder or tmp)
        with _cluster(config, work, report) as (devnet, cluster, run_id):
            try:
                _wait_for_run(cluster, config, report)
            except Exception as exc:
                if isinstance(exc, DemoError):
                    raise
                raise DemoError(str(exc)) from exc
            report(DemoProgress("reading the chain and auditing", config.rounds, config.rounds, ()))
            rounds = _rounds(devnet, cluster, run_id, config.rounds)
            audit, run_audit = _audit(devnet, run_id)
            report_path = _write_report(config, devnet, cluster, run_id, run_audit)
            members = [
                {"index": m.index, "address": m.address, "data": config.sources[m.index]}
                for m in cluster.members
            ]
            node_events = [cluster.events(i) for i in range(cluster.size)]
        run_seconds = time.monotonic() - started
        report(DemoProgress("training the local-only baselines", config.rounds, config.rounds, ()))
        losses = _losses(config, work / "run.toml", members, node_events)
        seed = spec_seed(work / "run.toml")
    return {
        "model": config.model,
        "nodes": config.nodes,
        "seed": seed,
        "run_id": run_id,
        "rpc_url": devnet.rpc_url,
        "runs_address": devnet.runs_address,
        "members": members,
        "rounds": rounds,
        "losses": losses,
        "comparison": comparison(losses),
        "audit": audit,
        "report": str(report_path) if report_path else None,
        "run_seconds": round(run_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }


def _rounds(devnet: Any, cluster: LocalCluster, run_id: int, count: int) -> list[dict[str, Any]]:
    from ledger.chain import connect
    from ledger.client import RunsClient
    from ledger.types import RoundId, RoundStatus, RunId

    client = RunsClient(connect(devnet.rpc_url), devnet.runs_address)
    run = RunId(run_id)
    names = {m.address.lower(): f"node{m.index}" for m in cluster.members}
    rows = []
    for r in map(RoundId, range(int(client.current_round(run)[0].round) + 1)):
        info = client.round_info(run, r)
        if info.status == RoundStatus.OPEN:
            continue
        result = client.round_result(run, r) if info.status == RoundStatus.FINALIZED else None
        finals = {e["sha"] for i in range(cluster.size) for e in cluster.events(i, "round.finalized")
                  if e["round"] == r}  # fmt: skip
        rows.append(
            {
                "round": r,
                "status": info.status.name.lower(),
                "contributors": [names.get(s.member.lower(), s.member) for s in client.submissions(run, r)],
                "merged_sha256": result.merged_sha256.hex() if result else None,
                "merged_cid": result.merged_cid if result else None,
                "votes": result.votes if result else 0,
                "eligible": info.eligible,
                "finalized_block": result.block_number if result else None,
                "nodes_agree": result is not None and finals == {result.merged_sha256.hex()},
            }
        )
    if sum(1 for row in rows if row["status"] == "finalized") < count:
        raise DemoError(f"only {len(rows)} of {count} rounds finalised on chain: {rows}")
    return rows


def _write_report(
    config: DemoConfig, devnet: Any, cluster: LocalCluster, run_id: int, audit: Any
) -> Path | None:
    """Write the run report (chain, artifacts, the audit and every node's log) where ``config`` says."""
    if config.report is None:
        return None
    from ledger.chain import connect
    from ledger.client import RunsClient
    from node.audit.report import collect, render_html

    client = RunsClient(connect(devnet.rpc_url), devnet.runs_address)
    logs = [member.log_path for member in cluster.members]
    data = collect(client, run_id, audit, logs, registry=devnet.runs_address)
    config.report.parent.mkdir(parents=True, exist_ok=True)
    config.report.write_text(render_html(data), encoding="utf-8")
    return config.report.resolve()


def _audit(devnet: Any, run_id: int) -> tuple[dict[str, Any], Any]:
    from ledger.chain import connect
    from ledger.client import RunsClient
    from node.audit.auditor import audit_registry, runspec_setup_loader

    client = RunsClient(connect(devnet.rpc_url), devnet.runs_address)
    store = open_store(f"ipfs:{devnet.ipfs_api}")
    report = audit_registry(client, store, runspec_setup_loader(), run_id)[0]
    finalised = [row for row in report.rounds if row.status == "finalized"]
    summary = {
        "ok": report.ok,
        "rounds_recomputed": len(finalised),
        "recomputed_equal": sum(1 for row in finalised if row.recomputed_sha256 == row.merged_sha256),
        "mismatches": [m.describe() for m in report.mismatches],
    }
    return summary, report


def _losses(
    config: DemoConfig, spec_path: Path, members: list[dict[str, Any]], events: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Per node: the final merged model's scores (the node's own) next to a local-only model's and the base's.

    Each model is scored with :func:`node.protocol.scoring.score_model` on the node's held-out split and on
    the other members' held-out splits (the files the node was given as ``--eval-data``), by loss and token
    F1. The local-only model is the run's base model with the same run-seeded adapter init, trained only on
    the node's training split with the run's training settings, for as many steps as the node made in the run
    (with ``[train] lr_schedule = "cosine"``: one training per round at that round's rate).
    """
    from node.config import TrainingSection
    from node.protocol.model import ModelRuntime
    from node.protocol.scoring import EvalPlan, load_eval_sources, score_model
    from training.sft import train_sft

    spec = RunSpec.from_toml(spec_path)
    runtime = ModelRuntime(spec, threads=0)
    initial = runtime.initial_state()
    steps = (spec.train.local_steps or 1) * config.rounds
    defaults = TrainingSection()
    plan = EvalPlan(answers=defaults.eval_answers)
    folder = spec_path.parent
    rows = []
    for member, node_events in zip(members, events, strict=True):
        scored = [e for e in node_events if e.get("event") == "round.scored" and "merged_loss" in e]
        merged = scored[-1] if scored else {}
        seed = _member_seed(member["address"])
        data = _member_data(member["data"], member["address"])
        others_files = [
            str(held_out_file(folder, m["index"])) for m in members if m["index"] != member["index"]
        ]
        others = load_eval_sources(others_files, max_examples=defaults.eval_max_examples, seed=seed)

        def score(own: list[Any], others: list[Any]) -> dict[str, float | None]:
            return score_model(
                runtime.model, runtime.tokenizer, own, others, plan, max_len=spec.train.max_len
            )

        runtime.load(initial)
        base = score(data.held_out, others)
        if spec.train.lr_schedule == "constant":
            whole = dataclasses.replace(spec.train_config(seed), local_steps=steps)
            train_sft(runtime.model, runtime.tokenizer, data.train, whole)
        else:  # round by round at the run's rates, as training.simulate's local-only baseline
            for r in range(config.rounds):
                train_sft(runtime.model, runtime.tokenizer, data.train, spec.train_config(seed + r * 1009, r))
        local = score(data.held_out, others)
        runtime.load(initial)
        row: dict[str, Any] = {
            "node": f"node{member['index']}",
            "data": member["data"],
            "held_out": len(data.held_out),
            "others": [m["data"] for m in members if m["index"] != member["index"]],
            "others_held_out": len(others),
            "local_steps": steps,
        }
        for key in ("loss", "others_loss", "f1", "others_f1"):
            row[f"initial_{key}"] = base[key]
            row[f"merged_{key}"] = merged.get(f"merged_{key}")
            row[f"local_only_{key}"] = local[key]
        row["federation_wins_own"] = _lower(row["merged_loss"], row["local_only_loss"])
        row["federation_wins_others"] = _lower(row["merged_others_loss"], row["local_only_others_loss"])
        rows.append(row)
    return rows


def comparison(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many nodes the federated model serves better than their local-only model, on own and others' data.

    ``note`` says it in words, naming the nodes where local-only wins on their own data (personalisation).
    """
    others = [r["node"] for r in rows if r["federation_wins_others"]]
    scored = [r["node"] for r in rows if r["federation_wins_others"] is not None]
    own_local = [r["node"] for r in rows if r["federation_wins_own"] is False]
    note = (
        f"On the other members' data the federated model has the lower loss on {len(others)} of "
        f"{len(scored)} nodes."
    )
    if own_local:
        note += (
            f" On their own data local-only wins on {', '.join(own_local)}: a model trained on one category "
            "alone fits that category more closely (personalisation), while each merged step averages the "
            "members' updates and moves the model towards every category."
        )
    return {
        "federation_wins_others": len(others),
        "federation_wins_own": sum(1 for r in rows if r["federation_wins_own"]),
        "local_only_wins_own": own_local,
        "nodes": len(rows),
        "note": note,
    }


def _lower(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a < b
