"""The generated references (docs/cli.md, docs/configuration.md) match the code they are generated from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.cli import docgen

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", sorted(docgen.GENERATED))
def test_generated_reference_is_current(name: str) -> None:
    path = REPO / "docs" / name

    expected = docgen.GENERATED[name]()

    assert path.is_file(), f"docs/{name} is missing: run `{docgen.REGENERATE}`"
    assert path.read_text(encoding="utf-8") == expected, (
        f"docs/{name} is stale (the code changed): run `{docgen.REGENERATE}` and commit the result"
    )


def test_check_mode_names_a_stale_file_and_says_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert docgen.main(["--docs-dir", str(tmp_path)]) == 0
    (tmp_path / "cli.md").write_text("# CLI reference\n\nedited by hand\n", encoding="utf-8")

    code = docgen.main(["--check", "--docs-dir", str(tmp_path)])

    assert code == 1
    err = capsys.readouterr().err
    assert "cli.md is stale" in err and "make docs" in err
    assert "configuration.md" not in err


def test_cli_reference_lists_every_command_and_option() -> None:
    text = docgen.render_cli()

    for command in (
        "fedchain node start",
        "fedchain store put",
        "fedchain unlearn request",
        "fedchain audit",
    ):
        assert f"`{command}`" in text
    assert "`--version`" in text
    assert "`--home <path>`" in text and "[default: .fedchain]" in text


def test_configuration_reference_has_every_field_of_every_table() -> None:
    from node.config import NodeConfig
    from training.config import TrainConfig

    text = docgen.render_configuration()

    node = NodeConfig()
    for section in dataclasses.fields(node):
        assert f"### `[{section.name}]`" in text
        for f in dataclasses.fields(getattr(node, section.name)):
            assert f"| `{f.name}` |" in text
    for f in dataclasses.fields(TrainConfig):
        assert f"| `{f.name}` |" in text
    assert '| `arithmetic` | string | `"fedchain-arith/' in text
    assert "one of `fedavg`, `fedprox`, `scaffold`" in text


def test_docstring_attributes_reads_single_and_grouped_entries() -> None:
    @dataclasses.dataclass
    class Example:
        """Summary.

        Attributes
        ----------
        a
            First ``a``, see :class:`x.Y`.
        b, c
            Shared text
            over two lines.

        Notes
        -----
        Not an attribute.
        """

        a: int = 0
        b: int = 0
        c: int = 0

    entries = docgen.docstring_attributes(Example)

    assert entries == {"a": "First `a`, see `x.Y`.", "b, c": "Shared text over two lines."}
    assert docgen._field_help(Example, "c") == "Shared text over two lines."


def test_anchors_follow_github_rules() -> None:
    text = (
        "# Title\n## `fedchain node start`\n## Run spec (`x`)\n## Run spec (`x`)\n```\n# not a heading\n```\n"
    )

    assert docgen.anchors(text) == {"title", "fedchain-node-start", "run-spec-x", "run-spec-x-1"}
