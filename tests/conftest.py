"""Shared fixtures: small COCO-format datasets written on the fly, and one torch thread per test.

The suite runs on the CPU, also on a machine with a GPU, so that it means the same everywhere (CI has no
GPU). ``SRFKIT_TEST_DEVICE=cuda pytest`` runs it with CUDA visible instead: training then takes the GPU
with mixed precision, and the tests marked ``cpu_exact`` are skipped, because CUDA's atomic-add backward
kernels (roi_align, interpolate) make two identical runs differ in the last bits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils


def on_cuda() -> bool:
    """Whether this test session runs with CUDA visible (``SRFKIT_TEST_DEVICE=cuda``)."""
    return os.environ.get("SRFKIT_TEST_DEVICE", "cpu") == "cuda"


def pytest_configure(config):
    if not on_cuda():  # before anything asks CUDA; subprocesses (the CLI tests) inherit it
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def pytest_collection_modifyitems(config, items):
    if on_cuda():
        skip = pytest.mark.skip(reason="bit-identity across runs holds on the CPU only (CUDA backward atomics)")
        for item in items:
            if "cpu_exact" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread: on a shared 2-core machine, spinning thread pools slow the tests several-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_coco(root: Path, data: dict, images: dict[str, Image.Image]) -> tuple[Path, Path]:
    """Write ``images`` (file name -> PIL image) into ``root/images`` and ``data`` as JSON.

    Returns:
        ``(images_dir, annotation_file)``.
    """
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, img in images.items():
        img.save(images_dir / name)
    ann_file = root / "annotations.json"
    ann_file.write_text(json.dumps(data))
    return images_dir, ann_file


def _rect_poly(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def tiny_coco_data(with_degenerate: bool = True) -> tuple[dict, dict[str, Image.Image], dict]:
    """A COCO dict exercising what real files contain, its images, and the expected facts.

    * categories with gapped ids 1, 3, 7 (labels 1, 2, 3);
    * image 10: RGB 48x40 with a two-part polygon, an uncompressed-RLE crowd region and a
      compressed-RLE object; image 11: greyscale (L) with one polygon; image 12: RGBA with no
      annotation; image 13: palette (P) with one polygon;
    * with ``with_degenerate``: two zero-size boxes (zero width; zero height) on image 11.
    """
    h, w = 40, 48
    rng = np.random.default_rng(0)
    images = {
        "rgb.png": Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB"),
        "grey.png": Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), "L"),
        "rgba.png": Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA"),
        "palette.png": Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").quantize(16),
    }
    crowd = np.zeros((h, w), dtype=np.uint8)
    crowd[20:30, 30:44] = 1
    crowd_rle = mask_utils.encode(np.asfortranarray(crowd))
    # Uncompressed RLE as in real COCO crowd annotations: run lengths in column-major order.
    flat = crowd.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    blob = np.zeros((h, w), dtype=np.uint8)
    blob[2:8, 30:40] = 1
    blob_rle = mask_utils.encode(np.asfortranarray(blob))
    anns = [
        # two parts: rectangles (4, 4)-(14, 12) and (20, 4)-(24, 16)
        dict(id=1, image_id=10, category_id=1, bbox=[4, 4, 20, 12], area=128.0, iscrowd=0,
             segmentation=[_rect_poly(4, 4, 10, 8), _rect_poly(20, 4, 4, 12)]),
        dict(id=2, image_id=10, category_id=3, bbox=[30, 20, 14, 10], area=140.0, iscrowd=1,
             segmentation={"size": [h, w], "counts": counts}),
        dict(id=3, image_id=10, category_id=7, bbox=[30, 2, 10, 6], area=60.0, iscrowd=0,
             segmentation={"size": [h, w], "counts": blob_rle["counts"].decode("ascii")}),
        dict(id=4, image_id=11, category_id=3, bbox=[10, 10, 16, 16], area=256.0, iscrowd=0,
             segmentation=[_rect_poly(10, 10, 16, 16)]),
        dict(id=5, image_id=13, category_id=7, bbox=[0, 0, 8, 30], area=240.0, iscrowd=0,
             segmentation=[_rect_poly(0, 0, 8, 30)]),
    ]  # fmt: skip
    if with_degenerate:
        anns += [
            dict(id=6, image_id=11, category_id=1, bbox=[5, 5, 0, 10], area=0.0, iscrowd=0, segmentation=[]),
            dict(id=7, image_id=11, category_id=1, bbox=[5, 5, 10, 0], area=0.0, iscrowd=0, segmentation=[]),
        ]
    data = {
        "images": [
            {"id": 10, "file_name": "rgb.png", "height": h, "width": w},
            {"id": 11, "file_name": "grey.png", "height": h, "width": w},
            {"id": 12, "file_name": "rgba.png", "height": h, "width": w},
            {"id": 13, "file_name": "palette.png", "height": h, "width": w},
        ],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "ring"},
            {"id": 3, "name": "box"},
            {"id": 7, "name": "bar"},
        ],
    }
    expected = {"crowd_mask": crowd, "blob_mask": blob, "height": h, "width": w}
    assert crowd_rle["counts"]  # the compressed form exists too (sanity of the fixture)
    return data, images, expected


@pytest.fixture
def tiny_coco(tmp_path: Path) -> SimpleNamespace:
    """A tiny COCO dataset on disk with every case of :func:`tiny_coco_data` (degenerate boxes included)."""
    data, images, expected = tiny_coco_data(with_degenerate=True)
    images_dir, ann_file = write_coco(tmp_path / "tiny", data, images)
    return SimpleNamespace(images_dir=images_dir, ann_file=ann_file, data=data, **expected)


@pytest.fixture
def clean_coco(tmp_path: Path) -> SimpleNamespace:
    """The same dataset without zero-size boxes (every ground truth can be matched)."""
    data, images, expected = tiny_coco_data(with_degenerate=False)
    images_dir, ann_file = write_coco(tmp_path / "clean", data, images)
    return SimpleNamespace(images_dir=images_dir, ann_file=ann_file, data=data, **expected)


def perturbed_detector(arch: str = "mask_rcnn", upsampler: str = "srf", seed: int = 0, **kwargs):
    """A quick-profile srfkit detector whose backbone tensors (norms and upsampler included) are all moved
    away from their initial values, so that a tensor left uncopied by a weight transfer would show."""
    from srfkit.detection import build_detector

    torch.manual_seed(seed)
    model = build_detector(arch, 4, upsampler=upsampler, profile="quick", **kwargs)
    with torch.no_grad():
        for name, t in model.backbone.state_dict(keep_vars=True).items():
            if t.is_floating_point():
                # away from GN's 1/0 and BN's 0/1 start
                if "running_var" in name:
                    t.uniform_(0.5, 2.0)
                else:
                    t.add_(0.05 * torch.randn_like(t))
    return model.eval()
