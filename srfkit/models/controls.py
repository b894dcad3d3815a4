"""Control upsamplers: capacity in the top-down path without learned upsampling.

``nearest_conv`` (:class:`NearestConv`) asks whether the paper-form G helps an FPN because it upsamples
with learned weights or only because it adds capacity to the top-down path (8.2M parameters and 24
conv/BN layers at C=256, 514K at C=64, one module shared by the steps). It has G's layers, parameter
for parameter, but runs them at the coarse resolution and then upsamples with nearest x2, so its
upsampling itself is the baseline's.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .generator import ResidualBlock
from .upsamplers import fit_to_size, learned_output_size, register_upsampler

__all__ = ["NearestConv"]


class NearestConv(nn.Module):
    """Nearest x2 after G-sized convolutions at the low resolution.

    ``forward(x, size=None)``: (N, C, H, W) -> (N, C, *size), ``size`` defaulting to (2H, 2W)::

        out = crop(nearest_x2(x + body(x)), size)

    ``body`` is the paper-form :class:`~srfkit.models.SRFGenerator` (``variant="paper"``) layer for layer,
    except that G's 4x4 stride-2 transposed conv is a 4x4 stride-1 conv with "same" padding (1 row and
    column before, 2 after, as ``padding="same"`` pads an even kernel), so the body keeps (H, W):
    3x3 conv + LeakyReLU(0.2); ``num_blocks`` residual blocks (conv-BN-LReLU-conv-BN, identity skip);
    3x3 conv + LReLU; 4x4 conv + LReLU; 1x1 conv. A 4x4 conv and a 4x4 transposed conv of C -> C
    channels both have C*C*16 + C parameters, so the count equals G's exactly: 514,176 at C=64 and
    8,200,704 at C=256 (5 blocks), in the same 24 conv/BN layers. Default PyTorch initialisation, as G's.

    ``size`` follows the learned upsamplers' rule (:func:`~srfkit.models.upsamplers.learned_output_size`):
    (2H or 2H - 1) x (2W or 2W - 1), anything else is a ``ValueError``; the x2 map is cropped
    bottom/right, not resampled.

    Args:
        channels: feature channels C.
        num_blocks: residual blocks (5, as the paper's G).
    """

    def __init__(self, channels: int = 256, num_blocks: int = 5) -> None:
        super().__init__()
        self.channels = channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            *(ResidualBlock(channels) for _ in range(num_blocks)),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.ZeroPad2d((1, 2, 1, 2)),  # what padding="same" does for k=4, without its copy warning
            nn.Conv2d(channels, channels, 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, *size), ``size`` defaulting to (2H, 2W)."""
        size = learned_output_size(x, size, 2, "NearestConv")
        h, w = x.shape[-2:]
        up = F.interpolate(x + self.body(x), size=(2 * h, 2 * w), mode="nearest")
        return fit_to_size(up, size)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


@register_upsampler("nearest_conv")
def _nearest_conv(channels: int, num_blocks: int = 5) -> NearestConv:
    return NearestConv(channels, num_blocks=num_blocks)
