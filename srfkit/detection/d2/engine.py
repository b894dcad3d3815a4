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

# What train_detector(..., init_from=...) writes into OUTPUT_DIR: the report of the backbone transfer.
TRANSFER_REPORT = "transfer.json"

__all__ = [
    "TRANSFER_REPORT",
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

    def build_hooks(self) -> list:
        """DefaultTrainer's hooks without its EvalHook when ``TEST.EVAL_PERIOD`` is 0: that hook evaluates
        after the last step whatever the period, and :func:`train_detector` evaluates once itself
        (``run_eval``), so a campaign cell would otherwise be scored twice, or once when asked not to be."""
        hooks = super().build_hooks()
        if self.cfg.TEST.EVAL_PERIOD > 0:
            return hooks
        from detectron2.engine.hooks import EvalHook

        return [h for h in hooks if not isinstance(h, EvalHook)]


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


def _init_from_torchvision(trainer: Trainer, cfg: CfgNode, init: dict, resumed: bool) -> None:
    """Start the model's backbone + FPN + G from a srfkit stage's detector (after detectron2's own load)."""
    out = Path(cfg.OUTPUT_DIR) / TRANSFER_REPORT
    if resumed:  # the checkpoint holds the transferred, then trained, weights
        return
    from ...fileio import write_json
    from ...train import load_detector
    from .transfer import torchvision_to_detectron2

    report = torchvision_to_detectron2(load_detector(init["dir"]), trainer.model, upsampler=init["upsampler"])
    if not init["upsampler"]:
        report["not_copied"]["upsampler"] = init["upsampler_note"]
    if comm.is_main_process():
        write_json(out, {"init_from": init["dir"], "config_changes": init["config_changes"], **report})


def _train_worker(cfg: CfgNode, resume: bool, register: dict, run_eval: bool, init: dict | None = None) -> dict:
    # Each process registers the data itself (DatasetCatalog is per process).
    if register.get("coco_root"):
        register_coco_root(register["coco_root"])
    for name, split in register.get("shipped", []):
        register_dataset(name, register["profile"], split, register.get("data_root"))
    trainer = Trainer(cfg)
    resumed = resume and trainer.checkpointer.has_checkpoint()
    trainer.resume_or_load(resume=resume)
    if init is not None:
        _init_from_torchvision(trainer, cfg, init, resumed)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    metrics = evaluate(cfg, trainer.model) if run_eval else {}
    if comm.is_main_process():
        record = {"metrics": metrics, "train_seconds": round(seconds, 2), "iters": cfg.SOLVER.MAX_ITER}
        (Path(cfg.OUTPUT_DIR) / "srfkit_result.json").write_text(json.dumps(record, indent=2))
    return metrics


def _init_source(init_from: str | Path, config_kwargs: dict) -> tuple[dict, torch.nn.Module]:
    """Read the srfkit stage ``init_from``; default the FPN upsampler to its G; refuse a second G."""
    from ...train import load_detector, read_stage

    spec = read_stage(init_from)["config"].get("detector")
    if spec is None:
        raise ValueError(f"init_from={init_from}: the stage has no detector (a srf-gan stage? pass it as srf_weights)")
    source = load_detector(init_from)
    g = spec["upsampler"]
    config_kwargs.setdefault("upsampler", g["name"])
    if g["name"] == "srf":
        config_kwargs.setdefault("variant", g.get("kwargs", {}).get("variant") or "paper")
    copy_g = config_kwargs["upsampler"] == g["name"]
    if copy_g and config_kwargs.get("srf_weights"):
        raise ValueError(
            f"init_from={init_from} starts srf_module from its G; srf_weights={config_kwargs['srf_weights']} "
            "would be overwritten: pass one of them"
        )
    init = {
        "dir": str(init_from),
        "upsampler": copy_g,
        "upsampler_note": f"the detectron2 FPN's upsampler is {config_kwargs['upsampler']!r}, the source's "
        f"{g['name']!r}: G not copied",
        "num_blocks": g.get("kwargs", {}).get("num_blocks") if copy_g else None,
        "config_changes": {},
    }
    return init, source


def _fit_config_to_source(cfg: CfgNode, source: torch.nn.Module, init: dict) -> None:
    """Set what the torchvision backbone needs in ``cfg`` (in place) and record each change in ``init``.

    torchvision strides a bottleneck in its 3x3 conv (``STRIDE_IN_1X1 False``), is not dilated, and sees
    RGB normalised with its transform's mean and std; a G with a non-default depth needs ``NUM_BLOCKS``;
    a G copied into ``srf_module`` needs its layout (``MODEL.SRF.SHARE``: one shared module, or one per
    top-down step), set only where the config would build the other one.
    """
    transform = source.transform
    wanted = {
        "INPUT.FORMAT": "RGB",
        "MODEL.PIXEL_MEAN": [255.0 * float(v) for v in transform.image_mean],
        "MODEL.PIXEL_STD": [255.0 * float(v) for v in transform.image_std],
        "MODEL.RESNETS.RES5_DILATION": 1,
    }
    if cfg.MODEL.RESNETS.DEPTH >= 50:
        wanted["MODEL.RESNETS.STRIDE_IN_1X1"] = False
    if init["num_blocks"] is not None:
        wanted["MODEL.SRF.NUM_BLOCKS"] = int(init["num_blocks"])
    if init.get("upsampler"):
        from ...models.fpn import PerStepUpsampler, is_shared
        from .backbone import share_from_cfg

        g = source.backbone.fpn.upsampler
        source_shared = not isinstance(g, PerStepUpsampler)
        kind = g if source_shared else g[0]  # the same upsampler name on both sides: its default layout
        if is_shared(kind, share_from_cfg(cfg)) != source_shared:
            wanted["MODEL.SRF.SHARE"] = "shared" if source_shared else "per_step"
    for key, value in wanted.items():
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        old = node[leaf]
        same = (
            all(math.isclose(float(a), float(b), rel_tol=1e-6) for a, b in zip(old, value)) and len(old) == len(value)
            if isinstance(value, list)
            else old == value
        )
        if not same:
            node[leaf] = value
            init["config_changes"][key] = [list(old) if isinstance(old, list | tuple) else old, value]


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
    init_from: str | Path | None = None,
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
        init_from: a srfkit stage folder with a detector (the stage-2 extractor M; also a guide or
            target stage): its ResNet body, FPN convs (level by level) and FPN upsampler G start the
            detectron2 model's ``bottom_up``, ``fpn_lateral{k}``/``fpn_output{k}`` and ``srf_module``,
            after detectron2's own initialisation and ``MODEL.WEIGHTS`` (never its heads; not on a
            resumed run, whose checkpoint already holds them). The upsampler and G variant default to
            M's (another upsampler name: the FPN convs and body are copied, G is not); the config gets
            what the torchvision backbone needs (``STRIDE_IN_1X1 False``, RGB, M's pixel statistics).
            :func:`~srfkit.detection.d2.transfer.torchvision_to_detectron2`'s report, with those config
            changes, is written to ``OUTPUT_DIR/transfer.json`` (:data:`TRANSFER_REPORT`).
        **config_kwargs: :func:`~srfkit.detection.d2.config.get_config` options (``upsampler``,
            ``variant``, ``srf_weights``, ``srf_freeze``, ``schedule``, ``seed``, ``opts``, ``device``).

    Returns:
        ``{"bbox": {...}, "segm": {...}}`` in percent (empty without ``run_eval``); with several
        processes, the main process's copy.
    """
    p = get_profile(profile)
    init = None
    if init_from is not None:
        init, source = _init_source(init_from, config_kwargs)
    cfg = setup(arch, dataset, p, coco_root, data_root, output_dir=output_dir, **config_kwargs)
    if init is not None:
        _fit_config_to_source(cfg, source, init)
        del source
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
        {
            "format": "srfkit-d2-run-1",
            "arch": arch,
            "dataset": dataset,
            "register": register,
            "init_from": str(init_from) if init_from is not None else None,
        },
    )
    cfg.freeze()
    if num_gpus * num_machines <= 1:
        return _train_worker(cfg, resume, register, run_eval, init)
    launch(
        _train_worker,
        num_gpus,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=(cfg, resume, register, run_eval, init),
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
