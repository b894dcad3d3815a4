"""Feature fidelity: how close upsampled low-resolution features come to the full-resolution ones.

SRF-GAN trains its generator G so that, level by level, ``G(F(I_lr)_i)`` matches ``F(I)_i``
(F: backbone + FPN, ``I_lr = degrade(I, 0.5)``). The paper shows this only as pictures (Fig. 2);
:func:`feature_fidelity` puts numbers on it for any upsampler of the registry.

Metrics per FPN level, over all images, channels and positions of that level:

* ``l1``: mean absolute error ``mean |U - T|`` (feature units).
* ``psnr``: ``10 log10(peak^2 / MSE)`` in dB, with ``peak = max |T|`` of the target feature map of
  that level (over the whole batch). Feature maps have no fixed range such as 255 for images, so
  the peak is taken from the target; ``inf`` when the maps are equal.
* ``cosine``: cosine similarity of the C-dimensional feature vectors of U and T at each position,
  averaged over images and positions (1 = same direction everywhere).

Here ``T = F(I)_i`` and ``U = upsampler(F(I_lr)_i, size of T)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.degrade import degrade
from ..models import make_upsampler

__all__ = ["feature_fidelity", "fidelity_metrics"]


def _stack(images: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images[None]
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
        return images
    images = list(images)
    if not images:
        raise ValueError("no images given")
    sizes = {tuple(i.shape) for i in images}
    if len(sizes) != 1:
        raise ValueError(f"images must share one size to be batched, got sizes {sorted(sizes)}")
    return torch.stack(images)


def _psnr(mse: float, peak: float) -> float:
    """``10 log10(peak^2 / MSE)`` in dB; ``inf`` when ``mse`` is 0, ``-inf`` when ``peak`` is 0 (and ``mse`` is not)."""
    return math.inf if mse == 0 else (10.0 * math.log10(peak**2 / mse) if peak > 0 else -math.inf)


def fidelity_metrics(upsampled: Tensor, target: Tensor) -> dict[str, float]:
    """L1, PSNR (peak = max |target|) and mean cosine over positions of two (N, C, H, W) maps."""
    if upsampled.shape != target.shape:
        raise ValueError(f"shapes differ: {tuple(upsampled.shape)} vs {tuple(target.shape)}")
    diff = upsampled.float() - target.float()
    mse = float(diff.pow(2).mean())
    cosine = float(F.cosine_similarity(upsampled.float(), target.float(), dim=1, eps=1e-8).mean())
    return {"l1": float(diff.abs().mean()), "psnr": _psnr(mse, float(target.abs().max())), "cosine": cosine}


@torch.no_grad()
def feature_fidelity(
    upsampler: str | nn.Module,
    extractor: nn.Module,
    images: Tensor | Sequence[Tensor],
    scale: float = 0.5,
    mode: str = "bilinear",
    levels: Sequence[str] | None = None,
    batch_size: int = 8,
) -> dict[str, dict[str, float]]:
    """Compare ``upsampler(F(degrade(I))_i)`` with ``F(I)_i`` for every FPN level i.

    Args:
        upsampler: a registry name (``nearest``, ``bilinear``, ``bicubic``, ``srf``, ...; built
            with the extractor's channel count, untrained for learned ones) or a module with
            ``forward(x, size)``.
        extractor: F, e.g. ``srfkit.detection.FeatureExtractor(detector)``: (N, 3, H, W) in [0, 1]
            -> ``OrderedDict`` of (N, C, H_i, W_i) levels.
        images: (N, 3, H, W) or a sequence of (3, H, W) of one size, in [0, 1].
        scale, mode: the degradation ``I_lr = degrade(I, scale, mode)``.
        levels: level names to report (default: every level of the extractor).
        batch_size: images per forward pass (metrics are computed over all images together).

    Returns:
        ``{level: {"l1": float, "psnr": float (dB), "cosine": float}}`` (see the module docstring).
        Both modules run in eval mode; their modes are restored afterwards.
    """
    images = _stack(images)
    param = next(iter(extractor.parameters()), None)
    device = param.device if param is not None else images.device
    modules = [extractor] + ([upsampler] if isinstance(upsampler, nn.Module) else [])
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    sums: dict[str, dict[str, float]] = {}
    try:
        for start in range(0, images.shape[0], batch_size):
            full = images[start : start + batch_size].to(device)
            low, _ = degrade(full, scale=scale, mode=mode)
            target, source = extractor(full), extractor(low)
            if isinstance(upsampler, str):
                channels = next(iter(target.values())).shape[1]
                upsampler = make_upsampler(upsampler, channels).to(device).eval()
            for name in levels or list(target):
                if name not in target:
                    raise KeyError(f"level {name!r} not produced by the extractor; it has {list(target)}")
                t = target[name].float()
                u = upsampler(source[name], size=tuple(t.shape[-2:])).float()
                if u.shape != t.shape:
                    raise ValueError(f"level {name}: upsampler returned {tuple(u.shape)}, target is {tuple(t.shape)}")
                acc = sums.setdefault(name, {"abs": 0.0, "sq": 0.0, "cos": 0.0, "n": 0, "pos": 0, "peak": 0.0})
                diff = u - t
                acc["abs"] += float(diff.abs().sum())
                acc["sq"] += float(diff.pow(2).sum())
                acc["n"] += diff.numel()
                acc["cos"] += float(F.cosine_similarity(u, t, dim=1, eps=1e-8).sum())
                acc["pos"] += t.numel() // t.shape[1]
                acc["peak"] = max(acc["peak"], float(t.abs().max()))
    finally:
        for m, training in zip(modules, modes):
            m.train(training)
    out = {}
    for name, acc in sums.items():
        db = _psnr(acc["sq"] / acc["n"], acc["peak"])
        out[name] = {"l1": acc["abs"] / acc["n"], "psnr": db, "cosine": acc["cos"] / acc["pos"]}
    return out
