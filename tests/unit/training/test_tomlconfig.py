from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from training.tomlconfig import build_section, check_tables, load_toml


class DemoError(ValueError):
    pass


@dataclass(frozen=True)
class Demo:
    rate: float = 0.5
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"`rate` must be in [0, 1], got {self.rate!r}")


def _parse(doc: dict[str, Any]) -> Demo:
    check_tables(doc, ["demo", "other"], error=DemoError)
    return build_section(Demo, doc.get("demo", {}), "demo", error=DemoError)


def test_build_section_fills_defaults_and_turns_arrays_into_tuples() -> None:
    built = build_section(Demo, {"names": ["a", "b"]}, "demo", error=DemoError)

    assert built == Demo(rate=0.5, names=("a", "b"))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (3, r"^\[demo\] must be a table, got int$"),
        (
            {"rate": 0.1, "speed": 1, "colour": 2},
            r"^\[demo\] unknown key\(s\) colour, speed; known: names, rate$",
        ),
        ({"rate": 7.0}, r"^\[demo\] `rate` must be in \[0, 1\], got 7.0$"),
        ({"rate": "fast"}, r"^\[demo\] '<=' not supported"),
    ],
)
def test_build_section_names_the_table_key_and_value(table: object, message: str) -> None:
    with pytest.raises(DemoError, match=message) as info:
        build_section(Demo, table, "demo", error=DemoError)

    assert type(info.value) is DemoError


def test_check_tables_lists_unknown_sorted_and_known_in_the_given_order() -> None:
    with pytest.raises(DemoError, match=r"^unknown table\(s\) b, z; known: other, demo$"):
        check_tables({"z": {}, "demo": {}, "b": {}}, ["other", "demo"], error=DemoError)
    check_tables({"demo": {}}, ["other", "demo"], error=DemoError)


def test_load_toml_returns_the_parsed_config(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_text('[demo]\nrate = 0.25\nnames = ["x"]\n')

    assert load_toml(path, _parse, what="demo config", error=DemoError) == Demo(rate=0.25, names=("x",))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"demo\.toml: cannot read demo config: No such file or directory$"),
        ("[demo\n", r"demo\.toml: invalid TOML: "),
        ("[demo]\nrate = 2.0\n", r"demo\.toml: \[demo\] `rate` must be in \[0, 1\], got 2.0$"),
        ("[extra]\n", r"demo\.toml: unknown table\(s\) extra; known: demo, other$"),
    ],
)
def test_load_toml_prefixes_every_error_with_the_path(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "demo.toml"
    if text is not None:
        path.write_text(text)

    with pytest.raises(DemoError, match=message):
        load_toml(path, _parse, what="demo config", error=DemoError)


def test_load_toml_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "demo.toml"
    path.write_bytes(b"[demo]\nrate = 0.5 # \xff\xfe\n")

    with pytest.raises(DemoError, match=r"demo\.toml: cannot read demo config: not UTF-8 text"):
        load_toml(path, _parse, what="demo config", error=DemoError)
