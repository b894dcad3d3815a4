"""Feature upsamplers behind one interface, and the registry that names them.

Every upsampler is an ``nn.Module`` whose ``forward(x, size=None)`` maps ``(N, C, H, W)`` to
``(N, C, *size)``, or to ``(N, C, 2H, 2W)`` when ``size`` is ``None``. The FPN top-down path calls
it with the lateral's spatial size, which inside a detector is exactly ``(2H, 2W)`` and outside
one may be one pixel less (odd lateral sizes).

Learned upsamplers (the SRF generators, DySample, CARAFE) make ``(2H, 2W)`` and only allow that crop:
:func:`learned_output_size` is the one check they all call, and any other ``size`` is a
``ValueError`` naming the input and requested sizes. The fixed interpolations accept any size, as
torchvision's FPN does.

Add an upsampler with ``@register_upsampler("name")`` on a class whose constructor takes
``channels`` as its first argument (plus keyword options); callers then reach it through
:func:`make_upsampler` without any change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Interpolation",
    "UPSAMPLERS",
    "register_upsampler",
    "make_upsampler",
    "upsampler_names",
    "target_size",
    "learned_output_size",
    "fit_to_size",
]

UPSAMPLERS: dict[str, Callable[..., nn.Module]] = {}


def register_upsampler(name: str) -> Callable:
    """Class decorator that adds an upsampler to the registry under ``name``."""

    def wrap(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in UPSAMPLERS:
            raise ValueError(f"upsampler {name!r} is already registered")
        UPSAMPLERS[name] = cls
        return cls

    return wrap


def upsampler_names() -> list[str]:
    """Names of every registered upsampler, in registration order."""
    return list(UPSAMPLERS)


def make_upsampler(name: str | nn.Module, channels: int, **kwargs) -> nn.Module:
    """Build a registered upsampler (or return ``name`` itself if it already is a module).

    Args:
        name: registry name (``nearest``, ``bilinear``, ``bicubic``, ``srf``, ...) or a module.
        channels: feature channels C of the maps it will upsample.
        **kwargs: options of that upsampler (for ``srf``: ``num_blocks``, ``variant``).
    """
    if isinstance(name, nn.Module):
        return name
    if name not in UPSAMPLERS:
        raise ValueError(f"unknown upsampler {name!r}; valid: {', '.join(UPSAMPLERS)}")
    return UPSAMPLERS[name](channels, **kwargs)


def target_size(x: Tensor, size: tuple[int, int] | torch.Size | None) -> tuple[int, int]:
    """``size`` as a tuple, or ``(2H, 2W)`` of ``x`` when ``size`` is ``None``."""
    if size is None:
        return 2 * x.shape[-2], 2 * x.shape[-1]
    return int(size[0]), int(size[1])


def learned_output_size(
    x: Tensor, size: tuple[int, int] | torch.Size | None, scale: int = 2, name: str = "upsampler"
) -> tuple[int, int]:
    """The output size of a learned x``scale`` upsampler of ``x`` (N, C, H, W), checked.

    ``size`` (or ``(sH, sW)`` when ``None``) must be ``sH`` or down to ``s - 1`` less in each dimension
    (for s = 2: ``{2H - 1, 2H} x {2W - 1, 2W}``): the one-pixel crop an odd FPN lateral needs, since a
    stride-2 map of a side-``L`` map has side ``ceil(L / 2)``. Anything else raises ``ValueError``
    naming both sizes, instead of a silent crop or pad.
    """
    h, w = x.shape[-2:]
    if size is None:
        return scale * h, scale * w
    out = int(size[0]), int(size[1])
    if not all(scale * n - (scale - 1) <= m <= scale * n for n, m in zip((h, w), out)):
        raise ValueError(
            f"{name}: cannot upsample a {h}x{w} map to {out[0]}x{out[1]}: a learned x{scale} upsampler makes "
            f"{scale * h}x{scale * w} and crops at most {scale - 1} pixel(s) per side "
            f"(rows {scale * h - scale + 1}..{scale * h}, columns {scale * w - scale + 1}..{scale * w})"
        )
    return out


def fit_to_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop (bottom/right) or replicate-pad ``x`` (N, C, H, W) to spatial ``size``.

    A general-purpose helper that never raises: learned upsamplers first check ``size`` with
    :func:`learned_output_size` and then only ever crop with it; losses use it to match maps.
    """
    h, w = size
    x = x[..., :h, :w]
    pad_h, pad_w = h - x.shape[-2], w - x.shape[-1]
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x


class Interpolation(nn.Module):
    """Fixed interpolation (no parameters), the FPN baseline.

    Args:
        channels: unused; kept so every upsampler shares one constructor signature.
        mode: ``nearest``, ``bilinear`` or ``bicubic`` (``align_corners=False``).
    """

    def __init__(self, channels: int = 0, mode: str = "nearest") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, *size) or (N, C, 2H, 2W)."""
        size = target_size(x, size)
        if self.mode == "nearest":
            # Exactly what torchvision's FeaturePyramidNetwork calls.
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


for _mode in ("nearest", "bilinear", "bicubic"):

    def _factory(channels: int = 0, _mode: str = _mode) -> Interpolation:
        return Interpolation(channels, mode=_mode)

    register_upsampler(_mode)(_factory)
