"""Data: COCO-format datasets, the degradation function, and the shipped datasets.

* :class:`CocoDetection` reads any COCO-format folder (real COCO included) as torchvision samples.
* :func:`degrade` is the paper's ``I_lr = down(I, s)`` with boxes, masks and areas moved along.
* :func:`load` returns a shipped dataset (``shapes``, ``trees``, ``nuclei``, ``photos``) by name,
  building it first if it is missing (``python data/build.py --profile quick`` builds all four).
"""

from .builders import (
    DATASETS,
    DatasetSpec,
    build_dataset,
    data_root,
    dataset_dir,
    dataset_names,
    is_built,
    load,
    register_dataset,
    size_histogram,
    split_paths,
)
from .coco import (
    AnnotationFileError,
    CocoDetection,
    DatasetError,
    ImageFileError,
    coco_root_split,
    collate_fn,
    collate_train,
    drop_crowd,
    load_coco_root,
    read_image,
)
from .degrade import DEGRADE_MODES, Compose, Degrade, RandomHorizontalFlip, degrade, degraded_size

__all__ = [
    "AnnotationFileError",
    "CocoDetection",
    "Compose",
    "DATASETS",
    "DEGRADE_MODES",
    "DatasetError",
    "DatasetSpec",
    "Degrade",
    "ImageFileError",
    "RandomHorizontalFlip",
    "build_dataset",
    "coco_root_split",
    "collate_fn",
    "collate_train",
    "data_root",
    "dataset_dir",
    "dataset_names",
    "degrade",
    "degraded_size",
    "drop_crowd",
    "is_built",
    "load",
    "load_coco_root",
    "read_image",
    "register_dataset",
    "size_histogram",
    "split_paths",
]
