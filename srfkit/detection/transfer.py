"""Weight transfer between detectors by pyramid level (P2, P3, ...), never by list index.

A two-stage detector's FPN returns P2-P5 from ResNet stages 1-4 (``inner_blocks[0]`` is P2); a
one-stage one returns P3-P5 from stages 2-4 (``inner_blocks[0]`` is P3). Their parameter names are
the same, so copying by name would put every level one level off. :func:`transfer_backbone` pairs
the FPN convs by the level they serve and copies only the feature part: the ResNet body, the FPN
lateral and output convs, the FPN upsampler (G whole; per-step upsamplers step by step, by the level
each step makes) and, when both sides have the same kind, the extra block (P6/P7). No head (RPN,
RoI heads, RetinaNet/FCOS heads) is ever copied.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ..models.fpn import PerStepUpsampler

__all__ = ["pyramid_keys", "transfer_backbone"]

_BODY, _FPN = "backbone.body.", "backbone.fpn."


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _return_layers(model: nn.Module) -> dict[str, str]:
    model = _unwrap(model)
    backbone = model.backbone if hasattr(model, "backbone") else model
    return dict(backbone.body.return_layers)  # {"layer2": "0", ...}


def _stage(layer: str) -> int:
    if not layer.startswith("layer") or not layer[5:].isdigit():
        raise ValueError(f"returned backbone layer {layer!r} is not a ResNet stage 'layerK'")
    return int(layer[5:])


def pyramid_keys(model: nn.Module) -> dict[int, str]:
    """Pyramid level k (P_k has stride 2**k) -> FPN output key, finest level first.

    Works for a detector built by :func:`~srfkit.detection.build_detector` (DDP-wrapped or not), a
    :class:`~srfkit.detection.FeatureExtractor` or a ``BackboneWithFPN``. ResNet stage ``layerK``
    gives P_{K+1}: two-stage detectors return ``{2: "0", 3: "1", 4: "2", 5: "3"}``, one-stage ones
    ``{3: "0", 4: "1", 5: "2"}``. Extra levels (``pool``, ``p6``, ``p7``) are not listed.
    """
    layers = _return_layers(model)
    return {_stage(layer) + 1: key for layer, key in sorted(layers.items(), key=lambda kv: _stage(kv[0]))}


def _fpn_index(model: nn.Module) -> dict[int, int]:
    """Pyramid level -> index into the FPN's ``inner_blocks``/``layer_blocks`` (the backbone's output order)."""
    return {level: i for i, level in enumerate(pyramid_keys(model))}


def _under(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _pair(part: str, src: dict[str, Tensor], dst: dict[str, Tensor], src_prefix: str, dst_prefix: str):
    """(destination name, source name) for every tensor of one part; the two must hold the same names."""
    src_sub, dst_sub = _under(src, src_prefix), _under(dst, dst_prefix)
    if set(src_sub) != set(dst_sub):
        only_src = sorted(set(src_sub) - set(dst_sub))[:5]
        only_dst = sorted(set(dst_sub) - set(src_sub))[:5]
        raise ValueError(
            f"{part}: source ({src_prefix}*) and destination ({dst_prefix}*) hold different tensors; "
            f"only in the source: {only_src}, only in the destination: {only_dst}"
        )
    return [(dst_prefix + name, src_prefix + name) for name in sorted(dst_sub)]


def _extra_levels(block: nn.Module | None, top: int) -> list[int]:
    if isinstance(block, LastLevelP6P7):
        return [top + 1, top + 2]
    if isinstance(block, LastLevelMaxPool):
        return [top + 1]
    return []


def _same_extra_block(src: nn.Module | None, dst: nn.Module | None) -> bool:
    if type(src) is not type(dst):
        return False
    # LastLevelP6P7 computes P6 from P5 when its in/out widths match, else from C5.
    return getattr(src, "use_P5", None) == getattr(dst, "use_P5", None)


def _describe(block: nn.Module | None, levels: list[int]) -> str:
    name = type(block).__name__ if block is not None else "no extra block"
    return f"{name} ({', '.join(f'P{k}' for k in levels)})" if levels else name


def transfer_backbone(src_model: nn.Module, dst_model: nn.Module, *, upsampler: bool = True) -> dict:
    """Copy the feature part of ``src_model`` into ``dst_model`` (in place), pyramid level by level.

    Both are detectors built by :func:`~srfkit.detection.build_detector` (or DDP wrappers of them), of
    any families. What is copied:

    * ``body``: every tensor of the ResNet body (parameters and buffers);
    * per pyramid level P_k that both FPNs have: its lateral (``inner_blocks``) and output
      (``layer_blocks``) convs, from the source's block of P_k to the destination's block of P_k.
      Levels only one side has are left as they are and reported;
    * ``extra_blocks`` (P6/P7 of the one-stage FPNs): only when both sides have the same kind of
      extra block (RetinaNet <-> FCOS); a two-stage FPN's P6 is a parameter-free max pool;
    * ``upsampler`` (G): when ``upsampler=True``. A shared upsampler (G, the interpolations) is
      copied whole; per-step upsamplers (DySample, CARAFE: one module per top-down step) step by
      step, the step that makes P_k into the step that makes P_k. Both FPNs must have the same
      kind of upsampler.

    Heads (RPN, RoI box and mask heads, RetinaNet/FCOS heads) are never copied. Every shape is
    checked before anything is copied: a mismatch raises ``ValueError`` naming the tensor and leaves
    ``dst_model`` unchanged.

    Returns:
        A JSON-serialisable report::

            {"loaded": 84,          # tensors copied in all
             "skipped": 120,        # destination tensors left as they were (heads, unmatched levels)
             "body": 60,            # tensors per part
             "levels": {"P3": {"from": 1, "to": 0, "tensors": 4}, ...},  # FPN block index per side
             "extra_blocks": 0, "upsampler": 20,
             "not_copied": {"P2": "only the source has P2", "extra_blocks": "...", ...}}
    """
    src, dst = _unwrap(src_model), _unwrap(dst_model)
    src_state, dst_state = src.state_dict(), dst.state_dict()
    src_fpn, dst_fpn = src.backbone.fpn, dst.backbone.fpn
    report: dict = {"loaded": 0, "skipped": 0, "body": 0, "levels": {}, "extra_blocks": 0, "upsampler": 0}
    not_copied: dict[str, str] = {}
    plan: list[tuple[str, str]] = []

    body = _pair("ResNet body", src_state, dst_state, _BODY, _BODY)
    plan += body
    report["body"] = len(body)

    src_index, dst_index = _fpn_index(src), _fpn_index(dst)
    for level in sorted(set(src_index) | set(dst_index)):
        name = f"P{level}"
        if level not in dst_index:
            not_copied[name] = f"only the source has {name}"
            continue
        if level not in src_index:
            not_copied[name] = f"only the destination has {name} (left as it was)"
            continue
        i, j = src_index[level], dst_index[level]
        pairs = []
        for blocks in ("inner_blocks", "layer_blocks"):
            pairs += _pair(
                f"FPN {blocks} of {name}", src_state, dst_state, f"{_FPN}{blocks}.{i}.", f"{_FPN}{blocks}.{j}."
            )
        plan += pairs
        report["levels"][name] = {"from": i, "to": j, "tensors": len(pairs)}

    src_extra, dst_extra = src_fpn.extra_blocks, dst_fpn.extra_blocks
    extra_prefix = f"{_FPN}extra_blocks."
    if _same_extra_block(src_extra, dst_extra):
        pairs = _pair("FPN extra block", src_state, dst_state, extra_prefix, extra_prefix)
        plan += pairs
        report["extra_blocks"] = len(pairs)
    else:
        src_levels = _extra_levels(src_extra, max(src_index))
        dst_levels = _extra_levels(dst_extra, max(dst_index))
        not_copied["extra_blocks"] = (
            f"different extra blocks: {_describe(src_extra, src_levels)} in the source, "
            f"{_describe(dst_extra, dst_levels)} in the destination"
        )

    g_prefix = f"{_FPN}upsampler."
    per_step = all(isinstance(fpn.upsampler, PerStepUpsampler) for fpn in (src_fpn, dst_fpn))
    if upsampler and per_step:
        # step i makes FPN level i (finest first) from level i + 1: the coarsest level has no step
        src_steps = {k: i for k, i in src_index.items() if i < len(src_fpn.upsampler)}
        dst_steps = {k: j for k, j in dst_index.items() if j < len(dst_fpn.upsampler)}
        for level in sorted(set(src_steps) | set(dst_steps)):
            if level in src_steps and level in dst_steps:
                i, j = src_steps[level], dst_steps[level]
                pairs = _pair(
                    f"upsampler step of P{level}",
                    src_state,
                    dst_state,
                    f"{g_prefix}steps.{i}.",
                    f"{g_prefix}steps.{j}.",
                )
                plan += pairs
                report["upsampler"] += len(pairs)
            else:
                side = "source" if level in src_steps else "destination"
                not_copied[f"upsampler step P{level}"] = f"only the {side} has a top-down step making P{level}"
    elif upsampler:
        pairs = _pair(
            f"FPN upsampler ({type(src_fpn.upsampler).__name__} -> {type(dst_fpn.upsampler).__name__}; "
            "pass upsampler=False to keep the destination's)",
            src_state,
            dst_state,
            g_prefix,
            g_prefix,
        )
        plan += pairs
        report["upsampler"] = len(pairs)
    elif _under(dst_state, g_prefix):
        not_copied["upsampler"] = "not requested (upsampler=False)"

    for dst_name, src_name in plan:
        if src_state[src_name].shape != dst_state[dst_name].shape:
            raise ValueError(
                f"cannot copy {src_name} {tuple(src_state[src_name].shape)} into {dst_name} "
                f"{tuple(dst_state[dst_name].shape)}: shapes differ (different backbone or FPN width?)"
            )
    with torch.no_grad():
        for dst_name, src_name in plan:
            dst_state[dst_name].copy_(src_state[src_name])

    report["loaded"] = len(plan)
    report["skipped"] = len(dst_state) - len(plan)
    report["not_copied"] = not_copied
    return report
