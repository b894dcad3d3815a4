"""torchvision's FeaturePyramidNetwork with a pluggable top-down upsampler."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from .upsamplers import make_upsampler

__all__ = ["SRFFeaturePyramidNetwork"]


class SRFFeaturePyramidNetwork(FeaturePyramidNetwork):
    """FPN whose top-down interpolation is a module (nearest, bilinear, bicubic, SRF, ...).

    Identical to :class:`torchvision.ops.FeaturePyramidNetwork` (same ``inner_blocks`` and
    ``layer_blocks`` parameter names, same initialisation) except that
    ``F.interpolate(last_inner, size=lateral_size, mode="nearest")`` becomes
    ``self.upsampler(last_inner, size=lateral_size)``. One upsampler instance serves every
    top-down step, as in the paper. A plain FPN's state dict loads with ``strict=False`` and only
    the upsampler's keys reported missing (none at all for the fixed interpolations).

    Args:
        in_channels_list: channels of each backbone level, finest first.
        out_channels: FPN width C.
        upsampler: a registry name (see :func:`srfkit.models.make_upsampler`) or a module.
        extra_blocks: as in torchvision (e.g. ``LastLevelMaxPool`` for P6).
        norm_layer: as in torchvision.
        upsampler_kwargs: options passed to the registry constructor.

    Input: ``OrderedDict`` of (N, C_l, H_l, W_l), finest first. Output: ``OrderedDict`` of
    (N, C, H_l, W_l) with the same keys (plus those the extra block adds).
    """

    def __init__(
        self,
        in_channels_list: list[int],
        out_channels: int,
        upsampler: str | nn.Module = "nearest",
        extra_blocks: ExtraFPNBlock | None = None,
        norm_layer: Callable[..., nn.Module] | None = None,
        upsampler_kwargs: dict | None = None,
    ) -> None:
        super().__init__(in_channels_list, out_channels, extra_blocks=extra_blocks, norm_layer=norm_layer)
        self.upsampler = make_upsampler(upsampler, out_channels, **(upsampler_kwargs or {}))

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        names = list(x.keys())
        feats = list(x.values())

        last_inner = self.get_result_from_inner_blocks(feats[-1], -1)
        results = [self.get_result_from_layer_blocks(last_inner, -1)]
        for idx in range(len(feats) - 2, -1, -1):
            inner_lateral = self.get_result_from_inner_blocks(feats[idx], idx)
            inner_top_down = self.upsampler(last_inner, size=inner_lateral.shape[-2:])
            last_inner = inner_lateral + inner_top_down
            results.insert(0, self.get_result_from_layer_blocks(last_inner, idx))

        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, feats, names)
        return OrderedDict(zip(names, results))
