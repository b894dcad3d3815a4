"""Detectors over a ResNet backbone whose FPN is the SRF FPN, and weight transfer between them."""

from .builder import ARCHS, FeatureExtractor, build_backbone, build_detector, get_fpn, pad_batch
from .transfer import pyramid_keys, transfer_backbone

__all__ = [
    "ARCHS",
    "FeatureExtractor",
    "build_backbone",
    "build_detector",
    "get_fpn",
    "pad_batch",
    "pyramid_keys",
    "transfer_backbone",
]
