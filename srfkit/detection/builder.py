"""Build torchvision detectors (Mask R-CNN, Faster R-CNN, RetinaNet, FCOS) over the SRF FPN.

Every size (backbone depth, FPN width, image size, anchors, RPN/RoI sampling) comes from a
:class:`srfkit.profiles.Profile`; ``build_detector(..., **overrides)`` changes profile fields for
one model (for example ``image_size=profile.image_size // 2`` for the degraded path, since
torchvision's transform would otherwise resize a half-size image straight back up).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..models.fpn import SRFFeaturePyramidNetwork
from ..models.upsamplers import UPSAMPLERS
from ..profiles import Profile, get_profile
from .centermask import CenterMask
from .masks import MaskPasteTransform

__all__ = [
    "ARCHS",
    "FeatureExtractor",
    "build_backbone",
    "build_detector",
    "get_fpn",
    "pad_batch",
    "retinanet_anchors",
    "roi_pooler",
]

ARCHS = ("mask_rcnn", "faster_rcnn", "retinanet", "fcos", "centermask")
NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "group": partial(nn.GroupNorm, 32),
    "batch": nn.BatchNorm2d,
    "frozen": FrozenBatchNorm2d,
}
# FCOS assigns one anchor per location whose size is the level's stride (torchvision's choice).
FCOS_ANCHOR_SIZES = ((8,), (16,), (32,), (64,), (128,))
FCOS_HEAD_GROUPS = 32  # torchvision's GroupNorm(32, C) in the FCOS head towers


def fcos_head_groups(channels: int) -> int:
    """GroupNorm groups of the FCOS head towers (and of RetinaNet's with ``retinanet_head_norm="group"``).

    torchvision's 32 groups, or fewer when 32 would leave fewer than two channels per group. With
    one channel per group, a 1x1 level (P6/P7 of a small image) normalises each group over a single
    value: torch refuses that at batch 1 ("Expected more than 1 value per channel") and at larger
    batches the tower outputs only the norm's bias there. 32 at C >= 64 (cpu and paper profiles),
    16 at C = 32 (quick).
    """
    for groups in range(min(FCOS_HEAD_GROUPS, channels // 2), 0, -1):
        if channels % groups == 0:
            return groups
    raise ValueError(f"FCOS head: fpn_channels={channels} is too narrow for GroupNorm (needs at least 2 channels)")


def _set_head_norm(head: nn.Module, groups: int) -> None:
    """Replace every ``GroupNorm`` of a head's conv towers by one with ``groups`` groups (same parameters)."""
    for tower in (head.classification_head.conv, head.regression_head.conv):
        for i, layer in enumerate(tower):
            if isinstance(layer, nn.GroupNorm):
                tower[i] = nn.GroupNorm(groups, layer.num_channels, eps=layer.eps, affine=layer.affine)


def retinanet_anchors(profile: Profile) -> AnchorGenerator:
    """RetinaNet's anchors on P3..P7: per level, base size ``s`` from ``profile.retinanet_anchor_sizes``
    (``None``: ``2 * profile.anchor_sizes``, srfkit's earlier rule) at scales ``s, int(s * 2^(1/3)),
    int(s * 2^(2/3))`` (torchvision's rounding) and aspect ratios 0.5, 1, 2: 9 anchors per location."""
    base = profile.retinanet_anchor_sizes
    if base is None:
        base = tuple(2 * s for s in profile.anchor_sizes)
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in base)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))


def roi_pooler(profile: Profile, output_size: int) -> MultiScaleRoIAlign:
    """The R-CNN RoI pooler over P2-P5 (``"0".."3"``) with the profile's RoI-to-level rule.

    torchvision's default pooler (sampling ratio 2; output 7 for the box head, 14 for the mask head)
    except for ``canonical_scale=profile.roi_canonical_scale`` and ``canonical_level=
    profile.roi_canonical_level``: a RoI of side ``sqrt(area)`` goes to level
    ``floor(level + log2(sqrt(area) / scale))``, clamped to P2..P5. Its ``map_levels`` is set on the
    first forward pass.
    """
    return MultiScaleRoIAlign(
        ["0", "1", "2", "3"],
        output_size,
        2,
        canonical_scale=profile.roi_canonical_scale,
        canonical_level=profile.roi_canonical_level,
    )


def _resnet(profile: Profile, weights_backbone: str | Path | None) -> nn.Module:
    if profile.norm not in NORM_LAYERS:
        raise ValueError(f"unknown norm {profile.norm!r}; valid: {', '.join(NORM_LAYERS)}")
    if profile.backbone not in torchvision.models.list_models(
        module=torchvision.models
    ) or not profile.backbone.startswith(("resnet", "resnext", "wide_resnet")):
        raise ValueError(f"backbone {profile.backbone!r} is not a torchvision ResNet")
    body = torchvision.models.get_model(profile.backbone, weights=None, norm_layer=NORM_LAYERS[profile.norm])
    if weights_backbone is not None:
        path = Path(weights_backbone)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = body.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: does not match {profile.backbone} with norm={profile.norm!r}; "
                f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
    # Freeze the stem and early stages as torchvision does; trainable_layers=5 trains everything.
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][: profile.trainable_layers]
    if profile.trainable_layers == 5:
        trainable.append("bn1")
    for name, param in body.named_parameters():
        if not name.startswith(tuple(trainable)):
            param.requires_grad_(False)
    return body


def build_backbone(
    profile: str | Profile = "quick",
    upsampler: str | nn.Module = "nearest",
    returned_layers: tuple[int, ...] = (1, 2, 3, 4),
    extra_blocks: nn.Module | None = None,
    weights_backbone: str | Path | None = None,
    upsampler_kwargs: dict | None = None,
    share_upsampler: bool | None = None,
) -> BackboneWithFPN:
    """ResNet + SRF FPN. Input (N, 3, H, W); output ``OrderedDict`` of (N, C, H/s, W/s).

    With ``returned_layers=(1, 2, 3, 4)`` and the default max-pool extra block the levels are
    ``"0".."3"`` (P2-P5, strides 4-32) and ``"pool"`` (P6, stride 64). ``share_upsampler``: one
    upsampler module for every top-down step, or one per step (``None``: the upsampler's own default;
    see :class:`~srfkit.models.SRFFeaturePyramidNetwork`).
    """
    profile = get_profile(profile)
    body = _resnet(profile, weights_backbone)
    stage2_channels = body.inplanes // 8  # 64 for BasicBlock ResNets, 256 for Bottleneck ones
    in_channels_list = [stage2_channels * 2 ** (i - 1) for i in returned_layers]
    return_layers = {f"layer{k}": str(v) for v, k in enumerate(returned_layers)}
    extra_blocks = LastLevelMaxPool() if extra_blocks is None else extra_blocks
    backbone = BackboneWithFPN(body, return_layers, in_channels_list, profile.fpn_channels, extra_blocks)
    backbone.fpn = SRFFeaturePyramidNetwork(
        in_channels_list,
        profile.fpn_channels,
        upsampler=upsampler,
        extra_blocks=extra_blocks,
        upsampler_kwargs=upsampler_kwargs,
        share_upsampler=share_upsampler,
    )
    return backbone


def build_detector(
    arch: str,
    num_classes: int,
    upsampler: str | nn.Module = "nearest",
    profile: str | Profile = "quick",
    weights_backbone: str | Path | None = None,
    upsampler_kwargs: dict | None = None,
    share_upsampler: bool | None = None,
    **overrides,
) -> nn.Module:
    """A torchvision detector whose FPN upsamples with ``upsampler``.

    Args:
        arch: ``mask_rcnn``, ``faster_rcnn``, ``retinanet``, ``fcos`` or ``centermask`` (FCOS + SAG-Mask,
            :class:`~srfkit.detection.centermask.CenterMask`).
        num_classes: classes including the background index 0 (torchvision's convention; the
            one-stage heads simply never predict index 0).
        upsampler: registry name or module for the FPN top-down path.
        profile: a profile or its name; ``overrides`` replace its fields for this model.
        weights_backbone: optional local file with a ResNet state dict (never downloaded).
        upsampler_kwargs: options of the registry upsampler (e.g. ``{"variant": "released"}``).
        share_upsampler: one upsampler module for all top-down steps (``True``) or one per step
            (``False``); ``None``: per step for DySample and CARAFE, shared for the rest.

    Returns:
        The detector; ``model.backbone.fpn.upsampler`` is the upsampler module.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(ARCHS)}")
    if isinstance(upsampler, str) and upsampler not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {upsampler!r}; valid: {', '.join(UPSAMPLERS)}")
    profile = get_profile(profile).replace(**overrides) if overrides else get_profile(profile)
    common = dict(min_size=profile.image_size, max_size=profile.max_size)

    if arch in ("mask_rcnn", "faster_rcnn"):
        backbone = build_backbone(
            profile,
            upsampler,
            weights_backbone=weights_backbone,
            upsampler_kwargs=upsampler_kwargs,
            share_upsampler=share_upsampler,
        )
        anchors = AnchorGenerator(
            tuple((s,) for s in profile.anchor_sizes), ((0.5, 1.0, 2.0),) * len(profile.anchor_sizes)
        )
        # Heads sized by the profile; at the paper profile they equal torchvision's defaults.
        c, dim = profile.fpn_channels, profile.box_head_dim
        heads = dict(
            box_roi_pool=roi_pooler(profile, 7),
            box_head=TwoMLPHead(c * 7 * 7, dim),
            box_predictor=FastRCNNPredictor(dim, num_classes),
        )
        if arch == "mask_rcnn":
            heads |= dict(
                mask_roi_pool=roi_pooler(profile, 14),
                mask_head=MaskRCNNHeads(c, (c,) * 4, 1),
                mask_predictor=MaskRCNNPredictor(c, c, num_classes),
            )
        cls = MaskRCNN if arch == "mask_rcnn" else FasterRCNN
        model = cls(
            backbone,
            num_classes=None,
            rpn_anchor_generator=anchors,
            **heads,
            rpn_pre_nms_top_n_train=profile.rpn_pre_nms_top_n[0],
            rpn_pre_nms_top_n_test=profile.rpn_pre_nms_top_n[1],
            rpn_post_nms_top_n_train=profile.rpn_post_nms_top_n[0],
            rpn_post_nms_top_n_test=profile.rpn_post_nms_top_n[1],
            rpn_batch_size_per_image=profile.rpn_batch_size_per_image,
            box_batch_size_per_image=profile.box_batch_size_per_image,
            box_detections_per_img=profile.detections_per_img,
            **common,
        )
        if arch == "mask_rcnn":  # masks land where the head learned them (srfkit.detection.masks)
            model.transform = MaskPasteTransform.like(model.transform)
        return model

    # One-stage heads: P3-P7 from C3-C5, P6/P7 computed from P5 (RetinaNet v2 / FCOS style).
    c = profile.fpn_channels
    if profile.retinanet_head_norm not in (None, "group"):
        raise ValueError(f"retinanet_head_norm must be None or 'group', got {profile.retinanet_head_norm!r}")
    if arch in ("fcos", "centermask") or (arch == "retinanet" and profile.retinanet_head_norm == "group"):
        try:
            groups = fcos_head_groups(c)
        except ValueError as err:
            raise ValueError(f"profile {profile.name!r}, arch {arch!r}: {err}") from None
    backbone = build_backbone(
        profile,
        upsampler,
        returned_layers=(2, 3, 4),
        extra_blocks=LastLevelP6P7(c, c),
        weights_backbone=weights_backbone,
        upsampler_kwargs=upsampler_kwargs,
        share_upsampler=share_upsampler,
    )
    if arch == "retinanet":
        anchors = retinanet_anchors(profile)
        head = None  # torchvision's, built inside RetinaNet
        if profile.retinanet_head_norm == "group":
            num_anchors = anchors.num_anchors_per_location()[0]
            head = RetinaNetHead(c, num_anchors, num_classes, norm_layer=partial(nn.GroupNorm, groups))
        return RetinaNet(
            backbone,
            num_classes,
            anchor_generator=anchors,
            head=head,
            detections_per_img=profile.detections_per_img,
            **common,
        )
    anchors = AnchorGenerator(FCOS_ANCHOR_SIZES, ((1.0,),) * len(FCOS_ANCHOR_SIZES))
    model = (CenterMask if arch == "centermask" else FCOS)(
        backbone, num_classes, anchor_generator=anchors, detections_per_img=profile.detections_per_img, **common
    )
    # Swapping the norms draws no random numbers: models at 32 groups are the same as before.
    _set_head_norm(model.head, groups)
    if arch == "centermask":  # its mask targets are Mask R-CNN's (srfkit.detection.masks)
        model.transform = MaskPasteTransform.like(model.transform)
    return model


def get_fpn(model: nn.Module) -> SRFFeaturePyramidNetwork:
    """The SRF FPN of a detector built by :func:`build_detector` (unwrapping DDP)."""
    model = getattr(model, "module", model)
    return model.backbone.fpn


def pad_batch(images: list[torch.Tensor], divisor: int = 32, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Stack (C, H_i, W_i) images into (N, C, H, W), zero-padded bottom/right.

    (H, W) is ``size`` when given, else the largest image size rounded up to a multiple of ``divisor``
    (what torchvision's ``GeneralizedRCNNTransform.batch_images`` does with ``size_divisible``).
    """
    if size is None:
        h = max(i.shape[-2] for i in images)
        w = max(i.shape[-1] for i in images)
        size = (math.ceil(h / divisor) * divisor, math.ceil(w / divisor) * divisor)
    batch = images[0].new_zeros((len(images), images[0].shape[0], *size))
    for out, img in zip(batch, images):
        if img.shape[-2] > size[0] or img.shape[-1] > size[1]:
            raise ValueError(f"pad_batch: an image of {tuple(img.shape[-2:])} does not fit in {tuple(size)}")
        out[:, : img.shape[-2], : img.shape[-1]].copy_(img)
    return batch


class FeatureExtractor(nn.Module):
    """The multi-scale feature extractor F of a detector: normalise, (pad), backbone, FPN.

    ``forward(images, size_divisible=None, size=None)`` -> ``OrderedDict`` of FPN levels (N, C, H/s, W/s),
    without the detector's resize (so a half-size image stays half-size):

    * a list of (3, H_i, W_i) images, RGB in [0, 1], goes the detector transform's own way: each image
      normalised with the transform's mean and std, then zero-padded bottom/right to a multiple of
      ``size_divisible`` (default: the transform's, 32) or to ``size``. These are the features the
      detector's backbone computes in training (padding before normalising would feed it
      ``-mean/std`` instead of zeros in the padded border).
    * a batch tensor (N, 3, H, W) in [0, 1] is normalised and used as it is (no padding).
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        detector = getattr(detector, "module", detector)
        self.backbone = detector.backbone
        self.size_divisible = int(getattr(detector.transform, "size_divisible", 32))
        self.register_buffer("mean", torch.tensor(detector.transform.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(detector.transform.image_std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: list[torch.Tensor], size_divisible: int | None = None, size=None) -> torch.Tensor:
        """Normalised and then zero-padded batch (N, 3, H, W) of a list of (3, H_i, W_i) images."""
        normed = [(img - self.mean[0]) / self.std[0] for img in images]
        return pad_batch(normed, size_divisible or self.size_divisible, size)

    def forward(
        self,
        images: torch.Tensor | list[torch.Tensor],
        size_divisible: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> dict[str, torch.Tensor]:
        if isinstance(images, torch.Tensor):
            return self.backbone((images - self.mean) / self.std)
        return self.backbone(self.normalize(images, size_divisible, size))
