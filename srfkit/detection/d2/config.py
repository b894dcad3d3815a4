"""detectron2 configs of srfkit: the packaged YAML files and the profile-sized configs built from them.

The ``paper`` profile uses the YAML files as they are (the paper's R-50-FPN 1x and 3x COCO settings,
16 images a batch, detectron2's model-zoo values). The small profiles (``quick``, ``cpu``) merge
``<profile>.yaml`` (detectron2-only settings: CPU, RGB, GroupNorm from scratch, bitmask masks) and then
take every size and schedule from the :class:`srfkit.profiles.Profile` (:func:`apply_profile`), so the
Profile stays the one place that holds them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg

from ...profiles import Profile, get_profile
from . import ARCHS
from . import centermask as _centermask  # noqa: F401  (registers META_ARCHITECTURE "SRFCenterMask")
from .backbone import add_srf_config

__all__ = ["ARCHS", "CONFIG_DIR", "SCHEDULES", "apply_profile", "config_file", "get_config"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SCHEDULES = ("1x", "3x")
_NORMS = {"group": "GN", "batch": "BN", "frozen": "FrozenBN"}


def config_file(arch: str, schedule: str = "1x") -> Path:
    """The packaged YAML of ``arch`` (see :data:`ARCHS`) at ``schedule`` (``1x`` or ``3x``)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown detectron2 arch {arch!r}; valid: {', '.join(ARCHS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    return CONFIG_DIR / f"{arch}_R_50_FPN_{schedule}.yaml"


def _depth(backbone: str) -> int:
    digits = "".join(ch for ch in backbone if ch.isdigit())
    if not backbone.startswith("resnet") or digits not in ("18", "34", "50", "101", "152"):
        raise ValueError(f"profile backbone {backbone!r} has no detectron2 ResNet")
    return int(digits)


def apply_profile(cfg: CfgNode, profile: str | Profile) -> CfgNode:
    """Set every size and schedule of ``cfg`` from ``profile`` (in place) and return it.

    ResNet depth and norm, FPN width, input sizes, anchors (one per level for the R-CNNs; three
    octave scales of twice that for RetinaNet, as srfkit's torchvision RetinaNet), RPN and RoI
    sampling, heads' widths, detections per image, workers, and ``SOLVER`` from ``profile.target``.
    """
    p = get_profile(profile)
    depth = _depth(p.backbone)
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.NORM = _NORMS[p.norm]
    cfg.MODEL.BACKBONE.FREEZE_AT = max(0, 5 - p.trainable_layers)
    cfg.MODEL.FPN.OUT_CHANNELS = p.fpn_channels
    cfg.INPUT.MIN_SIZE_TRAIN = (p.image_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = p.max_size
    cfg.INPUT.MIN_SIZE_TEST = p.image_size
    cfg.INPUT.MAX_SIZE_TEST = p.max_size
    if cfg.MODEL.META_ARCHITECTURE == "RetinaNet":
        # srfkit's one-stage anchors (P3..P7; torchvision's 32..512 at the paper profile), three scales an octave
        sizes = p.retinanet_anchor_sizes or tuple(2 * s for s in p.anchor_sizes)
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s * 2 ** (k / 3) for k in range(3)] for s in sizes]
        if p.retinanet_head_norm == "group":  # the head that trains from scratch (see Profile)
            cfg.MODEL.RETINANET.NORM = "GN"
        cfg.MODEL.RETINANET.TOPK_CANDIDATES_TEST = p.rpn_pre_nms_top_n[1]
    else:
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s] for s in p.anchor_sizes]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = p.rpn_pre_nms_top_n
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = p.rpn_post_nms_top_n
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = p.rpn_batch_size_per_image
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = p.box_batch_size_per_image
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = p.box_head_dim
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = p.fpn_channels
    cfg.TEST.DETECTIONS_PER_IMAGE = p.detections_per_img
    cfg.DATALOADER.NUM_WORKERS = p.num_workers
    s = p.target
    cfg.SOLVER.MAX_ITER = s.iters
    cfg.SOLVER.BASE_LR = s.lr
    cfg.SOLVER.IMS_PER_BATCH = s.batch_size
    cfg.SOLVER.WARMUP_ITERS = s.warmup_iters
    cfg.SOLVER.STEPS = tuple(step for step in s.milestone_steps() if 0 < step < s.iters)
    cfg.SOLVER.CHECKPOINT_PERIOD = max(s.iters, 1)  # the final checkpoint only
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 1e-4
    if p.clip_grad is not None:
        cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
        cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
        cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = float(p.clip_grad)
    return cfg


def get_config(
    arch: str = "mask_rcnn",
    profile: str | Profile = "quick",
    schedule: str = "1x",
    upsampler: str = "srf",
    variant: str = "released",
    srf_weights: str | Path | None = None,
    srf_freeze: bool = False,
    num_classes: int | None = None,
    seed: int = 0,
    output_dir: str | Path | None = None,
    opts: list[str] | None = None,
    device: str | None = None,
) -> CfgNode:
    """A detectron2 config for an SRF-FPN detector (not frozen: change it, then ``cfg.freeze()``).

    Args:
        arch: one of :data:`ARCHS`.
        profile: ``paper`` takes the YAML as it is; other profiles merge ``<profile>.yaml`` and
            :func:`apply_profile`.
        schedule: ``1x`` or ``3x`` (the paper profile's schedule; small profiles use ``profile.target``).
        upsampler, variant: ``MODEL.SRF.UPSAMPLER`` and ``MODEL.SRF.VARIANT``.
        srf_weights: ``MODEL.SRF.WEIGHTS`` (srf-gan stage folder, srfkit checkpoint or the authors' file).
        srf_freeze: ``MODEL.SRF_FREEZE``.
        num_classes: classes without background (``ROI_HEADS``/``RETINANET.NUM_CLASSES``).
        seed: ``SEED``.
        output_dir: ``OUTPUT_DIR``.
        opts: ``KEY VALUE`` pairs merged last (detectron2's command-line form).
        device: ``MODEL.DEVICE``; default ``cuda`` when available, else ``cpu``.
    """
    p = get_profile(profile)
    cfg = add_srf_config(get_cfg())
    cfg.merge_from_file(str(config_file(arch, schedule)))
    if p.name != "paper":
        overlay = CONFIG_DIR / f"{p.name}.yaml"
        cfg.merge_from_file(str(overlay if overlay.is_file() else CONFIG_DIR / "cpu.yaml"))
        apply_profile(cfg, p)
    cfg.MODEL.SRF.UPSAMPLER = upsampler
    cfg.MODEL.SRF.VARIANT = variant
    cfg.MODEL.SRF.WEIGHTS = str(srf_weights) if srf_weights else ""
    cfg.MODEL.SRF_FREEZE = bool(srf_freeze)
    if num_classes is not None:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
        cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.SEED = seed
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    cfg.MODEL.DEVICE = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if opts:
        cfg.merge_from_list(list(opts))
    # A shortened run (SOLVER.MAX_ITER in opts) keeps only the learning-rate steps it reaches.
    cfg.SOLVER.STEPS = tuple(step for step in cfg.SOLVER.STEPS if step < cfg.SOLVER.MAX_ITER)
    return cfg
