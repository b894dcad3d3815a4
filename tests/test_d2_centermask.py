"""CenterMask in the detectron2 engine: detectron2's FCOS over SRF-FPN + srfkit's SAG-Mask branch.

Tests skip with a reason when detectron2 is not installed (``make d2`` installs it; CI does).
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from srfkit.detection.d2 import detectron2_available

needs_d2 = pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed (run `make d2`)")
NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _quick_model(upsampler: str = "srf", opts: list[str] | None = None, seed: int = 0, num_classes: int = NUM_CLASSES):
    from detectron2.modeling import build_model

    from srfkit.detection.d2.config import get_config

    cfg = get_config("centermask", "quick", upsampler=upsampler, num_classes=num_classes, device="cpu", opts=opts)
    torch.manual_seed(seed)
    return build_model(cfg)


def _gt(size: int = 64):
    """One image's ground truth: two boxes (classes 0 and 2) with their masks (the box shrunk by 2 px)."""
    from detectron2.structures import BitMasks, Boxes, Instances

    boxes = torch.tensor([[8.0, 8.0, 40.0, 40.0], [30.0, 20.0, 60.0, 50.0]])
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.int().tolist()):
        m[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = True
    gt = Instances((size, size))
    gt.gt_boxes = Boxes(boxes)
    gt.gt_classes = torch.tensor([0, 2])
    gt.gt_masks = BitMasks(masks)
    return gt


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gt = _gt()
    return [
        {"image": torch.rand(3, 64, 64, generator=g) * 255, "instances": gt},
        {"image": torch.rand(3, 64, 64, generator=g) * 255, "instances": gt[:0]},  # an image without objects
    ]


# ------------------------------------------------------------------------------------------ config


@needs_d2
def test_config_paper_setting_and_reload():
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from srfkit.detection.centermask import SAGMaskHead
    from srfkit.detection.d2.backbone import add_srf_config
    from srfkit.detection.d2.config import ARCHS, config_file, get_config

    assert "centermask" in ARCHS
    assert config_file("centermask", "1x").is_file() and config_file("centermask", "3x").is_file()
    cfg = get_config("centermask", "paper", num_classes=80, device="cpu")
    assert cfg.MODEL.META_ARCHITECTURE == "SRFCenterMask" and cfg.MODEL.MASK_ON
    assert cfg.MODEL.BACKBONE.NAME == "build_srf_fcos_resnet_fpn_backbone"
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS) == (50, 256)
    assert list(cfg.MODEL.RETINANET.IN_FEATURES) == ["p3", "p4", "p5", "p6", "p7"]
    assert list(cfg.MODEL.ROI_HEADS.IN_FEATURES) == ["p3", "p4", "p5"]
    mask = cfg.MODEL.ROI_MASK_HEAD
    assert (mask.POOLER_RESOLUTION, mask.NUM_CONV, mask.CONV_DIM) == (14, 4, 256)
    assert (cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS), cfg.SOLVER.BASE_LR) == (90000, (60000, 80000), 0.01)
    assert get_config("centermask", "paper", schedule="3x", device="cpu").SOLVER.MAX_ITER == 270000
    # only detectron2's own keys: a dumped config reloads where every srfkit config reloads
    plain = add_srf_config(get_cfg())
    plain.merge_from_other_cfg(type(cfg).load_cfg(cfg.dump()))
    assert plain.MODEL.META_ARCHITECTURE == "SRFCenterMask"

    model = build_model(cfg)  # R-50, 256 channels: the paper's CenterMask R-50-FPN
    branch = model.mask_branch
    assert isinstance(branch.head, SAGMaskHead)
    convs = [m for name, m in branch.head.named_modules() if isinstance(m, torch.nn.Conv2d) and "sam" not in name]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(256, 256, (3, 3))] * 4
    assert branch.predictor.mask_fcn_logits.out_channels == 80
    norms = [m for m in model.head.cls_subnet if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 4 and all(n.num_groups == 32 for n in norms)


# --------------------------------------------------------------------------------- SAG-Mask branch


@needs_d2
def test_sag_mask_branch_shapes_and_adaptive_levels():
    from detectron2.layers import ROIAlign

    from srfkit.detection.d2.centermask import build_sag_mask_branch

    model = _quick_model()
    branch = model.mask_branch
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"]
    torch.manual_seed(1)
    c = 32  # quick profile's FPN width
    feats = {"p3": torch.randn(2, c, 16, 16), "p4": torch.randn(2, c, 8, 8), "p5": torch.randn(2, c, 4, 4)}
    sizes = [(128, 128), (128, 96)]
    # image 0 (area 16384): 10x10 -> P3 (clamped), 70x70 -> P4, 100x100 (> half the area) -> P5
    boxes = [torch.tensor([[10.0, 10.0, 20.0, 20.0], [20.0, 20.0, 90.0, 90.0], [5.0, 5.0, 105.0, 105.0]])]
    boxes.append(torch.tensor([[0.0, 0.0, 96.0, 100.0]]))  # image 1 (area 12288): 9600 px -> P5
    levels = branch.pooler.levels(boxes, sizes)
    assert levels.tolist() == [3, 4, 5, 5]

    pooled = branch.pooler(feats, boxes, sizes)
    assert pooled.shape == (4, c, 14, 14)
    for i, (img, k) in enumerate([(0, 3), (0, 4), (0, 5), (1, 5)]):  # each RoI read from its own level
        roi = torch.cat([torch.tensor([float(img)]), torch.cat(boxes)[i]])[None]
        ref = ROIAlign((14, 14), 2.0**-k, 0, aligned=True)(feats[f"p{k}"], roi)
        assert torch.allclose(pooled[i : i + 1], ref, atol=1e-6), (i, k)

    head = branch.head
    pre = torch.nn.Sequential(*list(head)[:-1])(pooled)  # the four 3x3 convs
    out = head(pooled)
    attention = head.sam.attention(pre)
    assert out.shape == (4, c, 14, 14) and attention.shape == (4, 1, 14, 14)
    assert bool(((attention > 0) & (attention < 1)).all())
    assert torch.allclose(out, pre * attention)
    logits = branch(feats, boxes, sizes)
    assert logits.shape == (4, NUM_CLASSES, 28, 28)
    assert branch(feats, [b[:0] for b in boxes], sizes).shape == (0, NUM_CLASSES, 28, 28)

    agnostic = build_sag_mask_branch(
        in_features=["p3", "p4", "p5"],
        strides=[8, 16, 32],
        in_channels=c,
        num_classes=5,
        conv_dim=16,
        cls_agnostic=True,
    )
    assert agnostic(feats, boxes, sizes).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="consecutive"):
        build_sag_mask_branch(in_features=["p3", "p5"], strides=[8, 32], in_channels=c, num_classes=5)


@needs_d2
def test_mask_training_rois_are_matched_positives():
    from detectron2.modeling.matcher import Matcher
    from detectron2.structures import Boxes, Instances

    from srfkit.detection.d2.centermask import mask_training_rois

    gt = _gt()
    det = Instances(gt.image_size)
    det.pred_boxes = Boxes(torch.tensor([[31.0, 21.0, 58.0, 50.0], [0.0, 50.0, 10.0, 60.0]]))  # IoU 0.9 / 0
    matcher = Matcher([0.5], [0, 1], allow_low_quality_matches=False)
    (rois,) = mask_training_rois([det], [gt], matcher, add_gt_boxes=True)
    assert rois.proposal_boxes.tensor.tolist() == [[31.0, 21.0, 58.0, 50.0], *gt.gt_boxes.tensor.tolist()]
    assert rois.gt_classes.tolist() == [2, 0, 2]
    assert torch.equal(rois.gt_masks.tensor, gt.gt_masks.tensor[[1, 0, 1]])
    (only_det,) = mask_training_rois([det], [gt], matcher, add_gt_boxes=False)
    assert len(only_det) == 1 and only_det.gt_classes.tolist() == [2]
    (empty,) = mask_training_rois([det], [gt[:0]], matcher)
    assert len(empty) == 0


# ------------------------------------------------------------------------------- training, inference


@needs_d2
def test_training_losses_gradients_and_mask_loss_decreases():
    from detectron2.utils.events import EventStorage

    model = _quick_model().train()
    batch = _batch()
    with EventStorage():
        losses = model(batch)
        assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"}
        assert all(math.isfinite(float(v)) for v in losses.values())
        assert float(losses["loss_mask"]) > 0.1  # a fresh predictor is far from the targets
        sum(losses.values()).backward()  # FCOS's in-place post-processing must not touch the graph
        branch = model.mask_branch
        for p in (branch.predictor.mask_fcn_logits.weight, branch.head.sam.conv.weight, branch.head[0][0].weight):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0
        assert float(model.backbone.srf_module.parameters().__next__().grad.abs().sum()) > 0

        model.zero_grad()
        optim = torch.optim.SGD(branch.parameters(), lr=0.05, momentum=0.9)
        first = None
        for _ in range(8):
            loss = model(batch)["loss_mask"]
            first = float(loss) if first is None else first
            optim.zero_grad()
            loss.backward()
            optim.step()
        last = float(model(batch)["loss_mask"])
    assert last < first - 0.05, (first, last)


@needs_d2
def test_inference_pastes_masks_into_the_output_image():
    model = _quick_model(opts=["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]).eval()
    logits = model.mask_branch.predictor.mask_fcn_logits
    with torch.no_grad():  # every mask pixel certain: a pasted mask is exactly its box
        logits.weight.zero_()
        logits.bias.fill_(10.0)
        out = model([{"image": _batch()[0]["image"], "height": 128, "width": 96}])
    inst = out[0]["instances"]
    n = len(inst)
    assert 0 < n <= 20  # TEST.DETECTIONS_PER_IMAGE of the quick profile
    assert inst.image_size == (128, 96)
    assert inst.pred_masks.shape == (n, 128, 96) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_classes.max() < NUM_CLASSES
    ys, xs = torch.meshgrid(torch.arange(128) + 0.5, torch.arange(96) + 0.5, indexing="ij")
    for mask, (x1, y1, x2, y2) in zip(inst.pred_masks, inst.pred_boxes.tensor.tolist()):
        inside = (xs > x1) & (xs < x2) & (ys > y1) & (ys < y2)
        if inside.sum() < 4:
            continue
        # the pasted mask covers its box (scaled to 128x96), up to a pixel at the border
        assert float((mask & inside).sum()) >= 0.9 * float(inside.sum())
        grown = (xs > x1 - 1.5) & (xs < x2 + 1.5) & (ys > y1 - 1.5) & (ys < y2 + 1.5)
        assert not bool((mask & ~grown).any())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Quick-size CenterMask with SRF-FPN (released G) and with nearest, 3 steps each, COCO-evaluated."""
    if not detectron2_available():
        pytest.skip("detectron2 is not installed (run `make d2`)")
    from srfkit.detection.d2.engine import train_detector

    root = tmp_path_factory.mktemp("d2-centermask")
    out = {}
    for upsampler in ("srf", "nearest"):
        # score threshold 0: a 3-step model still predicts something, so both tasks are evaluated
        metrics = train_detector(
            "centermask",
            "shapes",
            "quick",
            output_dir=root / upsampler,
            upsampler=upsampler,
            variant="released",
            device="cpu",
            opts=["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0", "SOLVER.MAX_ITER", "3"],
        )
        out[upsampler] = (root / upsampler, metrics)
    return out


@needs_d2
@pytest.mark.parametrize("upsampler", ["srf", "nearest"])
def test_quick_training_returns_bbox_and_segm(trained, upsampler):
    out_dir, metrics = trained[upsampler]
    assert set(metrics) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert set(metrics[task]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        assert all(0 <= v <= 100 for v in metrics[task].values() if not math.isnan(v))
    lines = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines()]
    steps = [line for line in lines if "loss_mask" in line]
    assert len(steps) >= 1 and all(math.isfinite(line["loss_mask"]) and line["loss_mask"] > 0 for line in steps)
    results = json.loads((out_dir / "inference" / "coco_instances_results.json").read_text())
    assert results and all("segmentation" in r and r["segmentation"]["counts"] for r in results)
    assert json.loads((out_dir / "srfkit_result.json").read_text())["iters"] == 3


@needs_d2
def test_nearest_checkpoint_loads_and_runs(trained):
    from srfkit.detection.d2.backbone import SRFFPN

    srf_state = torch.load(trained["srf"][0] / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    state = torch.load(trained["nearest"][0] / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert any(k.startswith("backbone.srf_module.") for k in srf_state)
    assert not any(k.startswith("backbone.srf_module.") for k in state)  # nearest: no parameters
    assert set(srf_state) - set(state) == {k for k in srf_state if k.startswith("backbone.srf_module.")}

    classes = len(state["mask_branch.predictor.mask_fcn_logits.bias"])  # the shapes dataset's
    model = _quick_model("nearest", opts=["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"], seed=1, num_classes=classes)
    assert isinstance(model.backbone, SRFFPN) and not list(model.backbone.srf_module.parameters())
    model.load_state_dict(state, strict=True)
    assert torch.equal(
        model.mask_branch.predictor.mask_fcn_logits.weight, state["mask_branch.predictor.mask_fcn_logits.weight"]
    )
    with torch.no_grad():
        inst = model.eval()([{"image": _batch()[0]["image"]}])[0]["instances"]
    assert len(inst) > 0 and inst.pred_masks.shape[1:] == (64, 64)
