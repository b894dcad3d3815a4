"""Stage 1, SRF-GAN (paper Eq. 1-2): G and D trained alternately on pairs of guide features.

For a batch of images I (resized as the detector would, padded to a multiple of 64):
``I_lr = degrade(I, 0.5)``; per pyramid level i in P2-P5, the input is ``F(I_lr)_i`` and the target
``F(I)_i`` (same level index, so the same semantic level; G doubles the size). Each step:

1. D's update: BCE-with-logits of D(F(I)_i) against "real" plus D(G(F(I_lr)_i)) (detached) against
   "fake", each a per-level mean, summed over levels.
2. G's update: ``l1_weight * L1 + adv_weight * adversarial``, L1 a per-level mean of |G(x) - y|
   (G's output cropped to the target's size), adversarial the BCE of D(G(x)) against "real", both
   summed over the levels as in Eq. (2). With ``adversarial_grad=False`` D sees a detached G(x):
   the authors' training code does this (published in their AFI-GAN repository; the SRF-GAN
   repository holds evaluation code only), so G then learns from L1 only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..detection import SRF_LEVELS, FeatureExtractor, pyramid_keys, srf_level_keys
from ..profiles import Profile
from .adversarial import AdversarialStage, LevelMap
from .inputs import PAD_DIVISOR, dataset_info, degrade, resize_to_profile
from .loaders import load_guide_features
from .loop import StageResult, seed_everything, train_loop
from .losses import ADV_WEIGHT
from .prepare import prepare_stage
from .specs import build_discriminator, build_upsampler, discriminator_spec, generator_spec

__all__ = ["SRFGANStage", "train_srf_gan"]


class SRFGANStage(AdversarialStage):
    """G and D of SRF-GAN over a frozen feature extractor F.

    Args:
        generator: G (``forward(x, size)``); ``generator_cfg``: its spec.
        discriminator: D; ``extractor``: F (frozen here): srfkit's ``FeatureExtractor`` or detectron2's
            ``D2FeatureExtractor`` (same contract: ``normalize``, ``backbone``, srfkit's level keys).
        profile: sizes; ``dataset``: for the config.
        l1_weight, adv_weight: weights of the L1 and adversarial terms in G's loss (1 and 1e-3).
        adversarial_grad: let the adversarial term's gradient reach G (False: the authors' AFI-GAN training code).
        degrade_mode: interpolation that makes I_lr (Table 6: bilinear, nearest or bicubic).
    """

    name = "srf-gan"
    ddp_modules = ("G", "D")

    def __init__(
        self,
        generator: nn.Module,
        generator_cfg: dict,
        discriminator: nn.Module,
        extractor: FeatureExtractor,
        profile: Profile,
        dataset: Dataset,
        l1_weight: float = 1.0,
        adv_weight: float = ADV_WEIGHT,
        adversarial_grad: bool = True,
        degrade_mode: str = "bilinear",
        guide_config: dict | None = None,
        sources: dict | None = None,
        discriminator_cfg: dict | None = None,
    ) -> None:
        super().__init__(l1_weight, adv_weight, adversarial_grad, degrade_mode)
        self.modules = {"G": generator, "D": discriminator}
        self.extractor, self.profile = extractor, profile
        self.frozen = {"F": extractor}
        self.keys = srf_level_keys(extractor)
        levels = pyramid_keys(extractor)
        self._config = {
            "profile": profile.to_dict(),
            "dataset": dataset_info(dataset),
            "generator": generator_cfg,
            "discriminator": discriminator_cfg or discriminator_spec(profile),
            **self.loss_config(),
            "levels": [k for k in SRF_LEVELS if k in levels],
            "guide": guide_config,
        }
        self._sources = sources or {}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {name: list(self.modules[name].parameters()) for name in ("G", "D")}

    def wrap(self, env) -> None:
        self.run = {k: env.wrap(LevelMap(m)) if k in self.ddp_modules else m for k, m in self.modules.items()}

    @torch.no_grad()
    def features(self, images: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(F(I_lr)_i, F(I)_i) over the levels, for a list of (3, H, W) images.

        Each image is resized as the detector would, and degraded on its own; F normalises and then
        zero-pads (as the detector's transform does) I to a multiple of 64 and I_lr to exactly half
        that size, so that every level of F(I_lr) is half the size of F(I)'s.
        """
        hr = [resize_to_profile(img, None, self.profile)[0] for img in images]
        lr = [degrade(img, None, 0.5, self.degrade_mode)[0] for img in hr]
        hr_batch = self.extractor.normalize(hr, size_divisible=PAD_DIVISOR)
        lr_batch = self.extractor.normalize(lr, size=(hr_batch.shape[-2] // 2, hr_batch.shape[-1] // 2))
        feats_hr, feats_lr = self.extractor.backbone(hr_batch), self.extractor.backbone(lr_batch)
        return [feats_lr[k] for k in self.keys], [feats_hr[k] for k in self.keys]

    def step(self, batch, ctx) -> None:
        inputs, real = self.features(batch[0])
        g_trains = self.l1_weight != 0 or self.adversarial_grad
        with ctx.autocast(), torch.set_grad_enabled(g_trains):
            fake = self.run["G"](inputs, [tuple(r.shape[-2:]) for r in real])
        l1, adv, total = self.adversarial_update(ctx, real, fake)
        ctx.update("G", {"g_l1": l1, "g_adv": adv}, total=total)


def train_srf_gan(
    profile: str | Profile,
    dataset: str | Dataset,
    out_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    *,
    guide_dir: str | Path | None = None,
    guide_config: str | Path | None = None,
    guide_weights: str | Path | None = None,
    variant: str = "paper",
    num_blocks: int | None = None,
    l1_weight: float = 1.0,
    adv_weight: float = ADV_WEIGHT,
    adversarial_grad: bool = True,
    degrade_mode: str = "bilinear",
    discriminator_head: str = "paper",
    **options,
) -> StageResult:
    """Stage 1: train G (``SRFGenerator``, width ``profile.fpn_channels``) and D against the guide's F.

    Args:
        guide_dir: a finished guide stage (its backbone + FPN is F, frozen), or a detectron2 output folder
            (``config.yaml`` + ``model_final.pth``: detectron2's backbone + FPN is F, as in the paper).
        guide_config, guide_weights: instead of ``guide_dir``, a detectron2 config (YAML file, srfkit d2 arch
            or model-zoo config name) and the user's checkpoint (nothing is downloaded). A detectron2 F must
            have P2-P5 and ``profile.fpn_channels`` channels (``ValueError`` otherwise); see
            :func:`~srfkit.train.loaders.load_guide_features`.
        variant, num_blocks: generator form (``paper``, ``released``, ``light``, ``depthwise``).
        l1_weight, adv_weight: weights of L1 and of the adversarial term (lambda = 1e-3).
        adversarial_grad: False reproduces the authors' training code (AFI-GAN repository): the adversarial
            term detached from G.
        degrade_mode: interpolation of the degradation function (Table 6).
        discriminator_head: D's output conv: ``paper`` (1x1, the paper's text) or ``authors`` (3x3, the
            authors' training code); stage 2 reuses this D as it is.
        **options: :class:`~srfkit.train.loop.LoopOptions` fields.
    """
    setup = prepare_stage(profile, dataset, options, detector=False)
    profile, data = setup.profile, setup.data
    guide = load_guide_features(guide_dir, guide_config, guide_weights, channels=profile.fpn_channels)
    seed_everything(seed)
    spec = generator_spec(profile.fpn_channels, variant, num_blocks)
    d_spec = discriminator_spec(profile, discriminator_head)
    stage = SRFGANStage(
        build_upsampler(spec),
        spec,
        build_discriminator(d_spec),
        guide.extractor,
        profile,
        data,
        l1_weight=l1_weight,
        adv_weight=adv_weight,
        adversarial_grad=adversarial_grad,
        degrade_mode=degrade_mode,
        guide_config=guide.config,
        sources=guide.sources,
        discriminator_cfg=d_spec,
    )
    return train_loop(stage, data, out_dir, profile.srf_gan, seed, resume, setup.loop)
