"""README.md and docs/*.md: every relative link and anchor resolves; the text states current facts only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.cli.docgen import anchors

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HISTORY = re.compile(
    r"\b(this|that|the same|an earlier|earlier|previous|last|later|another|other) sessions?\b"
    r"|\bsessions? (ago|before)\b|\bbefore this (change|round|session)\b",
    re.IGNORECASE,
)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file (web and mail links left out)."""
    found = _LINK.findall(_prose(path.read_text(encoding="utf-8")))
    return [t for t in found if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def broken_links(path: Path) -> list[str]:
    """Every relative link of ``path`` whose file or anchor does not exist, as ``target (why)``."""
    out = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            out.append(f"{target} (no file {dest})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            out.append(f"{target} (no heading #{anchor} in {dest.name})")
    return out


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(REPO)) for p in DOC_FILES])
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == [], f"{path.name} has broken relative links or anchors"


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(REPO)) for p in DOC_FILES])
def test_docs_state_current_facts_not_history(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()

    history = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(lines, 1) if _HISTORY.search(line)]

    assert history == [], "say what is true of the current code; history belongs in commit messages"


def test_the_docs_index_lists_every_docs_file() -> None:
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    listed = {t.partition("#")[0] for t in links(REPO / "docs" / "index.md")}

    missing = [p.name for p in DOC_FILES[1:] if p.name != "index.md" and p.name not in listed]

    assert index and missing == [], f"docs/index.md does not link {missing}: add a row for each"


def test_the_checker_finds_a_broken_file_link_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n## Part one\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text(
        "[ok](a.md#part-one) [file](missing.md) [anchor](a.md#part-two) [self](#b) `[code](x.md)`\n"
        "```\n[fenced](y.md)\n```\n# B\n[web](https://example.org/x.md)\n",
        encoding="utf-8",
    )

    assert [b.split(" ")[0] for b in broken_links(doc)] == ["missing.md", "a.md#part-two"]


def _shell_commands(path: Path) -> list[str]:
    """``fedchain …`` command lines of the bash blocks of a Markdown file (continuations joined)."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            for part in line.split(";"):
                command = part.split("#", 1)[0].strip()
                if command.startswith("fedchain "):
                    out.append(command)
    return out


def unknown_options(command_line: str) -> list[str]:
    """Subcommands and ``--options`` of a documented command line that the real CLI does not have."""
    import typer.main

    from node.cli import app

    command = typer.main.get_command(app)
    ctx = command.make_context("fedchain", [], resilient_parsing=True)
    tokens = [t.strip("[]") for t in command_line.split()[1:]]
    while tokens and hasattr(command, "get_command"):
        name = tokens[0].split("|")[0]
        sub = command.get_command(ctx, name)
        if sub is None:
            if not name.startswith("-"):
                return [f"no command {name!r}"]
            break
        command, tokens = sub, tokens[1:]
        ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    flags = [t.split("=")[0] for t in tokens if t.startswith("-") and not t.startswith("---")]
    return [flag for flag in flags if flag.split("|")[0] not in known]


_HAND_WRITTEN = [p for p in DOC_FILES if p.name not in ("cli.md",)]


@pytest.mark.parametrize("path", _HAND_WRITTEN, ids=[str(p.relative_to(REPO)) for p in _HAND_WRITTEN])
def test_documented_commands_use_real_commands_and_options(path: Path) -> None:
    wrong = {line: unknown_options(line) for line in _shell_commands(path)}

    assert {line: bad for line, bad in wrong.items() if bad} == {}


def test_the_command_checker_names_an_unknown_option_and_command() -> None:
    assert unknown_options("fedchain node start --home n0 --run 1 --data x.jsonl") == []
    assert unknown_options("fedchain node start --home n0 --runs 1") == ["--runs"]
    assert unknown_options("fedchain nodes start") == ["no command 'nodes'"]


def test_contract_doc_lists_every_event_with_its_fields_and_every_error() -> None:
    from contracts import load_artifact

    abi = load_artifact("Runs").abi
    text = (REPO / "docs" / "contract.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text, re.M))

    for event in (e for e in abi if e["type"] == "event"):
        assert event["name"] in rows, f"docs/contract.md has no row for event {event['name']}"
        documented = [re.sub(r"\(.*?\)|\*", "", f).strip() for f in rows[event["name"]].split(",")]
        indexed = [i["name"] for i in event["inputs"] if i["indexed"]]
        assert documented == [i["name"] for i in event["inputs"]], event["name"]
        assert all(f"**{name}**" in rows[event["name"]] for name in indexed), event["name"]
    for error in (e for e in abi if e["type"] == "error"):
        assert f"`{error['name']}" in text, f"docs/contract.md does not name error {error['name']}"


def test_specification_names_the_current_arithmetic_version() -> None:
    from training.merge import ARITHMETIC

    text = (REPO / "docs" / "specification.md").read_text(encoding="utf-8")

    assert f"`{ARITHMETIC}`" in text, f"docs/specification.md must describe {ARITHMETIC}, the current one"
