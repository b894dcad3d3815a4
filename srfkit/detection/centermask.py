"""CenterMask (Lee and Park, CVPR 2020): FCOS boxes plus a spatial attention-guided mask branch (SAG-Mask).

Written from the CenterMask paper ("CenterMask: Real-Time Anchor-Free Instance Segmentation",
arXiv:1911.06667, sections 2.2-2.3), on torchvision's FCOS and Mask R-CNN pieces; no code of the
authors' releases (centermask2, AdelaiDet) is used. The model is torchvision's :class:`FCOS` with one
more module, ``roi_heads`` (named and laid out like torchvision's ``RoIHeads`` mask part, so code that
looks for ``model.roi_heads.mask_predictor`` finds it):

* ``roi_heads.mask_roi_pool``: :class:`AdaptiveRoIAlign`, a 14x14 RoIAlign on the pyramid level chosen
  by CenterMask's adaptive RoI assignment (paper Eq. 2, see :func:`adaptive_roi_levels`), not by the
  Mask R-CNN canonical rule of FPN.
* ``roi_heads.mask_head``: :class:`SAGMaskHead`, four 3x3 conv + ReLU and the spatial attention module
  (:class:`SpatialAttention`: channel-wise average and max pooling, concatenated, 3x3 conv, sigmoid,
  multiplied into the features).
* ``roi_heads.mask_predictor``: torchvision's ``MaskRCNNPredictor``: a 2x2 stride-2 deconvolution to
  28x28 + ReLU and a 1x1 conv giving one mask logit map per class.

Training (the choice made here, documented because the paper is brief about it): the FCOS losses are
torchvision's; the mask branch is trained like Mask R-CNN's on positive RoIs. The paper (section 2.2:
"after object proposals are predicted in the FCOS box head, CenterMask predicts segmentation masks
using the predicted box regions in the same vein as Mask R-CNN") feeds FCOS's predicted boxes to the
mask branch; its implementation details take the top 100 FCOS boxes for mask training (as far as we
recall them: that passage was not in the searchable copies). Here the RoIs of a training image are
FCOS's own post-processed detections on it (score threshold, NMS, at most ``detections_per_img``, 100
in the cpu and paper profiles; computed without gradient) plus the ground-truth boxes
(torchvision's ``RoIHeads.add_gt_proposals`` does the same for Mask R-CNN; early in training FCOS
detects nothing above its score threshold, and the GT boxes keep the mask branch learning). An RoI is
positive when its IoU with a ground-truth box is at least 0.5; its mask target is that box's mask
cropped to the RoI and resized to 28x28, and the loss is the per-pixel binary cross-entropy on the
logit map of the ground-truth class (torchvision's ``maskrcnn_loss``), averaged over the positives.

Inference: FCOS detections -> SAG-Mask on their boxes -> the probability map of the predicted class
(``maskrcnn_inference``), pasted into the original image by the transform (``paste_masks_in_image``),
so outputs match Mask R-CNN's: ``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,), ``masks``
(N, 1, H, W) float in [0, 1] at the original image size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss
from torchvision.ops import Conv2dNormActivation, box_iou, roi_align

__all__ = [
    "AdaptiveRoIAlign",
    "CenterMask",
    "SAGMaskHead",
    "SAGMaskRoIHeads",
    "SpatialAttention",
    "adaptive_roi_levels",
]


def adaptive_roi_levels(boxes: Tensor, image_areas: Tensor, k_min: int = 3, k_max: int = 5) -> Tensor:
    """CenterMask's adaptive RoI assignment (paper Eq. 2): the pyramid level P_k of each RoI.

    ``k = ceil(k_max - log2(A_input / A_RoI))``, clamped to ``[k_min, k_max]``, where ``A_input`` is the
    area of the (resized, unpadded) input image and ``A_RoI = w * h`` the area of the RoI. The paper
    replaces FPN's ``floor(k0 + log2(sqrt(w h) / 224))`` with it because the canonical size 224 is not
    adaptive to the input scale and FCOS uses P3-P7, not P2-P5; it clamps ``k`` below at the minimum
    level and, by ablation, takes ``k_max = 5`` and ``k_min = 3`` (P3-P5) for the mask branch.

    Source check: the equation's own text was not in the searchable copies; the corpus held
    summaries of the paper (caiusdebucean/Paper-Analysis ``CenterMask/CenterMask-Instance-Segmentation.md``,
    the itadn.com and Medium reviews) which state that k below P3 is clamped to the minimum level and
    that an RoI bigger than half of the input area goes to the highest level. That rule fixes both the
    rounding and the log term: with ``ceil`` of the area ratio, ``A_RoI > A_input / 2`` gives
    ``k = k_max`` exactly; ``floor`` would give ``k_max - 1``, and ``log2`` of the side ratio
    ``sqrt(A_input / A_RoI)`` would move that boundary to a quarter of the input area.

    Args:
        boxes: (K, 4) XYXY boxes in input-image pixels.
        image_areas: (K,) area of the input image each box belongs to (or a scalar).
        k_min, k_max: the lowest and highest pyramid levels that may be chosen.

    Returns:
        (K,) int64 levels in ``[k_min, k_max]``.
    """
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=0).double()
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=0).double()
    areas = (widths * heights).clamp(min=1e-12)  # an empty box would give -inf: it lands on k_min
    image_areas = torch.as_tensor(image_areas, dtype=torch.float64, device=boxes.device)
    levels = torch.ceil(k_max - torch.log2(image_areas / areas))
    return levels.clamp(min=k_min, max=k_max).to(torch.int64)


class AdaptiveRoIAlign(nn.Module):
    """RoIAlign of each box on the pyramid level of :func:`adaptive_roi_levels`.

    ``forward(features, boxes, image_shapes)``: ``features`` the backbone's ``OrderedDict`` of
    (N, C, H/s, W/s) maps, ``boxes`` a list of N (K_i, 4) XYXY tensors in input-image pixels,
    ``image_shapes`` the N (h, w) input sizes before padding -> (sum K_i, C, S, S) with
    S = ``output_size``.

    ``featmap_names`` name the levels P_k_min..P_k_max in order; P_k is pooled with spatial scale
    2^-k (exact inside a detector, whose transform pads the batch to a multiple of 32). The scale is
    not inferred from the unpadded image size as torchvision's ``MultiScaleRoIAlign`` does: a small,
    elongated image padded to 32 pixels would be read one level off.

    Args:
        featmap_names: keys of the pooled maps (``"0", "1", "2"``: P3-P5 of srfkit's one-stage backbone).
        output_size: side of the pooled features (14 in CenterMask).
        sampling_ratio: RoIAlign samples per bin side (2, as torchvision's Mask R-CNN).
        k_min, k_max: the levels of Eq. 2 (3 and 5 in CenterMask).
    """

    def __init__(
        self,
        featmap_names: Sequence[str] = ("0", "1", "2"),
        output_size: int = 14,
        sampling_ratio: int = 2,
        k_min: int = 3,
        k_max: int = 5,
    ) -> None:
        super().__init__()
        if k_max - k_min + 1 != len(featmap_names):
            raise ValueError(f"{len(featmap_names)} feature maps {tuple(featmap_names)} for levels P{k_min}-P{k_max}")
        self.featmap_names = list(featmap_names)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.k_min = k_min
        self.k_max = k_max

    def forward(self, features: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        maps = [features[name] for name in self.featmap_names]
        levels = list(range(self.k_min, self.k_max + 1))
        for i, m in enumerate(maps[1:], start=1):
            if m.shape[-2] != math.ceil(maps[0].shape[-2] / 2**i):
                raise ValueError(
                    f"feature maps {self.featmap_names} of heights {[int(x.shape[-2]) for x in maps]} do not halve "
                    f"level by level as P{self.k_min}-P{self.k_max} do"
                )
        rois = torch.cat(
            [torch.cat([b.new_full((len(b), 1), i), b], dim=1) for i, b in enumerate(boxes)], dim=0
        )  # (K, 5): batch index, x1, y1, x2, y2
        areas = torch.tensor([float(h * w) for h, w in image_shapes], device=rois.device)
        roi_levels = adaptive_roi_levels(rois[:, 1:], areas[rois[:, 0].long()], self.k_min, self.k_max)
        out = maps[0].new_zeros((len(rois), maps[0].shape[1], self.output_size, self.output_size))
        for level, feature in zip(levels, maps):
            idx = torch.where(roi_levels == level)[0]
            if len(idx):
                pooled = roi_align(
                    feature,
                    rois[idx],
                    output_size=self.output_size,
                    spatial_scale=2.0**-level,
                    sampling_ratio=self.sampling_ratio,
                )
                out[idx] = pooled.to(out.dtype)
        return out


class SpatialAttention(nn.Module):
    """CenterMask's spatial attention module (SAM).

    ``forward``: (K, C, H, W) -> (K, C, H, W): channel-wise average and max pooling give two
    (K, 1, H, W) maps; concatenated, a ``kernel_size`` conv and a sigmoid make the attention map
    (K, 1, H, W), which multiplies every channel of the input.
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention(self, x: Tensor) -> Tensor:
        """The attention map (K, 1, H, W) in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class SAGMaskHead(nn.Sequential):
    """SAG-Mask's feature part: four 3x3 convs (+ ReLU) then :class:`SpatialAttention`.

    ``forward``: (K, in_channels, S, S) -> (K, layers[-1], S, S). Convs are initialised as
    torchvision's ``MaskRCNNHeads`` (Kaiming normal, fan-out, zero bias).

    Args:
        in_channels: channels of the pooled RoI features (the FPN width).
        layers: output channels of each conv (CenterMask: four of the FPN width).
        norm_layer: optional normalisation after each conv (none in the paper).
    """

    def __init__(
        self,
        in_channels: int,
        layers: Sequence[int] = (256, 256, 256, 256),
        norm_layer: Callable[..., nn.Module] | None = None,
    ) -> None:
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for i, width in enumerate(layers, start=1):
            blocks[f"mask_fcn{i}"] = Conv2dNormActivation(channels, width, kernel_size=3, norm_layer=norm_layer)
            channels = width
        blocks["sam"] = SpatialAttention()
        super().__init__(blocks)
        for name, layer in self.named_modules():
            if isinstance(layer, nn.Conv2d) and not name.startswith("sam"):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


class SAGMaskRoIHeads(nn.Module):
    """CenterMask's mask branch on FCOS boxes: RoI pooling, SAG-Mask head, mask predictor, loss.

    ``forward(features, detections, image_shapes, targets=None) -> (detections, losses)``:

    * training: ``detections`` are FCOS's per-image detections (``boxes`` (K_i, 4) in input pixels);
      the ground-truth boxes are added, RoIs matched to a ground truth with IoU >= ``fg_iou_thresh``
      are the positives, and ``losses`` is ``{"loss_mask": scalar}`` (``maskrcnn_loss``); the returned
      detections are the input ones.
    * inference: each detection dict gains ``masks`` (K_i, 1, M, M), the sigmoid map of its predicted
      label (M = 28), still in box coordinates (the detector's transform pastes them); ``losses`` is
      empty.

    Args:
        mask_roi_pool: pools (K, C, 14, 14) RoI features (:class:`AdaptiveRoIAlign`).
        mask_head: (K, C, 14, 14) -> (K, C', 14, 14) (:class:`SAGMaskHead`).
        mask_predictor: (K, C', 14, 14) -> (K, num_classes, 28, 28) logits (``MaskRCNNPredictor``).
        fg_iou_thresh: IoU with a ground-truth box from which an RoI is positive (0.5, as Mask R-CNN).
    """

    def __init__(
        self,
        mask_roi_pool: nn.Module,
        mask_head: nn.Module,
        mask_predictor: nn.Module,
        fg_iou_thresh: float = 0.5,
    ) -> None:
        super().__init__()
        self.mask_roi_pool = mask_roi_pool
        self.mask_head = mask_head
        self.mask_predictor = mask_predictor
        self.proposal_matcher = det_utils.Matcher(fg_iou_thresh, fg_iou_thresh, allow_low_quality_matches=False)

    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Positive RoIs per image (detections + GT boxes, IoU >= threshold) and their matched GT index."""
        positives, matched = [], []
        for boxes, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(boxes.dtype)
            boxes = torch.cat([boxes.detach(), gt_boxes], dim=0)
            if gt_boxes.numel() == 0:
                idx = torch.full((len(boxes),), -1, dtype=torch.int64, device=boxes.device)
            else:
                idx = self.proposal_matcher(box_iou(gt_boxes, boxes))
            keep = torch.where(idx >= 0)[0]
            positives.append(boxes[keep])
            matched.append(idx[keep])
        return positives, matched

    def forward(
        self,
        features: dict[str, Tensor],
        detections: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        boxes = [d["boxes"] for d in detections]
        if self.training:
            if targets is None or any("masks" not in t for t in targets):
                raise ValueError("CenterMask needs targets with masks in training mode")
            boxes, matched_idxs = self.select_training_samples(boxes, targets)
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        if self.training:
            gt_masks = [t["masks"] for t in targets]
            gt_labels = [t["labels"] for t in targets]
            return detections, {"loss_mask": maskrcnn_loss(logits, boxes, gt_masks, gt_labels, matched_idxs)}
        labels = [d["labels"] for d in detections]
        for det, probs in zip(detections, maskrcnn_inference(logits, labels)):
            det["masks"] = probs
        return detections, {}


class CenterMask(FCOS):
    """CenterMask: torchvision's FCOS with CenterMask's SAG-Mask branch as ``roi_heads``.

    Everything of FCOS (``backbone``, ``head``, ``anchor_generator``, ``transform``, losses and
    post-processing) is torchvision's, so an FCOS state dict loads into the FCOS part by name.

    ``forward(images, targets=None)``: images a list of (3, H_i, W_i) in [0, 1]. Training mode
    (targets with ``boxes``, ``labels`` and ``masks`` (K, H_i, W_i)): the loss dict
    ``classification``, ``bbox_regression``, ``bbox_ctrness`` (FCOS) and ``loss_mask``. Eval mode: one
    dict per image with ``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,) and ``masks`` (N, 1, H_i, W_i)
    probabilities in the original image's pixels.

    Args:
        backbone: a backbone with FPN whose outputs include P3-P5 under ``mask_featmap_names`` (srfkit's
            one-stage backbone: ResNet stages 2-4 with P6/P7).
        num_classes: classes including the background index 0.
        mask_roi_pool, mask_head, mask_predictor: replace the default SAG-Mask parts (built from
            ``backbone.out_channels``: 14x14 adaptive RoIAlign on P3-P5, four convs of that width,
            a 28x28 predictor).
        mask_featmap_names: keys of P3-P5 among the backbone's outputs.
        mask_fg_iou_thresh: IoU from which a training RoI is positive for the mask loss.
        **kwargs: torchvision ``FCOS`` arguments (``min_size``, ``anchor_generator``, ``score_thresh``,
            ``detections_per_img``, ...).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        mask_featmap_names: Sequence[str] = ("0", "1", "2"),
        mask_fg_iou_thresh: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(backbone, num_classes, **kwargs)
        c = backbone.out_channels
        self.roi_heads = SAGMaskRoIHeads(
            mask_roi_pool if mask_roi_pool is not None else AdaptiveRoIAlign(mask_featmap_names, output_size=14),
            mask_head if mask_head is not None else SAGMaskHead(c, (c,) * 4),
            mask_predictor if mask_predictor is not None else MaskRCNNPredictor(c, c, num_classes),
            fg_iou_thresh=mask_fg_iou_thresh,
        )

    def _detect(
        self, head_outputs: dict[str, Tensor], anchors: list[Tensor], sizes: list[int], image_shapes
    ) -> list[dict[str, Tensor]]:
        """FCOS post-processing (score threshold, top-k, NMS) on per-level splits of the head outputs."""
        split = {k: list(v.split(sizes, dim=1)) for k, v in head_outputs.items()}
        return self.postprocess_detections(split, [list(a.split(sizes)) for a in anchors], image_shapes)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None in training mode")
            for target in targets:
                boxes = target["boxes"]
                if not (isinstance(boxes, Tensor) and boxes.dim() == 2 and boxes.shape[-1] == 4):
                    raise ValueError(f"expected target boxes of shape (N, 4), got {getattr(boxes, 'shape', boxes)}")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        images, targets = self.transform(images, targets)
        if targets is not None:
            for i, target in enumerate(targets):
                degenerate = target["boxes"][:, 2:] <= target["boxes"][:, :2]
                if degenerate.any():
                    box = target["boxes"][torch.where(degenerate.any(dim=1))[0][0]].tolist()
                    raise ValueError(f"all boxes need positive height and width; found {box} in target {i}")

        features = self.backbone(images.tensors)
        levels = list(features.values())
        head_outputs = self.head(levels)
        anchors = self.anchor_generator(images, levels)
        sizes = [x.size(2) * x.size(3) for x in levels]

        if self.training:
            losses = self.compute_loss(targets, head_outputs, anchors, sizes)
            with torch.no_grad():
                detached = {k: v.detach() for k, v in head_outputs.items()}
                proposals = self._detect(detached, anchors, sizes, images.image_sizes)
            _, mask_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
            return {**losses, **mask_losses}

        detections = self._detect(head_outputs, anchors, sizes, images.image_sizes)
        detections, _ = self.roi_heads(features, detections, images.image_sizes)
        return self.transform.postprocess(detections, images.image_sizes, original_sizes)
