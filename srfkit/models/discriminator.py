"""The feature-patch discriminator D (paper section 3.1, Fig. 1 (2))."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FeaturePatchDiscriminator"]


class FeaturePatchDiscriminator(nn.Module):
    """Three 3x3 conv + BN + LeakyReLU(0.2) blocks, then a 1x1 conv to one logit per pixel.

    ``forward``: (N, C, H, W) feature map -> (N, 1, H, W) logits. The paper applies a sigmoid and
    a log; here the sigmoid lives in the loss (``binary_cross_entropy_with_logits``), which computes
    the same quantity without overflow.

    Args:
        channels: input feature channels C.
        widths: output channels of the three conv blocks (512, 1024, 1024 in the paper).
    """

    def __init__(self, channels: int = 256, widths: tuple[int, ...] = (512, 1024, 1024)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for width in widths:
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(in_ch, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
