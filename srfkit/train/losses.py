"""The losses of SRF-GAN (paper Eq. 1-3) over lists of pyramid levels.

* Eq. (1), D's objective: :func:`discriminator_loss` (BCE-with-logits, real features vs generated ones).
* Eq. (2) and the feature part of Eq. (3), the generator side's terms: :func:`srf_losses` (L1 and
  adversarial, each a sum over levels of per-level means), weighted ``l1_weight * L1 + ADV_WEIGHT * adv``.

Stages 1 and 2 apply them through :class:`~srfkit.train.adversarial.AdversarialStage`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import fit_to_size

__all__ = ["ADV_WEIGHT", "crop_common", "discriminator_loss", "srf_losses"]

ADV_WEIGHT = 1e-3  # lambda of Eq. (2) and (3)


def _bce(logits: Tensor, real: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, float(real)).float())


def crop_common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Crop two (N, C, H, W) maps (bottom/right) to their common spatial size."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    return a[..., :h, :w], b[..., :h, :w]


def srf_losses(
    fake: list[Tensor], real: list[Tensor], discriminator: nn.Module, adversarial_grad: bool = True
) -> tuple[Tensor, Tensor]:
    """The two terms of Eq. (2)/(3): (L1, adversarial), each a sum over levels of per-level means.

    ``fake[i]`` is cropped to ``real[i]``'s size (``fit_to_size``). The adversarial term is
    BCE-with-logits of D(fake) against "real"; with ``adversarial_grad=False`` D sees a detached
    copy, as the authors' training code does (published in their AFI-GAN repository; the SRF-GAN
    repository is evaluation-only), so the generator gets no gradient from it.
    """
    l1 = fake[0].new_zeros((), dtype=torch.float32)
    adv = l1.clone()
    for f, r in zip(fake, real):
        f = fit_to_size(f, tuple(r.shape[-2:]))
        l1 = l1 + (f.float() - r.float()).abs().mean()
        adv = adv + _bce(discriminator(f if adversarial_grad else f.detach()), True)
    return l1, adv


def discriminator_loss(logits_real: list[Tensor], logits_fake: list[Tensor]) -> dict[str, Tensor]:
    """Eq. (1) for D as BCE-with-logits, summed over levels: ``{"d_real": ..., "d_fake": ...}``."""
    return {
        "d_real": sum(_bce(x, True) for x in logits_real),
        "d_fake": sum(_bce(x, False) for x in logits_fake),
    }
