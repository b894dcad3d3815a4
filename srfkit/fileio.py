"""Atomic file writes: the one place srfkit writes a file that a reader must never see half-written."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "write_json"]


def atomic_write(path: str | Path, write: Callable[[IO], Any], binary: bool = False, fsync: bool = False) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then ``os.replace`` it onto ``path``.

    A crash or an error mid-write leaves any previous ``path`` untouched and removes the temporary
    file; the error propagates. The file gets mode 0644 (readable by everyone, like a plain write).

    Args:
        path: destination; its folder is created if missing.
        write: writes the content to the open file object it is given.
        binary: open the temporary file in binary mode.
        fsync: flush to disk before the rename (checkpoints).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload: Any, indent: int = 1) -> Path:
    """Write ``payload`` as JSON (NaN allowed, trailing newline) atomically."""

    def dump(f: IO) -> None:
        json.dump(payload, f, indent=indent, allow_nan=True)
        f.write("\n")

    return atomic_write(path, dump)
