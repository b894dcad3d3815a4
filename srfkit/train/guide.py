"""Stage 0, the guide: a detector with ``nearest`` (or any) FPN upsampling on full-resolution images.

Its backbone + FPN becomes the frozen feature extractor F of stages 1 and 2; it is also row A1 of
the paper's ablation (Table 4). The same :class:`DetectorStage` trains stage 3's target detector.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torch.utils.data import Dataset

from ..detection import get_fpn
from ..profiles import Profile
from .inputs import dataset_info
from .loop import Stage, StageResult, seed_everything, train_loop
from .prepare import prepare_stage
from .specs import build_from_spec, check_backbone_init, detector_spec, upsampler_spec

__all__ = ["DetectorStage", "train_guide"]


class DetectorStage(Stage):
    """A detector trained with its own detection loss only (stages 0 and 3).

    Args:
        name: stage name (``guide`` or ``target``).
        detector: the model; ``spec``: its :func:`~srfkit.train.specs.detector_spec`.
        freeze_upsampler: keep the FPN upsampler's weights fixed and in eval mode (Table 4, A4).
        extra: more config entries (compared on resume); ``sources``: input folders (not compared).
    """

    ddp_modules = ("detector",)

    def __init__(
        self,
        name: str,
        detector: nn.Module,
        spec: dict,
        dataset: Dataset,
        freeze_upsampler: bool = False,
        extra: dict | None = None,
        sources: dict | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.modules = {"detector": detector}
        self.spec, self.freeze_upsampler = spec, freeze_upsampler
        self._config = {
            "profile": spec["profile"],
            "dataset": dataset_info(dataset),
            "detector": spec,
            "freeze_upsampler": freeze_upsampler,
            **(extra or {}),
        }
        self._sources = sources or {}
        if freeze_upsampler:
            for p in get_fpn(detector).upsampler.parameters():
                p.requires_grad_(False)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"detector": [p for p in self.modules["detector"].parameters() if p.requires_grad]}

    def train_mode(self) -> None:
        self.modules["detector"].train()
        if self.freeze_upsampler:
            get_fpn(self.modules["detector"]).upsampler.eval()

    def step(self, batch, ctx) -> None:
        images, targets = batch
        with ctx.autocast():
            losses = self.run["detector"](images, targets)
        ctx.update("detector", losses)


def train_guide(
    profile: str | Profile,
    dataset: str | Dataset,
    out_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    *,
    arch: str | None = None,
    upsampler: str = "nearest",
    weights_backbone: str | Path | None = None,
    **options,
) -> StageResult:
    """Stage 0: train the guide detector (nearest upsampling by default) on full-resolution images.

    Args:
        profile: profile or its name; ``dataset``: a dataset object or a shipped dataset's name.
        out_dir: the stage's folder (checkpoints, ``metrics.jsonl``, ``config.json``).
        arch: detector family (default: ``mask_rcnn`` if the dataset has masks, else ``faster_rcnn``).
        upsampler: FPN top-down upsampler (registry name).
        weights_backbone: a local ResNet state dict to start the backbone from (needed, and only then
            required, by profiles with ``norm="frozen"``, such as ``paper``).
        **options: :class:`~srfkit.train.loop.LoopOptions` fields (``iters``, ``clip_grad``, ``device``, ...).
    """
    setup = prepare_stage(profile, dataset, options, arch)
    profile, data = setup.profile, setup.data
    check_backbone_init(profile, weights_backbone)
    seed_everything(seed)
    spec = detector_spec(setup.arch, data.num_classes, upsampler_spec(upsampler, profile), profile)
    stage = DetectorStage(
        "guide",
        build_from_spec(spec, weights_backbone=weights_backbone),
        spec,
        data,
        sources={"weights_backbone": str(weights_backbone) if weights_backbone else None},
    )
    return train_loop(stage, data, out_dir, profile.guide, seed, resume, setup.loop)
