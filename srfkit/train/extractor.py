"""Stage 2, the multi-scale SRF extractor M (paper Eq. 3).

M is a detector whose FPN top-down upsampler is the stage-1 G, built for half-size inputs (its
transform's ``image_size``/``max_size`` halved, so it does not scale the degraded image back up).
For a batch of images I (resized as the detector would): ``I_lr = degrade(I, 0.5)`` with boxes,
masks and areas scaled by 0.5. Each step:

1. M runs on I_lr with the scaled targets: detection loss, and (through a hook) its FPN levels P_k.
2. Targets: ``downsample(F(I)_k, 0.5)`` (bilinear) from the frozen guide F, for k in P2-P5.
3. D's update: real = the targets, fake = M's levels (detached); D starts from stage 1's D.
4. M's update: detection loss + ``l1_weight * L1 + adv_weight * adversarial`` over the levels.

``semantic_shift=1`` is the "different semantic levels" variant of Table 7, defined here as: keep
M's input, detection loss and everything else, but pair M's level P_k (of the half-size image)
with F's level P_{k+1} of the full-size image, which has the same spatial size and needs no
downsampling, yet holds the next coarser semantic level. (The paper's own variant feeds the same
resolution to M and F and compares G(P_{k+1}) with P_k; both mismatch the semantic level by one
with the spatial size matched; this one changes nothing else in the stage.)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..detection import FeatureExtractor
from ..profiles import Profile, get_profile
from .checkpoint import load_module_state
from .common import (
    ADV_WEIGHT,
    SRF_LEVELS,
    LevelMap,
    build_discriminator,
    build_from_spec,
    check_arch,
    crop_common,
    dataset_info,
    default_arch,
    degrade,
    detector_spec,
    discriminator_loss,
    frozen,
    load_feature_extractor,
    load_generator,
    pad_batch,
    pyramid_keys,
    read_stage,
    resize_to_profile,
    resolve_dataset,
    srf_losses,
)
from .guide import loop_options
from .loop import Stage, StageResult, seed_everything, train_loop

__all__ = ["ExtractorStage", "train_extractor", "load_matching"]


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Copy every entry of ``state`` whose name and shape match ``model``'s; returns the counts."""
    own = model.state_dict()
    match = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(match, strict=False)
    return {"loaded": len(match), "skipped": len(own) - len(match)}


class ExtractorStage(Stage):
    """M (detector with G inside its FPN) and D, trained with the integral loss of Eq. (3).

    Args:
        extractor_model: M; ``spec``: its detector spec. discriminator: D (``discriminator_cfg``: its
            spec). guide: F (frozen).
        semantic_shift: 0 (paper) or 1 (Table 7's different-level variant; see the module doc).
        l1_weight, adv_weight, adversarial_grad: as in stage 1.
        degrade_mode: interpolation that makes I_lr (Table 6).
    """

    name = "extractor"
    ddp_modules = ("M", "D")

    def __init__(
        self,
        extractor_model: nn.Module,
        spec: dict,
        discriminator: nn.Module,
        discriminator_cfg: dict,
        guide: FeatureExtractor,
        profile: Profile,
        dataset: Dataset,
        semantic_shift: int = 0,
        l1_weight: float = 1.0,
        adv_weight: float = ADV_WEIGHT,
        adversarial_grad: bool = True,
        degrade_mode: str = "bilinear",
        extra: dict | None = None,
        sources: dict | None = None,
    ) -> None:
        super().__init__()
        if semantic_shift not in (0, 1):
            raise ValueError(f"semantic_shift must be 0 (same level) or 1 (next level), not {semantic_shift!r}")
        self.modules = {"M": extractor_model, "D": discriminator}
        self.guide, self.profile = guide, profile
        self.frozen = {"F": guide}
        self.semantic_shift, self.l1_weight = semantic_shift, l1_weight
        self.adv_weight, self.adversarial_grad = adv_weight, adversarial_grad
        self.degrade_mode = degrade_mode
        m_keys, f_keys = pyramid_keys(extractor_model), pyramid_keys(guide)
        self.pairs = [
            (m_keys[k], f_keys[k + semantic_shift]) for k in SRF_LEVELS if k in m_keys and k + semantic_shift in f_keys
        ]
        self._feats: dict[str, torch.Tensor] = {}
        extractor_model.backbone.register_forward_hook(lambda _m, _i, out: self._feats.update(out))
        self._config = {
            "profile": profile.to_dict(),
            "dataset": dataset_info(dataset),
            "detector": spec,
            "discriminator": discriminator_cfg,
            "semantic_shift": semantic_shift,
            "level_pairs": self.pairs,
            "l1_weight": l1_weight,
            "adv_weight": adv_weight,
            "adversarial_grad": adversarial_grad,
            "degrade_mode": degrade_mode,
            **(extra or {}),
        }
        self._sources = sources or {}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {k: [p for p in m.parameters() if p.requires_grad] for k, m in self.modules.items()}

    def wrap(self, env) -> None:
        self.run = {"M": env.wrap(self.modules["M"]), "D": env.wrap(LevelMap(self.modules["D"]))}

    def inputs(self, images: list[torch.Tensor], targets: list[dict]):
        """(half-size images, scaled targets, guide targets per level pair)."""
        full = [resize_to_profile(img, tgt, self.profile) for img, tgt in zip(images, targets)]
        half = [degrade(img, tgt, 0.5, self.degrade_mode) for img, tgt in full]
        with torch.no_grad():
            feats = self.guide(pad_batch([img for img, _ in full]))
        real = [
            feats[fk] if self.semantic_shift else F.interpolate(feats[fk], scale_factor=0.5, mode="bilinear")
            for _, fk in self.pairs
        ]
        return [img for img, _ in half], [tgt for _, tgt in half], real

    def step(self, batch, ctx) -> None:
        images, targets, real = self.inputs(*batch)
        with ctx.autocast():
            det = self.run["M"](images, targets)
        pairs = [crop_common(self._feats[mk], r) for (mk, _), r in zip(self.pairs, real)]
        fake, real = [p[0] for p in pairs], [p[1] for p in pairs]
        with ctx.autocast():
            logits = self.run["D"](real + [f.detach() for f in fake])
        ctx.update("D", discriminator_loss(logits[: len(real)], logits[len(real) :]))
        with frozen(self.modules["D"]), ctx.autocast():
            l1, adv = srf_losses(fake, real, self.modules["D"], self.adversarial_grad)
        total = sum(det.values()) + self.adv_weight * adv + (self.l1_weight * l1 if self.l1_weight else 0.0)
        ctx.update("M", {**det, "srf_l1": l1, "srf_adv": adv}, total=total)


def build_extractor(
    profile: Profile, data: Dataset, arch: str, srf_gan: dict, guide: dict, init_from_guide: bool = False
) -> tuple[nn.Module, dict]:
    """M: detector at half size with stage-1 G as its upsampler.

    Its other weights start fresh, as in the paper ("the other parameters of the multi-scale SRF
    extractor are initialized"), or from the guide where they fit when ``init_from_guide``.
    """
    generator = load_generator(srf_gan).train()
    spec = detector_spec(
        arch,
        data.num_classes,
        srf_gan["config"]["generator"],
        profile,
        image_size=profile.image_size // 2,
        max_size=(profile.max_size + 1) // 2,
    )
    model = build_from_spec(spec, upsampler=generator)
    if init_from_guide:
        guide_state = {k: v for k, v in guide["models"]["detector"].items() if ".upsampler." not in k}
        load_matching(model, guide_state)
    return model, spec


def train_extractor(
    profile: str | Profile,
    dataset: str | Dataset,
    out_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    *,
    guide_dir: str | Path,
    srf_gan_dir: str | Path,
    arch: str | None = None,
    semantic_shift: int = 0,
    l1_weight: float = 1.0,
    adv_weight: float = ADV_WEIGHT,
    adversarial_grad: bool = True,
    init_from_guide: bool = False,
    degrade_mode: str = "bilinear",
    **options,
) -> StageResult:
    """Stage 2: train M (detection + per-level SRF loss against the guide) and D, on degraded images.

    Args:
        guide_dir: finished guide stage (F).
        srf_gan_dir: finished srf-gan stage (G inside M's FPN, D).
        arch: M's detection head (default: ``mask_rcnn`` if the dataset has masks, else ``faster_rcnn``).
        semantic_shift: 1 for Table 7's different-semantic-level variant.
        l1_weight, adv_weight, adversarial_grad: as in :func:`~srfkit.train.train_srf_gan`.
        init_from_guide: start M's backbone, FPN and heads from the guide's weights where they fit
            (default False: fresh, as in the paper; True gives M-reusing targets extra training that
            a baseline does not get).
        degrade_mode: interpolation of the degradation function (Table 6): bilinear, nearest, bicubic.
        **options: :class:`~srfkit.train.loop.LoopOptions` fields.
    """
    profile = get_profile(profile)
    data = resolve_dataset(dataset, profile, options.get("device"))
    arch = arch or default_arch(data)
    check_arch(arch, data)
    guide, srf_gan = read_stage(guide_dir), read_stage(srf_gan_dir)
    seed_everything(seed)
    model, spec = build_extractor(profile, data, arch, srf_gan, guide, init_from_guide)
    disc = build_discriminator(srf_gan["config"]["discriminator"])
    load_module_state(disc, srf_gan["models"]["D"], source=srf_gan_dir)
    stage = ExtractorStage(
        model,
        spec,
        disc,
        srf_gan["config"]["discriminator"],
        load_feature_extractor(guide),
        profile,
        data,
        semantic_shift=semantic_shift,
        l1_weight=l1_weight,
        adv_weight=adv_weight,
        adversarial_grad=adversarial_grad,
        degrade_mode=degrade_mode,
        extra={
            "guide": guide["config"]["detector"],
            "srf_gan": srf_gan["config"]["generator"],
            "init_from_guide": init_from_guide,
        },
        sources={"guide": str(guide_dir), "srf_gan": str(srf_gan_dir)},
    )
    return train_loop(stage, data, out_dir, profile.extractor, seed, resume, loop_options(profile, options))
