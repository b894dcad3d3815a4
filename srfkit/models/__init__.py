"""Models: the SRF generator, the feature-patch discriminator, upsamplers and the SRF FPN."""

from .discriminator import FeaturePatchDiscriminator
from .fpn import SRFFeaturePyramidNetwork
from .generator import GENERATOR_VARIANTS, SRFGenerator
from .upsamplers import (
    UPSAMPLERS,
    Interpolation,
    fit_to_size,
    make_upsampler,
    register_upsampler,
    upsampler_names,
)

__all__ = [
    "FeaturePatchDiscriminator",
    "GENERATOR_VARIANTS",
    "Interpolation",
    "SRFFeaturePyramidNetwork",
    "SRFGenerator",
    "UPSAMPLERS",
    "fit_to_size",
    "make_upsampler",
    "register_upsampler",
    "upsampler_names",
]
