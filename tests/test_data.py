"""CocoDetection on every kind of input real COCO files hold, its errors, and the shipped datasets."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_coco_data, write_coco
from PIL import Image

from srfkit.data import (
    DATASETS,
    AnnotationFileError,
    CocoDetection,
    ImageFileError,
    build_dataset,
    collate_fn,
    collate_train,
    dataset_dir,
    is_built,
    load,
    size_histogram,
)
from srfkit.profiles import get_profile

# ----------------------------------------------------------------------------------- CocoDetection


def _open(tiny) -> CocoDetection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CocoDetection(tiny.images_dir, tiny.ann_file)


def test_gapped_category_ids_map_to_contiguous_labels(tiny_coco):
    ds = _open(tiny_coco)
    assert ds.num_classes == 4
    assert ds.class_names == ["ring", "box", "bar"]
    assert ds.cat_id_to_label == {1: 1, 3: 2, 7: 3}
    assert ds.label_to_cat_id == {1: 1, 2: 3, 3: 7}
    assert ds.image_ids == [10, 11, 12, 13] and len(ds) == 4
    assert ds.has_masks


def test_image_modes_become_rgb_float(tiny_coco):
    ds = _open(tiny_coco)
    for i, name in enumerate(["rgb.png", "grey.png", "rgba.png", "palette.png"]):
        image, target = ds[i]
        assert image.dtype == torch.float32 and tuple(image.shape) == (3, 40, 48), name
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert int(target["image_id"]) == ds.image_ids[i]
    grey, _ = ds[1]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    raw = np.asarray(Image.open(tiny_coco.images_dir / "grey.png"), dtype=np.float32) / 255
    assert torch.allclose(grey[0], torch.from_numpy(raw))
    rgba, _ = ds[2]
    raw = np.asarray(Image.open(tiny_coco.images_dir / "rgba.png"))[:, :, :3].astype(np.float32) / 255
    assert torch.allclose(rgba.permute(1, 2, 0), torch.from_numpy(raw))


def test_targets_polygons_rle_crowd_and_labels(tiny_coco):
    ds = _open(tiny_coco)
    _, t = ds[0]
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    assert t["boxes"].tolist() == [[4, 4, 24, 16], [30, 20, 44, 30], [30, 2, 40, 8]]
    assert t["labels"].tolist() == [1, 2, 3]
    assert t["iscrowd"].tolist() == [0, 1, 0]
    assert t["area"].tolist() == [128.0, 140.0, 60.0]
    masks = t["masks"]
    assert masks.dtype == torch.uint8 and tuple(masks.shape) == (3, 40, 48)
    # The two-part polygon: both rectangles on, the gap between them off.
    m = masks[0]
    assert m[5:11, 5:13].all() and m[5:15, 21:23].all()
    assert not m[:, 16:19].any() and not m[20:].any()
    # Uncompressed (crowd) and compressed RLE decode to exactly the masks they encode.
    assert np.array_equal(masks[1].numpy(), tiny_coco.crowd_mask)
    assert np.array_equal(masks[2].numpy(), tiny_coco.blob_mask)


def test_image_without_annotations_has_empty_target(tiny_coco):
    ds = _open(tiny_coco)
    _, t = ds[2]
    assert tuple(t["boxes"].shape) == (0, 4) and t["labels"].numel() == 0
    assert tuple(t["masks"].shape) == (0, 40, 48)
    assert t["iscrowd"].numel() == 0 and t["area"].numel() == 0


def test_zero_size_boxes_dropped_and_counted(tiny_coco):
    with pytest.warns(UserWarning, match=r"dropped 2 annotation\(s\).*zero width or height.*ids 6, 7"):
        ds = CocoDetection(tiny_coco.images_dir, tiny_coco.ann_file)
    assert ds.num_dropped == 2
    _, t = ds[1]
    assert t["labels"].tolist() == [2]  # only the 16x16 box of category 3 is left
    assert tuple(t["masks"].shape) == (1, 40, 48)


def test_clean_file_gives_no_warning(clean_coco):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = CocoDetection(clean_coco.images_dir, clean_coco.ann_file)
    assert ds.num_dropped == 0


def test_transforms_and_collate(clean_coco):
    def halve(image, target):
        return image[:, ::2, ::2], {**target, "halved": True}

    ds = CocoDetection(clean_coco.images_dir, clean_coco.ann_file, transforms=halve)
    images, targets = collate_fn([ds[0], ds[2]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert [tuple(i.shape) for i in images] == [(3, 20, 24)] * 2
    assert all(t["halved"] for t in targets)
    assert collate_fn([]) == ([], [])


def test_training_collate_drops_crowd_regions(tiny_coco):
    """Crowd regions are never positive training boxes; the dataset itself keeps them for evaluation."""
    ds = _open(tiny_coco)
    sample = ds[0]
    _, (t,) = collate_train([sample])
    assert t["iscrowd"].tolist() == [0, 0]
    assert t["labels"].tolist() == [1, 3]
    assert t["boxes"].tolist() == [[4, 4, 24, 16], [30, 2, 40, 8]]
    assert t["area"].tolist() == [128.0, 60.0]
    assert np.array_equal(t["masks"][1].numpy(), tiny_coco.blob_mask)
    assert int(t["image_id"]) == int(sample[1]["image_id"])
    assert sample[1]["iscrowd"].tolist() == [0, 1, 0]  # the sample itself is not modified
    _, (kept,) = collate_fn([sample])
    assert kept["iscrowd"].tolist() == [0, 1, 0]


def test_training_loop_uses_the_crowd_dropping_collate():
    from srfkit.train import loop

    assert loop.collate_train is collate_train


# ------------------------------------------------------------------------------------------ errors


def _bad_file(tmp_path: Path, mutate) -> tuple[Path, Path]:
    data, images, _ = tiny_coco_data(with_degenerate=False)
    mutate(data)
    return write_coco(tmp_path, data, images)


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda d: d.pop("images"), "missing key(s) images"),
        (lambda d: d.pop("annotations"), "missing key(s) annotations"),
        (lambda d: d.pop("categories"), "missing key(s) categories"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation 1 refers to image_id 99"),
        (lambda d: d["annotations"][2].update(category_id=2), "annotation 3 refers to category_id 2"),
        (lambda d: d["annotations"][0].pop("bbox"), "annotations[0] has no 'bbox'"),
        (lambda d: d["images"][1].pop("file_name"), "images[1] has no 'file_name'"),
    ],
    ids=["no-images", "no-annotations", "no-categories", "unknown-image", "unknown-category", "no-bbox", "no-file"],
)
def test_bad_annotation_file_names_file_and_problem(tmp_path, mutate, problem):
    images_dir, ann_file = _bad_file(tmp_path, mutate)
    with pytest.raises(AnnotationFileError, match=re.escape(str(ann_file)) + ".*" + re.escape(problem)):
        CocoDetection(images_dir, ann_file)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{'images': [")  # not JSON
    with pytest.raises(AnnotationFileError, match=re.escape(str(bad)) + ": not valid JSON"):
        CocoDetection(tmp_path, bad)
    bad.write_text("[1, 2]")
    with pytest.raises(AnnotationFileError, match=re.escape(str(bad)) + ".*JSON object"):
        CocoDetection(tmp_path, bad)
    missing = tmp_path / "nope.json"
    with pytest.raises(AnnotationFileError, match=re.escape(str(missing)) + ": annotation file not found"):
        CocoDetection(tmp_path, missing)


def _break_image(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "not-an-image":
        path.write_bytes(b"this is not an image\n" * 10)
    elif how == "directory":
        path.unlink()
        path.mkdir()
    elif how == "wrong-size":
        Image.new("RGB", (10, 10)).save(path)


@pytest.mark.parametrize(
    "how, problem",
    [
        ("missing", "image file not found"),
        ("empty", "image file is empty"),
        ("truncated", "truncated or corrupt"),
        ("not-an-image", "not an image format PIL can read"),
        ("directory", "cannot read image"),
        ("wrong-size", "image is 10x10 pixels but"),
    ],
)
def test_bad_image_names_its_path(tiny_coco, how, problem):
    ds = _open(tiny_coco)
    path = tiny_coco.images_dir / "rgb.png"
    _break_image(path, how)
    with pytest.raises(ImageFileError, match=re.escape(str(path)) + ".*" + re.escape(problem)):
        ds[0]
    assert ds[1][0].shape[0] == 3  # the other images still load


# ---------------------------------------------------------------------------------- shipped data


def _files(root: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            data = p.read_bytes()
            if p.name == "BUILD.json":
                stamp = json.loads(data)
                stamp["summary"].pop("seconds")
                data = json.dumps(stamp).encode()
            out[str(p.relative_to(root))] = data
    return out


def test_every_dataset_builds_the_same_bytes_twice(tmp_path):
    for root in ("a", "b"):
        for name in DATASETS:
            build_dataset(name, "quick", tmp_path / root, progress=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) > 200
    assert [k for k in a if a[k] != b[k]] == []
    other = build_dataset("shapes", "quick", tmp_path / "c", seed=1, progress=False)
    assert other["seed"] == 1
    assert (tmp_path / "c/quick/shapes/train/train_000000.png").read_bytes() != a["quick/shapes/train/train_000000.png"]


def test_build_is_idempotent_and_rebuilds_on_change(tmp_path):
    first = build_dataset("photos", "quick", tmp_path, progress=False)
    again = build_dataset("photos", "quick", tmp_path, progress=False)
    assert not first["skipped"] and again["skipped"]
    assert is_built("photos", "quick", tmp_path) and not is_built("photos", "quick", tmp_path, seed=3)
    changed = get_profile("quick").replace(image_size=32)  # same name, other settings: rebuilt
    assert not is_built("photos", changed, tmp_path)
    rebuilt = build_dataset("photos", changed, tmp_path, progress=False)
    assert not rebuilt["skipped"] and load("photos", profile=changed, root=tmp_path)[0][0].shape[-1] == 32
    forced = build_dataset("photos", changed, tmp_path, force=True, progress=False)
    assert not forced["skipped"]
    assert not list(tmp_path.glob("quick/.photos.tmp-*"))  # no temporary folders left


def test_shapes_masks_boxes_and_size_buckets(tmp_path):
    profile = get_profile("quick").replace(image_size=128, dataset_images=(24, 4))
    build_dataset("shapes", profile, tmp_path, progress=False)
    ds = load("shapes", "train", profile, root=tmp_path)
    assert ds.class_names == ["circle", "square", "triangle", "star", "cross"] and ds.has_masks
    hist = size_histogram(ds)
    assert hist["small"] > hist["medium"] > 0 and hist["large"] > 0, hist
    for i in range(6):
        image, t = ds[i]
        masks = t["masks"].bool()
        assert tuple(image.shape) == (3, 128, 128)
        assert int(masks.sum(0).max()) <= 1  # instances never overlap
        for box, mask, area in zip(t["boxes"], masks, t["area"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert float(area) == float(mask.sum())


def test_quick_shapes_histogram_printed_by_the_cli(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_cli", Path(__file__).parents[1] / "data" / "build.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--profile", "quick", "--only", "shapes", "--root", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    counts = re.search(r"shapes train object sizes .*small \(<32\^2\) (\d+), medium \(<96\^2\) (\d+), large (\d+)", out)
    assert counts and int(counts[1]) > 0 and int(counts[2]) > 0, out
    cli.main(["--profile", "quick", "--only", "shapes", "--root", str(tmp_path), "--no-progress"])
    assert "already built" in capsys.readouterr().out


def test_trees_tiles_and_the_two_val_tiles():
    profile = get_profile("quick")
    val = load("trees", "val", profile)
    train = load("trees", "train", profile)
    assert val.class_names == ["tree"] and not val.has_masks and val.num_classes == 2
    tile = min(profile.image_size, 400)  # the detector's own size: it does not resize the tiles
    # The two 400 px val tiles (61 + 37 crowns) at 0.32 scale make 2 x 2 tiles each; one crown cut in
    # two with less than half of it on either side is dropped.
    assert len(val) == 8 and sum(len(val.load_target(i)["boxes"]) for i in range(8)) == 61 + 37 - 1
    assert {val.coco.imgs[i]["file_name"].split("_")[0] for i in val.image_ids} == {"OSBS", "SOAP"}
    assert len(train) > 100
    for ds in (train, val):
        for i in range(0, len(ds), 7):
            image, t = ds[i]
            assert tuple(image.shape) == (3, tile, tile)
            b = t["boxes"]
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 0] >= 0).all() and (b[:, 2] <= tile).all()
    assert size_histogram(val)["small"] > 0.8 * 98


def test_nuclei_train_and_val_regions_are_disjoint():
    train, val = load("nuclei", "train", "quick"), load("nuclei", "val", "quick")
    assert train.has_masks and val.class_names == ["nucleus"]
    crop = train[0][0].shape[-1]

    def rows(ds):
        return [int(ds.coco.imgs[i]["file_name"].split("_")[1]) for i in ds.image_ids]

    assert max(rows(train)) + crop <= min(rows(val))
    image, t = val[0]
    assert torch.equal(image[0], image[2]) and len(t["masks"]) > 0
    assert int(t["masks"].sum(0).max()) == 1


def test_photos_are_unlabelled_and_every_split_name_reaches_them():
    photos = load("photos", profile="quick")
    assert len(photos) >= 6 and photos.num_classes == 1
    image, t = photos[0]
    assert tuple(image.shape) == (3, 64, 64) and t["boxes"].shape == (0, 4)
    assert len(load("photos", "val", "quick")) == len(photos) == len(load("photos", "all", "quick"))


def test_load_errors_list_valid_names(tmp_path):
    with pytest.raises(ValueError, match="shapes, trees, nuclei, photos"):
        load("coco2017")
    with pytest.raises(ValueError, match="no split 'test'; valid: train, val"):
        load("shapes", "test")
    with pytest.raises(FileNotFoundError, match="python data/build.py --profile quick --only trees"):
        load("trees", "val", "quick", root=tmp_path, build=False)
    assert dataset_dir("trees", "cpu", tmp_path) == tmp_path / "cpu" / "trees"
