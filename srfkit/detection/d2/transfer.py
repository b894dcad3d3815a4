"""A srfkit (torchvision-engine) detector's backbone + FPN + G as the start of a detectron2 detector.

The detectron2 twin of :func:`srfkit.detection.transfer_backbone`: :func:`torchvision_to_detectron2`
copies the feature part of a detector built by :func:`srfkit.detection.build_detector` (typically the
stage-2 extractor M, :func:`srfkit.train.load_detector`) into a detectron2 model whose backbone is
srfkit's :class:`~.backbone.SRFFPN`, and never a head. The two engines name the same things
differently:

============================================  ==================================================
torchvision (srfkit)                          detectron2 (srfkit's SRF-FPN backbone)
============================================  ==================================================
``backbone.body.conv1`` / ``bn1``             ``backbone.bottom_up.stem.conv1`` / ``.norm``
``backbone.body.layerK.i.convJ`` / ``bnJ``    ``backbone.bottom_up.res{K+1}.i.convJ`` / ``.norm``
``backbone.body.layerK.i.downsample.0/1``     ``backbone.bottom_up.res{K+1}.i.shortcut`` / ``.norm``
``backbone.fpn.inner_blocks.i`` (of P_k)      ``backbone.fpn_lateral{k}``
``backbone.fpn.layer_blocks.i`` (of P_k)      ``backbone.fpn_output{k}``
``backbone.fpn.extra_blocks.p6/p7``           ``backbone.top_block.p6/p7`` (same kind only)
``backbone.fpn.upsampler`` (G)                ``backbone.srf_module`` (the same srfkit module)
``backbone.fpn.upsampler.steps.{i}`` (P_k)    ``backbone.srf_module.steps.{j}`` (of P_k)
============================================  ==================================================

An FPN with one upsampler per top-down step (DySample, CARAFE: a
:class:`~srfkit.models.fpn.PerStepUpsampler`) keeps step ``i`` under ``steps.{i}``, ``i`` the
finest-first index of the level the step makes, on both sides; steps are paired by that level (the
same index when both FPNs have the same levels).

FPN convs are paired by the pyramid level they serve (P_k has stride 2**k), never by list index.
Before anything is copied every pair is checked: block type and blocks per stage (the ResNet depth),
widths, norm kind (GroupNorm against ``GN``; BatchNorm and FrozenBN against ``BN``, ``SyncBN`` or
``FrozenBN``: the four tensors of a BatchNorm are those of a frozen one), each conv's kernel, stride,
padding, dilation and groups (torchvision strides a bottleneck in its 3x3 conv: the detectron2 config
needs ``MODEL.RESNETS.STRIDE_IN_1X1 False``), the FPN levels, G's kind, configuration and layout (one
shared module, or one per top-down step: ``MODEL.SRF.SHARE``), and, when the detectron2 model has
them, its input format and pixel statistics against the torchvision transform's. A mismatch raises
``ValueError`` naming both sides and leaves the destination unchanged.
"""

from __future__ import annotations

import math

import torch
from detectron2.layers import FrozenBatchNorm2d as D2FrozenBN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool as D2MaxPool
from detectron2.modeling.backbone.fpn import LastLevelP6P7 as D2P6P7
from detectron2.modeling.backbone.resnet import BasicBlock as D2Basic
from detectron2.modeling.backbone.resnet import BottleneckBlock as D2Bottleneck
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock as TVBasic
from torchvision.models.resnet import Bottleneck as TVBottleneck
from torchvision.ops import FrozenBatchNorm2d as TVFrozenBN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool as TVMaxPool
from torchvision.ops.feature_pyramid_network import LastLevelP6P7 as TVP6P7

from ...models.fpn import PerStepUpsampler
from ..transfer import pyramid_keys

__all__ = ["torchvision_to_detectron2"]

_BLOCKS = {TVBasic: "BasicBlock", TVBottleneck: "Bottleneck", D2Basic: "BasicBlock", D2Bottleneck: "Bottleneck"}
# torchvision's ResNets by (block, blocks per stage); detectron2 builds the same stage lengths for a DEPTH
_DEPTHS = {
    ("BasicBlock", (2, 2, 2, 2)): 18,
    ("BasicBlock", (3, 4, 6, 3)): 34,
    ("Bottleneck", (3, 4, 6, 3)): 50,
    ("Bottleneck", (3, 4, 23, 3)): 101,
    ("Bottleneck", (3, 8, 36, 3)): 152,
}


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _norm_kind(module: nn.Module | None) -> str:
    if module is None:
        return "none"
    if isinstance(module, nn.GroupNorm):
        return "GN"
    if isinstance(module, TVFrozenBN | D2FrozenBN):
        return "FrozenBN"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BN"
    return type(module).__name__


def _bn_family(kind: str) -> bool:
    return kind in ("BN", "FrozenBN")


def _resnet_name(block: str, lengths: tuple[int, ...]) -> str:
    depth = _DEPTHS.get((block, lengths))
    name = f"ResNet-{depth}" if depth else "ResNet"
    return f"{name} ({block}, blocks per stage {list(lengths)})"


class _Plan:
    """Tensor pairs to copy, each with its destination and source state-dict names; checks as it grows."""

    def __init__(self, src: nn.Module, dst: nn.Module) -> None:
        self.src_names = {id(m): n for n, m in src.named_modules()}
        self.dst_names = {id(m): n for n, m in dst.named_modules()}
        self.pairs: list[tuple[str, str, Tensor, Tensor]] = []  # (dst name, src name, dst tensor, src tensor)

    def name(self, module: nn.Module, side: str) -> str:
        return (self.src_names if side == "src" else self.dst_names).get(id(module), type(module).__name__)

    def _add(self, dst_mod: nn.Module, src_mod: nn.Module, dst_attr: str, src_attr: str) -> int:
        d, s = getattr(dst_mod, dst_attr), getattr(src_mod, src_attr)
        dname = f"{self.name(dst_mod, 'dst')}.{dst_attr}"
        sname = f"{self.name(src_mod, 'src')}.{src_attr}"
        if d.shape != s.shape:
            raise ValueError(
                f"cannot copy {sname} {tuple(s.shape)} into {dname} {tuple(d.shape)}: shapes differ "
                "(different ResNet depth or width, or FPN width?)"
            )
        self.pairs.append((dname, sname, d, s))
        return 1

    def conv(self, src: nn.Module, dst: nn.Module) -> int:
        """One conv's weight (and bias); kernel, stride, padding, dilation and groups must agree."""
        sname, dname = self.name(src, "src"), self.name(dst, "dst")
        if not (isinstance(src, nn.Conv2d) and isinstance(dst, nn.Conv2d)):
            raise ValueError(f"{sname} ({type(src).__name__}) and {dname} ({type(dst).__name__}) are not both convs")
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            a, b = getattr(src, attr), getattr(dst, attr)
            if a != b:
                hint = ""
                if attr == "stride" and dname.endswith((".conv1", ".conv2")) and ".res" in dname:
                    hint = " (torchvision strides a bottleneck in its 3x3 conv2: set MODEL.RESNETS.STRIDE_IN_1X1 False)"
                if attr == "dilation":
                    hint = " (torchvision's ResNet is not dilated: set MODEL.RESNETS.RES5_DILATION 1)"
                raise ValueError(f"{sname} has {attr}={a}, {dname} has {attr}={b}{hint}")
        if (src.bias is None) != (dst.bias is None):
            raise ValueError(f"{sname} {'has' if src.bias is not None else 'has no'} bias, {dname} does not agree")
        n = self._add(dst, src, "weight", "weight")
        if src.bias is not None:
            n += self._add(dst, src, "bias", "bias")
        return n

    def norm(self, src: nn.Module | None, dst: nn.Module | None, src_at: str = "", dst_at: str = "") -> int:
        """One norm layer: GN's weight and bias; a BatchNorm's or FrozenBN's weight, bias and running stats.

        ``src_at``/``dst_at``: where the norm would be (named when a side has none).
        """
        sk, dk = _norm_kind(src), _norm_kind(dst)
        sname = self.name(src, "src") if src is not None else f"{src_at} (without a norm)"
        dname = self.name(dst, "dst") if dst is not None else f"{dst_at} (without a norm)"
        if sk != dk and not (_bn_family(sk) and _bn_family(dk)):
            raise ValueError(
                f"norm kind differs: {sname} is {sk}, {dname} is {dk} "
                "(srfkit's profile norm against detectron2's MODEL.RESNETS.NORM / MODEL.FPN.NORM)"
            )
        if sk == "none":
            return 0
        if sk == "GN":
            if (src.num_groups, src.num_channels) != (dst.num_groups, dst.num_channels):
                raise ValueError(
                    f"{sname} is GroupNorm({src.num_groups}, {src.num_channels}), "
                    f"{dname} is GroupNorm({dst.num_groups}, {dst.num_channels})"
                )
            if src.affine != dst.affine:
                raise ValueError(f"{sname} and {dname}: one GroupNorm is affine, the other is not")
            names = ["weight", "bias"] if src.affine else []
        elif _bn_family(sk):
            names = ["weight", "bias", "running_mean", "running_var"]
            if (
                sk == "BN"
                and dk == "BN"
                and src.num_batches_tracked is not None
                and dst.num_batches_tracked is not None
            ):
                names.append("num_batches_tracked")
        else:
            raise ValueError(f"{sname}: unsupported norm layer {type(src).__name__}")
        if not math.isclose(float(src.eps), float(dst.eps), rel_tol=1e-6):
            raise ValueError(f"{sname} has eps={src.eps}, {dname} has eps={dst.eps}")
        return sum(self._add(dst, src, n, n) for n in names)

    def conv_norm(self, src_conv: nn.Module, src_norm: nn.Module | None, dst_conv: nn.Module) -> int:
        """torchvision's (conv, norm) into a detectron2 ``Conv2d`` whose norm is ``dst_conv.norm``."""
        # the norms first: a norm on one side only is named as such (not as a bias mismatch)
        n = self.norm(src_norm, getattr(dst_conv, "norm", None), self.name(src_conv, "src"), self.name(dst_conv, "dst"))
        return n + self.conv(src_conv, dst_conv)


def _tv_fpn_block(block: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(conv, norm or None) of a torchvision FPN ``inner_blocks``/``layer_blocks`` entry."""
    if isinstance(block, nn.Conv2d):
        return block, None
    layers = list(block.children())
    if not layers or not isinstance(layers[0], nn.Conv2d) or len(layers) > 2:
        raise ValueError(f"unexpected torchvision FPN block {block!r}")
    return layers[0], (layers[1] if len(layers) == 2 else None)


def _stages(body: nn.Module) -> list[nn.Sequential]:
    stages = []
    for k in range(1, 5):
        layer = getattr(body, f"layer{k}", None)
        if layer is None:
            break
        stages.append(layer)
    return stages


def _block_kind(block: nn.Module, side: str) -> str:
    for cls, name in _BLOCKS.items():
        if type(block) is cls:
            return name
    raise ValueError(f"{side} ResNet block {type(block).__name__} is not a plain BasicBlock or bottleneck")


def _check_input(src: nn.Module, dst: nn.Module) -> dict | None:
    """The two engines' input normalisation, checked equal (None when either side does not expose it)."""
    transform = getattr(src, "transform", None)
    if transform is None or not hasattr(dst, "pixel_mean") or not hasattr(dst, "input_format"):
        return None
    mean = [255.0 * float(v) for v in transform.image_mean]
    std = [255.0 * float(v) for v in transform.image_std]
    d_mean = [float(v) for v in dst.pixel_mean.flatten()]
    d_std = [float(v) for v in dst.pixel_std.flatten()]
    info = {
        "source": {"format": "RGB", "pixel_mean": mean, "pixel_std": std},
        "destination": {"format": dst.input_format, "pixel_mean": d_mean, "pixel_std": d_std},
    }
    same = dst.input_format == "RGB" and all(
        math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4) for a, b in zip(mean + std, d_mean + d_std)
    )
    if not same:
        raise ValueError(
            f"input normalisation differs: the torchvision detector sees RGB with mean {mean} and std {std} "
            f"(on [0, 255]); the detectron2 model has INPUT.FORMAT {dst.input_format!r}, MODEL.PIXEL_MEAN "
            f"{d_mean}, MODEL.PIXEL_STD {d_std}: set those so the transferred backbone sees what it learned on"
        )
    return info


def torchvision_to_detectron2(
    src_model: nn.Module, d2_model: nn.Module, *, upsampler: bool = True, check_input: bool = True
) -> dict:
    """Copy the ResNet body, FPN convs and G of a srfkit torchvision detector into a detectron2 model.

    Args:
        src_model: a detector built by :func:`srfkit.detection.build_detector` (DDP-wrapped or not), a
            :class:`~srfkit.detection.FeatureExtractor`, or its ``BackboneWithFPN``; e.g. the stage-2
            extractor M from :func:`srfkit.train.load_detector`.
        d2_model: a detectron2 model whose ``backbone`` is srfkit's :class:`~.backbone.SRFFPN` (built by
            ``detectron2.modeling.build_model`` from :func:`~.config.get_config`; DDP-wrapped or not),
            or the backbone itself. Changed in place.
        upsampler: copy the FPN upsampler (G) into ``srf_module``; both must be the same kind of module
            with the same configuration (e.g. ``MODEL.SRF.VARIANT``) and layout: shared on both sides,
            or one module per top-down step on both (``steps.{i}`` of the source into the destination's
            step of the same level). ``False`` keeps the destination's.
        check_input: when ``d2_model`` has ``pixel_mean``/``pixel_std``/``input_format`` and
            ``src_model`` a transform, refuse unless detectron2 normalises its input as the source did.

    What is copied: the ResNet stem and every block of the stages both sides have (conv weights and
    their norms: GN weight and bias; BN/FrozenBN weight, bias and running statistics), the FPN lateral
    and output convs of every level P_k of the destination, from the source's convs of P_k (a
    destination level the source lacks raises; source-only levels are reported), the extra block
    (P6/P7 convs) only when both sides compute it the same way (the R-CNNs' P6 is a parameter-free
    max pool on both), and G. Heads (RPN, RoI heads, RetinaNet/FCOS heads, mask branches) never.

    Returns:
        A JSON-serialisable report::

            {"loaded": 230, "skipped": 96,      # destination tensors copied / left as they were
             "body": 120, "levels": {"P2": {"from": "inner_blocks.0, layer_blocks.0",
                                            "to": "fpn_lateral2, fpn_output2", "tensors": 4}, ...},
             "extra_blocks": 0, "upsampler": 78,
             "upsampler_steps": {"P2": {"from": "steps.0", "to": "steps.0"}, ...},  # per step only, else {}
             "resnet": "ResNet-18 (BasicBlock, ...)", "norm": {"source": "GN", "destination": "GN"},
             "input": {...} or None,
             "loaded_keys": {destination key: source key},   # state-dict names of the two models
             "skipped_keys": [destination keys left as they were],
             "not_copied": {"proposal_generator": "head: never copied (N tensors)", "P6": ..., ...}}
    """
    src, dst = _unwrap(src_model), _unwrap(d2_model)
    src_bb = src.backbone if hasattr(src, "backbone") else src
    dst_bb = dst if hasattr(dst, "bottom_up") else getattr(dst, "backbone", dst)
    if not hasattr(src_bb, "body") or not hasattr(src_bb, "fpn"):
        raise ValueError(f"source {type(src).__name__} has no torchvision backbone.body + backbone.fpn")
    if not hasattr(dst_bb, "bottom_up") or not hasattr(dst_bb, "srf_module"):
        raise ValueError(
            f"destination {type(dst).__name__} has no srfkit SRF-FPN backbone (bottom_up + srf_module): build it "
            "with a srfkit backbone name in MODEL.BACKBONE.NAME (srfkit.detection.d2.config.get_config)"
        )
    body, fpn, bottom_up = src_bb.body, src_bb.fpn, dst_bb.bottom_up
    plan = _Plan(src, dst)
    report: dict = {
        "loaded": 0,
        "skipped": 0,
        "body": 0,
        "levels": {},
        "extra_blocks": 0,
        "upsampler": 0,
        "upsampler_steps": {},
    }
    not_copied: dict[str, str] = {}

    # --- input normalisation (before the weights: the clearest refusal first)
    report["input"] = _check_input(src, dst) if check_input else None

    # --- ResNet: depth, norm, then every conv and norm
    src_stages = _stages(body)
    dst_names = list(bottom_up.stage_names)
    dst_stages = [getattr(bottom_up, n) for n in dst_names]
    src_kind = {_block_kind(b, "source") for s in src_stages for b in s}
    dst_kind = {_block_kind(b, "destination") for s in dst_stages for b in s}
    src_desc = _resnet_name(next(iter(src_kind)), tuple(len(s) for s in src_stages))
    dst_desc = _resnet_name(next(iter(dst_kind)), tuple(len(s) for s in dst_stages))
    common = min(len(src_stages), len(dst_stages))
    if src_kind != dst_kind or [len(s) for s in src_stages[:common]] != [len(s) for s in dst_stages[:common]]:
        raise ValueError(f"ResNet depth differs: the source is {src_desc}, the destination {dst_desc}")
    if len(dst_stages) > len(src_stages):
        raise ValueError(f"the destination ResNet has stages the source lacks: {src_desc} against {dst_desc}")
    if dst_names != [f"res{k + 2}" for k in range(len(dst_stages))]:
        raise ValueError(f"detectron2 ResNet stages {dst_names}: expected res2, res3, ... in order")
    report["resnet"] = src_desc
    stem_norm = getattr(bottom_up.stem.conv1, "norm", None)
    report["norm"] = {"source": _norm_kind(body.bn1), "destination": _norm_kind(stem_norm)}
    if _norm_kind(body.bn1) != _norm_kind(stem_norm) and not (
        _bn_family(_norm_kind(body.bn1)) and _bn_family(_norm_kind(stem_norm))
    ):
        raise ValueError(
            f"norm kind differs: the source ResNet uses {_norm_kind(body.bn1)}, the destination "
            f"{_norm_kind(stem_norm)} (MODEL.RESNETS.NORM; srfkit's norm 'group' is GN, 'frozen' FrozenBN)"
        )
    if set(dict(bottom_up.stem.named_children())) != {"conv1"}:
        raise ValueError(f"detectron2 stem {type(bottom_up.stem).__name__} is not the plain 7x7 conv stem")

    n = plan.conv_norm(body.conv1, body.bn1, bottom_up.stem.conv1)
    for s_stage, d_stage in zip(src_stages, dst_stages):
        for s_block, d_block in zip(s_stage, d_stage):
            convs = 3 if isinstance(s_block, TVBottleneck) else 2
            for j in range(1, convs + 1):
                n += plan.conv_norm(
                    getattr(s_block, f"conv{j}"), getattr(s_block, f"bn{j}"), getattr(d_block, f"conv{j}")
                )
            down, short = s_block.downsample, d_block.shortcut
            if (down is None) != (short is None):
                raise ValueError(
                    f"{plan.name(s_block, 'src')} {'has' if down is not None else 'has no'} downsample, "
                    f"{plan.name(d_block, 'dst')} {'has' if short is not None else 'has no'} shortcut conv"
                )
            if down is not None:
                n += plan.conv_norm(down[0], down[1] if len(down) > 1 else None, short)
    for k in range(len(dst_stages) + 1, len(src_stages) + 1):
        not_copied[f"layer{k}"] = f"only the source has ResNet stage layer{k}"
    report["body"] = n

    # --- FPN convs, level by level
    src_index = {level: i for i, level in enumerate(pyramid_keys(src_bb))}
    dst_levels = sorted(
        int(name[len("fpn_lateral") :]) for name, _ in dst_bb.named_children() if name.startswith("fpn_lateral")
    )
    missing = [f"P{k}" for k in dst_levels if k not in src_index]
    if missing:
        raise ValueError(
            f"the destination FPN has {', '.join(missing)}, which the source lacks: the source has "
            f"{', '.join(f'P{k}' for k in sorted(src_index))}, the destination "
            f"{', '.join(f'P{k}' for k in dst_levels)}"
        )
    width_src = fpn.layer_blocks[0][0].out_channels if not isinstance(fpn.layer_blocks[0], nn.Conv2d) else None
    width_dst = getattr(dst_bb, f"fpn_output{dst_levels[0]}").out_channels
    if width_src is not None and width_src != width_dst:
        raise ValueError(f"FPN width differs: the source has {width_src} channels, the destination {width_dst}")
    for level in sorted(src_index):
        name = f"P{level}"
        if level not in dst_levels:
            not_copied[name] = f"only the source has {name}"
            continue
        i = src_index[level]
        lateral, output = getattr(dst_bb, f"fpn_lateral{level}"), getattr(dst_bb, f"fpn_output{level}")
        count = plan.conv_norm(*_tv_fpn_block(fpn.inner_blocks[i]), lateral)
        count += plan.conv_norm(*_tv_fpn_block(fpn.layer_blocks[i]), output)
        report["levels"][name] = {
            "from": f"inner_blocks.{i}, layer_blocks.{i}",
            "to": f"fpn_lateral{level}, fpn_output{level}",
            "tensors": count,
        }

    # --- extra levels (P6/P7)
    s_extra, d_extra = fpn.extra_blocks, dst_bb.top_block
    if isinstance(s_extra, TVMaxPool) and isinstance(d_extra, D2MaxPool):
        pass  # P6 = max pool of P5 on both sides: nothing to copy
    elif isinstance(s_extra, TVP6P7) and isinstance(d_extra, D2P6P7) and s_extra.use_P5 == (d_extra.in_feature == "p5"):
        report["extra_blocks"] = plan.conv(s_extra.p6, d_extra.p6) + plan.conv(s_extra.p7, d_extra.p7)
    else:

        def describe(block, kind):
            if block is None:
                return "no extra block"
            if kind == "src" and isinstance(block, TVP6P7):
                return f"P6/P7 from {'P5' if block.use_P5 else 'C5'}"
            if kind == "dst" and isinstance(block, D2P6P7):
                return f"P6/P7 from {'P5' if block.in_feature == 'p5' else 'C5'}"
            return type(block).__name__

        not_copied["extra_blocks"] = (
            f"different extra blocks: {describe(s_extra, 'src')} in the source, {describe(d_extra, 'dst')} "
            "in the destination (left as it was)"
        )

    # --- G
    s_g, d_g = fpn.upsampler, dst_bb.srf_module
    if upsampler:
        s_per_step, d_per_step = isinstance(s_g, PerStepUpsampler), isinstance(d_g, PerStepUpsampler)
        if s_per_step and not d_per_step:
            raise ValueError(
                f"the source FPN has one upsampler per top-down step ({type(s_g[0]).__name__} x{len(s_g)}), the "
                f"destination's srf_module is one shared {type(d_g).__name__}: build it with MODEL.SRF.SHARE "
                "per_step (or pass upsampler=False to keep the destination's)"
            )
        if d_per_step and not s_per_step:
            raise ValueError(
                f"the source FPN shares one {type(s_g).__name__} across its top-down steps, the destination's "
                f"srf_module has one per step ({type(d_g[0]).__name__} x{len(d_g)}): build it with "
                "MODEL.SRF.SHARE shared (or pass upsampler=False to keep the destination's)"
            )
        g_pairs: list[tuple[nn.Module, nn.Module]] = []
        if s_per_step:
            # step i makes the level of finest-first index i (the coarsest level has no step): pair by level
            src_levels = sorted(src_index)
            src_steps = {src_levels[i]: i for i in range(len(s_g))}
            dst_steps = {dst_levels[j]: j for j in range(len(d_g))}
            for level in sorted(set(src_steps) | set(dst_steps)):
                if level in src_steps and level in dst_steps:
                    i, j = src_steps[level], dst_steps[level]
                    g_pairs.append((s_g[i], d_g[j]))
                    report["upsampler_steps"][f"P{level}"] = {"from": f"steps.{i}", "to": f"steps.{j}"}
                else:
                    side = "source" if level in src_steps else "destination"
                    not_copied[f"upsampler step P{level}"] = f"only the {side} has a top-down step making P{level}"
        else:
            g_pairs.append((s_g, d_g))
        for s_mod, d_mod in g_pairs:
            if type(s_mod) is not type(d_mod) or repr(s_mod) != repr(d_mod):
                what = "configuration" if type(s_mod) is type(d_mod) else "kind"
                raise ValueError(
                    f"FPN upsampler {what} differs: the source has {type(s_mod).__name__}, the destination "
                    f"srf_module {type(d_mod).__name__} (MODEL.SRF.UPSAMPLER / MODEL.SRF.VARIANT / "
                    "MODEL.SRF.NUM_BLOCKS must describe the source's G; or pass upsampler=False)"
                )
            s_state, d_state = s_mod.state_dict(keep_vars=True), d_mod.state_dict(keep_vars=True)
            if set(s_state) != set(d_state):
                raise ValueError(
                    f"FPN upsampler: source and destination hold different tensors ({type(s_mod).__name__})"
                )
            s_mods, d_mods = dict(s_mod.named_modules()), dict(d_mod.named_modules())
            for key in sorted(d_state):
                mod, _, attr = key.rpartition(".")
                report["upsampler"] += plan._add(d_mods[mod], s_mods[mod], attr, attr)
    elif list(d_g.state_dict()):
        not_copied["upsampler"] = "not requested (upsampler=False)"

    # --- copy (every pair was checked above), then account for every destination tensor
    dst_state = dst.state_dict(keep_vars=True)
    dst_keys = {id(t): k for k, t in dst_state.items()}
    src_keys = {id(t): k for k, t in src.state_dict(keep_vars=True).items()}
    loaded_keys: dict[str, str] = {}
    for dname, sname, d, s in plan.pairs:
        key = dst_keys.get(id(d), dname)
        if key in loaded_keys:
            raise ValueError(f"{key} would be written twice (from {loaded_keys[key]} and {sname})")
        loaded_keys[key] = src_keys.get(id(s), sname)
    with torch.no_grad():
        for _, _, d, s in plan.pairs:
            d.copy_(s)
    skipped = sorted(k for k in dst_state if k not in loaded_keys)
    if dst is not dst_bb:
        for child, module in dst.named_children():
            count = sum(1 for k in dst_state if k.startswith(f"{child}."))
            if module is not dst_bb and count:
                not_copied[child] = f"head: never copied ({count} tensors left as they were)"
    report["loaded"] = len(loaded_keys)
    report["skipped"] = len(skipped)
    report["loaded_keys"] = loaded_keys
    report["skipped_keys"] = skipped
    report["not_copied"] = not_copied
    return report
