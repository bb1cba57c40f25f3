"""Atomic file writes: content appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(dest: Path, tmp_dir: Path | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file that replaces ``dest`` when the ``with`` block ends without an exception.

    The temporary file lives in ``tmp_dir`` (default: ``dest``'s folder, which must be on the same
    file system for the rename to be atomic); it is flushed and fsynced before the rename, and removed
    if the block raises.
    """
    folder = tmp_dir if tmp_dir is not None else dest.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
