"""Feature-map figures: what each upsampler makes of a coarse FPN level, beside the target features.

The comparison is the one SRF-GAN trains for (paper Eq. 2, Fig. 2): the image I_tr is degraded to
I_lr = degrade(I_tr, 0.5); the extractor F gives P_i^lr = F(I_lr)_i and the target P_i^tr = F(I_tr)_i;
each upsampler maps P_i^lr to the size of P_i^tr, and the absolute difference to P_i^tr is the error.

Computing (:func:`extract_pair`, :func:`compare_level`) is separate from drawing
(:func:`plot_comparison`), so the data behind a figure can be tested without looking at pixels.
A feature map (C, H, W) is shown as one (H, W) image through a *reduction*: ``"mean"`` over
channels, ``"max_abs"`` (the largest absolute value over channels) or a channel index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..data import degrade
from ..eval import fidelity_metrics

__all__ = [
    "REDUCTIONS",
    "ComparisonPanels",
    "reduce_channels",
    "extract_pair",
    "compare_level",
    "plot_comparison",
    "comparison_figure",
]

REDUCTIONS = ("mean", "max_abs")


def reduce_channels(fmap: Tensor, reduction: str | int = "mean") -> Tensor:
    """One (H, W) map from a (C, H, W) (or (1, C, H, W)) feature map.

    Args:
        fmap: features.
        reduction: ``"mean"`` over channels, ``"max_abs"`` (max of |x| over channels), or an
            ``int`` channel index.
    """
    if fmap.dim() == 4:
        if fmap.shape[0] != 1:
            raise ValueError(f"reduce_channels takes one feature map, got a batch of {fmap.shape[0]}")
        fmap = fmap[0]
    if fmap.dim() != 3:
        raise ValueError(f"expected a (C, H, W) feature map, got shape {tuple(fmap.shape)}")
    if isinstance(reduction, (int, np.integer)) and not isinstance(reduction, bool):
        if not 0 <= reduction < fmap.shape[0]:
            raise ValueError(f"channel {reduction} out of range for {fmap.shape[0]} channels")
        return fmap[int(reduction)]
    if reduction == "mean":
        return fmap.mean(0)
    if reduction == "max_abs":
        return fmap.abs().amax(0)
    raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(REDUCTIONS)} or a channel index")


def _device_of(module: nn.Module) -> torch.device:
    try:
        return next(module.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def extract_pair(
    extractor: nn.Module, image: Tensor, scale: float = 0.5, mode: str = "bilinear"
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Target and low-resolution features of one image.

    Args:
        extractor: F, images (N, 3, H, W) in [0, 1] -> mapping of levels (N, C, H_i, W_i).
        image: (3, H, W) RGB in [0, 1].
        scale: degradation factor s of I_lr = degrade(I_tr, s).
        mode: degradation interpolation (``nearest``, ``bilinear``, ``bicubic``).

    Returns:
        ``(F(I_tr), F(I_lr))``, each ``{level: (1, C, H_i, W_i)}`` on the CPU.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected one RGB image (3, H, W), got shape {tuple(image.shape)}")
    was_training = extractor.training
    extractor.eval()
    try:
        device = _device_of(extractor)
        high = image.unsqueeze(0).to(device)
        low, _ = degrade(high, None, scale=scale, mode=mode)
        target = {k: v.cpu() for k, v in extractor(high).items()}
        low_feats = {k: v.cpu() for k, v in extractor(low).items()}
    finally:
        extractor.train(was_training)
    return target, low_feats


@dataclass
class ComparisonPanels:
    """Everything one comparison figure draws, as arrays.

    Attributes:
        level: FPN level name (``"0"`` is P2).
        reduction: the reduction used for every map.
        target: reduced F(I_tr)_i, (H, W).
        low_res: reduced F(I_lr)_i, the upsamplers' input, (h, w).
        outputs: ``{upsampler name: reduced output (H, W)}``.
        errors: ``{upsampler name: reduction of |output - target| (H, W)}`` (the mean reduction is
            the per-pixel L1 error that G is trained to reduce).
        metrics: ``{upsampler name: {"l1", "psnr", "cosine"}}`` over all channels of the level.
        channels: channel count C of the level.
    """

    level: str
    reduction: str | int
    target: np.ndarray
    low_res: np.ndarray
    outputs: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    channels: int = 0


@torch.no_grad()
def compare_level(
    target_feats: Mapping[str, Tensor],
    low_feats: Mapping[str, Tensor],
    upsamplers: Mapping[str, nn.Module],
    level: str,
    reduction: str | int = "mean",
) -> ComparisonPanels:
    """Upsample ``low_feats[level]`` with every upsampler and compare with ``target_feats[level]``.

    Args:
        target_feats, low_feats: from :func:`extract_pair`, ``{level: (1, C, H, W)}``.
        upsamplers: ``{name: module}``, each ``forward(x, size)`` -> (1, C, *size).
        level: which level to compare.
        reduction: see :func:`reduce_channels`.
    """
    if level not in target_feats:
        raise ValueError(f"unknown level {level!r}; valid: {', '.join(target_feats)}")
    target, low = target_feats[level], low_feats[level]
    size = tuple(target.shape[-2:])
    outputs, errors, metrics = {}, {}, {}
    for name, up in upsamplers.items():
        was_training = up.training
        up.eval()
        try:
            dev = _device_of(up)
            out = up(low.to(dev), size=size).cpu()
        finally:
            up.train(was_training)
        if out.shape != target.shape:
            raise ValueError(f"upsampler {name!r} returned {tuple(out.shape)}, expected {tuple(target.shape)}")
        outputs[name] = reduce_channels(out, reduction).numpy()
        diff = (out - target).abs()
        errors[name] = reduce_channels(diff, reduction).abs().numpy()
        metrics[name] = fidelity_metrics(out, target)
    return ComparisonPanels(
        level=level,
        reduction=reduction,
        target=reduce_channels(target, reduction).numpy(),
        low_res=reduce_channels(low, reduction).numpy(),
        outputs=outputs,
        errors=errors,
        metrics=metrics,
        channels=int(target.shape[1]),
    )


def _describe(reduction: str | int) -> str:
    if reduction == "mean":
        return "mean over channels"
    if reduction == "max_abs":
        return "max |x| over channels"
    return f"channel {reduction}"


def plot_comparison(
    panels: ComparisonPanels, image: Tensor | None = None, fig: Figure | None = None, panel_size: float = 2.1
) -> Figure:
    """Draw a :class:`ComparisonPanels` as a 2-row grid.

    Top row: the target F(I_tr)_i, then each upsampler's output (one shared colour scale).
    Bottom row: the input F(I_lr)_i (or the image, if given, first), then each |error| map
    (one shared colour scale, so darker is better everywhere). Titles carry L1 / PSNR / cosine.

    Returns a :class:`matplotlib.figure.Figure` not registered with pyplot (no double display in
    notebooks; ``fig.savefig`` works as usual).
    """
    names = list(panels.outputs)
    extra = 1 if image is not None else 0
    ncols = 1 + extra + len(names)
    if fig is None:
        fig = Figure(figsize=(panel_size * ncols, panel_size * 2 + 0.6), layout="constrained")
    axes = fig.subplots(2, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])

    # One colour scale for the target and every output (1st-99th percentile of all of them).
    lo, hi = np.percentile(
        np.concatenate([panels.target.ravel(), *(o.ravel() for o in panels.outputs.values())]), [1, 99]
    )
    if hi <= lo:
        hi = lo + 1e-6
    err_max = max((float(np.percentile(e, 99)) for e in panels.errors.values()), default=1.0) or 1e-6

    if image is not None:
        axes[0, 0].imshow(image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
        axes[0, 0].set_title("image $I_{tr}$", fontsize=9)
        axes[1, 0].axis("off")
    col = extra
    axes[0, col].imshow(panels.target, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
    axes[0, col].set_title(f"target $F(I_{{tr}})$, level {panels.level}", fontsize=9)
    axes[1, col].imshow(panels.low_res, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
    axes[1, col].set_title("input $F(I_{lr})$", fontsize=9)
    err_im = None
    for j, name in enumerate(names, start=col + 1):
        axes[0, j].imshow(panels.outputs[name], cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        axes[0, j].set_title(name, fontsize=9)
        err_im = axes[1, j].imshow(panels.errors[name], cmap="magma", vmin=0, vmax=err_max, interpolation="nearest")
        m = panels.metrics.get(name)
        label = f"|error|\nL1 {m['l1']:.3g}, {m['psnr']:.1f} dB, cos {m['cosine']:.3f}" if m else "|error|"
        axes[1, j].set_title(label, fontsize=8)
    if err_im is not None:
        fig.colorbar(err_im, ax=axes[1, col + 1 :].tolist(), shrink=0.8, label="|error|")
    fig.suptitle(f"FPN level {panels.level} ({panels.channels} channels), {_describe(panels.reduction)}", fontsize=10)
    return fig


def comparison_figure(
    extractor: nn.Module,
    upsamplers: Mapping[str, nn.Module],
    image: Tensor,
    level: str = "0",
    reduction: str | int = "mean",
    scale: float = 0.5,
    mode: str = "bilinear",
    show_image: bool = True,
) -> Figure:
    """One image, one level: compute the comparison and draw it (the static form of the widget)."""
    target, low = extract_pair(extractor, image, scale, mode)
    panels = compare_level(target, low, upsamplers, level, reduction)
    return plot_comparison(panels, image=image if show_image else None)
