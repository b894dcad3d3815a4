"""Which FPN level the R-CNN heads pool each object from (a diagnostic, not a test).

``python -m srfkit.bench.roi_levels --profile cpu [--dataset shapes] [--split train] [--images 200]``

torchvision's ``MultiScaleRoIAlign`` pools a RoI of side ``s = sqrt(area)`` from level
``k = floor(k0 + log2(s / s0))``, clamped to P2..P5 (FPN's Eq. 1; torchvision's ``LevelMapper``), with
``s0 = 224`` at ``k0 = 4`` for 800 px images. At the small images of the cpu and quick profiles that
rule sends nearly every object to P2. P2 is the end of the top-down path (P2 = lateral(C2) + up(P3),
P3 = lateral(C3) + up(P4), ...), so every upsampling step still feeds the RoI heads; what the rule fixes
is how many cells of its level a RoI spans (14 at 224 px on P4). Scaling ``s0`` with the image
(``round(224 * image_size / 800)``, 36 at 128 px) keeps each object on its 800 px level but pools a
36 px RoI from 2.25 cells of P4, and halved the cpu profile's learning speed (20.9 against 41.6 box AP
after 1,000 steps, seed 0), so every shipped profile keeps 224 (``Profile.roi_canonical_scale``).

The table counts the ground-truth boxes of the first ``--images`` images of a split, in pixels of the
detector's resized image, per level, under torchvision's 224, the profile's scale and the image-scaled one (and any
``--scales``). The box head trains on RoIs sampled around these boxes (positives have IoU >= 0.5 with
one), so their levels follow the same split. Levels come from torchvision's own ``LevelMapper``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops.poolers import initLevelMapper

from srfkit.profiles import Profile, get_profile

__all__ = ["LEVELS", "box_levels", "level_histogram", "resized_gt_boxes", "roi_level_table", "format_table", "main"]

LEVELS = (2, 3, 4, 5)
"""The levels the R-CNN poolers read: P2..P5 (``"0".."3"``)."""


def box_levels(boxes: Tensor, canonical_scale: int, canonical_level: int = 4, levels: Sequence[int] = LEVELS) -> Tensor:
    """Pyramid level of each box (K, 4) XYXY, as torchvision's ``LevelMapper`` assigns it. Returns (K,) int64.

    The values are level numbers (2 = P2, ...), clamped to ``levels[0]..levels[-1]``.
    """
    mapper = initLevelMapper(levels[0], levels[-1], canonical_scale=canonical_scale, canonical_level=canonical_level)
    return mapper([boxes.reshape(-1, 4).float()]) + levels[0]


def level_histogram(
    boxes: Tensor, canonical_scale: int, canonical_level: int = 4, levels: Sequence[int] = LEVELS
) -> dict[int, int]:
    """Number of boxes (K, 4) XYXY per level ``{2: n2, 3: n3, ...}``; the counts sum to K."""
    assigned = box_levels(boxes, canonical_scale, canonical_level, levels)
    return {k: int((assigned == k).sum()) for k in levels}


def _resize_scale(height: int, width: int, profile: Profile) -> tuple[float, float]:
    """(sx, sy): how torchvision's ``GeneralizedRCNNTransform`` scales boxes of an (H, W) image."""
    scale = min(profile.image_size / min(height, width), profile.max_size / max(height, width))
    new_h, new_w = math.floor(height * scale), math.floor(width * scale)
    return new_w / width, new_h / height


def resized_gt_boxes(dataset, profile: str | Profile, max_images: int = 0) -> Tensor:
    """Ground-truth boxes (K, 4) XYXY of the first ``max_images`` images (0: all) of a
    :class:`~srfkit.data.CocoDetection`, scaled as the detector's transform resizes their images.

    Reads the annotations only (no image is decoded); crowd and empty boxes are left out.
    """
    profile = get_profile(profile)
    ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids
    out = []
    for img_id in ids:
        info = dataset.coco.imgs[img_id]
        sx, sy = _resize_scale(int(info["height"]), int(info["width"]), profile)
        for ann in dataset.coco.imgToAnns.get(img_id, []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd", 0) or w <= 0 or h <= 0:
                continue
            out.append([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def roi_level_table(
    profile: str | Profile = "cpu",
    dataset: str = "shapes",
    split: str = "train",
    max_images: int = 200,
    scales: Sequence[int] = (),
) -> dict:
    """Level histograms of a shipped dataset's boxes under torchvision's 224, the profile's scale, the
    image-scaled rule ``round(224 * image_size / 800)`` and ``scales``.

    Returns ``{"profile", "dataset", "split", "images", "boxes", "side_px": {"min", "median", "max"},
    "canonical_level", "rows": [{"canonical_scale", "counts": {level: n}}, ...]}`` (rows in the order
    224, the profile's, the image-scaled one, then ``scales``; duplicates dropped). Builds the dataset
    first if it is missing.
    """
    from srfkit.data import load

    profile = get_profile(profile)
    data = load(dataset, split, profile)
    boxes = resized_gt_boxes(data, profile, max_images)
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
    scaled = round(224 * profile.image_size / 800)
    wanted = list(dict.fromkeys([224, profile.roi_canonical_scale, scaled, *scales]))
    rows = [{"canonical_scale": s, "counts": level_histogram(boxes, s, profile.roi_canonical_level)} for s in wanted]
    return {
        "profile": profile.name,
        "dataset": dataset,
        "split": split,
        "images": min(max_images, len(data)) if max_images else len(data),
        "boxes": int(boxes.shape[0]),
        "side_px": {
            "min": float(sides.min()) if len(sides) else math.nan,
            "median": float(sides.median()) if len(sides) else math.nan,
            "max": float(sides.max()) if len(sides) else math.nan,
        },
        "canonical_level": profile.roi_canonical_level,
        "profile_scale": profile.roi_canonical_scale,
        "scaled_scale": scaled,
        "rows": rows,
    }


def format_table(table: dict) -> str:
    """The histograms of :func:`roi_level_table` as a text table (counts and percentages per level)."""
    n = max(table["boxes"], 1)
    head = f"{'canonical scale':<30}" + "".join(f"{'P' + str(k):>14}" for k in LEVELS)
    lines = [head, "-" * len(head)]
    for row in table["rows"]:
        s = row["canonical_scale"]
        label = (
            f"{s}"
            + (" (torchvision)" if s == 224 else "")
            + (" (profile)" if s == table["profile_scale"] else "")
            + (" (image-scaled)" if s == table["scaled_scale"] else "")
        )
        cells = "".join(f"{row['counts'][k]:>7} ({100 * row['counts'][k] / n:4.1f}%)" for k in LEVELS)
        lines.append(f"{label:<30}{cells}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m srfkit.bench.roi_levels",
        description="FPN levels that the R-CNN RoI poolers assign to a dataset's boxes, under torchvision's "
        "canonical scale 224 and under the profile's roi_canonical_scale.",
    )
    p.add_argument("--profile", default="cpu", help="profile (sizes; default: cpu)")
    p.add_argument("--dataset", default="shapes", help="shipped dataset (default: shapes)")
    p.add_argument("--split", default="train", help="split (default: train)")
    p.add_argument("--images", type=int, default=200, help="first N images (0: all; default: 200)")
    p.add_argument("--scales", type=int, nargs="*", default=[], help="more canonical scales to compare")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Print the table for the command-line arguments and return it (see :func:`roi_level_table`)."""
    args = _parser().parse_args(argv)
    table = roi_level_table(args.profile, args.dataset, args.split, args.images, args.scales)
    side = table["side_px"]
    print(
        f"{table['dataset']} {table['split']}, profile {table['profile']}: {table['boxes']} boxes in "
        f"{table['images']} images; sqrt(area) {side['min']:.1f} / {side['median']:.1f} / {side['max']:.1f} px "
        f"(min / median / max, resized image); level k = floor({table['canonical_level']} + log2(sqrt(area) / scale)), "
        f"clamped to P{LEVELS[0]}..P{LEVELS[-1]}"
    )
    print(format_table(table))
    return table


if __name__ == "__main__":
    main()
