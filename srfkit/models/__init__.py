"""Models: the SRF generator, the feature-patch discriminator, upsamplers (with the ``nearest_conv``
control) and the SRF FPN."""

from . import peers  # noqa: F401  (registers dysample, dysample_dynamic, carafe)
from .controls import NearestConv  # (registers nearest_conv)
from .discriminator import DISCRIMINATOR_HEADS, FeaturePatchDiscriminator
from .fpn import PerStepUpsampler, SRFFeaturePyramidNetwork
from .generator import (
    AUTHORS_PREFIX,
    GENERATOR_VARIANTS,
    SRFGenerator,
    authors_state_dict,
    load_authors_generator,
)
from .peers import CARAFE, DySample
from .upsamplers import (
    UPSAMPLERS,
    Interpolation,
    fit_to_size,
    learned_output_size,
    make_upsampler,
    register_upsampler,
    upsampler_names,
)

__all__ = [
    "AUTHORS_PREFIX",
    "CARAFE",
    "DISCRIMINATOR_HEADS",
    "DySample",
    "FeaturePatchDiscriminator",
    "GENERATOR_VARIANTS",
    "Interpolation",
    "NearestConv",
    "PerStepUpsampler",
    "SRFFeaturePyramidNetwork",
    "SRFGenerator",
    "UPSAMPLERS",
    "authors_state_dict",
    "fit_to_size",
    "learned_output_size",
    "load_authors_generator",
    "make_upsampler",
    "register_upsampler",
    "upsampler_names",
]
