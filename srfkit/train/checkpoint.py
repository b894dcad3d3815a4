"""Checkpoints: atomic writes, safe loads, and clear refusals.

A checkpoint is a ``dict`` holding only tensors, numbers, strings, ``None`` and plain containers, so
it loads with ``torch.load(..., weights_only=True)``::

    {"format": "srfkit-checkpoint-1", "stage": "srf-gan", "step": 300, "config": {...},
     "models": {name: state_dict}, "optimizers": {...}, "schedulers": {...}, "scaler": {...} | None,
     "rng": [per-rank RNG states]}

``config`` describes the run (stage, profile, architecture, options, dataset, world size); a checkpoint
whose config differs from the one at hand is refused with the differing settings listed.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..fileio import atomic_write
from ..profiles import RUN_ONLY_FIELDS

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointMismatchError",
    "save_checkpoint",
    "load_checkpoint",
    "config_diff",
    "check_config",
    "load_module_state",
    "get_rng_state",
    "set_rng_state",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "run_iters",
    "FINAL_NAME",
]

CHECKPOINT_FORMAT = "srfkit-checkpoint-1"
FINAL_NAME = "final.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


class CheckpointMismatchError(ValueError):
    """A checkpoint does not belong to the model or run it is loaded into."""


def checkpoint_path(out_dir: str | Path, step: int | None = None) -> Path:
    """``out_dir/step_000123.pt`` for a periodic checkpoint, ``out_dir/final.pt`` for ``step=None``."""
    return Path(out_dir) / (FINAL_NAME if step is None else f"step_{step:06d}.pt")


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints in ``out_dir`` as ``(step, path)``, oldest first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir() if (m := _STEP_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """``final.pt`` if it exists, else the periodic checkpoint with the highest step, else ``None``."""
    final = checkpoint_path(out_dir)
    if final.is_file():
        return final
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def run_iters(out_dir: str | Path) -> int | None:
    """The ``iters`` the run in ``out_dir`` was last started with (its ``config.json``), ``None`` if unreadable."""
    try:
        return int(json.loads((Path(out_dir) / "config.json").read_text())["schedule"]["iters"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    A crash mid-write leaves the previous file intact; readers never see a half-written checkpoint.

    Raises:
        OSError: the file could not be written (a full disk, say); the message names the path and the
            free space left, and the temporary file is removed.
    """
    path = Path(path)
    try:
        atomic_write(path, lambda f: torch.save(payload, f), binary=True, fsync=True)
    except (OSError, RuntimeError) as err:  # torch.save reports a short write as a RuntimeError
        free_mb = shutil.disk_usage(path.parent).free / 2**20
        raise OSError(
            f"{path}: checkpoint not written ({err}); {free_mb:.0f} MiB free on its disk; "
            "earlier checkpoints are untouched"
        ) from err
    return path


def load_checkpoint(path: str | Path, expected_config: dict | None = None, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; with ``expected_config``, refuse a different run.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointMismatchError: not an srfkit checkpoint, or its config differs (the message lists
            every differing setting).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, foreign pickle, ...
        raise CheckpointMismatchError(f"{path}: cannot be read as an srfkit checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(f"{path}: not an srfkit checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if expected_config is not None:
        check_config(payload["config"], expected_config, source=path)
    return payload


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (a config read back from JSON has lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def config_diff(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two plain-container configs, one line per setting."""
    saved, current = _plain(saved), _plain(current)
    if isinstance(saved, dict) and isinstance(current, dict):
        lines = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in current:
                lines.append(f"{name}: {saved[key]!r} in the checkpoint, absent now")
            elif key not in saved:
                lines.append(f"{name}: absent in the checkpoint, {current[key]!r} now")
            else:
                lines += config_diff(saved[key], current[key], name)
        return lines
    return [] if saved == current else [f"{prefix}: {saved!r} in the checkpoint, {current!r} now"]


def _stage_settings(config: Any) -> Any:
    """``config`` without the profile fields that cannot change a stage's numbers (``RUN_ONLY_FIELDS``:
    the seed list, the learning curve's budgets), in every profile it holds."""
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key == "profile" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in RUN_ONLY_FIELDS}
        out[key] = _stage_settings(value)
    return out


def check_config(saved: dict, current: dict, source: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointMismatchError` listing every setting where ``saved`` and ``current`` differ
    (the profile's run-only fields, :data:`srfkit.profiles.RUN_ONLY_FIELDS`, are not settings of a stage)."""
    diff = config_diff(_stage_settings(saved), _stage_settings(current))
    if diff:
        listing = "\n  ".join(diff)
        raise CheckpointMismatchError(
            f"{source}: written by a different run configuration; refusing to load it. Differences:\n  {listing}"
        )


def load_module_state(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> None:
    """``module.load_state_dict(state)`` with a message naming missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:

        def head(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = [f"{source}: weights do not match the {type(module).__name__} architecture;"]
        if missing:
            parts.append(f"missing keys {head(missing)};")
        if unexpected:
            parts.append(f"unexpected keys {head(unexpected)};")
        if shapes:
            parts.append(f"shape differences {head(shapes)}")
        raise CheckpointMismatchError(" ".join(parts))
    module.load_state_dict(state)


def get_rng_state() -> dict[str, Any]:
    """Every RNG this process uses (python, numpy, torch CPU and CUDA), as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
