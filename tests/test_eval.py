"""COCO evaluation agrees with pycocotools; feature fidelity and cost measure what they say."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import Subset

from srfkit.data import CocoDetection, Degrade, load
from srfkit.detection import FeatureExtractor, build_detector
from srfkit.eval import METRIC_NAMES, coco_evaluate, cost, count_parameters, feature_fidelity, fidelity_metrics
from srfkit.models import Interpolation, make_upsampler, upsampler_names


class Replay(nn.Module):
    """A fake detector that returns prepared outputs, one per image, in dataset order."""

    def __init__(self, outputs: list[dict]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = outputs
        self.seen: list[tuple[int, int]] = []

    def forward(self, images):
        assert not self.training
        out = []
        for image in images:
            self.seen.append(tuple(image.shape[-2:]))
            out.append(self.outputs[len(self.seen) - 1])
        return out


def _outputs_from_targets(ds: CocoDetection, shift: float = 0.0, scale: float = 1.0) -> list[dict]:
    """GT of every image (crowd regions left out) as detections, optionally shifted right and scaled."""
    outputs = []
    for i in range(len(ds)):
        t = ds.load_target(i)
        keep = t["iscrowd"] == 0
        n = int(keep.sum())
        boxes = t["boxes"][keep] + torch.tensor([shift, 0.0, shift, 0.0])
        masks = t["masks"][keep].float()
        if shift:
            masks = torch.roll(masks, int(shift), dims=-1)
        if scale != 1.0:
            h, w = masks.shape[-2:]
            size = (int(h * scale), int(w * scale))
            masks = F.interpolate(masks[:, None], size=size, mode="area")[:, 0] if n else masks.new_zeros((0, *size))
        outputs.append(
            {
                "boxes": boxes * scale,
                "scores": torch.linspace(0.9, 0.5, n),
                "labels": t["labels"][keep],
                "masks": masks[:, None],
            }
        )
    return outputs


def test_perfect_predictions_score_100(clean_coco):
    ds = CocoDetection(clean_coco.images_dir, clean_coco.ann_file)
    model = Replay(_outputs_from_targets(ds)).train()
    metrics = coco_evaluate(model, ds, progress=False)
    assert set(metrics) == {"bbox", "segm"}
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        assert list(m) == list(METRIC_NAMES)
        assert m["AP"] == m["AP50"] == m["AP75"] == m["APs"] == pytest.approx(100.0)
        assert math.isnan(m["APm"]) and math.isnan(m["APl"])  # no such objects: pycocotools says -1
    assert model.training  # mode restored


def _direct(ann_file, results, iou_type):
    """What pycocotools itself reports for these results."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        if iou_type == "segm":
            results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [100 * s if s >= 0 else math.nan for s in ev.stats[:6]]


def test_shifted_predictions_match_pycocotools_exactly(clean_coco, capsys):
    ds = CocoDetection(clean_coco.images_dir, clean_coco.ann_file)
    outputs = _outputs_from_targets(ds, shift=2.0)
    metrics = coco_evaluate(Replay(outputs), ds, progress=False, batch_size=3)
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    # The same detections written as COCO results by hand, with the file's category ids.
    results = []
    for img_id, out in zip(ds.image_ids, outputs):
        binary = (out["masks"][:, 0] > 0.5).numpy().astype(np.uint8)
        for k, (box, score, label) in enumerate(zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"])):
            rle = mask_utils.encode(np.asfortranarray(binary[k]))
            results.append(
                {
                    "image_id": img_id,
                    "category_id": {1: 1, 2: 3, 3: 7}[int(label)],
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    for iou_type in ("bbox", "segm"):
        ours = [metrics[iou_type][k] for k in METRIC_NAMES]
        theirs = _direct(clean_coco.ann_file, results, iou_type)
        assert np.array_equal(np.array(ours), np.array(theirs), equal_nan=True), (iou_type, ours, theirs)
    assert 0 < metrics["bbox"]["AP"] < 100 and metrics["bbox"]["AP50"] == pytest.approx(100.0)


def test_no_predictions_score_zero(clean_coco):
    ds = CocoDetection(clean_coco.images_dir, clean_coco.ann_file)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    metrics = coco_evaluate(Replay([dict(empty, masks=torch.zeros(0, 1, 40, 48))] * 4), ds, progress=False)
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == metrics[iou_type]["APs"] == 0.0
        assert math.isnan(metrics[iou_type]["APl"])
    boxes_only = coco_evaluate(Replay([empty] * 4), ds, progress=False)
    assert list(boxes_only) == ["bbox"] and boxes_only["bbox"]["AP"] == 0.0


def test_predictions_on_smaller_inputs_are_mapped_back(clean_coco):
    ds = CocoDetection(clean_coco.images_dir, clean_coco.ann_file)
    half = _outputs_from_targets(ds, scale=0.5)
    model = Replay(half)
    metrics = coco_evaluate(model, ds, progress=False, degrade_scale=0.5)
    assert model.seen == [(20, 24)] * 4
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)
    # A dataset transform that degrades works the same way, and so does a Subset (first 2 images).
    shrunk = CocoDetection(clean_coco.images_dir, clean_coco.ann_file, transforms=Degrade(0.5))
    assert coco_evaluate(Replay(half), shrunk, progress=False)["bbox"]["AP"] == pytest.approx(100.0)
    sub = coco_evaluate(Replay(_outputs_from_targets(ds)), Subset(ds, [0, 1]), progress=False)
    assert sub["bbox"]["AP"] == pytest.approx(100.0)
    first = coco_evaluate(Replay(_outputs_from_targets(ds, shift=3.0)), ds, max_images=1, progress=False)
    assert first["bbox"]["AP"] < 100.0


def test_a_real_detector_end_to_end():
    torch.manual_seed(0)
    ds = load("shapes", "val", "quick")
    model = build_detector("mask_rcnn", ds.num_classes, profile="quick")
    metrics = coco_evaluate(model, ds, max_images=2, progress=False)
    assert set(metrics) == {"bbox", "segm"}
    for m in metrics.values():
        assert all(math.isnan(v) or 0.0 <= v <= 100.0 for v in m.values())


# ---------------------------------------------------------------------------------------- fidelity


class Triple(nn.Module):
    """A toy extractor: one level, 3 x the image."""

    def forward(self, x):
        return {"a": 3.0 * x}


def test_fidelity_metrics_follow_their_definitions():
    torch.manual_seed(0)
    images = torch.rand(3, 3, 16, 20)
    got = feature_fidelity("nearest", Triple(), images)
    low = F.interpolate(images, size=(8, 10), mode="bilinear", align_corners=False)
    up = 3.0 * F.interpolate(low, size=(16, 20), mode="nearest")
    target = 3.0 * images
    mse = float(((up - target) ** 2).mean())
    assert got["a"]["l1"] == pytest.approx(float((up - target).abs().mean()), rel=1e-5)
    assert got["a"]["psnr"] == pytest.approx(10 * math.log10(float(target.abs().max()) ** 2 / mse), rel=1e-5)
    cos = F.cosine_similarity(up, target, dim=1).mean()
    assert got["a"]["cosine"] == pytest.approx(float(cos), rel=1e-5)
    assert fidelity_metrics(up, target) == pytest.approx(got["a"], rel=1e-5)
    # Batches of one give the same numbers as one batch.
    assert feature_fidelity("nearest", Triple(), images, batch_size=1)["a"] == pytest.approx(got["a"], rel=1e-5)


@pytest.fixture(scope="module")
def extractor():
    torch.manual_seed(0)
    return FeatureExtractor(build_detector("faster_rcnn", 3, profile="quick")).train()


def test_fidelity_without_degradation_is_perfect(extractor):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    res = feature_fidelity("nearest", extractor, images, scale=1.0)
    assert list(res) == ["0", "1", "2", "3", "pool"]
    for m in res.values():
        assert m["l1"] == 0.0 and m["psnr"] == math.inf and m["cosine"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic", "srf"])
def test_fidelity_for_registry_upsamplers(extractor, name):
    assert name in upsampler_names()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    module = make_upsampler(name, 32).train()
    res = feature_fidelity(module, extractor, images)
    assert module.training and extractor.training  # modes restored (both were training)
    assert list(res) == ["0", "1", "2", "3", "pool"]
    for m in res.values():
        assert m["l1"] > 0 and math.isfinite(m["psnr"]) and -1.0 <= m["cosine"] <= 1.0
    if name != "srf":
        assert res == feature_fidelity(name, extractor, images)  # a name builds the same module


def test_fidelity_bad_level_and_sizes(extractor):
    with pytest.raises(KeyError, match="level 'P9' not produced"):
        feature_fidelity("nearest", extractor, torch.rand(1, 3, 32, 32), levels=["P9"])
    with pytest.raises(ValueError, match="share one size"):
        feature_fidelity("nearest", extractor, [torch.rand(3, 32, 32), torch.rand(3, 16, 32)])


# -------------------------------------------------------------------------------------------- cost


def test_cost_counts_parameters_and_times_in_eval_mode():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.5)).train()
    res = cost(model, 32, warmup=1, runs=3)
    assert res["params"] == count_parameters(model) == 3 * 8 * 9 + 8 + 16
    assert res["latency_ms"] > 0 and model.training
    up = cost(Interpolation(mode="bilinear"), 0, inputs=torch.rand(1, 4, 8, 8), runs=2)
    assert up["params"] == 0 and up["latency_ms"] > 0
    with pytest.raises(ValueError, match="runs must be >= 1"):
        cost(model, 32, runs=0)


def test_time_interleaved_runs_every_call_once_per_round_in_a_seeded_order():
    from srfkit.eval.cost import time_interleaved

    log = []
    calls = {name: (lambda n=name: log.append(n)) for name in "abc"}
    times = time_interleaved(calls, warmup=2, runs=3, seed=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}  # warm-up rounds discarded
    assert all(t >= 0 for v in times.values() for t in v)
    rounds = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert len(rounds) == 5 and all(sorted(r) == ["a", "b", "c"] for r in rounds)  # each call once a round
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not always one order
    log.clear()
    time_interleaved(calls, warmup=2, runs=3, seed=1)
    assert [log[i : i + 3] for i in range(0, len(log), 3)] == rounds  # the order is the seed's
    with pytest.raises(ValueError, match="runs must be >= 1"):
        time_interleaved(calls, runs=0)


def test_cost_of_a_detector():
    torch.manual_seed(0)
    model = build_detector("retinanet", 3, profile="quick")
    res = cost(model, (64, 48), warmup=1, runs=2)
    assert res["params"] == sum(p.numel() for p in model.parameters())
    assert res["latency_ms"] > 0 and model.training
