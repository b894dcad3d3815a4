"""SRF-FPN as a detectron2 backbone: detectron2's FPN whose top-down step is any srfkit upsampler.

:class:`SRFFPN` subclasses ``detectron2.modeling.backbone.FPN`` and keeps its parameter names
(``bottom_up``, ``fpn_lateral{k}``, ``fpn_output{k}``, ``top_block``), so a detectron2 FPN checkpoint
loads unchanged; the upsampler is named ``srf_module`` (the authors' name). As in srfkit's torchvision
FPN (:func:`srfkit.models.fpn.build_fpn_upsampler`), it is one module shared by every top-down step
for the SRF generators (as in the paper) and the fixed interpolations, and a
:class:`~srfkit.models.fpn.PerStepUpsampler` with one module per step for DySample and CARAFE (as
their published necks have; keys ``srf_module.steps.{i}.*``, ``i`` the finest-first index of the level
the step makes); ``MODEL.SRF.SHARE`` overrides. With ``nearest`` it has no parameters and its outputs
are bit-identical to detectron2's FPN.

Registered backbone builders (``MODEL.BACKBONE.NAME``):

* srfkit's names: ``build_srf_resnet_fpn_backbone`` (P2-P6, R-CNNs), ``build_srf_retinanet_resnet_fpn_backbone``
  (P3-P7 from C5), ``build_srf_fcos_resnet_fpn_backbone`` (P3-P7 from P5);
* the authors' names for the same three: ``build_resnet_fpn_sr_backbone``,
  ``build_retinanet_resnet_fpn_sr_backbone``, ``build_fcos_resnet_fpn_sr_backbone``.

Config keys added by :func:`add_srf_config`: ``MODEL.SRF.UPSAMPLER`` (a name of
:func:`srfkit.models.make_upsampler`), ``MODEL.SRF.VARIANT`` and ``MODEL.SRF.NUM_BLOCKS`` (for ``srf``),
``MODEL.SRF.WEIGHTS`` (G from a srfkit srf-gan stage, or the authors' checkpoint), ``MODEL.SRF.SHARE``
(``auto``, ``shared`` or ``per_step``: :data:`SHARE_CHOICES`) and ``MODEL.SRF_FREEZE`` (the authors'
key: G gets no gradient and stays in eval mode).
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
from ...models.fpn import PerStepUpsampler, build_fpn_upsampler, is_shared, upsample_step

__all__ = [
    "AUTHORS_PREFIX",
    "SHARE_CHOICES",
    "SRFFPN",
    "add_srf_config",
    "authors_to_srfkit",
    "load_authors_checkpoint",
    "load_upsampler_weights",
    "share_from_cfg",
    "upsampler_from_cfg",
]

# Where the authors' detector checkpoints keep G.
AUTHORS_PREFIX = "backbone.srf_module."

# MODEL.SRF.SHARE -> SRFFPN's share_upsampler (None: per step for upsamplers with one_per_fpn_step = True)
SHARE_CHOICES: dict[str, bool | None] = {"auto": None, "shared": True, "per_step": False}


def add_srf_config(cfg: CfgNode) -> CfgNode:
    """Add srfkit's keys to a detectron2 config (in place; idempotent) and return it.

    ``MODEL.SRF.UPSAMPLER`` (default ``srf``), ``MODEL.SRF.VARIANT`` (``released``: the authors' G),
    ``MODEL.SRF.NUM_BLOCKS`` (0: the variant's default), ``MODEL.SRF.WEIGHTS`` (empty: fresh G),
    ``MODEL.SRF.SHARE`` (``auto``: per step for ``dysample``, ``dysample_dynamic`` and ``carafe``, one
    shared module for the rest; see :data:`SHARE_CHOICES`) and ``MODEL.SRF_FREEZE`` (False).
    """
    if "SRF" not in cfg.MODEL:
        cfg.MODEL.SRF = CfgNode()
        cfg.MODEL.SRF.UPSAMPLER = "srf"
        cfg.MODEL.SRF.VARIANT = "released"
        cfg.MODEL.SRF.NUM_BLOCKS = 0
        cfg.MODEL.SRF.WEIGHTS = ""
    if "SHARE" not in cfg.MODEL.SRF and not cfg.is_frozen():  # into an SRF node from before the key existed
        cfg.MODEL.SRF.SHARE = "auto"
    if "SRF_FREEZE" not in cfg.MODEL:
        cfg.MODEL.SRF_FREEZE = False
    return cfg


def share_from_cfg(cfg: CfgNode) -> bool | None:
    """``MODEL.SRF.SHARE`` as :class:`SRFFPN`'s ``share_upsampler``: ``auto`` -> None, ``shared`` -> True,
    ``per_step`` -> False (any other value raises ``ValueError``; a config without the key is ``auto``)."""
    value = cfg.MODEL.SRF.get("SHARE", "auto")
    if not isinstance(value, str) or value not in SHARE_CHOICES:
        raise ValueError(
            f"MODEL.SRF.SHARE must be one of {', '.join(SHARE_CHOICES)} (auto: one upsampler per FPN top-down "
            f"step for dysample, dysample_dynamic and carafe, one shared module for the rest), got {value!r}"
        )
    return SHARE_CHOICES[value]


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

    One upsampler per FPN top-down step comes back as a :class:`~srfkit.models.fpn.PerStepUpsampler`:
    from an extractor or target stage whose FPN has one, or from a state dict with ``steps.{i}.*`` keys
    (bare or under ``srf_module.``/``backbone.srf_module.``: an SRFFPN's per-step ``srf_module``), each
    step built as ``make_upsampler(name, channels, **kwargs)``.
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
                steps = {int(k.split(".")[1]) for k in state if k.startswith("steps.")}
                if steps:
                    g = PerStepUpsampler(make_upsampler(name, channels, **kwargs) for _ in range(max(steps) + 1))
                else:
                    g = make_upsampler(name, channels, **kwargs)
                g.load_state_dict(state, strict=True)
    for module in g.steps if isinstance(g, PerStepUpsampler) else [g]:
        width = getattr(module, "channels", channels)
        if width != channels:
            raise ValueError(f"MODEL.SRF.WEIGHTS: {path} holds a {width}-channel G; the FPN is {channels} wide")
    return g


def upsampler_from_cfg(cfg: CfgNode, channels: int, num_steps: int | None = None) -> nn.Module:
    """The FPN's ``srf_module`` as ``MODEL.SRF`` describes it (loaded from ``MODEL.SRF.WEIGHTS`` if set).

    One module shared by every top-down step, or a :class:`~srfkit.models.fpn.PerStepUpsampler` of
    ``num_steps`` modules (default: ``len(MODEL.FPN.IN_FEATURES) - 1``), by ``MODEL.SRF.SHARE`` (see
    :func:`srfkit.models.fpn.build_fpn_upsampler`). ``MODEL.SRF.WEIGHTS`` must hold the layout that
    gives: one G for a shared module (the authors' G, a srf-gan stage's G, a single module's state
    dict); one module per step (``steps.{i}.*`` keys, or a stage whose FPN has one per step) otherwise.
    A mismatch raises ``ValueError`` naming the ``MODEL.SRF.SHARE`` that fits the file.
    """
    srf = cfg.MODEL.SRF
    share = share_from_cfg(cfg)
    if num_steps is None:
        num_steps = len(cfg.MODEL.FPN.IN_FEATURES) - 1
    kwargs = _upsampler_kwargs(srf.UPSAMPLER, srf.VARIANT, srf.NUM_BLOCKS)
    if not srf.WEIGHTS:
        return build_fpn_upsampler(srf.UPSAMPLER, channels, num_steps, kwargs, share=share)
    g = load_upsampler_weights(srf.WEIGHTS, srf.UPSAMPLER, channels, **kwargs)
    per_step = isinstance(g, PerStepUpsampler)
    kind = g[0] if per_step and len(g) else g
    shared = is_shared(kind, share)
    setting = f"MODEL.SRF.SHARE {srf.get('SHARE', 'auto')}"
    if per_step and shared:
        raise ValueError(
            f"MODEL.SRF.WEIGHTS: {srf.WEIGHTS} holds one {type(kind).__name__} per FPN top-down step "
            f"({len(g)}), but {setting} builds one shared srf_module: set MODEL.SRF.SHARE per_step"
        )
    if not per_step and not shared:
        raise ValueError(
            f"MODEL.SRF.WEIGHTS: {srf.WEIGHTS} holds one {type(g).__name__}, but {setting} builds one upsampler "
            "per FPN top-down step: set MODEL.SRF.SHARE shared to use it for every step (or give weights with "
            "steps.{i}.* keys, one module per step)"
        )
    return build_fpn_upsampler(g, channels, num_steps, share=shared)


class SRFFPN(FPN):
    """detectron2's FPN with a pluggable top-down upsampler ``srf_module``.

    Same arguments as :class:`detectron2.modeling.backbone.FPN`, plus:

    Args:
        upsampler: a srfkit upsampler name (``nearest``, ``bilinear``, ``bicubic``, ``srf``, ``srf_light``,
            ``srf_depthwise``, ``dysample``, ``dysample_dynamic``, ``carafe``) or a module with
            ``forward(x, size)``: (N, C, H, W) -> (N, C, *size).
            A :class:`~srfkit.models.fpn.PerStepUpsampler` with ``len(in_features) - 1`` modules is
            used as it is.
        upsampler_kwargs: options of the named upsampler (e.g. ``{"variant": "released"}``).
        freeze_upsampler: ``MODEL.SRF_FREEZE``: G's parameters get no gradient and G stays in eval mode.
        share_upsampler: ``MODEL.SRF.SHARE``, the rule of srfkit's torchvision FPN
            (:func:`srfkit.models.fpn.build_fpn_upsampler`): ``True`` one module for every top-down
            step; ``False`` one per step; ``None`` (default) per step for upsamplers that declare
            ``one_per_fpn_step = True`` (``dysample``, ``dysample_dynamic``, ``carafe``), shared for
            the rest (the ``srf`` generators and the fixed interpolations).

    ``srf_module`` holds every upsampler parameter: the shared module (keys ``srf_module.*``), or a
    :class:`~srfkit.models.fpn.PerStepUpsampler` whose step ``i`` makes ``in_features[i]`` (finest
    first) from the level above it (keys ``srf_module.steps.{i}.*``, as ``upsampler.steps.{i}.*`` in
    the torchvision FPN of the same levels).

    ``forward(x)``: images (N, 3, H, W), normalised, H and W multiples of ``size_divisibility``
    -> ``{"p2": (N, C, H/4, W/4), ..., "p6": (N, C, H/64, W/64)}`` (or ``p3``-``p7``). The top-down
    step is ``lateral(c_k) + srf_module(p_{k+1}, size=lateral's size)`` (per step:
    ``srf_module(p_{k+1}, size=..., step=i)``, ``i`` the finest-first index of ``c_k``).

    A state dict whose G is in the authors' layout (``srf_module.Generators.0...``) is translated to
    srfkit's layout when loaded, so the authors' detector checkpoints load with ``strict=True``; a
    state dict whose ``srf_module`` is laid out shared while this one is per step (or the reverse)
    is refused with a message naming ``MODEL.SRF.SHARE``.
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
        share_upsampler: bool | None = None,
    ) -> None:
        super().__init__(bottom_up, in_features, out_channels, norm=norm, top_block=top_block, fuse_type=fuse_type)
        self.srf_module = build_fpn_upsampler(
            upsampler, out_channels, len(in_features) - 1, upsampler_kwargs, share=share_upsampler
        )
        self.freeze_upsampler = freeze_upsampler
        if freeze_upsampler:
            self.srf_module.requires_grad_(False)
            self.srf_module.eval()
        self.register_load_state_dict_pre_hook(_authors_layout_hook)

    @property
    def shares_upsampler(self) -> bool:
        """Whether one upsampler module serves every top-down step."""
        return not isinstance(self.srf_module, PerStepUpsampler)

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
            # lateral_convs run coarsest first: idx makes in_features[-idx - 1], finest-first index len - 1 - idx
            lateral = self.lateral_convs[idx](bottom_up_features[self.in_features[-idx - 1]])
            size = lateral.shape[-2:]
            prev = lateral + upsample_step(self.srf_module, prev, size, step=len(self.in_features) - 1 - idx)
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
    """Translate ``{prefix}srf_module.Generators.*`` (the authors' G) into srfkit's keys, in place.

    Also refuses (``errors``) a ``srf_module`` laid out otherwise than this one: shared keys
    (``srf_module.<key>``, the authors' G included) into a per-step ``srf_module``, or per-step keys
    (``srf_module.steps.{i}.*``) into a shared one.
    """
    head = prefix + "srf_module."
    incoming = [k[len(head) :] for k in state_dict if k.startswith(head)]
    if incoming:
        per_step = isinstance(module.srf_module, PerStepUpsampler)
        stepped = [k.startswith("steps.") for k in incoming]
        if per_step and not all(stepped):
            errors.append(
                f"{head}: the state dict holds one shared upsampler (e.g. {head}{incoming[stepped.index(False)]}), "
                f"this SRFFPN has one per top-down step ({len(module.srf_module)} modules, {head}steps.{{i}}.*): "
                "build it with MODEL.SRF.SHARE shared"
            )
            return
        if not per_step and any(stepped):
            errors.append(
                f"{head}: the state dict holds one upsampler per top-down step ({head}steps.{{i}}.*), this SRFFPN "
                "shares one srf_module: build it with MODEL.SRF.SHARE per_step"
            )
            return
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
    upsampler = upsampler_from_cfg(cfg, channels, len(cfg.MODEL.FPN.IN_FEATURES) - 1)
    return SRFFPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
        upsampler=upsampler,  # the finished srf_module: shared, or one module per step
        freeze_upsampler=cfg.MODEL.SRF_FREEZE,
        share_upsampler=not isinstance(upsampler, PerStepUpsampler),
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
