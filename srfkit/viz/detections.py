"""Images with boxes and masks: ground truth from a dataset, and a detector's predictions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

__all__ = ["draw_instances", "samples_figure", "detections_figure"]


def draw_instances(
    ax: Axes,
    image: Tensor,
    boxes: Tensor | None = None,
    labels: Tensor | None = None,
    masks: Tensor | None = None,
    scores: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.0,
    title: str | None = None,
) -> int:
    """Draw one image (3, H, W) in [0, 1] with boxes (K, 4) XYXY, labels (K,) 1..num_classes-1,
    optional masks (K, H, W) or (K, 1, H, W) and scores (K,). Returns the number of instances drawn."""
    ax.imshow(image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if boxes is None:
        return 0
    keep = np.arange(len(boxes))
    if scores is not None:
        keep = np.nonzero(scores.detach().cpu().numpy() >= score_threshold)[0]
    h, w = image.shape[-2:]
    overlay = np.zeros((h, w, 4))
    for n, k in enumerate(keep):
        color = np.array(_color(int(labels[k]) if labels is not None else n))
        x0, y0, x1, y1 = boxes[k].detach().cpu().tolist()
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.2))
        if masks is not None:
            m = masks[k].detach().cpu()
            m = (m[0] if m.dim() == 3 else m).numpy() >= 0.5
            overlay[m] = [*color, 0.45]
        text = ""
        if labels is not None and class_names is not None:
            label = int(labels[k])
            text = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        if scores is not None:
            text = f"{text} {float(scores[k]):.2f}".strip()
        if text:
            ax.text(x0, y0, text, fontsize=6, color="white", va="bottom", bbox=dict(facecolor=color, pad=0.5, lw=0))
    if masks is not None:
        ax.imshow(overlay)
    return len(keep)


def _color(index: int) -> tuple[float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab10"](index % 10)[:3]


def samples_figure(dataset, indices: Sequence[int], panel_size: float = 2.4) -> Figure:
    """Ground truth of some items of a :class:`srfkit.data.CocoDetection` in one row."""
    fig = Figure(figsize=(panel_size * len(indices), panel_size + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(indices)))
    names = getattr(dataset, "class_names", None)
    for ax, i in zip(axes, indices):
        image, target = dataset[i]
        n = draw_instances(ax, image, target["boxes"], target["labels"], target.get("masks"), class_names=names)
        ax.set_title(f"#{i}: {n} objects, {tuple(image.shape[-2:])}", fontsize=8)
    return fig


def detections_figure(
    images: Sequence[Tensor],
    predictions: Sequence[dict],
    targets: Sequence[dict] | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.3,
    panel_size: float = 2.6,
) -> Figure:
    """Ground truth (top row, when ``targets`` is given) and predictions above ``score_threshold``."""
    rows = 2 if targets is not None else 1
    fig = Figure(figsize=(panel_size * len(images), panel_size * rows + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(rows, len(images), squeeze=False))
    for j, (image, pred) in enumerate(zip(images, predictions)):
        if targets is not None:
            t = targets[j]
            draw_instances(axes[0, j], image, t["boxes"], t["labels"], t.get("masks"), class_names=class_names)
            axes[0, j].set_title("ground truth", fontsize=8)
        ax = axes[rows - 1, j]
        n = draw_instances(
            ax,
            image,
            pred["boxes"],
            pred["labels"],
            pred.get("masks"),
            pred.get("scores"),
            class_names,
            score_threshold,
        )
        ax.set_title(f"predicted ({n} with score >= {score_threshold})", fontsize=8)
    return fig
