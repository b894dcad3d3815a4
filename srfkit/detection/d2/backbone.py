"""SRF-FPN as a detectron2 backbone: detectron2's FPN whose top-down step is any srfkit upsampler.

:class:`SRFFPN` subclasses ``detectron2.modeling.backbone.FPN`` and keeps its parameter names
(``bottom_up``, ``fpn_lateral{k}``, ``fpn_output{k}``, ``top_block``), so a detectron2 FPN checkpoint
loads unchanged; the upsampler is one module named ``srf_module`` (the authors' name), shared by
every top-down step as in the paper. With ``nearest`` it has no parameters and its outputs are
bit-identical to detectron2's FPN.

Registered backbone builders (``MODEL.BACKBONE.NAME``):

* srfkit's names: ``build_srf_resnet_fpn_backbone`` (P2-P6, R-CNNs), ``build_srf_retinanet_resnet_fpn_backbone``
  (P3-P7 from C5), ``build_srf_fcos_resnet_fpn_backbone`` (P3-P7 from P5);
* the authors' names for the same three: ``build_resnet_fpn_sr_backbone``,
  ``build_retinanet_resnet_fpn_sr_backbone``, ``build_fcos_resnet_fpn_sr_backbone``.

Config keys added by :func:`add_srf_config`: ``MODEL.SRF.UPSAMPLER`` (a name of
:func:`srfkit.models.make_upsampler`), ``MODEL.SRF.VARIANT`` and ``MODEL.SRF.NUM_BLOCKS`` (for ``srf``),
``MODEL.SRF.WEIGHTS`` (G from a srfkit srf-gan stage, or the authors' checkpoint) and
``MODEL.SRF_FREEZE`` (the authors' key: G gets no gradient and stays in eval mode).
"""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import Tensor, nn

from ...models import make_upsampler

__all__ = [
    "AUTHORS_PREFIX",
    "SRFFPN",
    "add_srf_config",
    "authors_to_srfkit",
    "load_authors_checkpoint",
    "load_upsampler_weights",
    "upsampler_from_cfg",
]

# Where the authors' detector checkpoints keep G.
AUTHORS_PREFIX = "backbone.srf_module."


def add_srf_config(cfg: CfgNode) -> CfgNode:
    """Add srfkit's keys to a detectron2 config (in place; idempotent) and return it.

    ``MODEL.SRF.UPSAMPLER`` (default ``srf``), ``MODEL.SRF.VARIANT`` (``released``: the authors' G),
    ``MODEL.SRF.NUM_BLOCKS`` (0: the variant's default), ``MODEL.SRF.WEIGHTS`` (empty: fresh G) and
    ``MODEL.SRF_FREEZE`` (False).
    """
    if "SRF" not in cfg.MODEL:
        cfg.MODEL.SRF = CfgNode()
        cfg.MODEL.SRF.UPSAMPLER = "srf"
        cfg.MODEL.SRF.VARIANT = "released"
        cfg.MODEL.SRF.NUM_BLOCKS = 0
        cfg.MODEL.SRF.WEIGHTS = ""
    if "SRF_FREEZE" not in cfg.MODEL:
        cfg.MODEL.SRF_FREEZE = False
    return cfg


def _upsampler_kwargs(name: str, variant: str, num_blocks: int) -> dict:
    kwargs: dict = {}
    if name == "srf":
        kwargs["variant"] = variant
    if name in ("srf", "srf_light", "srf_depthwise") and num_blocks > 0 and variant != "released":
        kwargs["num_blocks"] = num_blocks
    return kwargs


def authors_to_srfkit(state: dict[str, Tensor]) -> nn.Module:
    """G from a state dict in the authors' layout (``Generators.0...``, any prefix before it).

    Uses :func:`srfkit.models.load_authors_generator`.
    """
    from ... import models

    loader = getattr(models, "load_authors_generator", None)
    if loader is None:
        raise NotImplementedError("this srfkit has no srfkit.models.load_authors_generator to read the authors' G")
    cut = {k[k.index("Generators.") :]: v for k, v in state.items() if "Generators." in k}
    if not cut:
        raise ValueError("no 'Generators.' keys: not the authors' generator layout")
    return loader(cut)


def _read_state(path: Path) -> dict[str, Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        payload = payload["model"]  # a detectron2 checkpoint
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(payload).__name__}")
    return payload


def load_upsampler_weights(path: str | Path, name: str, channels: int, **kwargs) -> nn.Module:
    """The upsampler G stored at ``path``, checked to be ``channels`` wide.

    ``path`` may be a srfkit stage folder or checkpoint (srf-gan, extractor or target stage:
    :func:`srfkit.train.load_generator`), a file with the authors' G (``Generators.0...``, bare, with
    the ``backbone.srf_module.`` prefix, or inside a detectron2 checkpoint's ``model``), or a file
    with a srfkit upsampler state dict (built as ``make_upsampler(name, channels, **kwargs)``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MODEL.SRF.WEIGHTS: {path} does not exist")
    if path.is_dir():
        from ...train import load_generator

        g = load_generator(path)
    else:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and "models" in payload and "config" in payload:
            from ...train import load_generator

            g = load_generator(payload)
        else:
            state = _read_state(path)
            if any("Generators." in k for k in state):
                g = authors_to_srfkit(state)
            else:
                for prefix in (AUTHORS_PREFIX, "srf_module.", "module."):
                    if any(k.startswith(prefix) for k in state):
                        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
                g = make_upsampler(name, channels, **kwargs)
                g.load_state_dict(state, strict=True)
    width = getattr(g, "channels", channels)
    if width != channels:
        raise ValueError(f"MODEL.SRF.WEIGHTS: {path} holds a {width}-channel G; the FPN is {channels} wide")
    return g


def upsampler_from_cfg(cfg: CfgNode, channels: int) -> nn.Module:
    """The FPN's upsampler as ``MODEL.SRF`` describes it (loaded from ``MODEL.SRF.WEIGHTS`` if set)."""
    srf = cfg.MODEL.SRF
    kwargs = _upsampler_kwargs(srf.UPSAMPLER, srf.VARIANT, srf.NUM_BLOCKS)
    if srf.WEIGHTS:
        return load_upsampler_weights(srf.WEIGHTS, srf.UPSAMPLER, channels, **kwargs)
    return make_upsampler(srf.UPSAMPLER, channels, **kwargs)


class SRFFPN(FPN):
    """detectron2's FPN with a pluggable top-down upsampler ``srf_module``.

    Same arguments as :class:`detectron2.modeling.backbone.FPN`, plus:

    Args:
        upsampler: a srfkit upsampler name (``nearest``, ``bilinear``, ``bicubic``, ``srf``, ``srf_light``,
            ``srf_depthwise``, ``dysample``, ``dysample_dynamic``, ``carafe``) or a module with
            ``forward(x, size)``: (N, C, H, W) -> (N, C, *size).
        upsampler_kwargs: options of the named upsampler (e.g. ``{"variant": "released"}``).
        freeze_upsampler: ``MODEL.SRF_FREEZE``: G's parameters get no gradient and G stays in eval mode.

    ``forward(x)``: images (N, 3, H, W), normalised, H and W multiples of ``size_divisibility``
    -> ``{"p2": (N, C, H/4, W/4), ..., "p6": (N, C, H/64, W/64)}`` (or ``p3``-``p7``). The top-down
    step is ``lateral(c_k) + srf_module(p_{k+1}, size=lateral's size)``.

    A state dict whose G is in the authors' layout (``srf_module.Generators.0...``) is translated to
    srfkit's layout when loaded, so the authors' detector checkpoints load with ``strict=True``.
    """

    def __init__(
        self,
        bottom_up: nn.Module,
        in_features: list[str],
        out_channels: int,
        norm: str = "",
        top_block: nn.Module | None = None,
        fuse_type: str = "sum",
        upsampler: str | nn.Module = "nearest",
        upsampler_kwargs: dict | None = None,
        freeze_upsampler: bool = False,
    ) -> None:
        super().__init__(bottom_up, in_features, out_channels, norm=norm, top_block=top_block, fuse_type=fuse_type)
        self.srf_module = make_upsampler(upsampler, out_channels, **(upsampler_kwargs or {}))
        self.freeze_upsampler = freeze_upsampler
        if freeze_upsampler:
            self.srf_module.requires_grad_(False)
            self.srf_module.eval()
        self.register_load_state_dict_pre_hook(_authors_layout_hook)

    def train(self, mode: bool = True) -> SRFFPN:
        super().train(mode)
        if self.freeze_upsampler:
            self.srf_module.eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        bottom_up_features = self.bottom_up(x)
        prev = self.lateral_convs[0](bottom_up_features[self.in_features[-1]])
        results = [self.output_convs[0](prev)]
        for idx in range(1, len(self.lateral_convs)):
            lateral = self.lateral_convs[idx](bottom_up_features[self.in_features[-idx - 1]])
            prev = lateral + self.srf_module(prev, size=lateral.shape[-2:])
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, self.output_convs[idx](prev))
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_in = bottom_up_features[self.top_block.in_feature]
            else:
                top_in = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))


def _authors_layout_hook(module: SRFFPN, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    """Translate ``{prefix}srf_module.Generators.*`` (the authors' G) into srfkit's keys, in place."""
    head = prefix + "srf_module."
    keys = [k for k in state_dict if k.startswith(head + "Generators.")]
    own = module.srf_module.state_dict()
    if not keys or any(k.startswith("Generators.") for k in own):
        return
    g = authors_to_srfkit({k[len(head) :]: state_dict.pop(k) for k in keys})
    converted = g.state_dict()
    if set(converted) != set(own):
        name = type(module.srf_module).__name__
        errors.append(f"the authors' G does not match {name} (use MODEL.SRF.VARIANT released)")
        return
    for k, v in converted.items():
        state_dict[head + k] = v


def load_authors_checkpoint(model: nn.Module, path_or_state: str | Path | dict, strict: bool = True) -> None:
    """Load a full detector checkpoint in the authors' layout (``backbone.srf_module.Generators.0...``).

    ``path_or_state`` is a file (``torch.load``-able, optionally a detectron2 checkpoint with ``model``)
    or the state dict itself; ``strict`` as in ``load_state_dict`` (missing or unexpected keys raise).
    """
    state = path_or_state if isinstance(path_or_state, dict) else _read_state(Path(path_or_state))
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    getattr(model, "module", model).load_state_dict(state, strict=strict)


def _fpn(cfg: CfgNode, bottom_up: nn.Module, top_block: nn.Module | None) -> SRFFPN:
    add_srf_config(cfg)
    channels = cfg.MODEL.FPN.OUT_CHANNELS
    return SRFFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        upsampler=upsampler_from_cfg(cfg, channels),
        freeze_upsampler=cfg.MODEL.SRF_FREEZE,
    )


def build_srf_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> SRFFPN:
    """ResNet + SRF-FPN, P2-P6 (P6 by max-pooling P5): the R-CNNs' backbone."""
    return _fpn(cfg, build_resnet_backbone(cfg, input_shape), LastLevelMaxPool())


def build_srf_retinanet_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> SRFFPN:
    """ResNet + SRF-FPN, P3-P7 (P6, P7 from C5): RetinaNet's backbone."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    c5 = bottom_up.output_shape()["res5"].channels
    return _fpn(cfg, bottom_up, LastLevelP6P7(c5, cfg.MODEL.FPN.OUT_CHANNELS))


def build_srf_fcos_resnet_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> SRFFPN:
    """ResNet + SRF-FPN, P3-P7 (P6, P7 from P5): FCOS's backbone."""
    c = cfg.MODEL.FPN.OUT_CHANNELS
    return _fpn(cfg, build_resnet_backbone(cfg, input_shape), LastLevelP6P7(c, c, in_feature="p5"))


BUILDERS = {
    "build_srf_resnet_fpn_backbone": build_srf_resnet_fpn_backbone,
    "build_srf_retinanet_resnet_fpn_backbone": build_srf_retinanet_resnet_fpn_backbone,
    "build_srf_fcos_resnet_fpn_backbone": build_srf_fcos_resnet_fpn_backbone,
    # The authors' names (their fpn_sr.py), so their configs run unchanged.
    "build_resnet_fpn_sr_backbone": build_srf_resnet_fpn_backbone,
    "build_retinanet_resnet_fpn_sr_backbone": build_srf_retinanet_resnet_fpn_backbone,
    "build_fcos_resnet_fpn_sr_backbone": build_srf_fcos_resnet_fpn_backbone,
}

for _name, _fn in BUILDERS.items():
    if _name not in BACKBONE_REGISTRY:
        BACKBONE_REGISTRY._do_register(_name, _fn)
