"""Masks pasted where the mask head learned them (srfkit.detection.masks)."""

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchvision.models.detection.roi_heads import project_masks_on_boxes
from torchvision.models.detection.transform import GeneralizedRCNNTransform, paste_masks_in_image

from srfkit.detection import build_detector
from srfkit.detection.masks import TARGET_SHIFT_PX, MaskPasteTransform, paste_masks


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_a_full_mask_covers_the_pixels_whose_centres_lie_in_the_box():
    out = paste_masks(torch.ones(1, 1, 28, 28), torch.tensor([[2.0, 3.0, 6.0, 8.0]]), (12, 10))
    assert out.shape == (1, 1, 12, 10)
    on = out[0, 0] > 0.5
    assert on.nonzero()[:, 0].unique().tolist() == [3, 4, 5, 6, 7]  # rows
    assert on.nonzero()[:, 1].unique().tolist() == [2, 3, 4, 5]  # columns
    shifted = paste_masks(torch.ones(1, 1, 28, 28), torch.tensor([[2.0, 3.0, 6.0, 8.0]]), (12, 10), shift=(1.0, 0.0))
    assert (shifted[0, 0] > 0.5).nonzero()[:, 1].unique().tolist() == [3, 4, 5, 6]
    assert paste_masks(torch.ones(0, 1, 28, 28), torch.zeros(0, 4), (12, 10)).shape == (0, 1, 12, 10)
    assert paste_masks(torch.ones(1, 1, 28, 28), torch.tensor([[20.0, 20.0, 30.0, 30.0]]), (12, 10)).sum() == 0


def test_a_target_cut_by_torchvisions_mask_loss_pastes_back_onto_its_ground_truth():
    """Round trip: cut each polygon's 28x28 target as torchvision's mask loss does, paste it back. Only the
    +0.5 px shift returns the ground truth; torchvision's paste and the unshifted one land beside it."""
    rng = np.random.default_rng(0)
    scores = {"ours": [], "unshifted": [], "torchvision": []}
    for _ in range(20):
        r, (cx, cy), k = rng.uniform(5, 15), rng.uniform(20, 44, 2), int(rng.integers(3, 9))
        angles = rng.uniform(0, 6.28) + np.arange(k) * 2 * np.pi / k
        poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
        truth = torch.from_numpy(
            mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly.ravel().tolist()], 64, 64)))
        )
        boxes = torch.tensor([[*poly.min(0), *poly.max(0)]], dtype=torch.float32)
        target = project_masks_on_boxes(truth[None].float(), boxes, torch.zeros(1, dtype=torch.long), 28)[:, None]
        truth = truth.bool()
        shift = (TARGET_SHIFT_PX, TARGET_SHIFT_PX)
        scores["ours"].append(_iou(paste_masks(target, boxes, (64, 64), shift)[0, 0] > 0.5, truth))
        scores["unshifted"].append(_iou(paste_masks(target, boxes, (64, 64))[0, 0] > 0.5, truth))
        scores["torchvision"].append(_iou(paste_masks_in_image(target, boxes, (64, 64))[0, 0] > 0.5, truth))
    mean = {name: float(np.mean(v)) for name, v in scores.items()}
    assert mean["ours"] > 0.97 and mean["unshifted"] < 0.93 and mean["torchvision"] < 0.93, mean


def test_mask_detectors_paste_with_the_shift_and_keep_their_weights():
    torch.manual_seed(0)
    for arch in ("mask_rcnn", "centermask"):
        model = build_detector(arch, 3, profile="quick")
        assert type(model.transform) is MaskPasteTransform
        assert (model.transform.min_size, model.transform.max_size) == ((64,), 64)
    assert type(build_detector("faster_rcnn", 3, profile="quick").transform) is GeneralizedRCNNTransform
    model = build_detector("mask_rcnn", 3, profile="quick").eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 80, 80)])  # resized to 64 px, pasted back at 80 px
    assert out["masks"].shape[1:] == (1, 80, 80) and out["masks"].shape[0] == out["boxes"].shape[0]


def test_postprocess_scales_the_shift_to_the_original_image():
    t = MaskPasteTransform.like(GeneralizedRCNNTransform(64, 64, [0.5] * 3, [0.2] * 3)).eval()
    pred = [{"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]]), "masks": torch.ones(1, 1, 28, 28),
             "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]  # fmt: skip
    (out,) = t.postprocess(pred, [(64, 64)], [(128, 128)])
    assert out["boxes"].tolist() == [[16.0, 16.0, 48.0, 48.0]]
    cols = (out["masks"][0, 0] > 0.5).nonzero()[:, 1].unique()
    assert (cols.min().item(), cols.max().item()) == (17, 48)  # box 16..48 moved by 0.5 px of 64 = 1 px of 128
