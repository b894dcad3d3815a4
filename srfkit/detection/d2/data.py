"""srfkit's datasets in detectron2's ``DatasetCatalog``.

A shipped dataset ``name`` of profile ``p`` registers as ``srfkit_<name>_<p>_<split>`` (``train``,
``val``); its loader builds the data first when it is missing (like :func:`srfkit.data.load`) and
reads the COCO file with detectron2's ``load_coco_json``, so ``MetadataCatalog`` holds the class names,
the id mapping and ``json_file`` for COCOEvaluator. A real COCO folder registers as
``srfkit_coco_train`` / ``srfkit_coco_val`` (train2017 / val2017).
"""

from __future__ import annotations

from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ...data.builders import DATASETS, build_dataset, is_built, split_paths
from ...data.coco import coco_root_split
from ...profiles import Profile, get_profile

__all__ = ["dataset_name", "num_classes", "register_coco_root", "register_dataset", "register_shipped"]


def dataset_name(name: str, profile: str | Profile, split: str) -> str:
    """The ``DatasetCatalog`` name of a shipped dataset's split."""
    return f"srfkit_{name}_{get_profile(profile).name}_{split}"


def _register(catalog_name: str, images_dir: Path, ann_file: Path, prepare=None) -> str:
    if catalog_name in DatasetCatalog.list():
        return catalog_name

    def load() -> list[dict]:
        if prepare is not None:
            prepare()
        return load_coco_json(str(ann_file), str(images_dir), catalog_name)

    DatasetCatalog.register(catalog_name, load)
    MetadataCatalog.get(catalog_name).set(json_file=str(ann_file), image_root=str(images_dir), evaluator_type="coco")
    return catalog_name


def register_dataset(
    name: str, profile: str | Profile = "quick", split: str = "train", root: str | Path | None = None
) -> str:
    """Register one split of a shipped dataset (idempotent) and return its catalog name."""
    p = get_profile(profile)
    images_dir, ann_file = split_paths(name, split, p, root)

    def prepare() -> None:
        if not is_built(name, p, root):
            build_dataset(name, p, root, progress=False)

    return _register(dataset_name(name, p, split), images_dir, ann_file, prepare)


def register_shipped(profile: str | Profile = "quick", root: str | Path | None = None) -> list[str]:
    """Register the train and val splits of every shipped dataset for ``profile``."""
    return [register_dataset(name, profile, split, root) for name in DATASETS for split in ("train", "val")]


def register_coco_root(root: str | Path) -> tuple[str, str]:
    """Register a COCO 2017 folder (``train2017/``, ``val2017/``, ``annotations/``) as srfkit_coco_train/val."""
    return tuple(_register(f"srfkit_coco_{split}", *coco_root_split(root, split)) for split in ("train", "val"))


def num_classes(catalog_name: str) -> int:
    """Number of thing classes of a registered dataset (reads its annotation file)."""
    meta = MetadataCatalog.get(catalog_name)
    if not hasattr(meta, "thing_classes"):
        DatasetCatalog.get(catalog_name)  # load_coco_json fills the metadata
    return len(meta.thing_classes)
