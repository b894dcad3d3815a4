"""Learned upsampler peers of SRF: DySample and CARAFE, in plain PyTorch, behind the same registry.

Both make a x2 map from the low-resolution map alone and crop it to the requested ``size``, which
must be ``(2H, 2W)`` or one pixel less per dimension (odd FPN laterals); any other size is a
``ValueError`` (:func:`~srfkit.models.upsamplers.learned_output_size`).

* ``dysample`` -- DySample, "lp" style (Liu et al., ICCV 2023): a 1x1 conv predicts, per group of
  channels and per sub-pixel of the x2 grid, an (x, y) offset in low-resolution pixels; scaled by a
  static factor 0.25 and added to the fixed sub-pixel positions (+-0.25 px), the offsets are
  pixel-shuffled to the high resolution and the map is point-sampled there with ``grid_sample``
  (bilinear, border padding, ``align_corners=False``). With zero offsets it is exactly bilinear x2.
* ``dysample_dynamic`` -- DySample+ ("dynamic scope"): the factor is ``0.5 * sigmoid(scope(x))`` of a
  second, zero-initialised 1x1 conv (0.25 at initialisation).
* ``carafe`` -- CARAFE (Wang et al., ICCV 2019): a 1x1 conv compresses C to 64 channels, a 3x3 conv
  predicts a 5x5 kernel per output pixel (25 x 4 channels, pixel-shuffled), softmax-normalised; each
  output pixel is that weighted sum over the 5x5 zero-padded neighbourhood of its source pixel in
  the input map (reassembly as ``F.unfold`` defines it, computed by default as 25 shifted
  multiply-adds, which gives the same sum about 20x faster on CPU). Uniform kernels give a 5x5 box
  filter then nearest x2.

Parameters, counted (``tests/test_peers.py``). One module at C=256: ``dysample`` 8,224 (1x1 conv,
256 x 32 weights + 32 biases); ``dysample_dynamic`` 16,448 (a second such conv, the scope; here it
has a bias, as in one revision of the reference code; another revision drops it, giving 16,416);
``carafe`` 74,148 (1x1 compressor 16,448 + 3x3 encoder 57,700). At C=64: 2,080, 4,160 and 61,860.

As in their published necks, the SRF FPN gives each top-down step its own module (both declare
``one_per_fpn_step = True``; see :class:`~srfkit.models.fpn.SRFFeaturePyramidNetwork`). Per FPN at
C=256: the P2-P5 FPN of the two-stage detectors has 3 steps, so ``dysample`` 24,672,
``dysample_dynamic`` 49,344 and ``carafe`` 222,444; the P3-P5 FPN of the one-stage ones has 2 steps
(16,448, 32,896 and 148,296). The published Faster R-CNN figures, checked against these counts:
CARAFE's +0.22M is 3 x 74,148 = 222,444. DySample's +32.7K and DySample+'s +65.5K do not come out
of 3 modules (24,672; 49,248 to 49,344) nor of 4 with their biases (32,896; 65,664 to 65,792); they
equal 4 x 8,192 = 32,768 and 8 x 8,192 = 65,536 exactly, the 1x1 weights of four modules without
biases (four would be mmdetection's ``FPN_CARAFE`` layout with five outputs, whose extra P6 level
has a top-down step of its own, but that layout would make CARAFE's figure 4 x 74,148 = 0.30M, not
0.22M). That reading is ours: we found no statement of how the DySample paper counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .upsamplers import fit_to_size, learned_output_size, register_upsampler

__all__ = ["DySample", "CARAFE"]


class DySample(nn.Module):
    """DySample ("lp" style): learned point sampling with ``grid_sample``.

    ``forward(x, size=None)``: (N, C, H, W) -> (N, C, *size), ``size`` defaulting to (sH, sW).

    Args:
        channels: feature channels C; must be divisible by ``groups``.
        scale: upsampling factor s of the learned grid (2 in an FPN).
        groups: channel groups; each group gets its own offsets (4 in the paper).
        dynamic_scope: if True (DySample+), the offsets are multiplied by ``0.5 * sigmoid(scope(x))``
            of a zero-initialised 1x1 conv instead of the static ``0.25``.
        init_std: standard deviation of the offset conv's initial weights (bias 0).
    """

    one_per_fpn_step = True  # the FPN builds one per top-down step by default, as DySample's neck does

    def __init__(
        self,
        channels: int,
        scale: int = 2,
        groups: int = 4,
        dynamic_scope: bool = False,
        init_std: float = 0.001,
    ) -> None:
        super().__init__()
        if channels < groups or channels % groups:
            raise ValueError(f"DySample: channels ({channels}) must be a positive multiple of groups ({groups})")
        if scale < 1:
            raise ValueError(f"DySample: scale must be >= 1, got {scale}")
        self.channels = channels
        self.scale = scale
        self.groups = groups
        self.init_std = init_std
        out = 2 * groups * scale * scale  # (x, y) per group per sub-pixel
        self.offset = nn.Conv2d(channels, out, 1)
        self.scope: nn.Conv2d | None = nn.Conv2d(channels, out, 1) if dynamic_scope else None
        self.register_buffer("init_pos", self._initial_positions(scale, groups), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation: offset weights N(0, ``init_std``), scope weights 0, biases 0."""
        nn.init.normal_(self.offset.weight, std=self.init_std)
        nn.init.zeros_(self.offset.bias)
        if self.scope is not None:
            nn.init.zeros_(self.scope.weight)
            nn.init.zeros_(self.scope.bias)

    @staticmethod
    def _initial_positions(scale: int, groups: int) -> Tensor:
        """Fixed sub-pixel positions, (1, 2 * groups * s * s, 1, 1), in low-resolution pixels.

        Channel order is (coordinate x|y, group, sub-row, sub-column), the order ``pixel_shuffle``
        expects. Sub-pixel ``k`` of ``s`` sits at ``(k - (s - 1) / 2) / s`` px from the source centre:
        +-0.25 px for s = 2, i.e. the centres of the four high-resolution pixels it covers.
        """
        d = (torch.arange(scale, dtype=torch.float32) - (scale - 1) / 2) / scale
        dy, dx = torch.meshgrid(d, d, indexing="ij")  # (s, s): dy varies along rows, dx along columns
        pos = torch.stack([dx, dy])  # (2, s, s)
        pos = pos[:, None].expand(2, groups, scale, scale)
        return pos.reshape(1, -1, 1, 1).clone()

    def offsets(self, x: Tensor) -> Tensor:
        """Sampling positions relative to each source centre: (N, 2 * groups * s * s, H, W), in px."""
        raw = self.offset(x)
        if self.scope is not None:
            factor = 0.5 * torch.sigmoid(self.scope(x))
        else:
            factor = 0.25
        return raw * factor + self.init_pos.to(raw.dtype)

    def sample(self, x: Tensor, offset: Tensor) -> Tensor:
        """Point-sample ``x`` (N, C, H, W) at ``offset`` (N, 2*g*s*s, H, W) -> (N, C, sH, sW)."""
        n, c, h, w = x.shape
        s, g = self.scale, self.groups
        offset = offset.view(n, 2, g * s * s, h, w)
        # Source pixel centres in align_corners=False pixel units: column j at j + 0.5, row i at i + 0.5.
        cx = torch.arange(w, dtype=x.dtype, device=x.device) + 0.5
        cy = torch.arange(h, dtype=x.dtype, device=x.device) + 0.5
        centres = torch.stack([cx.view(1, w).expand(h, w), cy.view(h, 1).expand(h, w)])  # (2, H, W)
        norm = torch.tensor([w, h], dtype=x.dtype, device=x.device).view(1, 2, 1, 1, 1)
        grid = 2 * (centres[None, :, None] + offset) / norm - 1  # (N, 2, g*s*s, H, W) in [-1, 1]
        grid = F.pixel_shuffle(grid.reshape(n, 2 * g * s * s, h, w), s)  # (N, 2*g, sH, sW)
        grid = grid.view(n, 2, g, s * h, s * w).permute(0, 2, 3, 4, 1).reshape(n * g, s * h, s * w, 2)
        out = F.grid_sample(
            x.reshape(n * g, c // g, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.view(n, c, s * h, s * w)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, *size), ``size`` defaulting to (sH, sW)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"DySample expects (N, {self.channels}, H, W), got {tuple(x.shape)}")
        size = learned_output_size(x, size, self.scale, "DySample")
        return fit_to_size(self.sample(x, self.offsets(x)), size)

    def extra_repr(self) -> str:
        dynamic = self.scope is not None
        return f"channels={self.channels}, scale={self.scale}, groups={self.groups}, dynamic_scope={dynamic}"


class CARAFE(nn.Module):
    """CARAFE: content-aware reassembly of features, x2, with ``F.unfold`` (no custom kernels).

    ``forward(x, size=None)``: (N, C, H, W) -> (N, C, *size), ``size`` defaulting to (sH, sW).

    Args:
        channels: feature channels C.
        scale: upsampling factor s (2 in an FPN).
        k_up: reassembly kernel size (5).
        k_enc: content-encoder kernel size (3).
        compressed_channels: channels after the 1x1 compressor (64).
        init_std: standard deviation of the content encoder's initial weights (bias 0); the
            compressor gets Xavier-uniform weights and zero bias.
        impl: how the reassembly sum is computed, same result either way: ``"unfold"`` (``F.unfold``
            then one contraction, the textbook form; about k_up^2 copies of the input in memory) or
            ``"shifts"`` (default: k_up^2 multiply-adds of shifted views; about 20x faster on CPU at
            C=256, 64x64).
    """

    one_per_fpn_step = True  # the FPN builds one per top-down step by default, as CARAFE's neck does

    def __init__(
        self,
        channels: int,
        scale: int = 2,
        k_up: int = 5,
        k_enc: int = 3,
        compressed_channels: int = 64,
        init_std: float = 0.001,
        impl: str = "shifts",
    ) -> None:
        super().__init__()
        if impl not in ("shifts", "unfold"):
            raise ValueError(f"CARAFE: unknown impl {impl!r}; valid: shifts, unfold")
        if k_up % 2 == 0 or k_enc % 2 == 0:
            raise ValueError(f"CARAFE: k_up ({k_up}) and k_enc ({k_enc}) must be odd")
        if scale < 1:
            raise ValueError(f"CARAFE: scale must be >= 1, got {scale}")
        self.channels = channels
        self.scale = scale
        self.k_up = k_up
        self.impl = impl
        self.init_std = init_std
        self.compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.encoder = nn.Conv2d(compressed_channels, k_up * k_up * scale * scale, k_enc, padding=k_enc // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The initialisation: compressor Xavier-uniform, encoder N(0, ``init_std``), biases 0."""
        nn.init.xavier_uniform_(self.compressor.weight)
        nn.init.zeros_(self.compressor.bias)
        nn.init.normal_(self.encoder.weight, std=self.init_std)
        nn.init.zeros_(self.encoder.bias)

    def kernels(self, x: Tensor) -> Tensor:
        """Normalised reassembly kernels (N, k_up^2, s*s, H, W): softmax over the k_up^2 taps.

        Sub-pixel index ``a * s + b`` is output pixel ``(s*i + a, s*j + b)``, as after ``pixel_shuffle``.
        """
        n, _, h, w = x.shape
        logits = self.encoder(self.compressor(x))  # (N, k^2 * s^2, H, W), channel = tap * s^2 + sub
        return torch.softmax(logits.view(n, self.k_up**2, self.scale**2, h, w), dim=1)

    def reassemble(self, x: Tensor, kernels: Tensor) -> Tensor:
        """Weighted sum over each source pixel's zero-padded k_up x k_up neighbourhood -> (N, C, sH, sW).

        Args:
            x: input map (N, C, H, W).
            kernels: (N, k_up^2, s*s, H, W) as from :meth:`kernels`; taps in row-major order.
        """
        n, c, h, w = x.shape
        k, s = self.k_up, self.scale
        if self.impl == "unfold":
            patches = F.unfold(x, k, padding=k // 2).view(n, c, k * k, h, w)
            out = torch.einsum("nckhw,nkshw->ncshw", patches, kernels)  # (N, C, s*s, H, W)
        else:
            # Same sum, one shifted view of the zero-padded input per tap: no k^2-fold copy of x.
            padded = F.pad(x, (k // 2,) * 4)
            out = x.new_zeros(n, c, s * s, h, w)
            for tap in range(k * k):
                i, j = divmod(tap, k)
                out.addcmul_(padded[:, :, None, i : i + h, j : j + w], kernels[:, None, tap])
        return F.pixel_shuffle(out.reshape(n, c * s * s, h, w), s)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, *size), ``size`` defaulting to (sH, sW)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"CARAFE expects (N, {self.channels}, H, W), got {tuple(x.shape)}")
        size = learned_output_size(x, size, self.scale, "CARAFE")
        return fit_to_size(self.reassemble(x, self.kernels(x)), size)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scale={self.scale}, k_up={self.k_up}, impl={self.impl!r}"


@register_upsampler("dysample")
def _dysample(channels: int, groups: int = 4) -> DySample:
    return DySample(channels, groups=groups)


@register_upsampler("dysample_dynamic")
def _dysample_dynamic(channels: int, groups: int = 4) -> DySample:
    return DySample(channels, groups=groups, dynamic_scope=True)


@register_upsampler("carafe")
def _carafe(
    channels: int, k_up: int = 5, k_enc: int = 3, compressed_channels: int = 64, impl: str = "shifts"
) -> CARAFE:
    return CARAFE(channels, k_up=k_up, k_enc=k_enc, compressed_channels=compressed_channels, impl=impl)
