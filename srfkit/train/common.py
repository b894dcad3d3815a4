"""Pieces the stages share: datasets, image sizing, pyramid levels, SRF losses, model specs, loaders."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..detection import FeatureExtractor, build_detector, get_fpn, pad_batch, pyramid_keys
from ..models import FeaturePatchDiscriminator, fit_to_size, make_upsampler
from ..profiles import Profile, Schedule
from .checkpoint import FINAL_NAME, latest_checkpoint, load_checkpoint, load_module_state
from .distributed import init_distributed

__all__ = [
    "SRF_LEVELS",
    "ADV_WEIGHT",
    "resolve_dataset",
    "dataset_info",
    "default_arch",
    "profile_from_dict",
    "discriminator_widths",
    "discriminator_spec",
    "resize_to_profile",
    "pad_batch",
    "degrade",
    "pyramid_keys",
    "frozen",
    "LevelMap",
    "srf_losses",
    "discriminator_loss",
    "generator_spec",
    "detector_spec",
    "build_from_spec",
    "check_backbone_init",
    "read_stage",
    "load_detector",
    "load_feature_extractor",
    "load_generator",
    "load_discriminator",
]

SRF_LEVELS = (2, 3, 4, 5)  # P2-P5, the levels of Eq. (2) and (3)
ADV_WEIGHT = 1e-3  # lambda of Eq. (2) and (3)
PAD_DIVISOR = 64  # full-resolution batches pad to 64 so their 0.5x copies pad to the detectors' 32


# ----------------------------------------------------------------------------------------------- data


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
    return {
        "name": str(name),
        "size": len(dataset),
        "num_classes": int(dataset.num_classes),
        "has_masks": bool(getattr(dataset, "has_masks", False)),
    }


def default_arch(dataset: Dataset) -> str:
    """``mask_rcnn`` when the dataset has instance masks, else ``faster_rcnn``."""
    return "mask_rcnn" if getattr(dataset, "has_masks", False) else "faster_rcnn"


MASK_ARCHS = ("mask_rcnn", "centermask")  # detector families that predict instance masks


def check_arch(arch: str, dataset: Dataset) -> None:
    """Refuse a mask-predicting family on a dataset without instance masks (before anything trains)."""
    if arch in MASK_ARCHS and not getattr(dataset, "has_masks", False):
        raise ValueError(f"arch {arch!r} needs instance masks, and dataset {dataset_info(dataset)['name']} has none")


def profile_from_dict(d: dict) -> Profile:
    """Rebuild a :class:`Profile` from ``Profile.to_dict()`` (or its JSON round trip)."""
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    kwargs = {}
    for key, value in d.items():
        if key in ("guide", "srf_gan", "extractor", "target"):
            value = Schedule(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        elif isinstance(value, list):
            value = tuple(value)
        if key in fields:
            kwargs[key] = value
    return Profile(**kwargs)


# -------------------------------------------------------------------------------------------- images


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


# ------------------------------------------------------------------------------------ pyramid levels


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop ``module``'s parameters from receiving gradients (e.g. D during G's update)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class LevelMap(nn.Module):
    """Apply one module to every pyramid level in a single forward (one DDP forward per update).

    ``forward(xs, sizes=None)``: list of (N, C, H_i, W_i) -> list of outputs; with ``sizes``, each
    call is ``module(x, size=size)`` (for upsamplers).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, xs: list[Tensor], sizes: list[tuple[int, int]] | None = None) -> list[Tensor]:
        if sizes is None:
            return [self.module(x) for x in xs]
        return [self.module(x, size=s) for x, s in zip(xs, sizes)]


def _bce(logits: Tensor, real: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, float(real)).float())


def crop_common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Crop two (N, C, H, W) maps (bottom/right) to their common spatial size."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    return a[..., :h, :w], b[..., :h, :w]


def srf_losses(
    fake: list[Tensor], real: list[Tensor], discriminator: nn.Module, adversarial_grad: bool = True
) -> tuple[Tensor, Tensor]:
    """The two terms of Eq. (2)/(3): (L1, adversarial), each a sum over levels of per-level means.

    ``fake[i]`` is cropped to ``real[i]``'s size (``fit_to_size``). The adversarial term is
    BCE-with-logits of D(fake) against "real"; with ``adversarial_grad=False`` D sees a detached
    copy, as the authors' training code does (published in their AFI-GAN repository; the SRF-GAN
    repository is evaluation-only), so the generator gets no gradient from it.
    """
    l1 = fake[0].new_zeros((), dtype=torch.float32)
    adv = l1.clone()
    for f, r in zip(fake, real):
        f = fit_to_size(f, tuple(r.shape[-2:]))
        l1 = l1 + (f.float() - r.float()).abs().mean()
        adv = adv + _bce(discriminator(f if adversarial_grad else f.detach()), True)
    return l1, adv


def discriminator_loss(logits_real: list[Tensor], logits_fake: list[Tensor]) -> dict[str, Tensor]:
    """Eq. (1) for D as BCE-with-logits, summed over levels: ``{"d_real": ..., "d_fake": ...}``."""
    return {
        "d_real": sum(_bce(x, True) for x in logits_real),
        "d_fake": sum(_bce(x, False) for x in logits_fake),
    }


# ------------------------------------------------------------------------------------------- specs


def discriminator_widths(profile: Profile) -> tuple[int, ...]:
    """D's block widths (the profile's ``discriminator_widths``)."""
    return tuple(profile.discriminator_widths)


def discriminator_spec(profile: Profile, head: str = "paper") -> dict:
    """Plain description of D (stored in configs so loaders can rebuild it).

    ``head``: D's output conv (see :class:`~srfkit.models.FeaturePatchDiscriminator`); stored only when
    it is not the default ``"paper"``, so default configs stay exactly as they were.
    """
    spec = {"channels": profile.fpn_channels, "widths": list(discriminator_widths(profile))}
    if head != "paper":
        spec["head"] = head
    return spec


def generator_spec(channels: int, variant: str = "paper", num_blocks: int | None = None) -> dict:
    """Plain description of an SRF generator (stored in configs so loaders can rebuild it)."""
    return {"name": "srf", "kwargs": {"variant": variant, "num_blocks": num_blocks}, "channels": channels}


def detector_spec(
    arch: str, num_classes: int, upsampler: dict, profile: Profile, share_upsampler: bool | None = None, **overrides
) -> dict:
    """Plain description of a detector: arch, classes, upsampler spec, profile and overrides.

    ``overrides`` holds the keyword arguments that :func:`build_from_spec` passes on to
    :func:`~srfkit.detection.build_detector`: profile-field overrides (sizes), and ``share_upsampler``
    (one FPN upsampler for all top-down steps, or one per step) only when it is not ``None``, so the
    specs of default FPNs stay as they were and a stage built with it rebuilds the same modules.
    """
    if share_upsampler is not None:
        overrides["share_upsampler"] = bool(share_upsampler)
    return {
        "arch": arch,
        "num_classes": int(num_classes),
        "upsampler": upsampler,
        "profile": profile.to_dict(),
        "overrides": overrides,
    }


def build_upsampler(spec: dict) -> nn.Module:
    return make_upsampler(spec["name"], spec["channels"], **spec.get("kwargs", {}))


def build_from_spec(
    spec: dict, upsampler: nn.Module | None = None, weights_backbone: str | Path | None = None
) -> nn.Module:
    """The detector a :func:`detector_spec` describes (random, or its ResNet from ``weights_backbone``)."""
    upsampler = build_upsampler(spec["upsampler"]) if upsampler is None else upsampler
    profile = profile_from_dict(spec["profile"])
    return build_detector(
        spec["arch"], spec["num_classes"], upsampler, profile, weights_backbone=weights_backbone, **spec["overrides"]
    )


def check_backbone_init(profile: Profile, weights_backbone: str | Path | None) -> None:
    """Refuse to train a backbone under frozen BatchNorm from random weights.

    ``FrozenBatchNorm2d`` keeps the statistics of pretrained weights fixed; over a random ResNet it is an
    identity normalisation that never adapts, and the detector trains badly (the paper started from
    ImageNet weights). Raises ``ValueError`` saying what to pass instead.
    """
    if profile.norm == "frozen" and weights_backbone is None:
        raise ValueError(
            f"profile {profile.name!r} uses norm='frozen' (FrozenBatchNorm2d), which only makes sense over "
            f"pretrained backbone weights: a random {profile.backbone} would train with a fixed identity "
            "normalisation. Pass weights_backbone / --weights-backbone PATH (a local torchvision-layout "
            f"{profile.backbone} state dict; nothing is downloaded), or use a profile with norm='group'."
        )


def build_discriminator(spec: dict) -> FeaturePatchDiscriminator:
    """The D a :func:`discriminator_spec` describes (randomly initialised; no ``head``: the paper's)."""
    return FeaturePatchDiscriminator(spec["channels"], tuple(spec["widths"]), head=spec.get("head", "paper"))


def upsampler_spec(name: str, profile: Profile, variant: str = "paper", num_blocks: int | None = None) -> dict:
    """Spec of a registry upsampler; ``srf`` ones carry the generator options, ``nearest_conv`` its
    ``num_blocks`` when given (G's 5 otherwise)."""
    if name == "srf":
        return generator_spec(profile.fpn_channels, variant, num_blocks)
    kwargs = {"num_blocks": num_blocks} if name == "nearest_conv" and num_blocks is not None else {}
    return {"name": name, "kwargs": kwargs, "channels": profile.fpn_channels}


# ------------------------------------------------------------------------------------------ loaders


def read_stage(path: str | Path) -> dict:
    """The final checkpoint of a stage folder (or a checkpoint file), loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such stage folder or checkpoint file")
    if path.is_dir():
        final = path / FINAL_NAME
        if not final.is_file():
            latest = latest_checkpoint(path)
            hint = f"latest checkpoint {latest.name}; finish it with resume" if latest else "no checkpoint at all"
            raise FileNotFoundError(f"{path}: stage not finished ({FINAL_NAME} missing; {hint})")
        path = final
    return load_checkpoint(path)


def _payload(source: str | Path | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "checkpoint"
    return read_stage(source), str(source)


def load_detector(source: str | Path | dict) -> nn.Module:
    """The trained detector of a guide, extractor or target stage (eval mode, CPU)."""
    payload, name = _payload(source)
    models, config = payload["models"], payload["config"]
    key = "M" if "M" in models else "detector"
    if key not in models:
        raise ValueError(f"{name}: stage {payload['stage']!r} has no detector (models: {', '.join(models)})")
    model = build_from_spec(config["detector"])
    load_module_state(model, models[key], source=name)
    return model.eval()


def load_feature_extractor(source: str | Path | dict) -> FeatureExtractor:
    """F: the frozen backbone + FPN of a trained detector (eval mode, no gradients)."""
    extractor = FeatureExtractor(load_detector(source)).eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor


def load_generator(source: str | Path | dict) -> nn.Module:
    """G from a srf-gan stage, or the FPN upsampler of an extractor/target stage (eval mode)."""
    payload, name = _payload(source)
    models, config = payload["models"], payload["config"]
    if "G" in models:
        g = build_upsampler(config["generator"])
        load_module_state(g, models["G"], source=name)
        return g.eval()
    model = load_detector(payload)
    return get_fpn(model).upsampler.eval()


def load_discriminator(source: str | Path | dict) -> FeaturePatchDiscriminator:
    """D from a srf-gan or extractor stage (eval mode)."""
    payload, name = _payload(source)
    if "D" not in payload["models"]:
        raise ValueError(f"{name}: stage {payload['stage']!r} has no discriminator")
    d = build_discriminator(payload["config"]["discriminator"])
    load_module_state(d, payload["models"]["D"], source=name)
    return d.eval()


def load_profile(source: str | Path | dict) -> Profile:
    """The profile a stage was trained with."""
    payload, _ = _payload(source)
    return profile_from_dict(payload["config"]["profile"])
