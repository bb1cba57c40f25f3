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
    assert broken_links(path) == []


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(REPO)) for p in DOC_FILES])
def test_docs_state_current_facts_not_history(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()

    history = [f"{path.name}:{i}: {line.strip()}" for i, line in enumerate(lines, 1) if _HISTORY.search(line)]

    assert history == [], "say what is true of the current code; history belongs in commit messages"


def test_the_docs_index_lists_every_docs_file() -> None:
    index = (REPO / "docs" / "index.md").read_text(encoding="utf-8")
    listed = {t.partition("#")[0] for t in links(REPO / "docs" / "index.md")}

    missing = [p.name for p in DOC_FILES[1:] if p.name != "index.md" and p.name not in listed]

    assert index and missing == []


def test_the_checker_finds_a_broken_file_link_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n## Part one\n", encoding="utf-8")
    doc = tmp_path / "b.md"
    doc.write_text(
        "[ok](a.md#part-one) [file](missing.md) [anchor](a.md#part-two) [self](#b) `[code](x.md)`\n"
        "```\n[fenced](y.md)\n```\n# B\n[web](https://example.org/x.md)\n",
        encoding="utf-8",
    )

    assert [b.split(" ")[0] for b in broken_links(doc)] == ["missing.md", "a.md#part-two"]
