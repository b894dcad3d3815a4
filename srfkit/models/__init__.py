"""Models: the SRF generator, the feature-patch discriminator, upsamplers and the SRF FPN."""

from . import peers  # noqa: F401  (registers dysample, dysample_dynamic, carafe)
from .discriminator import FeaturePatchDiscriminator
from .fpn import SRFFeaturePyramidNetwork
from .generator import GENERATOR_VARIANTS, SRFGenerator
from .peers import CARAFE, DySample
from .upsamplers import (
    UPSAMPLERS,
    Interpolation,
    fit_to_size,
    make_upsampler,
    register_upsampler,
    upsampler_names,
)

__all__ = [
    "CARAFE",
    "DySample",
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
