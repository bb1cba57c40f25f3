"""The exit codes of ``fedchain`` and of the node process: the one place they are defined.

Every command returns one of these (``raise typer.Exit(EXIT_USAGE)``, ``fail(message, EXIT_MISMATCH)``);
the node's run loop (:func:`node.protocol.runner.run_node`) returns them too, and the CLI reference
(``docs/cli.md``) lists them from :data:`EXIT_CODES`.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
"""Success."""
EXIT_FAILURE = 1
"""A failure the message explains (the chain or the store unreachable, a training error, ...)."""
EXIT_USAGE = 2
"""Bad usage or configuration: a flag, a config file, a run spec or a data file; the message names it."""
EXIT_MISMATCH = 3
"""A consensus or audit mismatch: something recomputed differs from what the chain records."""
EXIT_UNAVAILABLE = 4
"""``fedchain audit``: nothing checked disagrees, but an included update is unavailable, so its round could
not be recomputed."""
EXIT_INTERRUPTED = 128 + int(signal.SIGINT)
"""Interrupted (SIGINT or SIGTERM asked the process to stop), the shell's ``128 + SIGINT``."""

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "a failure the message explains",
    EXIT_USAGE: "bad usage or configuration",
    EXIT_MISMATCH: "a consensus or audit mismatch",
    EXIT_UNAVAILABLE: "an audit could not recompute a round (an included update unavailable)",
    EXIT_INTERRUPTED: "interrupted",
}
"""Every exit code with what it means, in the order the docs list them."""


def describe() -> str:
    """Return the codes as one sentence: ``0 success, 1 ..., 130 interrupted``."""
    return ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
