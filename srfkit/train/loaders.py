"""Trained modules from finished stages: the final checkpoint of a stage folder, rebuilt from its specs.

Stage 1's F also comes from detectron2 (:func:`load_guide_features`): a detectron2 output folder
(``config.yaml`` + ``model_final.pth``) or a config + checkpoint, as the paper took model-zoo FPNs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..detection import SRF_LEVELS, FeatureExtractor, get_fpn, pyramid_keys
from ..models import FeaturePatchDiscriminator
from ..profiles import Profile
from .checkpoint import FINAL_NAME, latest_checkpoint, load_checkpoint, load_module_state
from .specs import build_discriminator, build_from_spec, build_upsampler, profile_from_dict

__all__ = [
    "D2_CONFIG",
    "GuideFeatures",
    "is_detectron2_folder",
    "load_d2_guide",
    "load_detector",
    "load_discriminator",
    "load_feature_extractor",
    "load_generator",
    "load_guide_features",
    "load_profile",
    "read_stage",
]


def read_stage(path: str | Path) -> dict:
    """The final checkpoint of a stage folder (or a checkpoint file), loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such stage folder or checkpoint file")
    if path.is_dir():
        final = path / FINAL_NAME
        if not final.is_file():
            latest = latest_checkpoint(path)
            hint = f"latest checkpoint {latest.name}; finish it with resume" if latest else "no checkpoint at all"
            raise FileNotFoundError(f"{path}: stage not finished ({FINAL_NAME} missing; {hint})")
        path = final
    return load_checkpoint(path)


def _payload(source: str | Path | dict) -> tuple[dict, str]:
    if isinstance(source, dict):
        return source, "checkpoint"
    return read_stage(source), str(source)


def load_detector(source: str | Path | dict) -> nn.Module:
    """The trained detector of a guide, extractor or target stage (eval mode, CPU)."""
    payload, name = _payload(source)
    models, config = payload["models"], payload["config"]
    key = "M" if "M" in models else "detector"
    if key not in models:
        raise ValueError(f"{name}: stage {payload['stage']!r} has no detector (models: {', '.join(models)})")
    model = build_from_spec(config["detector"])
    load_module_state(model, models[key], source=name)
    return model.eval()


def load_feature_extractor(source: str | Path | dict) -> FeatureExtractor:
    """F: the frozen backbone + FPN of a trained detector (eval mode, no gradients)."""
    extractor = FeatureExtractor(load_detector(source)).eval()
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor


def load_generator(source: str | Path | dict) -> nn.Module:
    """G from a srf-gan stage, or the FPN upsampler of an extractor/target stage (eval mode)."""
    payload, name = _payload(source)
    models, config = payload["models"], payload["config"]
    if "G" in models:
        g = build_upsampler(config["generator"])
        load_module_state(g, models["G"], source=name)
        return g.eval()
    model = load_detector(payload)
    return get_fpn(model).upsampler.eval()


def load_discriminator(source: str | Path | dict) -> FeaturePatchDiscriminator:
    """D from a srf-gan or extractor stage (eval mode)."""
    payload, name = _payload(source)
    if "D" not in payload["models"]:
        raise ValueError(f"{name}: stage {payload['stage']!r} has no discriminator")
    d = build_discriminator(payload["config"]["discriminator"])
    load_module_state(d, payload["models"]["D"], source=name)
    return d.eval()


def load_profile(source: str | Path | dict) -> Profile:
    """The profile a stage was trained with."""
    payload, _ = _payload(source)
    return profile_from_dict(payload["config"]["profile"])


# ------------------------------------------------------------------------------- F for stage 1

D2_CONFIG = "config.yaml"  # what detectron2's train_net (and srfkit's d2 train_detector) write beside the weights


@dataclass(frozen=True)
class GuideFeatures:
    """F (stages 1 and 2) and how the stage records it.

    Attributes:
        extractor: F, frozen (a :class:`~srfkit.detection.FeatureExtractor` or a detectron2
            ``D2FeatureExtractor``: same contract).
        config: the stage's ``config["guide"]`` (compared on resume): a srfkit guide's detector spec, or
            for detectron2 ``{"engine": "detectron2", ..., "weights_sha1": ...}``.
        sources: the stage's ``sources`` (informative, not compared): the folders and files F came from.
    """

    extractor: nn.Module
    config: dict
    sources: dict = field(default_factory=dict)


def is_detectron2_folder(path: str | Path) -> bool:
    """Whether ``path`` is a detectron2 output folder (it holds ``config.yaml``; srfkit stages never do)."""
    path = Path(path)
    return path.is_dir() and (path / D2_CONFIG).is_file()


def load_guide_features(
    guide_dir: str | Path | None = None,
    guide_config: str | Path | None = None,
    guide_weights: str | Path | None = None,
    *,
    channels: int | None = None,
) -> GuideFeatures:
    """Stage 1's F from exactly one source.

    Args:
        guide_dir: a finished srfkit guide stage folder, or a detectron2 output folder (``config.yaml`` and
            ``model_final.pth``, as detectron2's ``train_net`` and :func:`srfkit.detection.d2.engine.train_detector`
            write them).
        guide_config, guide_weights: a detectron2 config (YAML file, srfkit d2 arch name or model-zoo config
            name) and the user's checkpoint (``.pth``/``.pkl``); both, and not with ``guide_dir``.
        channels: the width F must have (the profile's ``fpn_channels``; checked for detectron2 F).
    """
    explicit = guide_config is not None or guide_weights is not None
    if guide_dir is not None and explicit:
        raise ValueError(
            "give F either as guide_dir (a srfkit guide stage or a detectron2 output folder) or as "
            "guide_config + guide_weights (a detectron2 config and checkpoint), not both"
        )
    if guide_dir is None:
        if guide_config is None or guide_weights is None:
            raise ValueError(
                "a detectron2 F needs both guide_config (a YAML or model-zoo config name) and guide_weights "
                "(a .pth/.pkl checkpoint); or pass guide_dir"
            )
        return load_d2_guide(guide_config, guide_weights, channels=channels)
    if is_detectron2_folder(guide_dir):
        from ..detection.d2 import FINAL_CHECKPOINT

        weights = Path(guide_dir) / FINAL_CHECKPOINT
        if not weights.is_file():
            raise FileNotFoundError(
                f"{guide_dir}: a detectron2 output folder without {FINAL_CHECKPOINT} (training not finished?); "
                "pass guide_config and guide_weights to take another checkpoint"
            )
        return load_d2_guide(Path(guide_dir) / D2_CONFIG, weights, channels=channels, folder=guide_dir)
    guide = read_stage(guide_dir)
    return GuideFeatures(load_feature_extractor(guide), guide["config"]["detector"], {"guide": str(guide_dir)})


def load_d2_guide(
    config: str | Path,
    weights: str | Path,
    *,
    channels: int | None = None,
    folder: str | Path | None = None,
) -> GuideFeatures:
    """F from a detectron2 config and checkpoint (imports detectron2; ``ImportError`` with the install hint
    without it). Raises ``ValueError`` when F lacks one of P2-P5 or its width is not ``channels``."""
    from ..detection.d2 import require_detectron2

    require_detectron2()
    from ..detection.d2.features import build_feature_extractor, load_config
    from .evaluate import file_sha1

    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"detectron2 checkpoint not found: {weights}")
    cfg = load_config(config)
    width = int(cfg.MODEL.FPN.OUT_CHANNELS)
    if channels is not None and width != channels:
        raise ValueError(
            f"detectron2 config {config}: F is {width} channels wide (MODEL.FPN.OUT_CHANNELS), "
            f"the profile's G and D are {channels} (fpn_channels)"
        )
    extractor = build_feature_extractor(cfg, weights)
    levels = pyramid_keys(extractor)
    missing = [f"P{k}" for k in SRF_LEVELS if k not in levels]
    if missing:
        have = ", ".join(f"P{k}" for k in levels)
        raise ValueError(
            f"detectron2 config {config}: F has levels {have}, no {', '.join(missing)}; stage 1 trains G on "
            "P2-P5 (an R-CNN FPN with in_features res2-res5)"
        )
    widths = {extractor.channels[levels[k]] for k in SRF_LEVELS}
    if channels is not None and widths != {channels}:
        raise ValueError(
            f"detectron2 config {config}: F's P2-P5 are {sorted(widths)} channels wide, "
            f"the profile's G and D are {channels} (fpn_channels)"
        )
    sha1 = file_sha1(weights)
    record = {
        "engine": "detectron2",
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "resnet_depth": int(cfg.MODEL.RESNETS.DEPTH),
        "fpn_channels": width,
        "input_format": cfg.INPUT.FORMAT,
        "weights_sha1": sha1,
    }
    sources = {
        "guide": str(folder if folder is not None else weights),
        "guide_engine": "detectron2",
        "guide_config": str(config),
        "guide_weights": str(weights),
        "guide_weights_sha1": sha1,
    }
    return GuideFeatures(extractor, record, sources)
