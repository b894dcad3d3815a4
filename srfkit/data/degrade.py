"""The degradation of the paper, I_lr = down(I, s), applied to images together with their targets.

Also small target-aware transforms (:class:`Degrade`, :class:`RandomHorizontalFlip`,
:class:`Compose`) usable as ``CocoDetection(..., transforms=...)``.

Geometry: pixel ``(i, j)`` covers the square ``[j, j+1) x [i, i+1)``, as in COCO boxes and in
``F.interpolate(..., align_corners=False)``. Downsampling (H, W) to (h, w) maps a point ``(x, y)``
to ``(x * w / W, y * h / H)``, so boxes are scaled by those two factors and stay on the objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DEGRADE_MODES", "degrade", "degraded_size", "Degrade", "RandomHorizontalFlip", "Compose"]

DEGRADE_MODES = ("nearest", "bilinear", "bicubic", "area")


def degraded_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Output size of :func:`degrade`: ``(floor(H * s), floor(W * s))``, at least 1 (as ``F.interpolate``)."""
    return max(1, int(math.floor(height * scale))), max(1, int(math.floor(width * scale)))


def _resize_images(images: Tensor, size: tuple[int, int], mode: str, antialias: bool) -> Tensor:
    if mode == "nearest":
        out = F.interpolate(images, size=size, mode="nearest")
    elif mode == "area":
        out = F.interpolate(images, size=size, mode="area")
    else:
        out = F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=antialias)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def _scale_target(target: dict, size_in: tuple[int, int], size_out: tuple[int, int]) -> dict:
    (H, W), (h, w) = size_in, size_out
    sx, sy = w / W, h / H
    out = dict(target)
    if "boxes" in target:
        boxes = target["boxes"]
        out["boxes"] = boxes * boxes.new_tensor([sx, sy, sx, sy])
    if "area" in target:
        out["area"] = target["area"] * (sx * sy)
    if "masks" in target:
        masks = target["masks"]
        if masks.numel():
            # Area-average each mask onto the low-resolution grid and keep the pixels at least half
            # covered: centred like the image (no half-pixel shift of nearest sampling).
            frac = F.interpolate(masks[:, None].float(), size=(h, w), mode="area")[:, 0]
            out["masks"] = (frac >= 0.5).to(masks.dtype)
        else:
            out["masks"] = masks.new_zeros((masks.shape[0], h, w))
    return out


def degrade(
    image: Tensor,
    target: dict | Sequence[dict] | None = None,
    scale: float = 0.5,
    mode: str = "bilinear",
    antialias: bool = False,
) -> tuple[Tensor, dict | list[dict] | None]:
    """Downsample images by ``scale`` and move their boxes, masks and areas along.

    The paper's degradation is ``I_lr = down(I_tr, s)`` with s = 0.5; at s = 0.5 bilinear without
    antialiasing averages each 2x2 block.

    Args:
        image: (3, H, W) or (N, 3, H, W), float in [0, 1].
        target: ``None``; for a single image, a dict; for a batch, a sequence of N dicts. Keys used:
            ``boxes`` (K, 4) XYXY pixels, ``masks`` (K, H, W) uint8/bool, ``area`` (K,); other keys
            are copied unchanged. The input dicts are not modified.
        scale: factor s > 0; the output is ``degraded_size(H, W, s)``.
        mode: image interpolation, ``nearest``, ``bilinear`` (default), ``bicubic`` (clamped to
            [0, 1]) or ``area``. Masks always use area-averaging with a 0.5 threshold.
        antialias: low-pass before ``bilinear``/``bicubic`` downsampling (``F.interpolate``'s option).

    Returns:
        ``(image, target)``: (3, h, w) or (N, 3, h, w), and the scaled target(s) (or ``None``).
    """
    if mode not in DEGRADE_MODES:
        raise ValueError(f"unknown degradation mode {mode!r}; valid: {', '.join(DEGRADE_MODES)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"image must be (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
    single = image.dim() == 3
    size_in = (int(image.shape[-2]), int(image.shape[-1]))
    size_out = degraded_size(*size_in, scale)
    batch = image[None] if single else image
    out = _resize_images(batch.float() if not batch.is_floating_point() else batch, size_out, mode, antialias)
    out = out[0] if single else out
    if target is None:
        return out, None
    if single:
        if not isinstance(target, dict):
            raise TypeError("a single (3, H, W) image takes a single target dict")
        return out, _scale_target(target, size_in, size_out)
    if isinstance(target, dict) or len(target) != batch.shape[0]:
        raise TypeError(f"a batch of {batch.shape[0]} images takes a sequence of {batch.shape[0]} target dicts")
    return out, [_scale_target(t, size_in, size_out) for t in target]


class Degrade:
    """Transform ``(image, target) -> degrade(image, target, scale, mode)``."""

    def __init__(self, scale: float = 0.5, mode: str = "bilinear", antialias: bool = False) -> None:
        if mode not in DEGRADE_MODES:
            raise ValueError(f"unknown degradation mode {mode!r}; valid: {', '.join(DEGRADE_MODES)}")
        self.scale, self.mode, self.antialias = scale, mode, antialias

    def __call__(self, image: Tensor, target: dict | None = None) -> tuple[Tensor, dict | None]:
        return degrade(image, target, self.scale, self.mode, self.antialias)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, mode={self.mode!r}, antialias={self.antialias})"


class RandomHorizontalFlip:
    """Flip ``(image (3, H, W), target)`` left-right with probability ``p`` (torch's global RNG)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Tensor, target: dict | None = None) -> tuple[Tensor, dict | None]:
        if torch.rand(()) >= self.p:
            return image, target
        image = image.flip(-1)
        if target is None:
            return image, None
        target = dict(target)
        width = image.shape[-1]
        if "boxes" in target:
            boxes = target["boxes"].clone()
            boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
            target["boxes"] = boxes
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class Compose:
    """Apply ``(image, target)`` transforms in order."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Tensor, target: dict | None = None) -> tuple[Tensor, dict | None]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"
