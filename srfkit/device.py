"""Device choice: CUDA when present, else the CPU. Nothing in srfkit assumes a GPU."""

from __future__ import annotations

import torch

__all__ = ["default_device"]


def default_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on.

    Args:
        prefer: an explicit device (``"cpu"``, ``"cuda:1"``, ...) that wins when given;
            otherwise CUDA if available, else CPU.
    """
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
