"""Stages 0-3 in order, each in its own folder under one root; finished stages are skipped."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..profiles import Profile, get_profile
from .extractor import train_extractor
from .guide import train_guide
from .inputs import resolve_dataset
from .loop import StageResult
from .srf_gan import train_srf_gan
from .target import train_target

__all__ = ["STAGES", "run_pipeline", "stage_dirs"]

STAGES = ("guide", "srf-gan", "extractor", "target")


def stage_dirs(out_root: str | Path) -> dict[str, Path]:
    """``{"guide": out_root/guide, "srf-gan": out_root/srf-gan, ...}``."""
    return {name: Path(out_root) / name for name in STAGES}


def run_pipeline(
    profile: str | Profile,
    dataset: str | Dataset,
    out_root: str | Path,
    seed: int = 0,
    resume: bool = False,
    *,
    arch: str | None = None,
    target_arch: str | None = None,
    reuse: str = "G",
    adversarial_grad: bool = True,
    weights_backbone: str | Path | None = None,
    **options,
) -> dict[str, StageResult]:
    """Run guide, srf-gan, extractor and target into ``out_root/<stage>``.

    A stage whose ``final.pt`` exists (with the same settings) is skipped, so several chapters can
    share one run folder. Options: ``arch`` (guide and extractor family), ``target_arch``,
    ``reuse`` (``G``/``M``/``none`` for the target), ``adversarial_grad`` (stages 1-2),
    ``weights_backbone`` (a local ResNet state dict for every detector built fresh), and
    :class:`~srfkit.train.loop.LoopOptions` fields applied to every stage.
    """
    profile = get_profile(profile)
    data = resolve_dataset(dataset, profile, options.get("device"))
    dirs = stage_dirs(out_root)
    common = dict(seed=seed, resume=resume, **options)
    weights = dict(weights_backbone=weights_backbone)
    results = {"guide": train_guide(profile, data, dirs["guide"], arch=arch, **weights, **common)}
    results["srf-gan"] = train_srf_gan(
        profile, data, dirs["srf-gan"], guide_dir=dirs["guide"], adversarial_grad=adversarial_grad, **common
    )
    results["extractor"] = train_extractor(
        profile,
        data,
        dirs["extractor"],
        guide_dir=dirs["guide"],
        srf_gan_dir=dirs["srf-gan"],
        arch=arch,
        adversarial_grad=adversarial_grad,
        **weights,
        **common,
    )
    results["target"] = train_target(
        profile, data, dirs["target"], arch=target_arch, reuse=reuse, extractor_dir=dirs["extractor"], **common
    )
    return results
