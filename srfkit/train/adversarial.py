"""What stages 1 (SRF-GAN) and 2 (the extractor M) share: a generator side trained against D, level by level.

:class:`AdversarialStage` holds their common options (the weights of Eq. 2/3, whether the adversarial
gradient reaches the generator, the degradation's interpolation) and their one D-then-G update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor, nn

from .loop import Stage
from .losses import ADV_WEIGHT, discriminator_loss, srf_losses

__all__ = ["AdversarialStage", "LevelMap", "frozen"]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop ``module``'s parameters from receiving gradients (e.g. D during G's update)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class LevelMap(nn.Module):
    """Apply one module to every pyramid level in a single forward (one DDP forward per update).

    ``forward(xs, sizes=None)``: list of (N, C, H_i, W_i) -> list of outputs; with ``sizes``, each
    call is ``module(x, size=size)`` (for upsamplers).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, xs: list[Tensor], sizes: list[tuple[int, int]] | None = None) -> list[Tensor]:
        if sizes is None:
            return [self.module(x) for x in xs]
        return [self.module(x, size=s) for x, s in zip(xs, sizes)]


class AdversarialStage(Stage):
    """A stage whose generator side (G, or M) learns against a discriminator ``self.modules["D"]``.

    Args:
        l1_weight, adv_weight: weights of the L1 and adversarial terms in the generator's loss (1 and 1e-3).
        adversarial_grad: let the adversarial term's gradient reach the generator (False: the authors'
            training code, published in their AFI-GAN repository).
        degrade_mode: interpolation that makes I_lr (Table 6: bilinear, nearest or bicubic).

    Subclasses fill ``self.modules`` with ``"D"`` among others, ``self.run["D"]`` takes a list of levels
    (a :class:`LevelMap`), and their ``step`` calls :meth:`adversarial_update`.
    """

    def __init__(
        self,
        l1_weight: float = 1.0,
        adv_weight: float = ADV_WEIGHT,
        adversarial_grad: bool = True,
        degrade_mode: str = "bilinear",
    ) -> None:
        super().__init__()
        self.l1_weight, self.adv_weight, self.adversarial_grad = l1_weight, adv_weight, adversarial_grad
        self.degrade_mode = degrade_mode

    def loss_config(self) -> dict:
        """The shared options, as stored in the stage config."""
        return {
            "l1_weight": self.l1_weight,
            "adv_weight": self.adv_weight,
            "adversarial_grad": self.adversarial_grad,
            "degrade_mode": self.degrade_mode,
        }

    def adversarial_update(self, ctx, real: list[Tensor], fake: list[Tensor], base: Tensor | None = None):
        """D's update, then the generator side's loss terms: returns ``(l1, adv, total)``.

        D (Eq. 1) learns ``real`` against the detached ``fake`` (optimiser ``"D"``). Under a frozen D,
        :func:`~srfkit.train.losses.srf_losses` gives L1 and the adversarial term, and ``total`` is
        ``base + adv_weight * adv + l1_weight * L1`` (``base``: e.g. the detection loss; the L1 term is
        left out when its weight is 0), for the caller's own ``ctx.update``.
        """
        with ctx.autocast():
            logits = self.run["D"](real + [f.detach() for f in fake])
        ctx.update("D", discriminator_loss(logits[: len(real)], logits[len(real) :]))
        d = self.modules["D"]
        with frozen(d), ctx.autocast():
            l1, adv = srf_losses(fake, real, d, self.adversarial_grad)
        total = self.adv_weight * adv if base is None else base + self.adv_weight * adv
        return l1, adv, total + (self.l1_weight * l1 if self.l1_weight else 0.0)
