"""CenterMask (FCOS + SAG-Mask): level assignment, module shapes, mask pasting, training and COCO mask AP."""

import math

import pytest
import torch
from torch import nn
from torchvision.models.detection import FCOS

from srfkit.detection import FeatureExtractor, build_detector, get_fpn
from srfkit.detection.centermask import (
    AdaptiveRoIAlign,
    CenterMask,
    SAGMaskHead,
    SpatialAttention,
    adaptive_roi_levels,
)
from srfkit.models.fpn import SRFFeaturePyramidNetwork
from srfkit.profiles import get_profile

QUICK = get_profile("quick")
FCOS_LOSSES = {"classification", "bbox_regression", "bbox_ctrness"}


def _box_of_area(area: float, aspect: float = 1.0) -> list[float]:
    w = math.sqrt(area * aspect)
    return [0.0, 0.0, w, area / w]


def _batch(n: int = 2, size: int = 64, seed: int = 0):
    """``n`` images with two filled right triangles each: their boxes, labels and masks.

    Label 1 is the lower-left half of its box, label 2 the upper-right half (coloured by label), so
    a mask that simply fills the box scores an IoU of about 0.5.
    """
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, targets = [], []
    for _ in range(n):
        image = torch.rand(3, size, size, generator=g) * 0.2
        boxes, labels, masks = [], [], []
        for x0, y0, w, h, label in ((4, 6, 24, 30, 1), (34, 30, 26, 20, 2)):
            u, v = (xs - x0 + 0.5) / w, (ys - y0 + 0.5) / h
            inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
            mask = inside & ((v >= u) if label == 1 else (v <= u))
            image[label - 1][mask] = 1.0
            ys_on, xs_on = torch.where(mask)
            boxes.append([xs_on.min(), ys_on.min(), xs_on.max() + 1, ys_on.max() + 1])  # the tight box
            labels.append(label)
            masks.append(mask.to(torch.uint8))
        images.append(image)
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor(labels),
                "masks": torch.stack(masks),
            }
        )
    return images, targets


# ------------------------------------------------------------------------------- level assignment


def test_adaptive_roi_levels_follow_eq2_with_ceil_and_clamp():
    area = 64.0 * 64.0
    ratios = [1.0, 0.6, 0.5, 0.3, 0.25, 0.2, 0.01]
    boxes = torch.tensor([_box_of_area(r * area, aspect=2.0) for r in ratios])
    # k = ceil(5 - log2(A_input / A_RoI)), clamped to [3, 5]: above half the image -> P5, exactly
    # half -> P4, a quarter -> P3, and everything smaller stays at P3.
    assert adaptive_roi_levels(boxes, torch.tensor(area)).tolist() == [5, 5, 4, 4, 3, 3, 3]
    # The same rule over P3-P7 (k_max = 7, the paper's first example).
    assert adaptive_roi_levels(boxes, torch.tensor(area), k_min=3, k_max=7).tolist() == [7, 7, 6, 6, 5, 5, 3]
    # An empty box cannot give -inf: it lands on the lowest level.
    assert adaptive_roi_levels(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), torch.tensor(area)).tolist() == [3]


def test_adaptive_roi_levels_use_each_images_own_area():
    box = torch.tensor([_box_of_area(600.0)] * 2)
    # 600 px is above half of a 32x32 input (P5) and under a quarter of a 64x64 one (P3).
    assert adaptive_roi_levels(box, torch.tensor([32.0 * 32.0, 64.0 * 64.0])).tolist() == [5, 3]


def test_adaptive_roi_align_pools_each_box_from_its_level():
    c, size = 4, 64
    # Constant maps: P_k is filled with k, so a pooled RoI tells which level it was read from.
    features = {name: torch.full((2, c, size // 2**k, size // 2**k), float(k)) for name, k in zip("012", (3, 4, 5))}
    features["p6"] = torch.zeros(2, c, 1, 1)
    pool = AdaptiveRoIAlign(("0", "1", "2"), output_size=14)
    boxes = [torch.tensor([[0.0, 0.0, 60.0, 60.0], [8.0, 8.0, 20.0, 20.0]]), torch.tensor([[0.0, 0.0, 40.0, 40.0]])]
    out = pool(features, boxes, [(size, size), (size, size)])
    assert out.shape == (3, c, 14, 14)
    expected = adaptive_roi_levels(torch.cat(boxes), torch.tensor(size * size * 1.0))
    assert expected.tolist() == [5, 3, 4]
    levels = expected.float()[:, None, None, None].expand_as(out)
    assert torch.allclose(out, levels, atol=1e-5)
    empty = pool(features, [torch.zeros(0, 4), torch.zeros(0, 4)], [(size, size)] * 2)
    assert empty.shape == (0, c, 14, 14)


def test_adaptive_roi_align_refuses_maps_that_are_not_successive_levels():
    features = {"0": torch.zeros(1, 4, 8, 8), "1": torch.zeros(1, 4, 8, 8), "2": torch.zeros(1, 4, 2, 2)}
    with pytest.raises(ValueError, match="do not halve"):
        AdaptiveRoIAlign()(features, [torch.tensor([[0.0, 0.0, 8.0, 8.0]])], [(64, 64)])
    with pytest.raises(ValueError, match="P3-P5"):
        AdaptiveRoIAlign(("0", "1"))


# ---------------------------------------------------------------------------------- SAG-Mask parts


def test_spatial_attention_pools_over_channels_and_gates_every_channel():
    torch.manual_seed(0)
    sam = SpatialAttention()
    x = torch.randn(3, 8, 14, 14)
    att = sam.attention(x)
    assert att.shape == (3, 1, 14, 14) and bool(((att > 0) & (att < 1)).all())
    assert torch.allclose(sam(x), x * att)
    # With only the centre tap of the max-pool channel, the map is sigmoid(max over channels).
    with torch.no_grad():
        sam.conv.weight.zero_()
        sam.conv.bias.zero_()
        sam.conv.weight[0, 1, 1, 1] = 1.0
    assert torch.allclose(sam.attention(x), torch.sigmoid(x.amax(dim=1, keepdim=True)))
    with torch.no_grad():
        sam.conv.weight[0, 1, 1, 1] = 0.0
        sam.conv.weight[0, 0, 1, 1] = 1.0
    assert torch.allclose(sam.attention(x), torch.sigmoid(x.mean(dim=1, keepdim=True)))


def test_sag_mask_head_and_predictor_shapes():
    model = build_detector("centermask", num_classes=4, profile="quick")
    c = QUICK.fpn_channels
    head, predictor = model.roi_heads.mask_head, model.roi_heads.mask_predictor
    assert isinstance(head, SAGMaskHead) and isinstance(head[-1], SpatialAttention)
    convs = [m for name, m in head.named_modules() if isinstance(m, nn.Conv2d) and not name.startswith("sam")]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in convs] == [(c, c, (3, 3))] * 4
    features = head(torch.randn(5, c, 14, 14))
    assert features.shape == (5, c, 14, 14)
    assert predictor(features).shape == (5, 4, 28, 28)
    deconv = predictor.conv5_mask
    assert isinstance(deconv, nn.ConvTranspose2d) and deconv.kernel_size == (2, 2) and deconv.stride == (2, 2)
    assert model.roi_heads.mask_roi_pool.output_size == 14


# ------------------------------------------------------------------------------------- the detector


def test_build_detector_gives_fcos_with_srf_fpn_and_sag_mask():
    model = build_detector("centermask", num_classes=3, upsampler="srf", profile="quick")
    assert isinstance(model, CenterMask) and isinstance(model, FCOS)
    assert dict(model.backbone.body.return_layers) == {"layer2": "0", "layer3": "1", "layer4": "2"}
    assert isinstance(get_fpn(model), SRFFeaturePyramidNetwork)
    assert model.transform.min_size == (QUICK.image_size,) and model.detections_per_img == QUICK.detections_per_img
    feats = FeatureExtractor(model.eval())(torch.rand(1, 3, 64, 96))
    assert list(feats) == ["0", "1", "2", "p6", "p7"] and tuple(feats["0"].shape[-2:]) == (8, 12)
    # An FCOS state dict loads into the FCOS part by name (the SAG-Mask branch is all that is new).
    fcos = build_detector("fcos", num_classes=3, upsampler="srf", profile="quick")
    missing, unexpected = model.load_state_dict(fcos.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("roi_heads.") for k in missing)


def test_training_losses_and_mask_gradient_reach_the_upsampler():
    torch.manual_seed(0)
    model = build_detector("centermask", num_classes=3, upsampler="srf", profile="quick").train()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == FCOS_LOSSES | {"loss_mask"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    losses["loss_mask"].backward()
    # The mask loss alone trains the mask branch and the features under it (FPN and its upsampler G).
    for module in (model.roi_heads, get_fpn(model).upsampler):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.head.parameters())


def test_training_needs_masks():
    model = build_detector("centermask", num_classes=3, profile="quick").train()
    images, targets = _batch(n=1)
    del targets[0]["masks"]
    with pytest.raises(ValueError, match="masks"):
        model(images, targets)


def test_eval_outputs_match_mask_rcnn_shapes():
    torch.manual_seed(0)
    model = build_detector("centermask", num_classes=3, profile="quick").eval()
    model.score_thresh = 0.0  # an untrained FCOS scores under 0.2: keep every candidate
    images = [torch.rand(3, 48, 80), torch.rand(3, 64, 64)]
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for image, out in zip(images, outputs):
        n = len(out["boxes"])
        assert 0 < n <= QUICK.detections_per_img
        assert out["boxes"].shape == (n, 4) and out["scores"].shape == (n,) and out["labels"].shape == (n,)
        assert out["masks"].shape == (n, 1, *image.shape[-2:]) and out["masks"].dtype == torch.float32
        assert float(out["masks"].min()) >= 0.0 and float(out["masks"].max()) <= 1.0
    model.score_thresh = 1.0  # nothing passes: empty outputs of the same layout
    with torch.no_grad():
        empty = model(images[:1])[0]
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 1, 48, 80)


class _HalfMask(nn.Module):
    """Mask logits that are on in the left half of every RoI and off in the right half."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x):
        logits = torch.full((x.shape[0], self.num_classes, 28, 28), -20.0)
        logits[..., :14] = 20.0
        return logits


def test_masks_are_pasted_into_the_original_image():
    model = build_detector("centermask", num_classes=3, profile="quick").eval()
    model.roi_heads.mask_predictor = _HalfMask(3)
    # One detection at a known box of the resized input (96x128 is resized by 0.5 to 48x64).
    box = torch.tensor([[8.0, 6.0, 40.0, 30.0]])

    def fixed_detections(head_outputs, anchors, image_shapes):
        assert image_shapes == [(48, 64)]
        return [{"boxes": box.clone(), "scores": torch.tensor([0.9]), "labels": torch.tensor([2])}]

    model.postprocess_detections = fixed_detections
    with torch.no_grad():
        out = model([torch.rand(3, 96, 128)])[0]
    assert torch.allclose(out["boxes"], box * 2) and out["labels"].tolist() == [2]
    mask = out["masks"][0, 0]
    assert mask.shape == (96, 128)
    x0, y0, x1, y1 = (box[0] * 2).long().tolist()  # (16, 12, 80, 60) in the original image
    xm = (x0 + x1) // 2
    assert bool((mask[y0 + 2 : y1 - 2, x0 + 2 : xm - 2] > 0.99).all()), "left half of the box is on"
    assert bool((mask[y0 + 2 : y1 - 2, xm + 2 : x1 - 2] < 0.01).all()), "right half of the box is off"
    outside = torch.ones_like(mask, dtype=torch.bool)
    # paste_masks_in_image pads the 28x28 map by one cell (the box grows by 30/28): 3 px here.
    outside[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3] = False
    assert float(mask[outside].max()) == 0.0, "nothing outside the box"


def _gt_box_mask_iou(model: CenterMask, images, targets) -> float:
    """Mean IoU of the masks the model predicts on the ground-truth boxes (and labels) with the GT masks,
    in the mask head's own 28x28 box frame (the targets cut as the loss cuts them), so that where the
    transform pastes masks into the image (srfkit.detection.masks) does not enter."""
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    model.eval()
    with torch.no_grad():
        batch, _ = model.transform(images)
        features = model.backbone(batch.tensors)
        dets = [
            {"boxes": t["boxes"].clone(), "labels": t["labels"], "scores": torch.ones(len(t["boxes"]))} for t in targets
        ]
        dets, _ = model.roi_heads(features, dets, batch.image_sizes)
    model.train()
    pred = torch.cat([d["masks"][:, 0] > 0.5 for d in dets]).flatten(1)
    cut = [project_masks_on_boxes(t["masks"].float(), t["boxes"], torch.arange(len(t["boxes"])), 28) for t in targets]
    gt = (torch.cat(cut) > 0.5).flatten(1)
    return float(((pred & gt).sum(1) / (pred | gt).sum(1)).mean())


def test_training_lowers_the_loss_and_learns_the_masks():
    torch.manual_seed(0)
    model = build_detector("centermask", num_classes=3, profile="quick").train()
    images, targets = _batch()
    iou_before = _gt_box_mask_iou(model, images, targets)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    history = []
    for _ in range(25):
        losses = model(images, targets)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()} | {"total": total.item()})
    assert all(math.isfinite(r["total"]) for r in history)
    first, last = (sum(r["total"] for r in rows) / len(rows) for rows in (history[:3], history[-3:]))
    assert last < 0.6 * first, history
    # loss_mask itself is not monotone: once FCOS's own detections match a GT box (IoU >= 0.5) they
    # join the positives, shifted RoIs that are harder than the GT boxes. Judge the masks instead:
    # on the GT boxes, a box-filling mask scores about 0.5 on these triangles (0.46 before training, 0.73
    # after, measured in the coarse 28x28 box frame, where the diagonal's cells weigh more than in the image).
    iou_after = _gt_box_mask_iou(model, images, targets)
    assert iou_after > 0.65 and iou_after > iou_before + 0.2, (iou_before, iou_after)


def test_quick_guide_run_lowers_the_loss_and_gives_coco_mask_ap(tmp_path):
    import json

    from srfkit import data
    from srfkit.eval import coco_evaluate, predictions_to_coco
    from srfkit.train import load_detector, train_guide

    train = data.load("shapes", "train", QUICK)
    val = data.load("shapes", "val", QUICK)
    iters = 40  # the quick guide schedule's 6 steps are too few to see the loss move through batch noise
    result = train_guide(QUICK, train, tmp_path, arch="centermask", iters=iters, progress=False)
    assert result.steps == iters and "loss_mask" in result.metrics
    rows = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    totals = [sum(row[k] for k in FCOS_LOSSES | {"loss_mask"}) for row in rows]
    assert len(totals) == iters and all(math.isfinite(t) for t in totals)
    assert sum(totals[-10:]) < 0.85 * sum(totals[:10]), totals

    model = load_detector(result.out_dir)
    assert isinstance(model, CenterMask) and not model.training
    model.score_thresh = 0.05  # the usual COCO-evaluation threshold (torchvision's Mask R-CNN default)
    metrics = coco_evaluate(model, val, progress=False)
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        for name in ("AP", "AP50", "AP75", "APs", "APm"):
            assert 0.0 <= metrics[iou_type][name] <= 100.0, metrics
    # The masks reach pycocotools: every detection of a val image becomes an RLE segmentation.
    image, target = val[0]
    with torch.no_grad():
        output = model([image])[0]
    assert len(output["boxes"]) and output["masks"].shape[-2:] == image.shape[-2:]
    label_to_cat = val.label_to_cat_id
    results = predictions_to_coco(output, int(target["image_id"]), label_to_cat, image_size=tuple(image.shape[-2:]))
    assert results and all("segmentation" in r for r in results)
