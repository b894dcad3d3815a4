"""The feature-patch discriminator D (paper section 3.1, Fig. 1 (2))."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["FeaturePatchDiscriminator", "DISCRIMINATOR_HEADS"]

DISCRIMINATOR_HEADS = {"paper": 1, "authors": 3}
"""Output conv kernel size of each ``head`` option of :class:`FeaturePatchDiscriminator`."""


class FeaturePatchDiscriminator(nn.Module):
    """Three 3x3 conv + BN + LeakyReLU(0.2) blocks, then an output conv to one logit per pixel.

    ``forward``: (N, C, H, W) feature map -> (N, 1, H, W) logits. The paper applies a sigmoid and
    a log; here the sigmoid lives in the loss (``binary_cross_entropy_with_logits``), which computes
    the same quantity without overflow.

    Args:
        channels: input feature channels C.
        widths: output channels of the three conv blocks (512, 1024, 1024 in the paper).
        head: the output conv (``classifier``): ``"paper"`` (default) a 1x1 conv, the paper's 1x1 conv
            whose sigmoid is in the loss; ``"authors"`` a 3x3 conv (padding 1), as in the authors'
            released code. At C=256 and the paper's widths D has 15,344,129 parameters with the paper
            head and 15,352,321 with the authors' one.
    """

    def __init__(self, channels: int = 256, widths: tuple[int, ...] = (512, 1024, 1024), head: str = "paper") -> None:
        super().__init__()
        if head not in DISCRIMINATOR_HEADS:
            raise ValueError(f"unknown discriminator head {head!r}; valid: {', '.join(DISCRIMINATOR_HEADS)}")
        layers: list[nn.Module] = []
        in_ch = channels
        for width in widths:
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = width
        self.head = head
        self.features = nn.Sequential(*layers)
        k = DISCRIMINATOR_HEADS[head]
        self.classifier = nn.Conv2d(in_ch, 1, k, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def extra_repr(self) -> str:
        return f"head={self.head!r}"
