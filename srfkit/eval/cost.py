"""Parameters and inference latency of a model (the paper's Table 1 columns "# Params" and "Time")."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["cost", "count_parameters", "example_input", "time_interleaved"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def example_input(model: nn.Module, image_size: int | tuple[int, int], device: str | torch.device = "cpu") -> Any:
    """A fixed random image in [0, 1] of side ``image_size`` (or (H, W)) in the form ``model`` takes:
    ``[image (3, H, W)]`` for a torchvision detector (it owns a ``transform``), else (1, 3, H, W)."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, h, w, generator=gen).to(torch.device(device))
    # torchvision detectors (they own a GeneralizedRCNNTransform) take a list of (3, H, W) images.
    return [image] if hasattr(getattr(model, "module", model), "transform") else image[None]


def time_interleaved(
    calls: Mapping[Hashable, Callable[[], Any]],
    device: str | torch.device = "cpu",
    warmup: int = 2,
    runs: int = 10,
    seed: int = 0,
    rounds: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> dict[Hashable, list[float]]:
    """Milliseconds of every call in ``calls``, timed interleaved: each of ``warmup + runs`` rounds runs
    every call once, in a seeded random order per round, so that clock ramps, cache state and changes in
    machine load hit them alike; the first ``warmup`` rounds are discarded. On CUDA the device is
    synchronised before and after each timed call. The calls run as given (wrap them in
    ``torch.inference_mode`` yourself).

    Args:
        calls: name -> a callable without arguments (one forward pass).
        rounds: wraps the round range, e.g. ``tqdm`` for progress.

    Returns:
        name -> ``runs`` timings in milliseconds, in round order.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = random.Random(seed)
    times: dict[Hashable, list[float]] = {name: [] for name in calls}
    for r in (rounds or iter)(range(warmup + runs)):
        order = list(calls)
        rng.shuffle(order)
        for name in order:
            sync()
            start = time.perf_counter()
            calls[name]()
            sync()
            if r >= warmup:
                times[name].append(1e3 * (time.perf_counter() - start))
    return times


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
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if inputs is None:
        inputs = example_input(model, image_size, device)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = model.training
    model.eval()
    try:
        times = time_interleaved({"model": lambda: model(*args)}, device, warmup, runs)["model"]
    finally:
        model.train(was_training)
    return {"params": count_parameters(model), "latency_ms": statistics.median(times)}
