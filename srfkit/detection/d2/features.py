"""A detectron2 detector's backbone + FPN as srfkit's feature extractor F (stage 1's target features).

The paper took detectron2 model-zoo FPNs as the pretrained F. :func:`build_feature_extractor` builds a
detectron2 model from a config and loads the user's checkpoint (nothing is downloaded);
:class:`D2FeatureExtractor` wraps it with the contract of :class:`srfkit.detection.FeatureExtractor`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import Tensor, nn

from .backbone import add_srf_config
from .config import ARCHS, config_file

__all__ = ["D2FeatureExtractor", "build_feature_extractor", "load_config"]


class D2FeatureExtractor(nn.Module):
    """F from a detectron2 detector: normalise as the detector does, pad, backbone + FPN, crop.

    ``forward``: images (N, 3, H, W), RGB in [0, 1] -> ``OrderedDict`` of (N, C, ceil(H/s), ceil(W/s))
    keyed like srfkit's torchvision FPN: ``"0".."3"`` for P2-P5 and ``"pool"`` for P6 (R-CNN
    backbones), or ``"0".."2"`` for P3-P5 and ``"p6"``, ``"p7"`` (RetinaNet/FCOS backbones). The
    image is scaled to [0, 255], put in the detector's channel order (``INPUT.FORMAT``), normalised
    with its ``PIXEL_MEAN``/``PIXEL_STD``, and zero-padded (after normalisation, as detectron2's
    ``ImageList`` pads) to a multiple of the backbone's ``size_divisibility``; outputs are cropped
    back to the unpadded image's extent. No resize: a half-size image stays half-size.

    Args:
        model: a detectron2 meta-architecture (``GeneralizedRCNN``, ``RetinaNet``) with ``backbone``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = getattr(model, "module", model)
        self.backbone = model.backbone
        self.register_buffer("mean", model.pixel_mean.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", model.pixel_std.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.bgr = getattr(model, "input_format", "BGR") == "BGR"
        shapes = self.backbone.output_shape()
        names = sorted(shapes, key=lambda k: shapes[k].stride)
        n_in = len(getattr(self.backbone, "in_features", names))
        pool = isinstance(getattr(self.backbone, "top_block", None), LastLevelMaxPool)
        self.strides = {name: shapes[name].stride for name in names}
        self.keys = {name: str(i) if i < n_in else ("pool" if pool else name) for i, name in enumerate(names)}

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        x = images * 255.0
        if self.bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        h, w = x.shape[-2:]
        d = max(int(getattr(self.backbone, "size_divisibility", 1) or 1), 1)
        x = F.pad(x, (0, (-w) % d, 0, (-h) % d))
        feats = self.backbone(x)
        return OrderedDict(
            (key, feats[name][..., : math.ceil(h / self.strides[name]), : math.ceil(w / self.strides[name])])
            for name, key in self.keys.items()
        )


def load_config(config: str | Path | CfgNode, opts: list[str] | None = None) -> CfgNode:
    """A detectron2 config from a CfgNode, a YAML file, one of srfkit's arch names (:data:`ARCHS`,
    the packaged 1x config) or a detectron2 model-zoo path (``COCO-InstanceSegmentation/...yaml``)."""
    if isinstance(config, CfgNode):
        cfg = add_srf_config(config.clone())
    else:
        cfg = add_srf_config(get_cfg())
        path = Path(config)
        if not path.is_file():
            if str(config) in ARCHS:
                path = config_file(str(config))
            else:
                from detectron2 import model_zoo

                path = Path(model_zoo.get_config_file(str(config)))
        cfg.merge_from_file(str(path))
    if opts:
        cfg.merge_from_list(list(opts))
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def build_feature_extractor(
    config: str | Path | CfgNode, weights: str | Path | None, opts: list[str] | None = None
) -> D2FeatureExtractor:
    """F for srfkit's stage 1 from a detectron2 config and the user's checkpoint (frozen, eval mode, CPU).

    Args:
        config: see :func:`load_config`.
        weights: a detectron2 checkpoint (``.pth`` or model-zoo ``.pkl``) on disk; ``None`` keeps the
            random initialisation (tests only: F must be a trained detector's).
        opts: ``KEY VALUE`` pairs merged into the config.
    """
    cfg = load_config(config, opts)
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg)
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"detectron2 checkpoint not found: {weights}")
        DetectionCheckpointer(model).load(str(weights))
    extractor = D2FeatureExtractor(model).cpu().eval()
    extractor.requires_grad_(False)
    return extractor
