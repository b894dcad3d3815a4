"""Parameters and inference latency of a model (the paper's Table 1 columns "# Params" and "Time")."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn

__all__ = ["cost", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example_input(model: nn.Module, image_size: int | tuple[int, int], device: torch.device) -> Any:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, h, w, generator=gen).to(device)
    # torchvision detectors (they own a GeneralizedRCNNTransform) take a list of (3, H, W) images.
    return [image] if hasattr(getattr(model, "module", model), "transform") else image[None]


@torch.no_grad()
def cost(
    model: nn.Module,
    image_size: int | tuple[int, int],
    device: str | torch.device | None = None,
    warmup: int = 2,
    runs: int = 10,
    inputs: Any = None,
) -> dict[str, float | int]:
    """Parameter count and median latency of one forward pass on one image.

    The model runs in eval mode under ``torch.no_grad`` (its mode is restored); ``warmup`` passes
    are discarded, then ``runs`` passes are timed one by one (CUDA synchronised around each).

    Args:
        model: any module. A torchvision detector gets ``[image (3, H, W)]``, anything else
            ``image[None]`` (1, 3, H, W): a fixed random image in [0, 1].
        image_size: side, or (H, W), of that image in pixels.
        device: where to run (default: where the model's parameters are); the model is not moved.
        warmup, runs: untimed and timed passes.
        inputs: the forward's argument instead of the random image (a tuple is unpacked), e.g.
            a (1, C, h, w) feature map for an upsampler.

    Returns:
        ``{"params": int, "latency_ms": float}``: all parameters, median milliseconds per pass.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if inputs is None:
        inputs = _example_input(model, image_size, device)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + runs):
            sync()
            start = time.perf_counter()
            model(*args)
            sync()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return {"params": count_parameters(model), "latency_ms": 1000.0 * statistics.median(times)}
