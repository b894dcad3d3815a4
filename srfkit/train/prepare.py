"""The preamble every ``train_*`` function shares: profile, dataset, detector family and loop options."""

from __future__ import annotations

from dataclasses import dataclass

from torch.utils.data import Dataset

from ..profiles import Profile, get_profile
from .inputs import check_arch, default_arch, resolve_dataset
from .loop import LoopOptions, loop_options

__all__ = ["StageSetup", "prepare_stage"]


@dataclass
class StageSetup:
    """What a stage starts from: ``profile``, ``data`` (the dataset object), ``arch`` (``None`` for
    stages without a detector) and ``loop`` (the :class:`~srfkit.train.loop.LoopOptions`)."""

    profile: Profile
    data: Dataset
    arch: str | None
    loop: LoopOptions


def prepare_stage(
    profile: str | Profile, dataset: str | Dataset, options: dict, arch: str | None = None, detector: bool = True
) -> StageSetup:
    """Look up the profile, load the dataset (``options["device"]`` for torchrun), and, for a stage that
    trains a detector, pick its family (``arch``, default: ``mask_rcnn`` if the dataset has masks, else
    ``faster_rcnn``) and refuse a mask family without masks; ``options`` become the loop options
    (unknown names raise ``TypeError``)."""
    profile = get_profile(profile)
    data = resolve_dataset(dataset, profile, options.get("device"))
    if detector:
        arch = arch or default_arch(data)
        check_arch(arch, data)
    return StageSetup(profile, data, arch, loop_options(profile, options))
