"""Where the srfkit checkout is: the one place the library finds the repository root."""

from __future__ import annotations

from pathlib import Path

__all__ = ["repo_root"]

_ABOVE_PACKAGE = Path(__file__).resolve().parent.parent


def repo_root() -> Path | None:
    """The source checkout srfkit runs from (the folder holding ``pyproject.toml`` and ``data/`` beside the
    ``srfkit`` package, as in an editable install), or ``None`` when srfkit is installed elsewhere."""
    root = _ABOVE_PACKAGE
    return root if (root / "pyproject.toml").is_file() and (root / "data").is_dir() else None
