"""COCO box and mask AP of a detector on a COCO-format dataset, through pycocotools.

The numbers are pycocotools' own (``COCOeval.stats``), in percent as in the paper's tables:
AP (IoU 0.50:0.95), AP50, AP75 and AP for small (< 32^2), medium (< 96^2) and large objects.
A metric pycocotools reports as -1 (no ground truth of that kind among the evaluated images) is
returned as ``nan``. A model that predicts nothing gets 0 wherever there is ground truth.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from ..data.coco import CocoDetection
from ..data.degrade import degrade

__all__ = ["METRIC_NAMES", "coco_evaluate", "predictions_to_coco", "summarize"]

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _unwrap(dataset: Dataset) -> tuple[CocoDetection, list[int]]:
    """The underlying CocoDetection and the indices into it (``Subset`` is unwrapped)."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    if not isinstance(dataset, CocoDetection):
        raise TypeError(f"coco_evaluate needs a CocoDetection (or a Subset of one), got {type(dataset).__name__}")
    return dataset, indices


def predictions_to_coco(
    output: dict[str, torch.Tensor],
    image_id: int,
    label_to_cat_id: dict[int, int],
    scale_xy: tuple[float, float] = (1.0, 1.0),
    image_size: tuple[int, int] | None = None,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """One image's detections as COCO result dicts.

    Args:
        output: torchvision detector output: ``boxes`` (N, 4) XYXY, ``scores`` (N,), ``labels`` (N,),
            optional ``masks`` (N, 1, h, w) probabilities.
        image_id: COCO image id.
        label_to_cat_id: contiguous label -> category id; other labels are skipped.
        scale_xy: factors from the model's input image to the annotated image (W/w, H/h).
        image_size: (H, W) of the annotated image, to resize masks to (required with masks).
        mask_threshold: probability above which a mask pixel is on.

    Returns:
        Dicts with ``image_id``, ``category_id``, ``bbox`` [x, y, w, h], ``score`` and, with masks,
        ``segmentation`` (compressed RLE with a str ``counts``).
    """
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    sx, sy = scale_xy
    boxes = boxes * torch.tensor([sx, sy, sx, sy])
    rles = None
    if "masks" in output and len(boxes):
        masks = output["masks"].detach().float().cpu()
        if masks.dim() == 3:
            masks = masks[:, None]
        if image_size is None:
            raise ValueError("image_size is required to encode masks")
        if tuple(masks.shape[-2:]) != tuple(image_size):
            masks = F.interpolate(masks, size=image_size, mode="bilinear", align_corners=False)
        binary = (masks[:, 0] > mask_threshold).numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
    results = []
    for k, (box, score, label) in enumerate(zip(boxes.tolist(), scores, labels)):
        if label not in label_to_cat_id:
            continue
        x1, y1, x2, y2 = box
        res = {
            "image_id": int(image_id),
            "category_id": int(label_to_cat_id[label]),
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": float(score),
        }
        if rles is not None:
            res["segmentation"] = {"size": list(rles[k]["size"]), "counts": rles[k]["counts"].decode("ascii")}
        results.append(res)
    return results


def summarize(coco_gt: COCO, results: list[dict], iou_type: str, image_ids: list[int]) -> dict[str, float]:
    """pycocotools' evaluation of ``results`` on ``image_ids``, as ``{metric: percent}`` (stdout silenced).

    For ``segm`` the results' ``bbox`` is dropped first, so pycocotools takes each instance's
    area from its mask (as detectron2 does).
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"unknown iou_type {iou_type!r}; valid: bbox, segm")
    with contextlib.redirect_stdout(io.StringIO()):
        if results:
            if iou_type == "segm":
                results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
            coco_dt = coco_gt.loadRes(results)
        else:
            # loadRes fails on an empty list; an empty result set evaluates to 0 where there is GT.
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": list(coco_gt.dataset["images"]),
                "categories": list(coco_gt.dataset["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats[: len(METRIC_NAMES)]
    return {name: (math.nan if v < 0 else 100.0 * float(v)) for name, v in zip(METRIC_NAMES, stats)}


@torch.inference_mode()
def coco_evaluate(
    model: nn.Module,
    dataset: Dataset,
    device: str | torch.device | None = None,
    max_images: int | None = None,
    batch_size: int = 2,
    progress: bool = True,
    degrade_scale: float | None = None,
    degrade_mode: str = "bilinear",
) -> dict[str, dict[str, float]]:
    """Box (and mask) AP of a torchvision-style detector on a COCO-format dataset.

    The model runs in eval mode (its mode is restored afterwards) under ``torch.inference_mode`` on the
    dataset's images in order; its labels are mapped back to the file's category ids; boxes (and
    masks, thresholded at 0.5 and RLE-encoded) are scaled back to each annotated image's size when
    the model saw another size (a dataset transform or ``degrade_scale``); then pycocotools
    evaluates them against the dataset's own annotation file.

    Args:
        model: a detector whose ``forward(list of (3, H, W))`` returns dicts with ``boxes``,
            ``scores``, ``labels`` (and ``masks`` (N, 1, H, W) for mask AP).
        dataset: a :class:`~srfkit.data.CocoDetection` or a ``Subset`` of one.
        device: where the images are sent; default: where the model's parameters are (the model
            is not moved, so pass the device it is on).
        max_images: evaluate only the first ``max_images`` images (``None`` or 0: all).
        batch_size: images per forward pass.
        progress: show a tqdm bar.
        degrade_scale: if set, feed the model ``degrade(image, scale=degrade_scale)`` (Table 6 style);
            predictions are scaled back to the original image.
        degrade_mode: interpolation of that degradation.

    Returns:
        ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, "segm": {...}}`` in percent; ``segm``
        only when the dataset has masks and the model predicts them; ``nan`` where pycocotools
        reports -1 (no such ground truth).
    """
    base, indices = _unwrap(dataset)
    if max_images:
        indices = indices[:max_images]
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    results: list[dict] = []
    saw_masks = False
    image_ids = []
    try:
        batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
        for batch in tqdm(batches, desc="COCO eval", disable=not progress, leave=False):
            images = []
            for idx in batch:
                image = base[idx][0] if base.transforms is not None else base.load_image(idx)
                if degrade_scale is not None:
                    image, _ = degrade(image, scale=degrade_scale, mode=degrade_mode)
                images.append(image.to(device))
            outputs = model(images)
            for idx, image, output in zip(batch, images, outputs):
                img_id = base.image_ids[idx]
                info = base.coco.imgs[img_id]
                h, w = int(info["height"]), int(info["width"])
                scale_xy = (w / image.shape[-1], h / image.shape[-2])
                saw_masks = saw_masks or "masks" in output
                results.extend(predictions_to_coco(output, img_id, base.label_to_cat_id, scale_xy, (h, w)))
                image_ids.append(img_id)
    finally:
        model.train(was_training)
    metrics = {"bbox": summarize(base.coco, results, "bbox", image_ids)}
    if base.has_masks and (saw_masks or _predicts_masks(model)):
        metrics["segm"] = summarize(base.coco, results, "segm", image_ids)
    return metrics


def _predicts_masks(model: nn.Module) -> bool:
    """Whether a torchvision detector has a mask head (for models that returned no detections)."""
    model = getattr(model, "module", model)
    roi_heads = getattr(model, "roi_heads", None)
    return roi_heads is not None and getattr(roi_heads, "mask_predictor", None) is not None
