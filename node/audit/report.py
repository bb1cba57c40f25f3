"""The run report: one self-contained HTML page of a run, built from the chain, the artifacts and node logs.

:func:`collect` reads what the chain records of a run (:func:`node.protocol.history.read_history`: rounds,
windows, submissions, votes, finalisations, accepted contributions, unlearning requests) and the block
timestamps, takes an audit of the run (:func:`node.audit.auditor.audit_run`, whose verdict and every mismatch
the page shows), and, where node event logs are given (``<home>/node.jsonl``), the held-out losses each node
recorded (``round.scored``) and the seconds each phase took. A log is attributed to a member by the update
hashes it logged (``round.trained``), matched against the chain's ``UpdateSubmitted`` events, so a log cannot
claim another member's scores. :func:`render_html` draws the page: plots are matplotlib figures inlined as
SVG, the styles are inline, there is no script and nothing is loaded from anywhere, so the file opens offline.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.client import RunsClient
from ledger.types import RoundStatus, RunId
from node.audit.records import RunAudit
from node.protocol.history import RoundRecord, RunHistory, read_history

PHASES = {"round.trained": "train", "round.fetched": "fetch", "round.merged": "merge", "round.voted": "vote"}
"""Node log events whose ``seconds`` the report shows as phase timings, and the phase each names."""


@dataclass
class NodeTrace:
    """What one node's event log says, attributed to the member whose updates it logged."""

    member: str | None
    path: str
    losses: dict[int, dict[str, float]] = field(default_factory=dict)
    """round -> ``merged_loss`` / ``local_loss`` (and other ``round.scored`` figures)."""
    phases: dict[int, dict[str, float]] = field(default_factory=dict)
    """round -> phase -> seconds."""
    skipped_lines: int = 0


@dataclass
class RunReport:
    """Everything the page shows."""

    history: RunHistory
    audit: RunAudit | None
    block_times: dict[int, int]
    traces: list[NodeTrace]
    registry: str
    generated: float = field(default_factory=time.time)


def read_node_log(path: Path, members_by_sha: dict[str, str]) -> NodeTrace:
    """Read one node's JSON-lines event log; malformed lines are counted and skipped, never fatal."""
    trace = NodeTrace(member=None, path=str(path))
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        trace.skipped_lines = -1
        return trace
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            trace.skipped_lines += 1
            continue
        if not isinstance(record, dict) or not isinstance(record.get("round"), int):
            continue
        event, rnd = record.get("event"), int(record["round"])
        if event == "round.trained" and trace.member is None:
            trace.member = members_by_sha.get(str(record.get("sha", "")).removeprefix("0x"))
        if event == "round.scored":
            scores = {
                k: float(v)
                for k, v in record.items()
                if k.endswith(("_loss", "_f1", "_accuracy"))
                and isinstance(v, int | float)
                and math.isfinite(v)
            }
            trace.losses.setdefault(rnd, {}).update(scores)
        phase = PHASES.get(str(event))
        seconds = record.get("seconds")
        if phase and isinstance(seconds, int | float) and math.isfinite(seconds):
            trace.phases.setdefault(rnd, {})[phase] = float(seconds)
    return trace


def collect(
    client: RunsClient, run: int, audit: RunAudit | None, logs: Iterable[Path] = (), registry: str = ""
) -> RunReport:
    """Gather a run's report data from the chain (and ``audit``, and node logs where given)."""
    history = read_history(client, RunId(run))
    blocks: set[int] = set()
    for rec in history.rounds:
        blocks.add(rec.info.start_block)
        blocks.update(s.block_number for s in rec.submissions)
        blocks.update(v.block_number for v in rec.votes)
        if rec.info.closed_block:
            blocks.add(rec.info.closed_block)
    head = client.block_number()
    times = {n: int(client.w3.eth.get_block(n)["timestamp"]) for n in sorted(blocks) if 0 <= n <= head}
    by_sha = {s.sha256.hex(): s.member for rec in history.rounds for s in rec.submissions}
    traces = [read_node_log(Path(p), by_sha) for p in logs]
    return RunReport(history, audit, times, traces, registry)


# ----- plots ----------------------------------------------------------------------------------------------


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # RDF boilerplate
    return text[text.index("<svg") :]


def _short(address: str | None) -> str:
    return "unknown node" if not address else f"{address[:6]}…{address[-4:]}"


def loss_plot(traces: Sequence[NodeTrace]) -> str | None:
    """Held-out loss per member and round: merged model (solid) and the member's own update (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not any(t.losses for t in traces):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for i, trace in enumerate(traces):
        color = f"C{i % 10}"
        for key, style in (("merged_loss", "-"), ("local_loss", "--")):
            points = sorted((r, v[key]) for r, v in trace.losses.items() if key in v)
            if points:
                label = f"{_short(trace.member)} {'merged' if key == 'merged_loss' else 'own update'}"
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    marker="o",
                    color=color,
                    label=label,
                )
    ax.set_xlabel("round")
    ax.set_ylabel("held-out loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _svg(fig)


def contribution_plot(report: RunReport) -> str:
    """Plot submitted updates and accepted contributions per member (from the chain's events)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    submitted: dict[str, int] = {}
    accepted: dict[str, int] = {}
    for rec in report.history.rounds:
        for s in rec.submissions:
            submitted[s.member] = submitted.get(s.member, 0) + 1
        for member, _ in rec.accepted:
            accepted[member] = accepted.get(member, 0) + 1
    members = sorted(set(submitted) | set(accepted))
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.45 * max(1, len(members))))
    ys = range(len(members))
    ax.barh([y + 0.2 for y in ys], [submitted.get(m, 0) for m in members], height=0.4, label="submitted")
    ax.barh([y - 0.2 for y in ys], [accepted.get(m, 0) for m in members], height=0.4, label="accepted")
    ax.set_yticks(list(ys), [_short(m) for m in members], fontsize=8)
    ax.set_xlabel("rounds")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def timeline_plot(report: RunReport) -> str:
    """Per round: submit and vote windows (blocks), each submission, each vote (red: dissent), the close."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report.history.rounds
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.5 * max(1, len(rounds))))
    for rec in rounds:
        y, info = rec.round, rec.info
        ax.barh(y, info.submit_end - info.start_block, left=info.start_block, height=0.5, color="#cfe3f7")
        ax.barh(y, info.vote_end - info.submit_end, left=info.submit_end, height=0.5, color="#e6f2d9")
        ax.scatter(
            [s.block_number for s in rec.submissions],
            [y] * len(rec.submissions),
            marker="o",
            s=18,
            color="C0",
            zorder=3,
        )
        agreed = [v.block_number for v in rec.votes if _agrees(rec, v)]
        dissent = [v.block_number for v in rec.votes if not _agrees(rec, v)]
        ax.scatter(agreed, [y] * len(agreed), marker="x", s=28, color="C2", zorder=3)
        ax.scatter(dissent, [y] * len(dissent), marker="x", s=40, color="red", zorder=4)
        if info.closed_block:
            ax.scatter(
                [info.closed_block],
                [y],
                marker="*",
                s=90,
                color="gold" if rec.finalized else "black",
                zorder=5,
            )
    ax.set_yticks([r.round for r in rounds], [f"round {r.round}" for r in rounds], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("block (blue: submit window, green: vote window; o submit, x vote, red x dissent, * close)")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def phase_plot(traces: Sequence[NodeTrace]) -> str | None:
    """Seconds per phase and round, averaged over the nodes that logged it (stacked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = sorted({r for t in traces for r in t.phases})
    if not rounds:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    bottom = [0.0] * len(rounds)
    for i, phase in enumerate(PHASES.values()):
        means = []
        for r in rounds:
            values = [t.phases[r][phase] for t in traces if phase in t.phases.get(r, {})]
            means.append(sum(values) / len(values) if values else 0.0)
        ax.bar(rounds, means, bottom=bottom, label=phase, color=f"C{i}")
        bottom = [b + m for b, m in zip(bottom, means, strict=True)]
    ax.set_xlabel("round")
    ax.set_ylabel("seconds (mean over nodes)")
    ax.legend(fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _svg(fig)


# ----- page -----------------------------------------------------------------------------------------------


def _agrees(rec: RoundRecord, vote: Any) -> bool:
    return rec.result is not None and (
        vote.merged_sha256 == rec.result.merged_sha256
        and vote.included_set_hash == rec.result.included_set_hash
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def _hex(value: bytes | None, n: int = 12) -> str:
    return "—" if not value else value.hex()[:n] + "…"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]], cls: Sequence[str] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        klass = f' class="{cls[i]}"' if i < len(cls) and cls[i] else ""
        out.append(f"<tr{klass}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:68rem;color:#1d2430}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde3ea}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #dde3ea;padding:.25rem .5rem}
th{background:#f3f6f9;text-align:left}tr.dissent td{background:#fdecea}tr.failed td{background:#f6f6f6}
.verdict{padding:.8rem 1rem;border-radius:.4rem;font-weight:600}.ok{background:#e3f4e1;color:#1d5e1a}
.bad{background:#fdecea;color:#8a1c12}.note{color:#5a6675;font-size:.85rem}code{font-size:.8rem}
figure{margin:.5rem 0}figure svg{max-width:100%;height:auto}
"""


def _audit_section(audit: RunAudit | None) -> str:
    if audit is None:
        return '<p class="verdict bad" id="verdict">Not audited: the artifacts could not be read.</p>'
    if audit.ok:
        text = (
            f"Audit passed: {sum(1 for r in audit.rounds if r.status == 'finalized')} finalised rounds "
            "recomputed from the chain and the artifacts, every hash equal."
        )
        parts = [f'<p class="verdict ok" id="verdict">{_e(text)}</p>']
    else:
        text = f"Audit FAILED: {len(audit.mismatches)} mismatch(es)."
        parts = [f'<p class="verdict bad" id="verdict">{_e(text)}</p>', '<ul id="mismatches">']
        parts += [f"<li><code>{_e(m.describe())}</code></li>" for m in audit.mismatches]
        parts.append("</ul>")
    parts += [f'<p class="note">note: {_e(n)}</p>' for n in audit.notes]
    parts += [f'<p class="note">not checked: {_e(n)}</p>' for n in audit.unchecked]
    return "\n".join(parts)


def render_html(report: RunReport) -> str:
    """Return the report page (UTF-8 HTML, self-contained)."""
    history, info = report.history, report.history.info
    times = report.block_times
    status_name = {RoundStatus.OPEN: "open", RoundStatus.FINALIZED: "finalised", RoundStatus.FAILED: "failed"}

    def when(block: int | None) -> str:
        if not block or block not in times:
            return _e(block or "—")
        return f'{block} <span class="note">{time.strftime("%H:%M:%S", time.gmtime(times[block]))}</span>'

    round_rows, round_cls = [], []
    for rec in history.rounds:
        ri = rec.info
        dissent = sum(1 for v in rec.votes if not _agrees(rec, v)) if rec.finalized else 0
        took = ""
        if ri.closed_block in times and ri.start_block in times:
            took = f"{times[ri.closed_block] - times[ri.start_block]} s"
        round_rows.append(
            [
                rec.round,
                status_name.get(ri.status, str(ri.status)),
                when(ri.start_block),
                ri.submit_end,
                ri.vote_end,
                f"{ri.submissions} of {ri.eligible}",
                f"{len(rec.votes)} (quorum {ri.quorum})",
                dissent,
                when(ri.closed_block or None),
                took,
                _hex(rec.result.merged_sha256 if rec.result else None),
            ]
        )
        round_cls.append("dissent" if dissent else ("failed" if ri.status == RoundStatus.FAILED else ""))
    vote_rows, vote_cls = [], []
    for rec in history.rounds:
        for v in rec.votes:
            agrees = _agrees(rec, v)
            vote_rows.append(
                [
                    rec.round,
                    _e(v.member),
                    _hex(v.merged_sha256),
                    _hex(v.included_set_hash),
                    when(v.block_number),
                    "agrees" if agrees else "<b>dissent</b>",
                ]
            )
            vote_cls.append("" if agrees else "dissent")
    submitted: dict[str, list[int]] = {}
    accepted: dict[str, list[int]] = {}
    for rec in history.rounds:
        for s in rec.submissions:
            submitted.setdefault(s.member, []).append(rec.round)
        for member, _ in rec.accepted:
            accepted.setdefault(member, []).append(rec.round)
    member_rows = [
        [_e(m), len(submitted.get(m, [])), len(accepted.get(m, [])), _e(submitted.get(m, []))]
        for m in sorted(set(submitted) | set(accepted))
    ]
    request_rows = [
        [
            r.request_id,
            _e(r.request.subject),
            r.request.from_round,
            "fulfilled" if r.fulfilled else "pending",
            len(r.votes),
            when(r.request.request_block),
            when(r.request.fulfilled_block or None),
        ]
        for r in history.requests
    ]
    losses = loss_plot(report.traces)
    phases = phase_plot(report.traces)
    logs_note = (
        (
            "held-out losses are what each node recorded in its log; the chain does not store them. "
            + ", ".join(
                f"{_short(t.member)}: {t.path}"
                + (f" ({t.skipped_lines} malformed lines skipped)" if t.skipped_lines > 0 else "")
                for t in report.traces
            )
        )
        if report.traces
        else (
            "no node logs were given (--node-log): losses and phase timings are recorded by the nodes, "
            "not on chain."
        )
    )
    body = [
        f"<h1>fedchain run {info.run_id}</h1>",
        f'<p class="note">registry <code>{_e(report.registry)}</code> · '
        f"spec <code>{_e(info.spec_cid)}</code> · "
        f"quorum {info.quorum_bps / 100:g} % · windows {info.submit_blocks}+{info.vote_blocks} blocks · "
        f"{info.member_count} members ({info.banned_count} banned) · generated "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.generated)))}</p>",
        "<h2>Audit</h2>",
        _audit_section(report.audit),
        "<h2>Rounds</h2>",
        _table(
            [
                "round",
                "status",
                "opened (block)",
                "submit end",
                "vote end",
                "updates",
                "votes",
                "dissent",
                "closed (block)",
                "took",
                "merged sha256",
            ],
            round_rows,
            round_cls,
        ),
        f'<figure id="timeline">{timeline_plot(report)}</figure>',
        "<h2>Held-out loss</h2>",
        f'<figure id="losses">{losses}</figure>' if losses else "",
        f'<p class="note">{_e(logs_note)}</p>',
        "<h2>Contributors</h2>",
        _table(["member", "submitted", "accepted", "rounds submitted"], member_rows),
        f'<figure id="contributions">{contribution_plot(report)}</figure>',
        "<h2>Votes</h2>",
        _table(["round", "member", "merged sha256", "included set", "block", ""], vote_rows, vote_cls),
        "<h2>Phase timings</h2>",
        f'<figure id="phases">{phases}</figure>' if phases else '<p class="note">no node logs given.</p>',
        "<h2>Unlearning requests</h2>",
        _table(
            ["request", "subject", "from round", "status", "votes", "filed (block)", "fulfilled (block)"],
            request_rows,
        )
        if request_rows
        else '<p class="note">none.</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fedchain run {info.run_id}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
