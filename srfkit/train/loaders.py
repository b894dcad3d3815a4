"""Trained modules from finished stages: the final checkpoint of a stage folder, rebuilt from its specs."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..detection import FeatureExtractor, get_fpn
from ..models import FeaturePatchDiscriminator
from ..profiles import Profile
from .checkpoint import FINAL_NAME, latest_checkpoint, load_checkpoint, load_module_state
from .specs import build_discriminator, build_from_spec, build_upsampler, profile_from_dict

__all__ = [
    "load_detector",
    "load_discriminator",
    "load_feature_extractor",
    "load_generator",
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
