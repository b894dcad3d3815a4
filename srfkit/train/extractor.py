"""Stage 2, the multi-scale SRF extractor M (paper Eq. 3).

M is a detector whose FPN top-down upsampler is the stage-1 G, built for half-size inputs (its
transform's ``image_size``/``max_size`` halved, so it does not scale the degraded image back up).
For a batch of images I (resized as the detector would): ``I_lr = degrade(I, 0.5)`` with boxes,
masks and areas scaled by 0.5. Each step:

1. M runs on I_lr with the scaled targets: detection loss, and (through a hook) its FPN levels P_k.
2. Targets: ``downsample(F(I)_k, 0.5)`` (bilinear) from the frozen guide F, for k in P2-P5.
3. D's update: real = the targets, fake = M's levels (detached); D starts from stage 1's D.
4. M's update: detection loss + ``l1_weight * L1 + adv_weight * adversarial`` over the levels.

``semantic_level`` chooses which levels the SRF loss compares (Table 7):

* ``"same"`` (the paper's method): M's P_k of I_lr against ``downsample(F(I)_k, 0.5)``, as above.
* ``"different"`` (the paper's mismatched variant, section 4.2 and the Table 7 paragraph: "we feed
  training images of the same resolution to M and F, and compare {P3_sr, P4_sr, P5_sr} and
  {P2_tr, P3_tr, P4_tr}"): M is built for full-size images and trained on I itself (full-size
  targets); the super-resolved ``G(P_k)`` of M's level k (G is M's own FPN upsampler), for k in
  P3-P5, is compared with F's level P_{k-1} of the same I: equal spatial size, one semantic level
  apart.
* ``"different_lr"`` (srfkit's earlier variant, kept as a named option): M on I_lr as in ``same``, its
  P_k against F's P_{k+1} of I (equal size, no downsampling, the next coarser semantic level).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..detection import SRF_LEVELS, FeatureExtractor, get_fpn, pyramid_keys, transfer_backbone
from ..profiles import Profile
from .adversarial import AdversarialStage, LevelMap
from .checkpoint import load_module_state
from .inputs import PAD_DIVISOR, dataset_info, degrade, resize_to_profile
from .loaders import load_detector, load_generator, load_guide_features, read_stage
from .loop import StageResult, seed_everything, train_loop
from .losses import ADV_WEIGHT, crop_common
from .prepare import prepare_stage
from .specs import (
    build_discriminator,
    build_from_spec,
    check_backbone_init,
    detector_spec,
    discriminator_spec,
    upsampler_spec,
)

__all__ = ["SEMANTIC_LEVELS", "ExtractorStage", "level_pairs", "train_extractor"]


SEMANTIC_LEVELS = ("same", "different", "different_lr")


def _check_semantic_level(semantic_level: str) -> None:
    if semantic_level not in SEMANTIC_LEVELS:
        raise ValueError(f"unknown semantic_level {semantic_level!r}; valid: {', '.join(SEMANTIC_LEVELS)}")


def level_pairs(m_keys: dict[int, str], f_keys: dict[int, str], semantic_level: str = "same") -> list[tuple[str, str]]:
    """(M's FPN key, F's FPN key) per compared level, from level -> key maps (``pyramid_keys``).

    ``same``: P_k with P_k for k in P2-P5; ``different``: M's P_k with F's P_{k-1} for k in P3-P5;
    ``different_lr``: M's P_k with F's P_{k+1}. Levels that either side lacks are left out.
    """
    shift = {"same": 0, "different": -1, "different_lr": 1}[semantic_level]
    levels = [k for k in SRF_LEVELS if k in m_keys and k + shift in f_keys and k + shift in SRF_LEVELS]
    return [(m_keys[k], f_keys[k + shift]) for k in levels]


class ExtractorStage(AdversarialStage):
    """M (detector with G inside its FPN) and D, trained with the integral loss of Eq. (3).

    Args:
        extractor_model: M; ``spec``: its detector spec. discriminator: D (``discriminator_cfg``: its
            spec). guide: F (frozen).
        semantic_level: ``same`` (the method), ``different`` or ``different_lr`` (Table 7; see the module doc).
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
        semantic_level: str = "same",
        l1_weight: float = 1.0,
        adv_weight: float = ADV_WEIGHT,
        adversarial_grad: bool = True,
        degrade_mode: str = "bilinear",
        extra: dict | None = None,
        sources: dict | None = None,
    ) -> None:
        super().__init__(l1_weight, adv_weight, adversarial_grad, degrade_mode)
        _check_semantic_level(semantic_level)
        self.modules = {"M": extractor_model, "D": discriminator}
        self.guide, self.profile = guide, profile
        self.frozen = {"F": guide}
        self.semantic_level = semantic_level
        self.pairs = level_pairs(pyramid_keys(extractor_model), pyramid_keys(guide), semantic_level)
        self._feats: dict[str, torch.Tensor] = {}
        extractor_model.backbone.register_forward_hook(lambda _m, _i, out: self._feats.update(out))
        self._config = {
            "profile": profile.to_dict(),
            "dataset": dataset_info(dataset),
            "detector": spec,
            "discriminator": discriminator_cfg,
            "semantic_level": semantic_level,
            "level_pairs": self.pairs,
            **self.loss_config(),
            **(extra or {}),
        }
        self._sources = sources or {}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {k: [p for p in m.parameters() if p.requires_grad] for k, m in self.modules.items()}

    def wrap(self, env) -> None:
        self.run = {"M": env.wrap(self.modules["M"]), "D": env.wrap(LevelMap(self.modules["D"]))}

    def inputs(self, images: list[torch.Tensor], targets: list[dict]):
        """(M's images, their targets, guide features per level pair).

        F sees the full-size images the detector's way (normalised, then zero-padded to a multiple
        of 64); M sees them degraded to half size (``same``, ``different_lr``) or as they are
        (``different``).
        """
        full = [resize_to_profile(img, tgt, self.profile) for img, tgt in zip(images, targets)]
        with torch.no_grad():
            feats = self.guide([img for img, _ in full], size_divisible=PAD_DIVISOR)
        if self.semantic_level == "different":
            return [img for img, _ in full], [tgt for _, tgt in full], [feats[fk] for _, fk in self.pairs]
        half = [degrade(img, tgt, 0.5, self.degrade_mode) for img, tgt in full]
        real = [feats[fk] for _, fk in self.pairs]
        if self.semantic_level == "same":
            real = [F.interpolate(r, scale_factor=0.5, mode="bilinear") for r in real]
        return [img for img, _ in half], [tgt for _, tgt in half], real

    def step(self, batch, ctx) -> None:
        images, targets, real = self.inputs(*batch)
        with ctx.autocast():
            det = self.run["M"](images, targets)
            fake = [self._feats[mk] for mk, _ in self.pairs]
            if self.semantic_level == "different":  # P_sr = G(P_k) of M's own levels, x2
                upsampler = get_fpn(self.modules["M"]).upsampler
                fake = [upsampler(x) for x in fake]
        pairs = [crop_common(f, r) for f, r in zip(fake, real)]
        fake, real = [p[0] for p in pairs], [p[1] for p in pairs]
        l1, adv, total = self.adversarial_update(ctx, real, fake, base=sum(det.values()))
        ctx.update("M", {**det, "srf_l1": l1, "srf_adv": adv}, total=total)


def build_extractor(
    profile: Profile,
    data: Dataset,
    arch: str,
    srf_gan: dict | None,
    guide: dict,
    init_from_guide: bool = False,
    half_size: bool = True,
    weights_backbone: str | Path | None = None,
    upsampler: str | None = None,
) -> tuple[nn.Module, dict]:
    """M: detector at half size (full size with ``half_size=False``) with stage-1 G as its upsampler
    (or, with ``srf_gan=None``, the registry ``upsampler``: the nearest_M control).

    Its other weights start fresh, as in the paper ("the other parameters of the multi-scale SRF
    extractor are initialized"), or, with ``init_from_guide``, its backbone and FPN convs from the
    guide's, pyramid level by level (:func:`~srfkit.detection.transfer_backbone`; never the heads,
    and not the guide's upsampler: M keeps stage 1's G).
    """
    sizes = dict(image_size=profile.image_size // 2, max_size=(profile.max_size + 1) // 2) if half_size else {}
    if srf_gan is None:
        spec = detector_spec(arch, data.num_classes, upsampler_spec(upsampler, profile), profile, **sizes)
        model = build_from_spec(spec, weights_backbone=weights_backbone)
    else:
        generator = load_generator(srf_gan).train()
        spec = detector_spec(arch, data.num_classes, srf_gan["config"]["generator"], profile, **sizes)
        model = build_from_spec(spec, upsampler=generator, weights_backbone=weights_backbone)
    if init_from_guide:
        with torch.random.fork_rng(devices=[]):
            guide_model = load_detector(guide)
        transfer_backbone(guide_model, model, upsampler=False)
    return model, spec


def train_extractor(
    profile: str | Profile,
    dataset: str | Dataset,
    out_dir: str | Path,
    seed: int = 0,
    resume: bool = False,
    *,
    guide_dir: str | Path | None = None,
    srf_gan_dir: str | Path | None,
    guide_config: str | Path | None = None,
    guide_weights: str | Path | None = None,
    arch: str | None = None,
    upsampler: str | None = None,
    semantic_level: str = "same",
    l1_weight: float = 1.0,
    adv_weight: float = ADV_WEIGHT,
    adversarial_grad: bool = True,
    init_from_guide: bool = False,
    degrade_mode: str = "bilinear",
    weights_backbone: str | Path | None = None,
    **options,
) -> StageResult:
    """Stage 2: train M (detection + per-level SRF loss against the guide) and D, on degraded images.

    Args:
        guide_dir: finished guide stage (F), or a detectron2 output folder (``config.yaml`` and
            ``model_final.pth``); ``guide_config`` + ``guide_weights``: a detectron2 config and checkpoint
            instead (see :func:`~srfkit.train.loaders.load_guide_features`).
        srf_gan_dir: finished srf-gan stage (G inside M's FPN, D); ``None`` with ``upsampler``.
        upsampler: with ``srf_gan_dir=None``, M's FPN upsampler (registry name) and a fresh D: the
            method without G (the ``nearest_M`` control: same detection and feature losses).
        arch: M's detection head (default: ``mask_rcnn`` if the dataset has masks, else ``faster_rcnn``).
        semantic_level: ``same`` (the method), ``different`` (Table 7's mismatched variant, the paper's
            definition) or ``different_lr`` (see the module doc).
        l1_weight, adv_weight, adversarial_grad: as in :func:`~srfkit.train.train_srf_gan`.
        init_from_guide: start M's ResNet body and FPN convs from the guide's, level by level, never its
            heads nor its upsampler (default False: fresh, as in the paper; True gives M-reusing
            targets extra training that a baseline does not get).
        degrade_mode: interpolation of the degradation function (Table 6): bilinear, nearest, bicubic.
        weights_backbone: a local ResNet state dict for M's backbone (required by ``norm="frozen"``
            profiles such as ``paper``).
        **options: :class:`~srfkit.train.loop.LoopOptions` fields.
    """
    setup = prepare_stage(profile, dataset, options, arch)
    profile, data, arch = setup.profile, setup.data, setup.arch
    if (srf_gan_dir is None) == (upsampler is None):
        raise ValueError("train_extractor takes either srf_gan_dir (G and D of stage 1) or upsampler (no G)")
    guide_f = load_guide_features(guide_dir, guide_config, guide_weights, channels=profile.fpn_channels)
    if init_from_guide and guide_f.config.get("engine") == "detectron2":
        raise ValueError(
            f"init_from_guide copies a srfkit guide's backbone; {guide_dir or guide_config} is a detectron2 F"
        )
    guide = read_stage(guide_dir) if init_from_guide else None
    srf_gan = read_stage(srf_gan_dir) if srf_gan_dir is not None else None
    seed_everything(seed)
    _check_semantic_level(semantic_level)
    if not init_from_guide:  # init_from_guide copies the guide's backbone
        check_backbone_init(profile, weights_backbone)
    half_size = semantic_level != "different"
    model, spec = build_extractor(
        profile, data, arch, srf_gan, guide, init_from_guide, half_size, weights_backbone, upsampler
    )
    disc_cfg = srf_gan["config"]["discriminator"] if srf_gan else discriminator_spec(profile)
    disc = build_discriminator(disc_cfg)
    if srf_gan:
        load_module_state(disc, srf_gan["models"]["D"], source=srf_gan_dir)
    stage = ExtractorStage(
        model,
        spec,
        disc,
        disc_cfg,
        guide_f.extractor,
        profile,
        data,
        semantic_level=semantic_level,
        l1_weight=l1_weight,
        adv_weight=adv_weight,
        adversarial_grad=adversarial_grad,
        degrade_mode=degrade_mode,
        extra={
            "guide": guide_f.config,
            "srf_gan": srf_gan["config"]["generator"] if srf_gan else None,
            "init_from_guide": init_from_guide,
        },
        sources={
            **guide_f.sources,
            "srf_gan": str(srf_gan_dir) if srf_gan_dir else None,
            "weights_backbone": str(weights_backbone) if weights_backbone else None,
        },
    )
    return train_loop(stage, data, out_dir, profile.extractor, seed, resume, setup.loop)
