"""The degradation keeps boxes, masks and areas on the downsampled objects."""

from __future__ import annotations

import pytest
import torch

from srfkit.data import DEGRADE_MODES, CocoDetection, Compose, Degrade, RandomHorizontalFlip, degrade, degraded_size


def _scene(h: int = 64, w: int = 96) -> tuple[torch.Tensor, dict]:
    """Dark image with two bright objects (a rectangle and a disc), their boxes and masks."""
    image = torch.full((3, h, w), 0.1)
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, 10:30, 20:52] = 1  # rectangle x 20..52, y 10..30
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    masks[1] = (((yy - 44) ** 2 + (xx - 70) ** 2) <= 12**2).to(torch.uint8)  # disc at (70, 44), r 12
    image[:, masks.sum(0) > 0] = 0.9
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
        "area": masks.flatten(1).sum(1).float(),
        "image_id": torch.tensor(7),
    }
    return image, target


def _bright_box(image: torch.Tensor, region: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero((image[0] > 0.5) & region, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


@pytest.mark.parametrize("mode", DEGRADE_MODES)
def test_boxes_and_masks_land_on_the_downsampled_objects(mode):
    image, target = _scene()
    small, t = degrade(image, target, scale=0.5, mode=mode)
    assert tuple(small.shape) == (3, 32, 48)
    assert torch.equal(t["boxes"], target["boxes"] / 2)
    assert torch.allclose(t["area"], target["area"] / 4)
    assert t["masks"].dtype == torch.uint8 and tuple(t["masks"].shape) == (2, 32, 48)
    halves = [torch.zeros(32, 48, dtype=torch.bool), torch.zeros(32, 48, dtype=torch.bool)]
    halves[0][:, :29], halves[1][:, 29:] = True, True  # the two objects' sides of the image
    for k in range(2):
        # The bright pixels of each downsampled object lie inside its scaled box (to within one
        # pixel for nearest sampling, which picks one pixel of each 2x2 block) ...
        bright = _bright_box(small, halves[k])
        box = t["boxes"][k].tolist()
        tol = 1.0 if mode == "nearest" else 0.0
        assert all(abs(a - b) <= tol for a, b in zip(bright, box)), (mode, bright, box)
        # ... and the mask is where the object is.
        covered = (small[0] - 0.1) / 0.8  # fraction of each low-res pixel the objects cover
        on = covered >= 0.5 - 1e-4
        mask = t["masks"][k].bool()
        if mode in ("bilinear", "area"):  # 2x2 means: the mask is exactly the half-covered pixels
            assert torch.equal(mask, on & halves[k]), mode
        else:
            agree = (mask == on)[halves[k]].float().mean()
            assert agree > 0.97, (mode, float(agree))


def test_rectangle_on_even_pixels_is_exact_with_bilinear():
    image, target = _scene()
    small, t = degrade(image, target)  # defaults: 0.5, bilinear
    m = t["masks"][0]
    assert m[5:15, 10:26].all() and int(m.sum()) == 10 * 16
    assert torch.allclose(small[:, 5:15, 10:26], torch.tensor(0.9))


def test_odd_sizes_scale_each_axis_by_its_own_ratio():
    image = torch.rand(3, 65, 33)
    target = {"boxes": torch.tensor([[0.0, 0.0, 33.0, 65.0], [3.0, 13.0, 20.0, 30.0]])}
    small, t = degrade(image, target, scale=0.5)
    assert degraded_size(65, 33, 0.5) == (32, 16) and tuple(small.shape) == (3, 32, 16)
    assert torch.allclose(t["boxes"][0], torch.tensor([0.0, 0.0, 16.0, 32.0]))
    assert torch.allclose(t["boxes"][1], torch.tensor([3 * 16 / 33, 13 * 32 / 65, 20 * 16 / 33, 30 * 32 / 65]))


def test_batch_input_and_inputs_untouched():
    image, target = _scene()
    batch = torch.stack([image, image.flip(-1)])
    before = {k: v.clone() for k, v in target.items()}
    small, targets = degrade(batch, [target, target], scale=0.25, mode="bicubic")
    assert tuple(small.shape) == (2, 3, 16, 24) and len(targets) == 2
    assert float(small.min()) >= 0.0 and float(small.max()) <= 1.0  # bicubic is clamped
    assert all(torch.equal(before[k], target[k]) for k in before)
    assert torch.equal(targets[1]["labels"], target["labels"]) and int(targets[1]["image_id"]) == 7
    only_image, none = degrade(batch)
    assert none is None and tuple(only_image.shape) == (2, 3, 32, 48)


def test_empty_targets_and_bad_arguments():
    image = torch.rand(3, 20, 30)
    empty = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 20, 30, dtype=torch.uint8), "area": torch.zeros(0)}
    _, t = degrade(image, empty)
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 10, 15)
    with pytest.raises(ValueError, match="unknown degradation mode 'lanczos'; valid: nearest, bilinear"):
        degrade(image, mode="lanczos")
    with pytest.raises(ValueError, match="scale must be positive"):
        degrade(image, scale=0)
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        degrade(torch.rand(20, 30))
    with pytest.raises(TypeError, match="sequence of 2 target dicts"):
        degrade(torch.rand(2, 3, 8, 8), empty)


def test_flip_and_compose_keep_targets_aligned():
    image, target = _scene()
    torch.manual_seed(0)
    flipped, t = RandomHorizontalFlip(p=1.0)(image, target)
    assert torch.equal(t["masks"], target["masks"].flip(-1))
    for k in range(2):
        region = torch.zeros(64, 96, dtype=torch.bool)
        x1, y1, x2, y2 = (int(v) for v in t["boxes"][k])
        region[y1:y2, x1:x2] = True
        assert _bright_box(flipped, region) == t["boxes"][k].tolist()
    same, t2 = RandomHorizontalFlip(p=0.0)(image, target)
    assert same is image and t2 is target
    small, t3 = Compose([RandomHorizontalFlip(1.0), Degrade(0.5)])(image, target)
    assert torch.equal(t3["boxes"], t["boxes"] / 2) and small.shape[-1] == 48


def test_degrade_as_a_dataset_transform(clean_coco):
    full = CocoDetection(clean_coco.images_dir, clean_coco.ann_file)
    half = CocoDetection(clean_coco.images_dir, clean_coco.ann_file, transforms=Degrade(0.5))
    (img, t), (img2, t2) = full[0], half[0]
    assert tuple(img2.shape) == (3, 20, 24) and tuple(t2["masks"].shape) == (3, 20, 24)
    assert torch.equal(t2["boxes"], t["boxes"] / 2)
    assert torch.equal(img2, degrade(img)[0])
