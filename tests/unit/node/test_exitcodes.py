"""Exit codes are defined once (node.exitcodes) and used by name everywhere in node/."""

from __future__ import annotations

import ast
from pathlib import Path

from node.exitcodes import EXIT_CODES, EXIT_INTERRUPTED, EXIT_MISMATCH, EXIT_USAGE, describe

NODE = Path(__file__).resolve().parents[3] / "node"


def _exit_calls_with_literals(tree: ast.AST) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) in ("Exit", "exit")
        and any(isinstance(a, ast.Constant) and isinstance(a.value, int) for a in node.args)
    ]


def _exit_definitions(tree: ast.AST) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name) and target.id.lstrip("_").startswith("EXIT_")
    ]


def test_no_module_in_node_defines_its_own_exit_codes_or_exits_with_a_bare_number() -> None:
    offenders = []
    for path in sorted(NODE.rglob("*.py")):
        if path.name == "exitcodes.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        rel = path.relative_to(NODE.parent)
        offenders += [f"{rel}:{line} defines an EXIT_ constant" for line in _exit_definitions(tree)]
        offenders += [f"{rel}:{line} exits with a bare number" for line in _exit_calls_with_literals(tree)]

    assert offenders == []


def test_the_scan_finds_what_it_looks_for() -> None:
    tree = ast.parse("import typer\nEXIT_X = 5\n_EXIT_Y = 6\nraise typer.Exit(2)\nsys.exit(1)\n")

    assert _exit_definitions(tree) == [2, 3]
    assert _exit_calls_with_literals(tree) == [4, 5]


def test_the_catalogue_is_what_the_docs_list() -> None:
    assert (EXIT_USAGE, EXIT_MISMATCH, EXIT_INTERRUPTED) == (2, 3, 130)
    assert list(EXIT_CODES) == sorted(EXIT_CODES)
    assert describe().startswith("0 success, 1 a failure the message explains, 2 bad usage")
    assert f"{describe()}." in " ".join((NODE.parent / "docs" / "cli.md").read_text().split())
