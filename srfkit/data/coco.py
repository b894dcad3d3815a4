"""COCO-format detection and instance-segmentation datasets (real COCO included).

:class:`CocoDetection` reads an annotation file in the COCO format (``images``, ``annotations``,
``categories``) and a folder of images, and returns torchvision-detection samples. It checks the
file when it opens it and each image when it reads it, and reports problems as
:class:`AnnotationFileError` or :class:`ImageFileError`, whose messages name the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "DatasetError",
    "AnnotationFileError",
    "ImageFileError",
    "CocoDetection",
    "coco_root_split",
    "load_coco_root",
    "collate_fn",
    "read_image",
    "decode_rle",
]


def decode_rle(rle: dict) -> np.ndarray:
    """``pycocotools.mask.decode`` of one RLE, (H, W) uint8, without pycocotools' NumPy 2 deprecation noise."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


class DatasetError(Exception):
    """Base class of srfkit's data errors; the message names the offending file."""


class AnnotationFileError(DatasetError, ValueError):
    """An annotation file that is missing, not JSON, or not valid COCO."""


class ImageFileError(DatasetError, OSError):
    """An image file that is missing, unreadable, empty, truncated or of the wrong size."""


def read_image(path: str | Path) -> Tensor:
    """Read an image file as an RGB float tensor.

    Greyscale, 16-bit greyscale, RGBA, LA, CMYK and palette images are converted to RGB
    (alpha is dropped; 16-bit values are divided by 65535).

    Args:
        path: image file.

    Returns:
        (3, H, W) float32 in [0, 1].

    Raises:
        ImageFileError: the file is missing, unreadable, empty, not an image, or truncated/corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"{path}: image file not found")
    if not path.is_file():
        raise ImageFileError(f"{path}: cannot read image: not a regular file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageFileError(f"{path}: cannot read image: {e.strerror or e}") from e
    if size == 0:
        raise ImageFileError(f"{path}: image file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()
            array = _to_rgb_array(img)
    except UnidentifiedImageError as e:
        raise ImageFileError(f"{path}: not an image format PIL can read") from e
    except PermissionError as e:
        raise ImageFileError(f"{path}: cannot read image: permission denied") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # PIL reports truncated/corrupt data as OSError ("image file is truncated"), SyntaxError
        # ("broken PNG file") or ValueError, depending on the format.
        raise ImageFileError(f"{path}: cannot decode image, the file is truncated or corrupt ({e})") from e
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any PIL mode."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        grey = np.asarray(img, dtype=np.float32)
        grey = np.clip(grey, 0, 65535) / 65535.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning on palette transparency
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def _load_json(path: Path) -> dict:
    if not path.exists():
        raise AnnotationFileError(f"{path}: annotation file not found")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationFileError(f"{path}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:
        raise AnnotationFileError(f"{path}: not valid JSON (not UTF-8 text)") from e
    except OSError as e:
        raise AnnotationFileError(f"{path}: cannot read annotation file ({e})") from e
    if not isinstance(data, dict):
        raise AnnotationFileError(f"{path}: a COCO annotation file holds a JSON object, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise AnnotationFileError(f"{path}: not a COCO annotation file: missing key(s) {', '.join(missing)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise AnnotationFileError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def _unique_ids(path: Path, entries: list, section: str, keys: tuple[str, ...], noun: str) -> set:
    """Check that every entry of ``section`` is a dict with ``keys`` and a unique ``id``; return the ids."""
    ids: set = set()
    for i, entry in enumerate(entries):
        for key in keys:
            if not isinstance(entry, dict) or key not in entry:
                raise AnnotationFileError(f"{path}: {section}[{i}] has no '{key}'")
        if entry["id"] in ids:
            raise AnnotationFileError(f"{path}: duplicate {noun} id {entry['id']}")
        ids.add(entry["id"])
    return ids


def _check_entries(path: Path, data: dict) -> None:
    """Validate the fields every later step relies on; errors name the file and the entry."""
    image_ids = _unique_ids(path, data["images"], "images", ("id", "file_name", "height", "width"), "image")
    cat_ids = _unique_ids(path, data["categories"], "categories", ("id", "name"), "category")
    _unique_ids(path, data["annotations"], "annotations", ("id", "image_id", "category_id", "bbox"), "annotation")
    for ann in data["annotations"]:
        aid = ann["id"]
        if ann["image_id"] not in image_ids:
            raise AnnotationFileError(
                f"{path}: annotation {aid} refers to image_id {ann['image_id']!r}, which is not in 'images'"
            )
        if ann["category_id"] not in cat_ids:
            raise AnnotationFileError(
                f"{path}: annotation {aid} refers to category_id {ann['category_id']!r}, which is not in 'categories'"
            )
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise AnnotationFileError(f"{path}: annotation {aid} has bbox {bbox!r}; expected [x, y, width, height]")


def _clamped_xyxy(bbox: list[float], width: int, height: int) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return x1, y1, x2, y2


class CocoDetection(Dataset):
    """A COCO-format dataset returning torchvision-detection samples.

    ``dataset[i]`` is ``(image, target)``:

    * ``image``: (3, H, W) float32 RGB in [0, 1] (grey, RGBA and palette images converted).
    * ``target["boxes"]``: (K, 4) float32 XYXY in pixels, clamped to the image; boxes of zero
      width or height are dropped (counted in one warning when the file is opened).
    * ``target["labels"]``: (K,) int64 in 1..num_categories (contiguous, in category-id order;
      0 is the background).
    * ``target["masks"]``: (K, H, W) uint8, present when the file has any segmentation
      (multi-part polygons and RLE, crowd or not, rasterised by pycocotools; an annotation
      without a segmentation gets its box as mask).
    * ``target["image_id"]``: int64 scalar tensor, the COCO image id.
    * ``target["iscrowd"]``: (K,) int64; ``target["area"]``: (K,) float32 (the file's ``area``,
      else the box area), in pixels squared.

    Args:
        images_dir: folder the ``file_name`` entries are relative to (e.g. ``coco/train2017``).
        annotation_file: COCO JSON (e.g. ``coco/annotations/instances_train2017.json``).
        transforms: optional callable ``(image, target) -> (image, target)``.

    Attributes:
        coco: the pycocotools ``COCO`` object of the file (the ground truth for evaluation).
        image_ids: COCO image ids in dataset order (sorted).
        class_names: category names, index ``label - 1``.
        num_classes: number of categories + 1 (background), torchvision's ``num_classes``.
        label_to_cat_id, cat_id_to_label: contiguous label <-> COCO category id.
        has_masks: whether targets carry ``masks``.
        num_dropped: annotations dropped for a zero-width or zero-height box.
        name: a short name for logs (``load`` sets the shipped dataset's name).

    Raises:
        AnnotationFileError: the file is missing, not JSON, lacks ``images``/``annotations``/
            ``categories``, or an annotation refers to an unknown image or category.
        ImageFileError: (when an item is read) the image is missing, unreadable, empty,
            truncated, or its size differs from the file's ``height``/``width``.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotation_file: str | Path,
        transforms: Callable[[Tensor, dict], tuple[Tensor, dict]] | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        data = _load_json(self.annotation_file)
        _check_entries(self.annotation_file, data)
        if not self.images_dir.is_dir():
            raise ImageFileError(f"{self.images_dir}: images folder not found (for {self.annotation_file})")
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        self.name = self.annotation_file.stem
        self.image_ids: list[int] = sorted(self.coco.imgs)
        cat_ids = sorted(self.coco.cats)
        self.cat_id_to_label: dict[int, int] = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_cat_id: dict[int, int] = {i + 1: c for i, c in enumerate(cat_ids)}
        self.class_names: list[str] = [str(self.coco.cats[c]["name"]) for c in cat_ids]
        self.num_classes = len(cat_ids) + 1
        self.has_masks = any(bool(a.get("segmentation")) for a in data["annotations"])

        # Per image, the annotations kept (boxes of positive width and height inside the image).
        self._anns: dict[int, list[dict]] = {}
        dropped = []
        for img_id in self.image_ids:
            info = self.coco.imgs[img_id]
            kept = []
            for ann in self.coco.imgToAnns.get(img_id, []):
                x1, y1, x2, y2 = _clamped_xyxy(ann["bbox"], info["width"], info["height"])
                if x2 > x1 and y2 > y1:
                    kept.append(ann)
                else:
                    dropped.append(ann["id"])
            self._anns[img_id] = kept
        self.num_dropped = len(dropped)
        if dropped:
            shown = ", ".join(str(a) for a in dropped[:5]) + (", ..." if len(dropped) > 5 else "")
            warnings.warn(
                f"{self.annotation_file}: dropped {len(dropped)} annotation(s) whose box has zero width or "
                f"height inside the image (ids {shown})",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, images={len(self)}, classes={self.class_names}, "
            f"has_masks={self.has_masks}, annotation_file='{self.annotation_file}')"
        )

    def image_path(self, index: int) -> Path:
        """Path of the image file of item ``index``."""
        return self.images_dir / self.coco.imgs[self.image_ids[index]]["file_name"]

    def load_image(self, index: int) -> Tensor:
        """The image of item ``index``, (3, H, W) float32 in [0, 1], without ``transforms``."""
        info = self.coco.imgs[self.image_ids[index]]
        path = self.images_dir / info["file_name"]
        image = read_image(path)
        h, w = image.shape[-2:]
        if (h, w) != (info["height"], info["width"]):
            raise ImageFileError(
                f"{path}: image is {w}x{h} pixels but {self.annotation_file} says "
                f"{info['width']}x{info['height']} (image id {info['id']})"
            )
        return image

    def load_target(self, index: int) -> dict[str, Tensor]:
        """The target dict of item ``index`` (see the class docstring), without ``transforms``."""
        img_id = self.image_ids[index]
        info = self.coco.imgs[img_id]
        height, width = int(info["height"]), int(info["width"])
        anns = self._anns[img_id]
        boxes = [_clamped_xyxy(a["bbox"], width, height) for a in anns]
        target: dict[str, Any] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(img_id, dtype=torch.int64),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "area": torch.tensor(
                [float(a["area"]) if "area" in a else float(a["bbox"][2] * a["bbox"][3]) for a in anns],
                dtype=torch.float32,
            ),
        }
        if self.has_masks:
            masks = np.zeros((len(anns), height, width), dtype=np.uint8)
            for k, (ann, box) in enumerate(zip(anns, boxes)):
                masks[k] = self._mask(ann, box, height, width)
            target["masks"] = torch.from_numpy(masks)
        return target

    def _mask(self, ann: dict, box: tuple[float, ...], height: int, width: int) -> np.ndarray:
        seg = ann.get("segmentation")
        if isinstance(seg, list):
            # Polygons: drop parts with fewer than 3 points (pycocotools would read a 4-number
            # part as a box); several parts are merged into one mask.
            parts = [p for p in seg if isinstance(p, list) and len(p) >= 6]
            if parts:
                rle = mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
                return decode_rle(rle)
        elif isinstance(seg, dict) and "counts" in seg:
            rle = seg
            if isinstance(seg["counts"], list):  # uncompressed RLE (crowd annotations of real COCO)
                rle = mask_utils.frPyObjects(seg, height, width)
            elif isinstance(seg["counts"], str):
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
            if list(rle["size"]) != [height, width]:
                raise AnnotationFileError(
                    f"{self.annotation_file}: annotation {ann['id']} has an RLE of size {list(rle['size'])} "
                    f"but its image is {height}x{width} (height x width)"
                )
            return decode_rle(rle)
        # No usable segmentation: the box as mask.
        mask = np.zeros((height, width), dtype=np.uint8)
        x1, y1, x2, y2 = box
        mask[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = 1
        return mask

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image = self.load_image(index)
        target = self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


# Per-object entries of a target dict (first dimension K); the rest (``image_id``) is per image.
OBJECT_KEYS = ("boxes", "labels", "masks", "iscrowd", "area")


def coco_root_split(root: str | Path, split: str = "train") -> tuple[Path, Path]:
    """``(images_dir, annotation_file)`` of one split of a COCO 2017 folder: ``root/{split}2017`` and
    ``root/annotations/instances_{split}2017.json``.

    Raises:
        FileNotFoundError: either is missing (the message names it and the layout expected).
    """
    root = Path(root)
    images, annotations = root / f"{split}2017", root / "annotations" / f"instances_{split}2017.json"
    for path in (images, annotations):
        if not path.exists():
            raise FileNotFoundError(
                f"COCO folder {root}: {path} not found (expected {split}2017/ and "
                f"annotations/instances_{split}2017.json, the COCO 2017 layout)"
            )
    return images, annotations


def load_coco_root(root: str | Path, split: str = "train", transforms: Callable | None = None) -> CocoDetection:
    """One split of a COCO 2017 folder as a :class:`CocoDetection` named ``coco``; its ``coco_root``
    attribute (recorded in stage configs) lets a stage trained on it be evaluated on the same folder."""
    ds = CocoDetection(*coco_root_split(root, split), transforms=transforms)
    ds.name = "coco"
    ds.coco_root = str(Path(root).resolve())
    return ds


def drop_crowd(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """The target without its crowd regions (``iscrowd == 1``): what a detector trains on.

    Crowd annotations mark regions of many objects; COCO evaluation ignores detections there, and
    detectors never learn them as positive boxes. Evaluation keeps them (pycocotools reads the file).
    Returns a new dict; ``target`` itself is not modified.
    """
    crowd = target.get("iscrowd")
    if crowd is None or not bool(crowd.any()):
        return target
    keep = crowd == 0
    return {k: (v[keep] if k in OBJECT_KEYS else v) for k, v in target.items()}


def collate_fn(batch: list[tuple[Tensor, dict]], drop_crowds: bool = False) -> tuple[list[Tensor], list[dict]]:
    """Collate detection samples into ``(list of images, list of targets)`` (sizes may differ).

    ``drop_crowds=True`` (training) removes crowd regions from the targets (:func:`drop_crowd`).
    """
    images, targets = zip(*batch) if batch else ((), ())
    targets = [drop_crowd(t) for t in targets] if drop_crowds else targets
    return list(images), list(targets)


def collate_train(batch: list[tuple[Tensor, dict]]) -> tuple[list[Tensor], list[dict]]:
    """:func:`collate_fn` for training loaders: crowd regions dropped (picklable for workers)."""
    return collate_fn(batch, drop_crowds=True)
