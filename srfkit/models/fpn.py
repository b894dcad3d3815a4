"""torchvision's FeaturePyramidNetwork with a pluggable top-down upsampler."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from .upsamplers import make_upsampler

__all__ = ["PerStepUpsampler", "SRFFeaturePyramidNetwork", "build_fpn_upsampler", "is_shared", "upsample_step"]


class PerStepUpsampler(nn.Module):
    """One upsampler per FPN top-down step, behind one module (so ``fpn.upsampler`` holds them all).

    ``forward(x, size=None, *, step)``: ``steps[step](x, size=size)``, (N, C, H, W) -> (N, C, *size).
    Step ``i`` makes FPN level ``i`` (finest first) from level ``i + 1``; state-dict keys are
    ``steps.{i}.<the module's own keys>``.

    Args:
        modules: the upsamplers, one per step, finest first.
    """

    def __init__(self, modules: Iterable[nn.Module]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(modules)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, step: int) -> nn.Module:
        return self.steps[step]

    def forward(self, x: Tensor, size: tuple[int, int] | None = None, *, step: int) -> Tensor:
        """(N, C, H, W) -> (N, C, *size) with the module of top-down step ``step``."""
        return self.steps[step](x, size=size)


def upsample_step(upsampler: nn.Module, x: Tensor, size: tuple[int, int], step: int) -> Tensor:
    """One FPN top-down step, (N, C, H, W) -> (N, C, *size): ``upsampler(x, size=size)``, or with
    ``step=step`` (the finest-first index of the level it makes) for a :class:`PerStepUpsampler`."""
    if isinstance(upsampler, PerStepUpsampler):
        return upsampler(x, size=size, step=step)
    return upsampler(x, size=size)


def is_shared(module: nn.Module, share: bool | None = None) -> bool:
    """Whether an FPN built with ``module``'s kind of upsampler shares one module across its top-down
    steps: ``share`` when given, else not for upsamplers that declare ``one_per_fpn_step = True``."""
    return share if share is not None else not getattr(module, "one_per_fpn_step", False)


def build_fpn_upsampler(
    upsampler: str | nn.Module,
    channels: int,
    num_steps: int,
    upsampler_kwargs: dict | None = None,
    share: bool | None = None,
) -> nn.Module:
    """The top-down upsampler of an FPN with ``num_steps`` top-down steps: one shared module or one per step.

    The one rule of both of srfkit's FPNs (:class:`SRFFeaturePyramidNetwork` and detectron2's
    :class:`srfkit.detection.d2.backbone.SRFFPN`). The result maps (N, C, H, W) -> (N, C, *size):
    shared, as ``module(x, size=size)``; per step, as ``module(x, size=size, step=i)`` with ``i`` the
    finest-first index of the level the step makes (0 .. ``num_steps - 1``).

    Args:
        upsampler: a registry name (see :func:`srfkit.models.make_upsampler`), a module, or a
            :class:`PerStepUpsampler` with ``num_steps`` modules (returned as it is; ``share=True``
            refused).
        channels: FPN width C.
        num_steps: top-down steps of the FPN (its levels less one).
        upsampler_kwargs: options passed to the registry constructor.
        share: ``True``: one module for all steps. ``False``: a :class:`PerStepUpsampler`; by name each
            module is built (and initialised) separately, while a module given is used for step 0 and
            deep-copied for the others, each copy re-initialised with its ``reset_parameters()`` when it
            has one. ``None``: per step for upsamplers that declare ``one_per_fpn_step = True``
            (``dysample``, ``dysample_dynamic``, ``carafe``), shared for the rest (the ``srf``
            generators and the fixed interpolations).
    """
    if isinstance(upsampler, PerStepUpsampler):
        if share:
            raise ValueError(f"a PerStepUpsampler ({len(upsampler)} modules) cannot serve as one shared upsampler")
        if len(upsampler) != num_steps:
            raise ValueError(
                f"the PerStepUpsampler has {len(upsampler)} modules; the FPN has {num_steps} top-down steps"
            )
        return upsampler
    kwargs = upsampler_kwargs or {}
    first = make_upsampler(upsampler, channels, **kwargs)
    if is_shared(first, share):
        return first
    modules = [first]
    for _ in range(num_steps - 1):
        if isinstance(upsampler, nn.Module):
            module = copy.deepcopy(first)
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
        else:
            module = make_upsampler(upsampler, channels, **kwargs)
        modules.append(module)
    return PerStepUpsampler(modules)


class SRFFeaturePyramidNetwork(FeaturePyramidNetwork):
    """FPN whose top-down interpolation is a module (nearest, bilinear, bicubic, SRF, ...).

    Identical to :class:`torchvision.ops.FeaturePyramidNetwork` (same ``inner_blocks`` and
    ``layer_blocks`` parameter names, same initialisation) except that
    ``F.interpolate(last_inner, size=lateral_size, mode="nearest")`` becomes
    ``self.upsampler(last_inner, size=lateral_size)``. A plain FPN's state dict loads with
    ``strict=False`` and only the upsampler's keys reported missing (none at all for the fixed
    interpolations).

    ``self.upsampler`` always holds every upsampler parameter of the FPN (to freeze, count or load
    them). Shared, it is the one module that serves every top-down step, as the paper and the
    authors' code do with G (keys ``upsampler.*``). Per step, it is a :class:`PerStepUpsampler` with
    one module per step, as the published DySample and CARAFE necks have (keys
    ``upsampler.steps.{i}.*``, ``i`` the level the step makes, finest first).

    Args:
        in_channels_list: channels of each backbone level, finest first.
        out_channels: FPN width C.
        upsampler: a registry name (see :func:`srfkit.models.make_upsampler`), a module, or a
            :class:`PerStepUpsampler` with one module per top-down step.
        extra_blocks: as in torchvision (e.g. ``LastLevelMaxPool`` for P6).
        norm_layer: as in torchvision.
        upsampler_kwargs: options passed to the registry constructor.
        share_upsampler: ``True``: one module for all steps. ``False``: one per step; by name each is
            built (and initialised) separately, while a module given is used for step 0 and
            deep-copied for the others, each copy re-initialised with its ``reset_parameters()`` when
            it has one. ``None`` (default): per step for upsamplers that declare
            ``one_per_fpn_step = True`` (``dysample``, ``dysample_dynamic``, ``carafe``), shared for the
            rest (the ``srf`` generators and the fixed interpolations). See :func:`build_fpn_upsampler`.

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
        share_upsampler: bool | None = None,
    ) -> None:
        super().__init__(in_channels_list, out_channels, extra_blocks=extra_blocks, norm_layer=norm_layer)
        self.upsampler = build_fpn_upsampler(
            upsampler, out_channels, len(in_channels_list) - 1, upsampler_kwargs, share=share_upsampler
        )

    @property
    def shares_upsampler(self) -> bool:
        """Whether one upsampler module serves every top-down step."""
        return not isinstance(self.upsampler, PerStepUpsampler)

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        names = list(x.keys())
        feats = list(x.values())
        last_inner = self.get_result_from_inner_blocks(feats[-1], -1)
        results = [self.get_result_from_layer_blocks(last_inner, -1)]
        for idx in range(len(feats) - 2, -1, -1):
            inner_lateral = self.get_result_from_inner_blocks(feats[idx], idx)
            size = inner_lateral.shape[-2:]
            last_inner = inner_lateral + upsample_step(self.upsampler, last_inner, size, step=idx)
            results.insert(0, self.get_result_from_layer_blocks(last_inner, idx))

        if self.extra_blocks is not None:
            results, names = self.extra_blocks(results, feats, names)
        return OrderedDict(zip(names, results))
