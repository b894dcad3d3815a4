"""Model specs: the plain descriptions of G, D and detectors stored in stage configs, and their builders.

A spec is a JSON-able dict; a stage stores it in its config (compared on resume) and the loaders
(:mod:`srfkit.train.loaders`) rebuild the module from it before loading the checkpoint's weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from ..detection import build_detector
from ..models import FeaturePatchDiscriminator, make_upsampler
from ..profiles import Profile, Schedule

__all__ = [
    "build_discriminator",
    "build_from_spec",
    "build_upsampler",
    "check_backbone_init",
    "detector_spec",
    "discriminator_spec",
    "discriminator_widths",
    "generator_spec",
    "profile_from_dict",
    "upsampler_spec",
]


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


def upsampler_spec(name: str, profile: Profile, variant: str = "paper", num_blocks: int | None = None) -> dict:
    """Spec of a registry upsampler; ``srf`` ones carry the generator options, ``nearest_conv`` its
    ``num_blocks`` when given (G's 5 otherwise)."""
    if name == "srf":
        return generator_spec(profile.fpn_channels, variant, num_blocks)
    kwargs = {"num_blocks": num_blocks} if name == "nearest_conv" and num_blocks is not None else {}
    return {"name": name, "kwargs": kwargs, "channels": profile.fpn_channels}


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
    """The upsampler (G or a registry one) a :func:`generator_spec` / :func:`upsampler_spec` describes."""
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


def build_discriminator(spec: dict) -> FeaturePatchDiscriminator:
    """The D a :func:`discriminator_spec` describes (randomly initialised; no ``head``: the paper's)."""
    return FeaturePatchDiscriminator(spec["channels"], tuple(spec["widths"]), head=spec.get("head", "paper"))


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
