"""Detectors over a ResNet backbone whose FPN is the SRF FPN, pyramid levels by name, and weight transfer."""

from .builder import ARCHS, FeatureExtractor, build_backbone, build_detector, get_fpn, pad_batch
from .levels import SRF_LEVELS, level_name, srf_level_keys
from .transfer import pyramid_keys, transfer_backbone

__all__ = [
    "ARCHS",
    "SRF_LEVELS",
    "FeatureExtractor",
    "build_backbone",
    "build_detector",
    "get_fpn",
    "level_name",
    "pad_batch",
    "pyramid_keys",
    "srf_level_keys",
    "transfer_backbone",
]
