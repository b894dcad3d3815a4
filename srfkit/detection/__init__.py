"""Detectors over a ResNet backbone whose FPN is the SRF FPN."""

from .builder import ARCHS, FeatureExtractor, build_backbone, build_detector, get_fpn

__all__ = ["ARCHS", "FeatureExtractor", "build_backbone", "build_detector", "get_fpn"]
