"""Training: one loop, four stages (guide, SRF-GAN, extractor, target), checkpoints and loaders.

Python API (what the book's chapters call)::

    from srfkit.train import run_pipeline, train_guide, load_generator
    results = run_pipeline("quick", "shapes", "runs/quick")      # {stage: StageResult}
    G = load_generator(results["srf-gan"].out_dir)

Each ``train_*`` takes ``(profile, dataset, out_dir, seed=0, resume=False, **stage_options,
**loop_options)`` and returns a :class:`StageResult`; see the stage modules for their options and
:class:`LoopOptions` for the loop's.

Modules: ``losses`` (Eq. 1-3), ``adversarial`` (the D-then-G update of stages 1-2), ``specs`` (model specs
and builders), ``inputs`` (datasets and images), ``prepare`` (the preamble of every ``train_*``),
``loaders`` (trained modules from stage folders), ``loop`` and ``checkpoint``; ``common`` re-exports the
helpers under their former import path.
"""

from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from .extractor import train_extractor
from .guide import train_guide
from .loaders import (
    load_detector,
    load_discriminator,
    load_feature_extractor,
    load_generator,
    load_profile,
    read_stage,
)
from .loop import LoopOptions, NonFiniteLossError, StageResult, train_loop
from .pipeline import STAGES, run_pipeline, stage_dirs
from .specs import discriminator_widths
from .srf_gan import train_srf_gan
from .target import train_target

__all__ = [
    "CheckpointMismatchError",
    "LoopOptions",
    "NonFiniteLossError",
    "STAGES",
    "StageResult",
    "discriminator_widths",
    "load_checkpoint",
    "load_detector",
    "load_discriminator",
    "load_feature_extractor",
    "load_generator",
    "load_profile",
    "read_stage",
    "run_pipeline",
    "save_checkpoint",
    "stage_dirs",
    "train_extractor",
    "train_guide",
    "train_loop",
    "train_srf_gan",
    "train_target",
]
