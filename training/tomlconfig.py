"""Build frozen config dataclasses from TOML tables, naming the file, table and key in every error.

The simulation config (:mod:`training.simconfig`), the node config (``node.config``) and the run spec
(``node.runspec``) are all TOML files of tables, each table one frozen dataclass that validates itself in
``__post_init__``. This module holds the reading and building they share; each caller passes the error class
of its own layer (a ``ValueError`` subclass whose constructor takes one message), so a node error stays a
node error. Messages read, for a file ``sim.toml``::

    sim.toml: cannot read simulation config: No such file or directory
    sim.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 12)
    sim.toml: unknown table(s) extra; known: adapter, byzantine, data, model, server, simulation, train
    sim.toml: [train] unknown key(s) lr_max; known: batch_size, epochs, ...
    sim.toml: [train] must be a table, got int
    sim.toml: [train] `lr` must be > 0, got -1.0
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")
T = TypeVar("T")


def build_section(cls: type[C], table: object, section: str, *, error: type[Exception]) -> C:
    """Instantiate the dataclass ``cls`` from one TOML table, naming ``[section]`` in every error.

    TOML arrays become tuples (frozen dataclasses hold tuples, not lists); nested values are passed as they
    are. Fields missing from ``table`` take the dataclass defaults.

    Parameters
    ----------
    cls
        A dataclass whose ``__post_init__`` raises ``ValueError`` (or a subclass) for a bad value.
    table
        The parsed table; anything that is not a mapping is rejected.
    section
        The table's name as the user wrote it (``"train"``, ``"p2p"``), used in messages as ``[section]``.
    error
        The exception class to raise; it is called with one message string.

    Returns
    -------
    C
        The validated instance.

    Raises
    ------
    error
        ``[section] must be a table, got <type>`` if ``table`` is not a mapping;
        ``[section] unknown key(s) a, b; known: x, y, z`` if it has keys that are not fields of ``cls``;
        ``[section] <message>`` if ``cls`` raises ``ValueError`` or ``TypeError`` (a bad value, or a value
        of a type its validation cannot compare), the message being the dataclass's own.
    """
    if not isinstance(table, Mapping):
        raise error(f"[{section}] must be a table, got {type(table).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - names)
    if unknown:
        raise error(f"[{section}] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise error(f"[{section}] {exc}") from exc


def check_tables(doc: Mapping[str, object], known: Iterable[str], *, error: type[Exception]) -> None:
    """Reject top-level tables of ``doc`` that are not in ``known``.

    Raises
    ------
    error
        ``unknown table(s) a, b; known: x, y`` (unknown names sorted, ``known`` in the order given).
    """
    known = list(known)
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise error(f"unknown table(s) {', '.join(unknown)}; known: {', '.join(known)}")


def load_toml(
    path: str | Path, parse: Callable[[dict[str, Any]], T], *, what: str, error: type[Exception]
) -> T:
    """Read the TOML file ``path`` and return ``parse(document)``, prefixing every error with the path.

    Parameters
    ----------
    path
        The file to read (UTF-8).
    parse
        Builds the config from the parsed document; it reports bad tables, keys and values by raising
        ``error`` (typically with :func:`build_section` and :func:`check_tables`).
    what
        What the file is, for the unreadable-file message (``"node config"``, ``"run spec"``).
    error
        The exception class to raise; it is called with one message string.

    Raises
    ------
    error
        ``<path>: cannot read <what>: <reason>``, ``<path>: invalid TOML: <parser message>``, or
        ``<path>: <message>`` for an ``error`` raised by ``parse``.
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: cannot read {what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: invalid TOML: {exc}") from exc
    try:
        return parse(doc)
    except error as exc:
        raise error(f"{path}: {exc}") from exc
