"""Stage 3, the target detector T: any detector family, full-resolution images, detection loss only.

``reuse`` says what T takes from earlier stages (paper section 4.3 and Table 1):

* ``"G"``: only the generator's weights, into T's FPN upsampler (from the extractor stage when given,
  since stage 2 fine-tuned G, else from the srf-gan stage). Everything else starts fresh.
* ``"M"``: the feature part of the extractor M: its ResNet body, its FPN's lateral and output convs
  pyramid level by pyramid level (P3 of M into P3 of T, whatever the two families), and G (see
  :func:`srfkit.detection.transfer_backbone`). T's heads always start fresh, also when T has M's
  family, so that every cell of Table 3 (extractor head x target head) reuses the same part of M.
  The transfer report (tensors per part and level, levels only one side has) is recorded in the
  stage config as ``"reused"``.
* ``"none"``: nothing; ``upsampler`` names T's FPN upsampler (``nearest`` gives the baseline).

``freeze_g=True`` keeps the upsampler's weights fixed (Table 4, A4); by default G is fine-tuned.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..detection import transfer_backbone
from ..profiles import Profile
from .guide import DetectorStage
from .loaders import load_detector, load_generator, read_stage
from .loop import StageResult, seed_everything, train_loop
from .prepare import prepare_stage
from .specs import build_from_spec, check_backbone_init, detector_spec, upsampler_spec

__all__ = ["train_target", "build_target", "REUSE"]

REUSE = ("G", "M", "none")


def _source(reuse: str, srf_gan_dir, extractor_dir) -> str | Path | None:
    if reuse not in REUSE:
        raise ValueError(f"unknown reuse {reuse!r}; valid: {', '.join(REUSE)}")
    if reuse == "none":
        return None
    source = extractor_dir if (reuse == "M" or extractor_dir is not None) else srf_gan_dir
    if source is None:
        need = "extractor_dir (--extractor)" if reuse == "M" else "srf_gan_dir (--srf-gan) or extractor_dir"
        raise ValueError(f"reuse={reuse!r} needs {need}")
    return source


def train_target(
    profile: str | Profile,
    dataset: str | Dataset,
    out_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    *,
    arch: str | None = None,
    reuse: str = "G",
    srf_gan_dir: str | Path | None = None,
    extractor_dir: str | Path | None = None,
    freeze_g: bool = False,
    upsampler: str = "nearest",
    weights_backbone: str | Path | None = None,
    **options,
) -> StageResult:
    """Stage 3: train the target detector T (``mask_rcnn``, ``faster_rcnn``, ``retinanet`` or ``fcos``).

    Args:
        arch: T's family (default: ``mask_rcnn`` if the dataset has masks, else ``faster_rcnn``).
        reuse: ``G``, ``M`` or ``none`` (see the module doc).
        srf_gan_dir, extractor_dir: finished earlier stages to take G or M from.
        freeze_g: keep the FPN upsampler fixed instead of fine-tuning it.
        upsampler: T's upsampler when ``reuse="none"`` (ignored otherwise).
        weights_backbone: a local ResNet state dict for T's fresh backbone (``reuse`` ``G`` or ``none``;
            required by ``norm="frozen"`` profiles such as ``paper``; with ``M`` the backbone is M's).
        **options: :class:`~srfkit.train.loop.LoopOptions` fields.
    """
    setup = prepare_stage(profile, dataset, options, arch)
    profile, data, arch = setup.profile, setup.data, setup.arch
    source = _source(reuse, srf_gan_dir, extractor_dir)
    payload = read_stage(source) if source is not None else None
    if reuse != "M":
        check_backbone_init(profile, weights_backbone)
    seed_everything(seed)
    weights = None if reuse == "M" else weights_backbone
    model, spec, loaded = build_target(profile, arch, data.num_classes, reuse, payload, upsampler, weights)
    stage = DetectorStage(
        "target",
        model,
        spec,
        data,
        freeze_upsampler=freeze_g,
        extra={"reuse": reuse, "reused_from": payload["stage"] if payload else None, "reused": loaded},
        sources={"reuse_from": str(source) if source else None, "weights_backbone": str(weights) if weights else None},
    )
    return train_loop(stage, data, out_dir, profile.target, seed, resume, setup.loop)


def build_target(
    profile: Profile,
    arch: str,
    num_classes: int,
    reuse: str,
    payload: dict | None,
    upsampler: str = "nearest",
    weights_backbone: str | Path | None = None,
) -> tuple[nn.Module, dict, dict]:
    """T before training: ``(model, spec, reused)``, ``reused`` being the JSON-able transfer report.

    Args:
        reuse: ``G``, ``M`` or ``none`` (see the module doc); ``payload``: the stage G or M comes from
            (:func:`~srfkit.train.loaders.read_stage`), ``None`` for ``none``.
        upsampler: T's upsampler when ``reuse="none"``.
        weights_backbone: a local ResNet state dict for T's backbone (not with ``M``).

    With ``M``, T is built first and M is built and loaded under a forked RNG, so T's fresh weights
    (its heads, and any level M lacks) are the ones ``build_from_spec(spec)`` draws at that point.
    """
    if payload is None:
        spec = detector_spec(arch, num_classes, upsampler_spec(upsampler, profile), profile)
        return build_from_spec(spec, weights_backbone=weights_backbone), spec, {}
    if reuse == "G":
        generator = load_generator(payload).train()
        spec = detector_spec(arch, num_classes, _generator_cfg(payload), profile)
        return build_from_spec(spec, upsampler=generator, weights_backbone=weights_backbone), spec, {}
    spec = detector_spec(arch, num_classes, payload["config"]["detector"]["upsampler"], profile)
    model = build_from_spec(spec)
    with torch.random.fork_rng(devices=[]):
        extractor = load_detector(payload)
    return model, spec, transfer_backbone(extractor, model)


def _generator_cfg(payload: dict) -> dict:
    config = payload["config"]
    return config["generator"] if "generator" in config else config["detector"]["upsampler"]
