"""A detectron2 detector's backbone + FPN as srfkit's feature extractor F (stage 1's target features).

The paper took detectron2 model-zoo FPNs as the pretrained F. :func:`build_feature_extractor` builds a
detectron2 model from a config and loads the user's checkpoint (nothing is downloaded);
:class:`D2FeatureExtractor` wraps it with the contract of :class:`srfkit.detection.FeatureExtractor`
(``normalize``, ``backbone``, ``forward``), so srfkit's SRF-GAN stage takes it unchanged.
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

from ..builder import pad_batch
from .backbone import add_srf_config
from .config import ARCHS, config_file

__all__ = ["D2Backbone", "D2FeatureExtractor", "build_feature_extractor", "load_config"]


class _ReturnLayers:
    """What :func:`srfkit.detection.pyramid_keys` reads of a torchvision body: ``return_layers``."""

    def __init__(self, return_layers: dict[str, str]) -> None:
        self.return_layers = return_layers


class D2Backbone(nn.Module):
    """A detectron2 backbone (+ FPN) whose outputs carry srfkit's keys.

    ``forward(batch)``: a normalised batch (N, 3, H, W), H and W multiples of :attr:`size_divisibility`
    -> ``OrderedDict`` of the full (padded) levels, finest first, keyed ``"0".."3"`` for P2-P5 and
    ``"pool"`` for P6 (R-CNN backbones), or ``"0".."2"`` for P3-P5 and ``"p6"``, ``"p7"``
    (RetinaNet/FCOS backbones), as srfkit's torchvision ``BackboneWithFPN``. ``body.return_layers``
    maps ResNet stages to those keys as torchvision's does (``{"layer1": "0", ...}``), so
    :func:`srfkit.detection.pyramid_keys` and :func:`srfkit.detection.srf_level_keys` work on it.

    Attributes:
        net: the detectron2 backbone (``FPN``); ``names``: detectron2 output name -> srfkit key;
        strides: detectron2 output name -> stride; ``channels``: the output width(s) per srfkit key.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        shapes = net.output_shape()
        names = sorted(shapes, key=lambda k: shapes[k].stride)
        n_in = len(getattr(net, "in_features", names))
        pool = isinstance(getattr(net, "top_block", None), LastLevelMaxPool)
        self.strides = {name: shapes[name].stride for name in names}
        self.names = {name: str(i) if i < n_in else ("pool" if pool else name) for i, name in enumerate(names)}
        self.channels = {self.names[name]: shapes[name].channels for name in names}
        layers = {}
        for name in names[:n_in]:
            level = int(round(math.log2(self.strides[name])))
            layers[f"layer{level - 1}"] = self.names[name]  # P_k comes from ResNet stage layer(k-1)
        self.body = _ReturnLayers(layers)

    @property
    def size_divisibility(self) -> int:
        """The multiple that H and W of the input must be (detectron2's ``size_divisibility``; at least 1)."""
        return max(int(getattr(self.net, "size_divisibility", 1) or 1), 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.net(x)
        return OrderedDict((key, feats[name]) for name, key in self.names.items())


class D2FeatureExtractor(nn.Module):
    """F from a detectron2 detector: normalise as the detector does, pad, backbone + FPN.

    The contract of :class:`srfkit.detection.FeatureExtractor`:

    * :meth:`normalize` (list of (3, H_i, W_i) RGB images in [0, 1] -> padded normalised batch): each
      image scaled to [0, 255], put in the detector's channel order (``INPUT.FORMAT``: ``RGB`` or
      ``BGR``) and normalised with its ``PIXEL_MEAN``/``PIXEL_STD``; then zero-padded bottom/right
      (after normalisation, as detectron2's ``ImageList`` pads) with srfkit's ``pad_batch``, to a
      multiple of ``size_divisible`` (default: the backbone's ``size_divisibility``) or to ``size``.
    * :attr:`backbone` (a :class:`D2Backbone`): padded normalised batch -> ``OrderedDict`` of levels
      keyed as srfkit's FPN (``"0".."3"``, ``"pool"``: see :class:`D2Backbone`), not cropped.
    * ``forward(images, size_divisible=None, size=None)``: a list goes ``normalize`` then ``backbone``
      (padded features, as srfkit's). A batch tensor (N, 3, H, W) in [0, 1] is normalised, zero-padded
      to a multiple of ``size_divisible`` (default: the backbone's) or to ``size`` (detectron2's FPN
      cannot take other sizes, unlike torchvision's), and its levels cropped back to the unpadded
      extent, (N, C, ceil(H/s), ceil(W/s)); for an already divisible tensor this is srfkit's
      "normalised and used as it is". No resize: a half-size image stays half-size.

    Args:
        model: a detectron2 meta-architecture (``GeneralizedRCNN``, ``RetinaNet``) with ``backbone``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        model = getattr(model, "module", model)
        fmt = getattr(model, "input_format", "BGR")
        if fmt not in ("RGB", "BGR"):
            raise ValueError(f"detectron2 INPUT.FORMAT {fmt!r}: F takes RGB or BGR detectors only")
        self.backbone = D2Backbone(model.backbone)
        self.register_buffer("mean", model.pixel_mean.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", model.pixel_std.detach().clone().view(1, 3, 1, 1), persistent=False)
        self.bgr = fmt == "BGR"
        self.size_divisible = self.backbone.size_divisibility

    @property
    def strides(self) -> dict[str, int]:
        """srfkit key -> stride of that level."""
        return {key: self.backbone.strides[name] for name, key in self.backbone.names.items()}

    @property
    def channels(self) -> dict[str, int]:
        """srfkit key -> width of that level."""
        return dict(self.backbone.channels)

    def _normalize(self, x: Tensor) -> Tensor:
        """(..., 3, H, W) RGB in [0, 1] -> the detector's normalised input (channel order, mean, std)."""
        x = x * 255.0
        if self.bgr:
            x = x.flip(-3)
        return (x - self.mean) / self.std

    def normalize(
        self, images: list[Tensor], size_divisible: int | None = None, size: tuple[int, int] | None = None
    ) -> Tensor:
        """Normalised and then zero-padded batch (N, 3, H, W) of a list of (3, H_i, W_i) images."""
        normed = [self._normalize(img)[0] for img in images]
        return pad_batch(normed, size_divisible or self.size_divisible, size)

    def forward(
        self,
        images: Tensor | list[Tensor],
        size_divisible: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        if not isinstance(images, Tensor):
            return self.backbone(self.normalize(images, size_divisible, size))
        x = self._normalize(images)
        h, w = x.shape[-2:]
        if size is None:
            d = size_divisible or self.size_divisible
            size = (math.ceil(h / d) * d, math.ceil(w / d) * d)
        if h > size[0] or w > size[1]:
            raise ValueError(f"an image batch of {(h, w)} does not fit in {tuple(size)}")
        feats = self.backbone(F.pad(x, (0, size[1] - w, 0, size[0] - h)))
        return OrderedDict(
            (key, v[..., : math.ceil(h / self.strides[key]), : math.ceil(w / self.strides[key])])
            for key, v in feats.items()
        )


class _RecordingCheckpointer(DetectionCheckpointer):
    """detectron2's checkpointer that also keeps the model keys the file did not hold (``missing``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.missing: list[str] = []

    def _log_incompatible_keys(self, incompatible) -> None:
        self.missing = list(incompatible.missing_keys)
        super()._log_incompatible_keys(incompatible)


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
    if weights is not None and "SRF" in cfg.MODEL:
        cfg.MODEL.SRF.WEIGHTS = ""  # the checkpoint holds G; the stage-1 file may be gone
    model = build_model(cfg)
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"detectron2 checkpoint not found: {weights}")
        checkpointer = _RecordingCheckpointer(model)
        checkpointer.load(str(weights))
        missing = [k for k in checkpointer.missing if k.startswith("backbone.")]
        if missing:
            raise ValueError(
                f"{weights}: the checkpoint lacks {len(missing)} backbone tensors of the model of config "
                f"{config if not isinstance(config, CfgNode) else 'given'} (e.g. {', '.join(missing[:3])}); "
                "F must be the checkpoint's own backbone + FPN"
            )
    extractor = D2FeatureExtractor(model).cpu().eval()
    extractor.requires_grad_(False)
    return extractor
