"""Sizes that follow the image size: RoI-to-level assignment of the R-CNN poolers, one-stage anchors and heads."""

import pytest
import torch

from srfkit.bench.roi_levels import box_levels, level_histogram, resized_gt_boxes, roi_level_table
from srfkit.data import load
from srfkit.detection import build_detector
from srfkit.detection.builder import retinanet_anchors
from srfkit.profiles import PROFILES, get_profile
from srfkit.train.specs import profile_from_dict


def _square(side: float) -> torch.Tensor:
    return torch.tensor([[10.0, 10.0, 10.0 + side, 10.0 + side]])


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_keeps_fpns_rule(name):
    """224 at P4 at every image size, as detectron2 hard-codes it (the scaled rule halved learning speed)."""
    profile = get_profile(name)
    assert (profile.roi_canonical_scale, profile.roi_canonical_level) == (224, 4)


def test_at_128_px_fpns_rule_pools_every_small_roi_from_p2():
    cpu = get_profile("cpu")
    boxes = torch.cat([_square(36), _square(18), _square(9), _square(72), _square(500)])
    assert box_levels(boxes, cpu.roi_canonical_scale).tolist() == [2, 2, 2, 2, 5]
    # the image-scaled rule (36 at 128 px) would keep each object on its 800 px level
    assert box_levels(boxes, round(224 * cpu.image_size / 800)).tolist() == [4, 3, 2, 5, 5]


def test_profiles_saved_without_the_fields_rebuild_with_torchvisions_rule():
    old = get_profile("cpu").to_dict()
    for key in ("roi_canonical_scale", "roi_canonical_level", "retinanet_anchor_sizes", "retinanet_head_norm"):
        del old[key]
    profile = profile_from_dict(old)
    assert (profile.roi_canonical_scale, profile.roi_canonical_level) == (224, 4)
    assert profile.retinanet_anchor_sizes is None and profile.retinanet_head_norm is None


@pytest.mark.parametrize("arch", ["mask_rcnn", "faster_rcnn"])
def test_detector_poolers_use_the_profiles_rule(arch):
    torch.manual_seed(0)
    model = build_detector(arch, 3, profile="quick", roi_canonical_scale=18).eval()
    pools = [model.roi_heads.box_roi_pool] + ([model.roi_heads.mask_roi_pool] if arch == "mask_rcnn" else [])
    assert [(p.canonical_scale, p.canonical_level) for p in pools] == [(18, 4)] * len(pools)
    assert [p.output_size for p in pools] == [(7, 7), (14, 14)][: len(pools)]
    with torch.no_grad():
        model([torch.rand(3, 64, 64)])
    boxes = torch.cat([_square(s) for s in (6, 9, 18, 36, 50)])
    mapped = model.roi_heads.box_roi_pool.map_levels([boxes]) + 2  # indices into P2..P5
    assert mapped.tolist() == box_levels(boxes, 18).tolist() == [2, 3, 4, 5, 5]


def test_level_histogram_counts_every_box():
    quick = get_profile("quick")
    data = load("shapes", "train", quick)
    boxes = resized_gt_boxes(data, quick, max_images=6)
    assert boxes.shape[0] == sum(len(data.load_target(i)["boxes"]) for i in range(6)) > 0
    for scale in (224, 18):
        hist = level_histogram(boxes, scale)
        assert list(hist) == [2, 3, 4, 5] and sum(hist.values()) == boxes.shape[0]
    table = roi_level_table(quick, "shapes", "train", max_images=0, scales=(9,))
    assert [r["canonical_scale"] for r in table["rows"]] == [224, 18, 9]  # 224 is also the profile's
    assert table["images"] == len(data)
    assert all(sum(r["counts"].values()) == table["boxes"] for r in table["rows"])


def test_roi_levels_command_prints_a_table(capsys):
    from srfkit.bench.roi_levels import main

    table = main(["--profile", "quick", "--images", "4"])
    out = capsys.readouterr().out
    assert "224 (torchvision) (profile)" in out and "18 (image-scaled)" in out and "P5" in out
    assert table["images"] == 4


def test_retinanet_anchors_per_profile():
    first = {name: retinanet_anchors(get_profile(name)).sizes[0] for name in ("quick", "cpu", "paper")}
    assert first["paper"] == (32, 40, 50)  # torchvision's retinanet_resnet50_fpn at P3
    assert first["cpu"] == first["quick"] == (16, 20, 25)
    legacy = get_profile("cpu").replace(retinanet_anchor_sizes=None)
    assert retinanet_anchors(legacy).sizes == tuple(
        (2 * s, int(2 * s * 2 ** (1 / 3)), int(2 * s * 2 ** (2 / 3))) for s in legacy.anchor_sizes
    )


def test_retinanet_head_norm():
    torch.manual_seed(0)
    model = build_detector("retinanet", 3, profile="quick")
    norms = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and {m.num_groups for m in norms} == {16}  # C=32: two channels per group
    plain = build_detector("retinanet", 3, profile="quick", retinanet_head_norm=None)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in plain.head.modules())
    with pytest.raises(ValueError, match="retinanet_head_norm"):
        build_detector("retinanet", 3, profile="quick", retinanet_head_norm="batch")
