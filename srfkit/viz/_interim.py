"""Interim stand-ins until srfkit.data.degrade and srfkit.eval's fidelity exist (to be deleted)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def degrade(image: Tensor, target=None, scale: float = 0.5, mode: str = "bilinear"):
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(image, scale_factor=scale, mode=mode, **kw), target


def fidelity_metrics(pred: Tensor, target: Tensor) -> dict[str, float]:
    l1 = (pred - target).abs().mean().item()
    mse = (pred - target).pow(2).mean().item()
    peak = (target.max() - target.min()).item()
    psnr = 10 * math.log10(peak**2 / mse) if mse > 0 else math.inf
    cos = F.cosine_similarity(pred.flatten(1), target.flatten(1)).mean().item()
    return {"l1": l1, "psnr": psnr, "cosine": cos}
