"""COCO AP of a finished stage folder, cached beside it under a key of everything that sets the numbers.

``python -m srfkit evaluate --stage DIR`` and the experiment runner both call :func:`evaluate_stage`.
The cache ``DIR/eval.json`` holds one entry per evaluation key: the split, the dataset and its build
record (``BUILD.json``: builder version, seed, settings), whether the detector was reset to the
profile's full resolution, the image cap, and the SHA-1 of the stage's ``final.pt``. A changed key
(a retrained stage, a rebuilt dataset, another split) evaluates again; an unchanged one is read back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..detection.d2 import FINAL_CHECKPOINT, RUN_RECORD
from ..profiles import Profile
from .checkpoint import FINAL_NAME
from .loaders import load_detector, load_profile, read_stage

__all__ = ["EVAL_CACHE", "evaluate_stage", "evaluation_key", "file_sha1"]

EVAL_CACHE = "eval.json"


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes (hex)."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_record(dataset: str, profile: Profile) -> dict | None:
    """The dataset build's ``BUILD.json`` (builder version, seed, settings) without its summary, or ``None``."""
    from ..data import dataset_dir

    build = dataset_dir(dataset, profile) / "BUILD.json"
    record = json.loads(build.read_text()) if build.is_file() else None
    if record is not None:
        record.pop("summary", None)
    return record


def evaluation_key(
    stage_dir: Path,
    dataset: str,
    split: str,
    full_resolution: bool,
    eval_images: int,
    profile: Profile,
    checkpoint: Path | None = None,
    coco_root: str | Path | None = None,
) -> dict:
    """Everything that changes a stage's AP (see the module doc); plain JSON values. With ``coco_root``
    (a COCO folder, dataset ``coco``) the split's annotation file's SHA-1 stands for the dataset build."""
    if coco_root is not None:
        from ..data import coco_root_split

        build = {"coco_root": str(coco_root), "annotation_sha1": file_sha1(coco_root_split(coco_root, split)[1])}
    else:
        build = build_record(dataset, profile)
    return {
        "dataset": dataset,
        "split": split,
        "dataset_build": build,
        "full_resolution": bool(full_resolution),
        "eval_images": int(eval_images),
        "checkpoint": (checkpoint or stage_dir / FINAL_NAME).name,
        "checkpoint_sha1": file_sha1(checkpoint or stage_dir / FINAL_NAME),
        # masks pasted where the head learned them (srfkit.detection.masks); before: torchvision's paste
        "mask_paste": "shifted_bilinear",
    }


def evaluate_stage(
    stage_dir: str | Path,
    dataset: str | None = None,
    split: str = "val",
    full_resolution: bool = False,
    eval_images: int | None = None,
    progress: bool = True,
    cache: bool = True,
    coco_root: str | Path | None = None,
) -> dict:
    """COCO AP (box, and mask where the model has masks) of a finished stage's detector.

    Args:
        stage_dir: a finished guide, extractor or target folder (one holding ``final.pt``), or one
            checkpoint file inside such a folder (a periodic ``step_*.pt``: learning curves).
        dataset: shipped dataset name (default: the one the stage trained on).
        split: ``val`` (default) or ``train``.
        full_resolution: reset the detector's resize to the stage profile's full size (the extractor
            M trains on half-size images; Table 4's A3 evaluates it on full-size ones).
        eval_images: cap on images (default: the profile's ``eval_images``; 0 = all).
        progress: show a progress bar.
        cache: read and write ``stage_dir/eval.json`` (keyed; see the module doc).
        coco_root: a COCO 2017 folder to evaluate on (its ``{split}2017``); default for a stage trained
            on a COCO folder: the folder its config records.

    Returns:
        ``{"bbox": {...}, "segm": {...}}`` as :func:`srfkit.eval.coco_evaluate` gives.

    Raises:
        FileNotFoundError: the folder is missing or its stage is unfinished (the message names it).
        ValueError: the folder's stage has no detector (a srf-gan stage), or it is not an srfkit stage.
    """
    from ..data import load, load_coco_root
    from ..eval import coco_evaluate

    stage_dir = Path(stage_dir)
    if (stage_dir / RUN_RECORD).is_file():
        return _evaluate_detectron2(stage_dir, dataset, split, cache)
    payload = read_stage(stage_dir)
    checkpoint = None
    if not stage_dir.is_dir():  # one checkpoint of a stage folder
        checkpoint, stage_dir = stage_dir, stage_dir.parent
    profile = load_profile(payload)
    trained_on = payload["config"].get("dataset", {})
    dataset = dataset or trained_on.get("name")
    if coco_root is not None or dataset == "coco":
        coco_root = coco_root or trained_on.get("coco_root")
        if coco_root is None:
            raise ValueError(f"{stage_dir}: trained on a COCO folder its config does not name; pass it (--coco-root)")
        dataset = "coco"
    if not dataset:
        raise ValueError(f"{stage_dir}: its config names no dataset; pass one (--dataset)")
    eval_images = profile.eval_images if eval_images is None else eval_images
    key = evaluation_key(stage_dir, dataset, split, full_resolution, eval_images, profile, checkpoint, coco_root)
    cache_file = stage_dir / EVAL_CACHE
    cached = _cached(cache_file, key) if cache else None
    if cached is not None:
        return cached
    model = load_detector(payload)
    if full_resolution:
        model.transform.min_size = (profile.image_size,)
        model.transform.max_size = profile.max_size
    val = load_coco_root(coco_root, split) if coco_root is not None else load(dataset, split=split, profile=profile)
    metrics = coco_evaluate(model, val, max_images=eval_images or None, progress=progress)
    if cache:
        _write_cache(cache_file, key, metrics)
    return metrics


def _evaluate_detectron2(output_dir: Path, dataset: str | None, split: str, cache: bool) -> dict:
    """:func:`evaluate_stage` of a detectron2 run folder (``srfkit.detection.d2``): COCOEvaluator on val."""
    from ..detection.d2 import require_detectron2
    from ..profiles import get_profile

    record = json.loads((output_dir / RUN_RECORD).read_text())
    trained_on = record["dataset"]
    if dataset not in (None, trained_on):
        raise ValueError(
            f"{output_dir}: a detectron2 run on {trained_on!r} is evaluated on its own val split, not {dataset!r}"
        )
    if split != "val":
        raise ValueError(f"{output_dir}: a detectron2 run is evaluated on its val split (DATASETS.TEST), not {split!r}")
    final = output_dir / FINAL_CHECKPOINT
    if not final.is_file():
        raise FileNotFoundError(f"{output_dir}: training has not finished (no {FINAL_CHECKPOINT})")
    profile = get_profile(record["register"]["profile"])
    key = {
        "engine": "detectron2",
        "dataset": trained_on,
        "split": split,
        "dataset_build": None if trained_on == "coco" else build_record(trained_on, profile),
        "checkpoint": FINAL_CHECKPOINT,
        "checkpoint_sha1": file_sha1(final),
    }
    cache_file = output_dir / EVAL_CACHE
    cached = _cached(cache_file, key) if cache else None
    if cached is not None:
        return cached
    require_detectron2()
    from ..detection.d2.engine import evaluate_output_dir

    metrics = evaluate_output_dir(output_dir)
    if cache:
        _write_cache(cache_file, key, metrics)
    return metrics


def _cached(path: Path, key: dict) -> dict | None:
    """The metrics cached under ``key`` in an eval cache, or ``None``."""
    return next((e["metrics"] for e in _read_cache(path) if e.get("key") == key), None)


def _write_cache(path: Path, key: dict, metrics: dict) -> None:
    from ..fileio import write_json

    entries = [e for e in _read_cache(path) if e.get("key") != key] + [{"key": key, "metrics": metrics}]
    write_json(path, {"format": "srfkit-eval-2", "entries": entries})


def _read_cache(path: Path) -> list[dict]:
    """Entries of an eval cache; an old-format or unreadable file counts as empty (re-evaluated)."""
    if not path.is_file():
        return []
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    if not isinstance(document, dict) or document.get("format") != "srfkit-eval-2":
        return []
    return [e for e in document.get("entries", []) if isinstance(e, dict) and "key" in e and "metrics" in e]


def format_metrics(metrics: dict) -> str:
    """A small text table: one row per IoU type (bbox, segm), one column per metric."""
    names = list(next(iter(metrics.values())))
    lines = [f"{'':<6}" + "".join(f"{n:>8}" for n in names)]
    for iou, values in metrics.items():
        lines.append(f"{iou:<6}" + "".join(f"{values[n]:>8.2f}" for n in names))
    return "\n".join(lines)
