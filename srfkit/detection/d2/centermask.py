"""CenterMask in detectron2: detectron2's FCOS over SRF-FPN plus srfkit's SAG-Mask branch.

The detectron2 twin of :mod:`srfkit.detection.centermask` (written from the CenterMask paper, Lee and
Park, CVPR 2020, arXiv:1911.06667; no code of centermask2 or AdelaiDet). The meta-architecture
``SRFCenterMask`` (``MODEL.META_ARCHITECTURE``) is ``detectron2.modeling.meta_arch.fcos.FCOS`` (its
head, anchor-point matching, focal/GIoU/centerness losses and post-processing, unchanged) with a mask
branch on P3-P5 built from the torchvision engine's plain modules:

* :class:`AdaptiveROIAlignV2`: 14x14 RoIAlign on the level of CenterMask's adaptive RoI assignment
  (:func:`srfkit.detection.centermask.adaptive_roi_levels`, paper Eq. 2: from the box area relative
  to the input image area). It pools with detectron2's ``ROIAlign(aligned=True)`` (ROIAlignV2), the
  pixel convention of detectron2's mask targets (``crop_and_resize``) and of its mask pasting; the
  torchvision engine's :class:`~srfkit.detection.centermask.AdaptiveRoIAlign` uses torchvision's
  ``aligned=False`` convention, consistent with torchvision's targets and pasting.
* :class:`~srfkit.detection.centermask.SAGMaskHead`: four 3x3 convs + ReLU and the spatial attention
  module (channel-wise average and max pooling, concatenated, 3x3 conv, sigmoid, multiplied in).
* torchvision's ``MaskRCNNPredictor``: a 2x2 stride-2 deconvolution to 28x28 + ReLU and a per-class
  1x1 conv.

Training, as in the torchvision engine: the mask RoIs of an image are FCOS's own post-processed
detections on it (computed without gradient: score threshold, NMS, at most
``TEST.DETECTIONS_PER_IMAGE``) plus the ground-truth boxes (``MODEL.ROI_HEADS.PROPOSAL_APPEND_GT``);
an RoI whose IoU with a ground-truth box reaches ``MODEL.ROI_HEADS.IOU_THRESHOLDS`` (0.5) is a positive
with that box's class and mask, and ``loss_mask`` is detectron2's ``mask_rcnn_loss`` (per-pixel binary
cross-entropy on the ground-truth class's 28x28 logits) over the positives. Inference: FCOS's
detections, the SAG-Mask branch on their boxes, ``mask_rcnn_inference`` (the predicted class's
probability map, ``pred_masks`` (K, 1, 28, 28)), pasted into the output image by detectron2's
``detector_postprocess``, so the ``Instances`` carry ``pred_masks`` (K, H, W) and COCOEvaluator scores
``segm``.

Config keys: only detectron2's own, so a dumped config reloads into ``add_srf_config(get_cfg())``
as every other srfkit config does. The dense FCOS head reads the ``MODEL.RETINANET`` node (detectron2's
FCOS is a RetinaNet head with a centerness output, built on the same dense-detector base):
``NUM_CLASSES``, ``IN_FEATURES`` (P3-P7), ``NUM_CONVS``, ``NORM`` (``GN``: GroupNorm with
:func:`srfkit.detection.builder.fcos_head_groups` groups, 32 at C >= 64, as the torchvision engine's
FCOS), ``PRIOR_PROB``, ``FOCAL_LOSS_ALPHA``/``GAMMA``, ``SCORE_THRESH_TEST``, ``TOPK_CANDIDATES_TEST``
and ``NMS_THRESH_TEST`` (FCOS's center-sampling radius stays detectron2's 1.5). The mask branch reads
``MODEL.MASK_ON``, ``MODEL.ROI_HEADS.IN_FEATURES`` (P3-P5), ``IOU_THRESHOLDS``, ``PROPOSAL_APPEND_GT``
and ``MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION``, ``POOLER_SAMPLING_RATIO``, ``NUM_CONV``, ``CONV_DIM``,
``NORM``, ``CLS_AGNOSTIC_MASK``. ``configs/Base-SRF-CenterMask.yaml`` sets them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ROIAlign, get_norm
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.fcos import FCOS, FCOSHead
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference, mask_rcnn_loss
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from torch import Tensor, nn
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

from ..builder import fcos_head_groups
from ..centermask import SAGMaskHead, adaptive_roi_levels

__all__ = [
    "AdaptiveROIAlignV2",
    "SAGMaskBranch",
    "SRFCenterMask",
    "build_sag_mask_branch",
    "mask_training_rois",
]


class AdaptiveROIAlignV2(nn.Module):
    """RoIAlign (``aligned=True``) of each box on the level of CenterMask's adaptive assignment.

    ``forward(features, boxes, image_sizes)``: ``features`` maps each name of ``in_features`` to an
    (N, C, H/s, W/s) map, ``boxes`` is a list of N (K_i, 4) XYXY tensors in input pixels,
    ``image_sizes`` the N (h, w) input sizes before padding -> (sum K_i, C, S, S), S = ``output_size``.
    A box of image i goes to level ``adaptive_roi_levels(box, h_i * w_i, k_min, k_max)``.

    Args:
        in_features: names of P_k_min..P_k_max, finest first.
        strides: their strides (consecutive powers of two: 8, 16, 32 for P3-P5).
        output_size: S (14 in CenterMask).
        sampling_ratio: RoIAlign samples per bin side (0: adaptive, detectron2's mask default).
    """

    def __init__(
        self, *, in_features: Sequence[str], strides: Sequence[int], output_size: int = 14, sampling_ratio: int = 0
    ) -> None:
        super().__init__()
        levels = [int(round(math.log2(s))) for s in strides]
        if len(levels) != len(in_features) or any(2**k != s for k, s in zip(levels, strides)):
            raise ValueError(f"strides {tuple(strides)} of {tuple(in_features)} are not one power of two per level")
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"levels {levels} of {tuple(in_features)} are not consecutive")
        self.in_features = list(in_features)
        self.k_min, self.k_max = levels[0], levels[-1]
        self.output_size = output_size
        self.aligners = nn.ModuleList(
            ROIAlign((output_size, output_size), 1.0 / s, sampling_ratio, aligned=True) for s in strides
        )

    def levels(self, boxes: list[Tensor], image_sizes: Sequence[tuple[int, int]]) -> Tensor:
        """(sum K_i,) pyramid level k of every box (``adaptive_roi_levels`` on its image's area)."""
        areas = [torch.full((len(b),), float(h * w), device=b.device) for b, (h, w) in zip(boxes, image_sizes)]
        return adaptive_roi_levels(torch.cat(boxes), torch.cat(areas), self.k_min, self.k_max)

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> Tensor:
        maps = [features[name] for name in self.in_features]
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)])
        roi_levels = self.levels(boxes, image_sizes)
        out = maps[0].new_zeros((len(rois), maps[0].shape[1], self.output_size, self.output_size))
        for k, (feature, aligner) in enumerate(zip(maps, self.aligners), start=self.k_min):
            idx = torch.where(roi_levels == k)[0]
            if len(idx):
                out = out.index_put((idx,), aligner(feature, rois[idx]).to(out.dtype))
        return out


class SAGMaskBranch(nn.Module):
    """CenterMask's mask branch: adaptive RoI pooling -> SAG-Mask head -> 28x28 mask logits.

    ``forward(features, boxes, image_sizes)`` -> (sum K_i, num_classes, 2S, 2S) logits, with the
    arguments of :class:`AdaptiveROIAlignV2` (S = 14: (K, C, 14, 14) pooled, (K, C', 14, 14) after the
    head, (K, num_classes, 28, 28) after the predictor; num_classes 1 for class-agnostic masks).
    """

    def __init__(self, *, pooler: nn.Module, head: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.pooler = pooler
        self.head = head
        self.predictor = predictor

    def forward(
        self, features: dict[str, Tensor], boxes: list[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> Tensor:
        return self.predictor(self.head(self.pooler(features, boxes, image_sizes)))


def build_sag_mask_branch(
    *,
    in_features: Sequence[str],
    strides: Sequence[int],
    in_channels: int,
    num_classes: int,
    resolution: int = 14,
    sampling_ratio: int = 0,
    num_conv: int = 4,
    conv_dim: int = 256,
    norm: str = "",
    cls_agnostic: bool = False,
) -> SAGMaskBranch:
    """The SAG-Mask branch: :class:`AdaptiveROIAlignV2`, ``SAGMaskHead`` and ``MaskRCNNPredictor``.

    Args:
        in_features, strides: the pooled levels (P3-P5: strides 8, 16, 32).
        in_channels: their width (the FPN's).
        num_classes: foreground classes (detectron2 counts no background).
        resolution, sampling_ratio: RoIAlign output side (14) and samples per bin.
        num_conv, conv_dim: the head's 3x3 convs (four of 256 in CenterMask).
        norm: detectron2 norm name after each conv (``""``: none, as the paper).
        cls_agnostic: one mask per RoI instead of one per class.
    """
    norm_layer = partial(get_norm, norm) if norm else None
    return SAGMaskBranch(
        pooler=AdaptiveROIAlignV2(
            in_features=in_features, strides=strides, output_size=resolution, sampling_ratio=sampling_ratio
        ),
        head=SAGMaskHead(in_channels, (conv_dim,) * num_conv, norm_layer=norm_layer),
        predictor=MaskRCNNPredictor(conv_dim, conv_dim, 1 if cls_agnostic else num_classes),
    )


def mask_training_rois(
    proposals: list[Instances], targets: list[Instances], matcher: Matcher, add_gt_boxes: bool = True
) -> list[Instances]:
    """The positive mask RoIs of each image, with the class and mask of their ground truth.

    Args:
        proposals: per image, detections with ``pred_boxes`` (FCOS's, without gradient).
        targets: per image, ground truth with ``gt_boxes``, ``gt_classes`` and ``gt_masks``.
        matcher: labels an RoI 1 (positive) from its best IoU with a ground-truth box.
        add_gt_boxes: add the ground-truth boxes to the RoIs (they match themselves).

    Returns:
        per image, ``Instances`` of the positives with ``proposal_boxes``, ``gt_classes`` and
        ``gt_masks`` (what ``mask_rcnn_loss`` reads); empty for an image without ground truth.
    """
    out = []
    for det, gt in zip(proposals, targets):
        boxes = det.pred_boxes.tensor.detach()
        if add_gt_boxes:
            boxes = torch.cat([boxes, gt.gt_boxes.tensor.to(boxes.dtype)])
        rois = Instances(gt.image_size)
        if len(gt) == 0 or len(boxes) == 0:
            rois.proposal_boxes = Boxes(boxes[:0])
            rois.gt_classes = gt.gt_classes[:0]
            rois.gt_masks = gt.gt_masks[gt.gt_classes.new_zeros(0)]
            out.append(rois)
            continue
        matched, labels = matcher(pairwise_iou(gt.gt_boxes, Boxes(boxes)))
        keep = torch.where(labels == 1)[0]
        rois.proposal_boxes = Boxes(boxes[keep])
        rois.gt_classes = gt.gt_classes[matched[keep]]
        rois.gt_masks = gt.gt_masks[matched[keep]]
        out.append(rois)
    return out


class SRFCenterMask(FCOS):
    """CenterMask: detectron2's FCOS with the SAG-Mask branch ``mask_branch`` on P3-P5.

    ``forward(batched_inputs)`` as every detectron2 model. Training: FCOS's ``loss_fcos_cls``,
    ``loss_fcos_loc``, ``loss_fcos_ctr`` and ``loss_mask`` (see the module docstring for the RoIs).
    Inference: per image ``{"instances": Instances}`` with ``pred_boxes``, ``scores``, ``pred_classes``
    and ``pred_masks`` (K, H, W) bool at the output size.

    Args:
        mask_branch: a :class:`SAGMaskBranch` (``None``: boxes only, FCOS).
        mask_matcher: positive RoIs for the mask loss.
        mask_add_gt_boxes: add the ground-truth boxes to the training RoIs.
        **kwargs: detectron2 ``FCOS`` arguments (``backbone``, ``head``, ``head_in_features``,
            ``num_classes``, ``pixel_mean``, ``pixel_std``, ...).
    """

    @configurable
    def __init__(
        self,
        *,
        mask_branch: SAGMaskBranch | None,
        mask_matcher: Matcher,
        mask_add_gt_boxes: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.mask_branch = mask_branch
        self.mask_matcher = mask_matcher
        self.mask_add_gt_boxes = mask_add_gt_boxes

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        dense, rois, mask = cfg.MODEL.RETINANET, cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_MASK_HEAD
        names = list(rois.IN_FEATURES) if cfg.MODEL.MASK_ON else []
        missing = [f for f in [*dense.IN_FEATURES, *names] if f not in shapes]
        if missing:
            raise ValueError(f"backbone {cfg.MODEL.BACKBONE.NAME} has no features {missing}; it gives {list(shapes)}")
        channels = shapes[dense.IN_FEATURES[0]].channels
        norm = partial(nn.GroupNorm, fcos_head_groups(channels)) if dense.NORM == "GN" else dense.NORM
        head = FCOSHead(
            input_shape=[shapes[f] for f in dense.IN_FEATURES],
            conv_dims=[channels] * dense.NUM_CONVS,
            num_classes=dense.NUM_CLASSES,
            norm=norm,
            prior_prob=dense.PRIOR_PROB,
        )
        branch = None
        if cfg.MODEL.MASK_ON:
            branch = build_sag_mask_branch(
                in_features=names,
                strides=[shapes[f].stride for f in names],
                in_channels=shapes[names[0]].channels,
                num_classes=dense.NUM_CLASSES,
                resolution=mask.POOLER_RESOLUTION,
                sampling_ratio=mask.POOLER_SAMPLING_RATIO,
                num_conv=mask.NUM_CONV,
                conv_dim=mask.CONV_DIM,
                norm=mask.NORM,
                cls_agnostic=mask.CLS_AGNOSTIC_MASK,
            )
        return {
            "backbone": backbone,
            "head": head,
            "head_in_features": list(dense.IN_FEATURES),
            "num_classes": dense.NUM_CLASSES,
            "focal_loss_alpha": dense.FOCAL_LOSS_ALPHA,
            "focal_loss_gamma": dense.FOCAL_LOSS_GAMMA,
            "test_score_thresh": dense.SCORE_THRESH_TEST,
            "test_topk_candidates": dense.TOPK_CANDIDATES_TEST,
            "test_nms_thresh": dense.NMS_THRESH_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "mask_branch": branch,
            "mask_matcher": Matcher(list(rois.IOU_THRESHOLDS), list(rois.IOU_LABELS), allow_low_quality_matches=False),
            "mask_add_gt_boxes": rois.PROPOSAL_APPEND_GT,
        }

    def _named(self, features: list[Tensor]) -> dict[str, Tensor]:
        return dict(zip(self.head_in_features, features))

    def forward_training(
        self, images: ImageList, features: list[Tensor], predictions: list[list[Tensor]], gt_instances: list[Instances]
    ) -> dict[str, Tensor]:
        losses = super().forward_training(images, features, predictions, gt_instances)
        if self.mask_branch is None:
            return losses
        with torch.no_grad():  # FCOS sigmoids its (sometimes view-sharing) inputs in place: copies
            copies = [[p.detach().clone() for p in per_level] for per_level in predictions]
            proposals = super().forward_inference(images, features, copies)
        rois = mask_training_rois(proposals, gt_instances, self.mask_matcher, self.mask_add_gt_boxes)
        logits = self.mask_branch(self._named(features), [r.proposal_boxes.tensor for r in rois], images.image_sizes)
        losses["loss_mask"] = mask_rcnn_loss(logits, rois)
        return losses

    def forward_inference(
        self, images: ImageList, features: list[Tensor], predictions: list[list[Tensor]]
    ) -> list[Instances]:
        results = super().forward_inference(images, features, predictions)
        if self.mask_branch is not None:
            boxes = [r.pred_boxes.tensor for r in results]
            mask_rcnn_inference(self.mask_branch(self._named(features), boxes, images.image_sizes), results)
        return results


if "SRFCenterMask" not in META_ARCH_REGISTRY:
    META_ARCH_REGISTRY._do_register("SRFCenterMask", SRFCenterMask)
