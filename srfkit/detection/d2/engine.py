"""Train and evaluate SRF-FPN detectors with detectron2's trainer and COCOEvaluator.

:func:`train_detector` runs one detector (one process, or one per GPU with detectron2's launcher)
and returns COCO AP in srfkit's form (``{"bbox": {"AP", "AP50", ...}, "segm": {...}}``, percent).
:func:`compare_nearest_srf` is the experiment "nearest vs SRF (G reused)" for one seed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from ...eval.coco_eval import METRIC_NAMES
from ...profiles import Profile, get_profile
from . import FINAL_CHECKPOINT, RUN_RECORD
from .config import get_config
from .data import dataset_name, num_classes, register_coco_root, register_dataset

__all__ = [
    "Trainer",
    "compare_nearest_srf",
    "evaluate",
    "evaluate_output_dir",
    "is_output_dir",
    "setup",
    "srfkit_metrics",
    "train_detector",
]


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with COCOEvaluator, no TensorBoard writer (not installed), and
    ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE full_model``: one gradient norm over the whole model, as
    srfkit's torchvision trainer clips (detectron2 itself clips each parameter on its own)."""

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if not (clip.ENABLED and clip.CLIP_TYPE == "full_model"):
            return super().build_optimizer(cfg, model)
        plain = cfg.clone()
        plain.defrost()
        plain.SOLVER.CLIP_GRADIENTS.ENABLED = False
        optimizer = super().build_optimizer(plain, model)
        max_norm = float(clip.CLIP_VALUE)

        class FullModelClip(type(optimizer)):
            def step(self, closure=None):
                params = [p for group in self.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, max_norm)
                return super().step(closure)

        optimizer.__class__ = FullModelClip
        return optimizer

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str) -> COCOEvaluator:
        return COCOEvaluator(dataset_name, output_dir=str(Path(cfg.OUTPUT_DIR) / "inference"))

    def build_writers(self) -> list:
        return [CommonMetricPrinter(self.max_iter), JSONWriter(str(Path(self.cfg.OUTPUT_DIR) / "metrics.json"))]


def srfkit_metrics(results: dict) -> dict[str, dict[str, float]]:
    """COCOEvaluator's results as srfkit's ``{task: {AP, AP50, AP75, APs, APm, APl}}`` (percent, NaN kept).

    A task that COCOEvaluator skipped because the model predicted nothing scores 0.
    """
    out = {}
    for task in ("bbox", "segm"):
        if task in results:
            values = results[task]
            out[task] = {m: float(values.get(m, 0.0)) for m in METRIC_NAMES}
    return out


def setup(
    arch: str = "mask_rcnn",
    dataset: str = "shapes",
    profile: str | Profile = "quick",
    coco_root: str | Path | None = None,
    data_root: str | Path | None = None,
    **config_kwargs,
) -> CfgNode:
    """Register the data and return the detector's config (``get_config`` arguments in ``config_kwargs``).

    ``dataset`` is a shipped dataset name, or ``coco`` with ``coco_root`` (a COCO 2017 folder).
    """
    p = get_profile(profile)
    if dataset == "coco":
        if coco_root is None:
            raise ValueError("dataset 'coco' needs coco_root (a folder with train2017/, val2017/, annotations/)")
        train, val = register_coco_root(coco_root)
    else:
        train, val = (register_dataset(dataset, p, split, data_root) for split in ("train", "val"))
    config_kwargs.setdefault("num_classes", num_classes(train))
    cfg = get_config(arch, p, **config_kwargs)
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (val,)
    return cfg


def evaluate(cfg: CfgNode, model) -> dict[str, dict[str, float]]:
    """COCOEvaluator on ``cfg.DATASETS.TEST[0]``, in srfkit's form."""
    return srfkit_metrics(Trainer.test(cfg, model))


def _train_worker(cfg: CfgNode, resume: bool, register: dict, run_eval: bool) -> dict:
    # Each process registers the data itself (DatasetCatalog is per process).
    if register.get("coco_root"):
        register_coco_root(register["coco_root"])
    for name, split in register.get("shipped", []):
        register_dataset(name, register["profile"], split, register.get("data_root"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = evaluate(cfg, trainer.model) if run_eval else {}
    if comm.is_main_process():
        record = {"metrics": metrics, "train_seconds": round(seconds, 2), "iters": cfg.SOLVER.MAX_ITER}
        (Path(cfg.OUTPUT_DIR) / "srfkit_result.json").write_text(json.dumps(record, indent=2))
    return metrics


def train_detector(
    arch: str = "mask_rcnn",
    dataset: str = "shapes",
    profile: str | Profile = "quick",
    output_dir: str | Path = "runs/d2",
    resume: bool = False,
    run_eval: bool = True,
    num_gpus: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str = "auto",
    coco_root: str | Path | None = None,
    data_root: str | Path | None = None,
    **config_kwargs,
) -> dict:
    """Train one SRF-FPN detector with detectron2's trainer and evaluate it with COCOEvaluator.

    Args:
        arch: ``mask_rcnn``, ``faster_rcnn``, ``retinanet``, ``cascade_mask_rcnn`` or ``cascade_rcnn``.
        dataset: a shipped dataset (``shapes``, ``trees``, ``nuclei``, ``photos``) or ``coco``.
        profile: ``quick``/``cpu`` (sizes from the profile) or ``paper`` (the YAML's COCO setting).
        output_dir: detectron2's ``OUTPUT_DIR`` (checkpoints, ``metrics.json``, ``srfkit_result.json``).
        resume: continue from the last checkpoint in ``output_dir``.
        run_eval: evaluate on the val split after training.
        num_gpus, num_machines, machine_rank, dist_url: detectron2's ``launch`` (``num_gpus > 1``:
            one process per GPU).
        coco_root: COCO 2017 folder when ``dataset == "coco"``.
        data_root: where the shipped datasets are built (default: srfkit's data root).
        **config_kwargs: :func:`~srfkit.detection.d2.config.get_config` options (``upsampler``,
            ``variant``, ``srf_weights``, ``srf_freeze``, ``schedule``, ``seed``, ``opts``, ``device``).

    Returns:
        ``{"bbox": {...}, "segm": {...}}`` in percent (empty without ``run_eval``); with several
        processes, the main process's copy.
    """
    p = get_profile(profile)
    cfg = setup(arch, dataset, p, coco_root, data_root, output_dir=output_dir, **config_kwargs)
    Path(cfg.OUTPUT_DIR).mkdir(parents=True, exist_ok=True)
    (Path(cfg.OUTPUT_DIR) / "config.yaml").write_text(cfg.dump())
    register = {
        "profile": p.name,
        "coco_root": str(coco_root) if coco_root else None,
        "data_root": str(data_root) if data_root else None,
    }
    if dataset != "coco":
        register["shipped"] = [(dataset, "train"), (dataset, "val")]
    from ...fileio import write_json

    write_json(
        Path(cfg.OUTPUT_DIR) / RUN_RECORD,
        {"format": "srfkit-d2-run-1", "arch": arch, "dataset": dataset, "register": register},
    )
    cfg.freeze()
    if num_gpus * num_machines <= 1:
        return _train_worker(cfg, resume, register, run_eval)
    launch(
        _train_worker,
        num_gpus,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=(cfg, resume, register, run_eval),
    )
    result = Path(cfg.OUTPUT_DIR) / "srfkit_result.json"
    return json.loads(result.read_text())["metrics"] if result.is_file() else {}


def is_output_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder that :func:`train_detector` wrote (it holds :data:`RUN_RECORD`)."""
    return (Path(path) / RUN_RECORD).is_file()


def evaluate_output_dir(output_dir: str | Path) -> dict[str, dict[str, float]]:
    """COCOEvaluator on the val split of a finished :func:`train_detector` folder (its ``model_final.pth``).

    The data are registered again from the folder's :data:`RUN_RECORD`, the model is rebuilt from its
    ``config.yaml``. Raises ``FileNotFoundError`` naming the folder when it is not such a folder or its
    training has not finished.
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from .backbone import add_srf_config

    output_dir = Path(output_dir)
    if not is_output_dir(output_dir):
        raise FileNotFoundError(f"{output_dir}: not a detectron2 run folder of srfkit (no {RUN_RECORD})")
    final = output_dir / FINAL_CHECKPOINT
    if not final.is_file():
        raise FileNotFoundError(f"{output_dir}: training has not finished (no {FINAL_CHECKPOINT})")
    record = json.loads((output_dir / RUN_RECORD).read_text())
    register = record["register"]
    if register.get("coco_root"):
        register_coco_root(register["coco_root"])
    for name, split in register.get("shipped", []):
        register_dataset(name, register["profile"], split, register.get("data_root"))
    cfg = add_srf_config(get_cfg())
    cfg.merge_from_file(str(output_dir / "config.yaml"))
    cfg.MODEL.SRF.WEIGHTS = ""  # the checkpoint holds G; the stage-1 file may be gone on a new machine
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(final))
    return evaluate(cfg, model)


def compare_nearest_srf(
    srf_gan_dir: str | Path,
    dataset: str = "shapes",
    profile: str | Profile = "cpu",
    seed: int = 0,
    out_dir: str | Path = "runs/d2-compare",
    arch: str = "cascade_rcnn",
    srf_freeze: bool = False,
    **kwargs,
) -> dict:
    """One seed of "nearest vs SRF (G reused)" on detectron2: two detectors, same data, schedule and seed.

    ``nearest`` is the plain FPN; ``srf`` has the released-or-trained G of ``srf_gan_dir`` (a srfkit
    srf-gan stage folder, or any file ``MODEL.SRF.WEIGHTS`` accepts) as its top-down step, fine-tuned
    (``srf_freeze=False``) or frozen. Both train from scratch with ``profile.target``'s schedule.

    Returns:
        ``{"nearest": metrics, "srf": metrics, "gain": {task: {metric: srf - nearest}}, "seed", "arch",
        "profile", "dataset", "seconds"}``.
    """
    p = get_profile(profile)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    runs = {
        "nearest": dict(upsampler="nearest"),
        "srf": dict(upsampler="srf", srf_weights=str(srf_gan_dir), srf_freeze=srf_freeze),
    }
    metrics = {
        key: train_detector(arch, dataset, p, output_dir=out_dir / f"{key}-seed{seed}", seed=seed, **opts, **kwargs)
        for key, opts in runs.items()
    }
    gain = {
        task: {m: metrics["srf"][task][m] - metrics["nearest"][task][m] for m in METRIC_NAMES}
        for task in metrics["nearest"]
        if task in metrics["srf"]
    }
    return {
        **metrics,
        "gain": {t: {m: (None if math.isnan(v) else v) for m, v in g.items()} for t, g in gain.items()},
        "seed": seed,
        "arch": arch,
        "profile": p.name,
        "dataset": dataset,
        "catalog": dataset_name(dataset, p, "val"),
        "seconds": round(time.perf_counter() - start, 1),
    }
