"""What the stages train on: the dataset, images sized as the detector sees them, and their degraded copies."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..profiles import Profile
from .distributed import init_distributed

__all__ = [
    "MASK_ARCHS",
    "PAD_DIVISOR",
    "check_arch",
    "dataset_info",
    "default_arch",
    "degrade",
    "resize_to_profile",
    "resolve_dataset",
]

PAD_DIVISOR = 64  # full-resolution batches pad to 64 so their 0.5x copies pad to the detectors' 32
MASK_ARCHS = ("mask_rcnn", "centermask")  # detector families that predict instance masks


def resolve_dataset(dataset: str | Dataset, profile: Profile, device: str | None = None) -> Dataset:
    """A dataset object, given one or a shipped dataset's name (``srfkit.data.load``, train split,
    flipped left-right with probability ``profile.train_hflip``).

    Under torchrun, rank 0 loads (and if needed builds) the data first, the other ranks after it.
    """
    if not isinstance(dataset, str):
        return dataset
    from .. import data

    env = init_distributed(device) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    if env is not None and not env.is_main:
        env.barrier()
    flip = data.RandomHorizontalFlip(profile.train_hflip) if profile.train_hflip > 0 else None
    loaded = data.load(dataset, "train", profile, transforms=flip)
    if env is not None and env.is_main:
        env.barrier()
    return loaded


def dataset_info(dataset: Dataset) -> dict[str, Any]:
    """Identity of a dataset for configs: name, size, classes, masks."""
    name = getattr(dataset, "name", None) or type(dataset).__name__
    info = {
        "name": str(name),
        "size": len(dataset),
        "num_classes": int(dataset.num_classes),
        "has_masks": bool(getattr(dataset, "has_masks", False)),
    }
    if getattr(dataset, "coco_root", None):  # a COCO folder (srfkit.data.load_coco_root): where to evaluate
        info["coco_root"] = str(dataset.coco_root)
    return info


def default_arch(dataset: Dataset) -> str:
    """``mask_rcnn`` when the dataset has instance masks, else ``faster_rcnn``."""
    return "mask_rcnn" if getattr(dataset, "has_masks", False) else "faster_rcnn"


def check_arch(arch: str, dataset: Dataset) -> None:
    """Refuse a mask-predicting family on a dataset without instance masks (before anything trains)."""
    if arch in MASK_ARCHS and not getattr(dataset, "has_masks", False):
        raise ValueError(f"arch {arch!r} needs instance masks, and dataset {dataset_info(dataset)['name']} has none")


def resize_to_profile(image: Tensor, target: dict | None, profile: Profile) -> tuple[Tensor, dict | None]:
    """Resize like the detector transform does (shorter side ``image_size``, longer <= ``max_size``).

    Args:
        image: (3, H, W) in [0, 1]. target: optional dict with ``boxes`` (K, 4) XYXY pixels,
            ``masks`` (K, H, W) and ``area`` (K,), scaled along.

    Returns:
        (3, H', W') and the scaled target (a new dict; the input is not modified).
    """
    h, w = image.shape[-2:]
    scale = min(profile.image_size / min(h, w), profile.max_size / max(h, w))
    if scale == 1.0:
        return image, target
    image = F.interpolate(
        image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
    )[0]
    if target is None:
        return image, None
    h2, w2 = image.shape[-2:]
    sx, sy = w2 / w, h2 / h
    target = dict(target)
    if "boxes" in target:
        target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], device=image.device)
    if "masks" in target and target["masks"].numel():
        target["masks"] = F.interpolate(target["masks"][:, None].float(), size=(h2, w2))[:, 0].byte()
    elif "masks" in target:
        target["masks"] = target["masks"].new_zeros((0, h2, w2))
    if "area" in target:
        target["area"] = target["area"] * (sx * sy)
    return image, target


def degrade(
    image: Tensor, target: dict | None = None, scale: float = 0.5, mode: str = "bilinear"
) -> tuple[Tensor, dict | None]:
    """``srfkit.data.degrade`` (boxes/masks/area scaled), imported when first needed."""
    from .. import data

    return data.degrade(image, target, scale=scale, mode=mode)
