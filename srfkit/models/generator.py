"""The SRF generator G: a learned x2 feature upsampler (paper section 3.1, Fig. 1 (1)).

Variants (all map ``(N, C, H, W)`` to ``(N, C, 2H, 2W)`` plus a bilinear x2 shortcut of the input):

* ``paper``: 3x3 conv + LeakyReLU(0.2); ``num_blocks`` residual blocks (conv-BN-LReLU-conv-BN,
  identity skip); a 3x3 conv block and a 4x4 stride-2 transposed conv block (each + LReLU); a 1x1
  conv back to C. About 8.2M parameters at C=256, 5 blocks.
* ``released``: the authors' released ``generator_rdb.py``: 3x3 conv, one residual-in-residual
  dense block (3 dense blocks, growth 32, 5 convs each, no BN, residual scale 0.2, Kaiming init x0.1),
  3x3 conv + LReLU, ``ConvTranspose2d(C, C, 6, 2, 2)`` + LReLU, 3x3 output conv. About 7.8M at C=256.
* ``light``: the paper form with a narrow body: a 1x1 conv squeezes C to C/4, two residual
  blocks, and a sub-pixel (PixelShuffle) x2 step instead of the transposed conv.
* ``depthwise``: the paper form with depthwise-separable 3x3 convs everywhere and a
  PixelShuffle x2 step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .upsamplers import fit_to_size, register_upsampler, target_size

__all__ = ["SRFGenerator", "GENERATOR_VARIANTS"]

GENERATOR_VARIANTS = ("paper", "released", "light", "depthwise")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


def _conv3x3(in_ch: int, out_ch: int, depthwise: bool = False) -> nn.Module:
    if not depthwise:
        return nn.Conv2d(in_ch, out_ch, 3, padding=1)
    return nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1))


class ResidualBlock(nn.Module):
    """conv-BN-LReLU-conv-BN with an identity skip (SRGAN's block). Shape-preserving."""

    def __init__(self, channels: int, depthwise: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(channels, channels, depthwise),
            nn.BatchNorm2d(channels),
            _lrelu(),
            _conv3x3(channels, channels, depthwise),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DenseBlock(nn.Module):
    """ESRGAN's residual dense block: 5 convs, each seeing all earlier outputs; no BN."""

    def __init__(self, channels: int, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < 4 else channels, 3, padding=1) for i in range(5)
        )
        self.res_scale = res_scale
        for conv in self.convs:
            nn.init.kaiming_normal_(conv.weight, a=0.0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            out = conv(torch.cat(feats, dim=1))
            if i < 4:
                feats.append(F.leaky_relu(out, 0.2))
        return x + self.res_scale * out


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer scaled skip."""

    def __init__(self, channels: int, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(channels, growth, res_scale) for _ in range(3)))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.blocks(x)


class SRFGenerator(nn.Module):
    """The SRF generator G. ``forward(x, size=None)``: (N, C, H, W) -> (N, C, 2H, 2W) or ``size``.

    The learned branch makes ``(2H, 2W)`` and is cropped (or replicate-padded) to ``size``; the
    shortcut is ``F.interpolate(x, size, mode="bilinear")``. So at ``size=(2H, 2W)`` the output is
    exactly ``body(x) + bilinear_x2(x)`` as in the paper, and odd FPN laterals also work.

    Args:
        channels: feature channels C (256 in the paper).
        num_blocks: residual blocks (``paper``, ``depthwise``: 5; ``light``: 2 by default).
            The ``released`` form always has one RRDB.
        variant: one of ``paper``, ``released``, ``light``, ``depthwise``.
    """

    def __init__(self, channels: int = 256, num_blocks: int | None = None, variant: str = "paper") -> None:
        super().__init__()
        if variant not in GENERATOR_VARIANTS:
            raise ValueError(f"unknown generator variant {variant!r}; valid: {', '.join(GENERATOR_VARIANTS)}")
        self.channels = channels
        self.variant = variant
        if variant == "paper":
            self.net = self._paper(channels, 5 if num_blocks is None else num_blocks, depthwise=False)
        elif variant == "depthwise":
            self.net = self._paper(channels, 5 if num_blocks is None else num_blocks, depthwise=True)
        elif variant == "light":
            self.net = self._light(channels, 2 if num_blocks is None else num_blocks)
        else:
            self.net = self._released(channels)

    @staticmethod
    def _paper(c: int, num_blocks: int, depthwise: bool) -> nn.Sequential:
        if depthwise:
            up = [nn.Conv2d(c, 4 * c, 1), nn.PixelShuffle(2), _lrelu()]
        else:
            up = [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), _lrelu()]
        return nn.Sequential(
            _conv3x3(c, c, depthwise),
            _lrelu(),
            *(ResidualBlock(c, depthwise) for _ in range(num_blocks)),
            _conv3x3(c, c, depthwise),
            _lrelu(),
            *up,
            nn.Conv2d(c, c, 1),
        )

    @staticmethod
    def _light(c: int, num_blocks: int) -> nn.Sequential:
        w = max(c // 4, 8)
        return nn.Sequential(
            nn.Conv2d(c, w, 1),
            _lrelu(),
            *(ResidualBlock(w) for _ in range(num_blocks)),
            nn.Conv2d(w, 4 * w, 3, padding=1),
            nn.PixelShuffle(2),
            _lrelu(),
            nn.Conv2d(w, c, 1),
        )

    @staticmethod
    def _released(c: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1),
            RRDB(c),
            nn.Conv2d(c, c, 3, padding=1),
            _lrelu(),
            nn.ConvTranspose2d(c, c, 6, stride=2, padding=2),
            _lrelu(),
            nn.Conv2d(c, c, 3, padding=1),
        )

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, *size), ``size`` defaulting to (2H, 2W)."""
        size = target_size(x, size)
        residual = fit_to_size(self.net(x), size)
        return residual + F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, variant={self.variant!r}"


@register_upsampler("srf")
def _srf(channels: int, num_blocks: int | None = None, variant: str = "paper") -> SRFGenerator:
    return SRFGenerator(channels, num_blocks=num_blocks, variant=variant)


@register_upsampler("srf_light")
def _srf_light(channels: int, num_blocks: int | None = None) -> SRFGenerator:
    return SRFGenerator(channels, num_blocks=num_blocks, variant="light")


@register_upsampler("srf_depthwise")
def _srf_depthwise(channels: int, num_blocks: int | None = None) -> SRFGenerator:
    return SRFGenerator(channels, num_blocks=num_blocks, variant="depthwise")
