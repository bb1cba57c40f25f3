"""The catalogue of event names (node.console.events.EVENTS) against the emitters, the views and the docs."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from node.console import events, view
from node.console.events import EVENTS

REPO = Path(__file__).resolve().parents[4]
EMITTERS = ("event", "_emit")  # EventLog.event, and the fetcher's progress reports (node.protocol.retrieval)
CALLBACKS = ("log_event",)  # an EventLog.event passed as a function (node.protocol.inner_state)


def _emitted() -> dict[str, list[str]]:
    """Every event name passed as a literal to an emitter anywhere under node/, with where."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "node").rglob("*.py")):
        for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(call, ast.Call) and call.args):
                continue
            func = call.func
            if not (
                (isinstance(func, ast.Attribute) and func.attr in EMITTERS)
                or (isinstance(func, ast.Name) and func.id in CALLBACKS)
            ):
                continue
            first = call.args[0]
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if (
                isinstance(func, ast.Name) or func.attr == "event"
            ):  # every EventLog.event call names its event literally
                assert isinstance(first, ast.Constant) and isinstance(first.value, str), where
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, []).append(where)
    return found


def test_every_emitted_event_is_catalogued_and_every_catalogued_one_is_emitted() -> None:
    emitted = _emitted()

    assert {name: where for name, where in emitted.items() if name not in EVENTS} == {}
    assert sorted(set(EVENTS) - set(emitted)) == []
    assert all(meaning and meaning == meaning.strip() for meaning in EVENTS.values())


def test_the_views_and_styles_key_only_on_catalogued_events() -> None:
    handled = {name for name in EVENTS if hasattr(view.NodeView, "_on_" + name.replace(".", "_"))}
    handlers = {attr for attr in vars(view.NodeView) if attr.startswith("_on_")}

    assert sorted(view.TRANSIENT - set(EVENTS)) == []
    assert sorted(set(view._PHASES) - set(EVENTS)) == []
    assert sorted(set(events._STYLES) - set(EVENTS)) == []
    assert len(handled) == len(handlers), sorted(handlers)  # no handler of an event nothing emits


def test_every_event_the_docs_name_is_catalogued() -> None:
    prefixes = {name.split(".")[0] for name in EVENTS if "." in name}
    pattern = re.compile(rf"`((?:{'|'.join(sorted(prefixes))})\.[a-z_]+)`")
    unknown: dict[str, str] = {}
    for path in sorted((REPO / "docs").glob("*.md")):
        for name in pattern.findall(path.read_text(encoding="utf-8")):
            if name in EVENTS or name.endswith(".jsonl") or importlib.util.find_spec(name) is not None:
                continue
            unknown[name] = path.name

    assert unknown == {}
