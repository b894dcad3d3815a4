"""Former home of the stages' shared helpers, kept so that ``from srfkit.train.common import X`` keeps working.

Each helper now lives in a module named for what it is:

* :mod:`srfkit.train.losses`: the losses of Eq. 1-3 (``srf_losses``, ``discriminator_loss``, ``ADV_WEIGHT``).
* :mod:`srfkit.train.adversarial`: the D-then-G update of stages 1-2 (``frozen``, ``LevelMap``).
* :mod:`srfkit.train.specs`: model specs and their builders (``detector_spec``, ``build_upsampler``, ...).
* :mod:`srfkit.train.inputs`: datasets and images (``resolve_dataset``, ``resize_to_profile``, ``degrade``).
* :mod:`srfkit.train.loaders`: trained modules from stage folders (``read_stage``, ``load_detector``, ...).
* :mod:`srfkit.detection`: pyramid levels (``pyramid_keys``, ``SRF_LEVELS``, ``srf_level_keys``, ``level_name``).

New code should import from those modules.
"""

from ..detection import SRF_LEVELS, pad_batch, pyramid_keys
from .adversarial import LevelMap, frozen
from .inputs import (
    MASK_ARCHS,
    PAD_DIVISOR,
    check_arch,
    dataset_info,
    default_arch,
    degrade,
    resize_to_profile,
    resolve_dataset,
)
from .loaders import (
    load_detector,
    load_discriminator,
    load_feature_extractor,
    load_generator,
    load_profile,
    read_stage,
)
from .losses import ADV_WEIGHT, crop_common, discriminator_loss, srf_losses
from .specs import (
    build_discriminator,
    build_from_spec,
    build_upsampler,
    check_backbone_init,
    detector_spec,
    discriminator_spec,
    discriminator_widths,
    generator_spec,
    profile_from_dict,
    upsampler_spec,
)

__all__ = [
    "SRF_LEVELS",
    "ADV_WEIGHT",
    "MASK_ARCHS",
    "PAD_DIVISOR",
    "resolve_dataset",
    "dataset_info",
    "default_arch",
    "check_arch",
    "profile_from_dict",
    "discriminator_widths",
    "discriminator_spec",
    "resize_to_profile",
    "pad_batch",
    "degrade",
    "pyramid_keys",
    "frozen",
    "LevelMap",
    "crop_common",
    "srf_losses",
    "discriminator_loss",
    "generator_spec",
    "upsampler_spec",
    "detector_spec",
    "build_upsampler",
    "build_from_spec",
    "build_discriminator",
    "check_backbone_init",
    "read_stage",
    "load_detector",
    "load_feature_extractor",
    "load_generator",
    "load_discriminator",
    "load_profile",
]
