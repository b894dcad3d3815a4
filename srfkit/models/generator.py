"""The SRF generator G: a learned x2 feature upsampler (paper section 3.1, Fig. 1 (1)).

Variants (all map ``(N, C, H, W)`` to ``(N, C, 2H, 2W)`` plus a bilinear x2 shortcut of the input):

* ``paper``: 3x3 conv + LeakyReLU(0.2); ``num_blocks`` residual blocks (conv-BN-LReLU-conv-BN,
  identity skip); a 3x3 conv block and a 4x4 stride-2 transposed conv block (each + LReLU); a 1x1
  conv back to C. About 8.2M parameters at C=256, 5 blocks.
* ``released``: the authors' released generator, module for module: 3x3 conv + LReLU(0.2); one
  residual-in-residual block of 3 dense blocks (``conv1``..``conv4``: 3x3 conv without bias, growth
  32, + LReLU; ``conv5``: 3x3 conv without bias back to C; block output ``x + 0.2 * conv5``, outer
  ``x + 0.2 * RDBs(x)``); 3x3 conv + LReLU; ``ConvTranspose2d(C, C, 6, 2, 2)`` + LReLU; 3x3 output
  conv. Kaiming-normal x 0.1 on every conv and the transposed conv, biases 0. 7,834,624 parameters
  at C=256. Its modules nest like the authors' ``Generators[0]`` (under ``net``), so
  :func:`load_authors_generator` / :func:`authors_state_dict` convert their checkpoints by a key prefix.
* ``light``: the paper form with a narrow body: a 1x1 conv squeezes C to C/4, two residual
  blocks, and a sub-pixel (PixelShuffle) x2 step instead of the transposed conv.
* ``depthwise``: the paper form with depthwise-separable 3x3 convs everywhere and a
  PixelShuffle x2 step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .upsamplers import fit_to_size, learned_output_size, register_upsampler

__all__ = ["SRFGenerator", "GENERATOR_VARIANTS", "AUTHORS_PREFIX", "load_authors_generator", "authors_state_dict"]

GENERATOR_VARIANTS = ("paper", "released", "light", "depthwise")

AUTHORS_PREFIX = "backbone.srf_module."
"""Where G's keys sit inside one of the authors' detector checkpoints."""
_AUTHORS_G = "Generators.0."  # the authors' key prefix of G's body; ours is ``net.``


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2, inplace=True)


def _conv3x3(in_ch: int, out_ch: int, depthwise: bool = False) -> nn.Module:
    if not depthwise:
        return nn.Conv2d(in_ch, out_ch, 3, padding=1)
    return nn.Sequential(nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch), nn.Conv2d(in_ch, out_ch, 1))


class ResidualBlock(nn.Module):
    """conv-BN-LReLU-conv-BN with an identity skip (SRGAN's block). Shape-preserving."""

    def __init__(self, channels: int, depthwise: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3(channels, channels, depthwise),
            nn.BatchNorm2d(channels),
            _lrelu(),
            _conv3x3(channels, channels, depthwise),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResidualDenseBlock(nn.Module):
    """ESRGAN's residual dense block as the authors release it. Shape-preserving: (N, C, H, W).

    ``conv1``..``conv4``: 3x3 conv without bias to ``growth`` channels + LeakyReLU(0.2), each seeing
    the input and every earlier output (channel concatenation); ``conv5``: 3x3 conv without bias back
    to C. Output ``x + res_scale * conv5(...)``. No BN. The attribute names are the authors'.
    """

    def __init__(self, channels: int, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        for i in range(4):
            conv = nn.Conv2d(channels + i * growth, growth, 3, padding=1, bias=False)
            self.add_module(f"conv{i + 1}", nn.Sequential(conv, _lrelu()))
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1, bias=False)
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(conv(torch.cat(feats, dim=1)))
        return x + self.res_scale * self.conv5(torch.cat(feats, dim=1))


class ResidualInResidual(nn.Module):
    """Residual-in-residual: ``num_blocks`` dense blocks (``RDBs``, the authors' name) and an outer
    scaled skip, ``x + res_scale * RDBs(x)``. Shape-preserving: (N, C, H, W)."""

    def __init__(self, channels: int, num_blocks: int = 3, growth: int = 32, res_scale: float = 0.2) -> None:
        super().__init__()
        self.RDBs = nn.Sequential(*(ResidualDenseBlock(channels, growth, res_scale) for _ in range(num_blocks)))
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.res_scale * self.RDBs(x)


def _init_scaled_kaiming(module: nn.Module, scale: float = 0.1) -> None:
    """Kaiming-normal (fan-in, gain sqrt(2)) times ``scale`` on every (transposed) conv; biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in")
            with torch.no_grad():
                m.weight.mul_(scale)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SRFGenerator(nn.Module):
    """The SRF generator G. ``forward(x, size=None)``: (N, C, H, W) -> (N, C, 2H, 2W) or ``size``.

    The learned branch makes ``(2H, 2W)`` and is cropped to ``size``, which must be ``(2H, 2W)`` or
    one less in a dimension (odd FPN laterals; anything else is a ``ValueError``, see
    :func:`~srfkit.models.upsamplers.learned_output_size`); the shortcut is
    ``F.interpolate(x, size, mode="bilinear", align_corners=False)``. So at ``size=(2H, 2W)`` the
    output is exactly ``body(x) + bilinear_x2(x)`` as in the paper and the authors' code.

    Args:
        channels: feature channels C (256 in the paper).
        num_blocks: residual blocks (``paper``, ``depthwise``: 5; ``light``: 2 by default); for
            ``released``, the dense blocks of its one residual-in-residual block (3 by default, the
            authors' ``n_residual_dense_blocks``).
        variant: one of ``paper``, ``released``, ``light``, ``depthwise``.
    """

    def __init__(self, channels: int = 256, num_blocks: int | None = None, variant: str = "paper") -> None:
        super().__init__()
        if variant not in GENERATOR_VARIANTS:
            raise ValueError(f"unknown generator variant {variant!r}; valid: {', '.join(GENERATOR_VARIANTS)}")
        self.channels = channels
        self.variant = variant
        if variant == "paper":
            self.net = self._paper(channels, 5 if num_blocks is None else num_blocks, depthwise=False)
        elif variant == "depthwise":
            self.net = self._paper(channels, 5 if num_blocks is None else num_blocks, depthwise=True)
        elif variant == "light":
            self.net = self._light(channels, 2 if num_blocks is None else num_blocks)
        else:
            self.net = self._released(channels, 3 if num_blocks is None else num_blocks)

    @staticmethod
    def _paper(c: int, num_blocks: int, depthwise: bool) -> nn.Sequential:
        if depthwise:
            up = [nn.Conv2d(c, 4 * c, 1), nn.PixelShuffle(2), _lrelu()]
        else:
            up = [nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), _lrelu()]
        return nn.Sequential(
            _conv3x3(c, c, depthwise),
            _lrelu(),
            *(ResidualBlock(c, depthwise) for _ in range(num_blocks)),
            _conv3x3(c, c, depthwise),
            _lrelu(),
            *up,
            nn.Conv2d(c, c, 1),
        )

    @staticmethod
    def _light(c: int, num_blocks: int) -> nn.Sequential:
        w = max(c // 4, 8)
        return nn.Sequential(
            nn.Conv2d(c, w, 1),
            _lrelu(),
            *(ResidualBlock(w) for _ in range(num_blocks)),
            nn.Conv2d(w, 4 * w, 3, padding=1),
            nn.PixelShuffle(2),
            _lrelu(),
            nn.Conv2d(w, c, 1),
        )

    @staticmethod
    def _released(c: int, num_blocks: int) -> nn.Sequential:
        # Same nesting as the authors' ``Generators[0]``, so that ``net.`` + their key suffix is our key.
        net = nn.Sequential(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _lrelu()),
            ResidualInResidual(c, num_blocks),
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _lrelu()),
            nn.Sequential(nn.ConvTranspose2d(c, c, 6, stride=2, padding=2), _lrelu()),
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1)),
        )
        _init_scaled_kaiming(net, 0.1)
        return net

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(N, C, H, W) -> (N, C, *size), ``size`` defaulting to (2H, 2W)."""
        size = learned_output_size(x, size, 2, f"SRFGenerator({self.variant!r})")
        residual = fit_to_size(self.net(x), size)
        return residual + F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, variant={self.variant!r}"


@register_upsampler("srf")
def _srf(channels: int, num_blocks: int | None = None, variant: str = "paper") -> SRFGenerator:
    return SRFGenerator(channels, num_blocks=num_blocks, variant=variant)


@register_upsampler("srf_light")
def _srf_light(channels: int, num_blocks: int | None = None) -> SRFGenerator:
    return SRFGenerator(channels, num_blocks=num_blocks, variant="light")


@register_upsampler("srf_depthwise")
def _srf_depthwise(channels: int, num_blocks: int | None = None) -> SRFGenerator:
    return SRFGenerator(channels, num_blocks=num_blocks, variant="depthwise")


def _authors_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """G's entries of an authors' state dict, keyed without ``backbone.srf_module.``."""
    if any(k.startswith(AUTHORS_PREFIX) for k in state_dict):
        return {k[len(AUTHORS_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(AUTHORS_PREFIX)}
    return dict(state_dict)


def load_authors_generator(state_dict: Mapping[str, Tensor]) -> SRFGenerator:
    """A ``released`` :class:`SRFGenerator` holding the weights of the authors' G.

    ``state_dict`` is in the authors' key layout: ``Generators.0.0.0.weight|bias`` (first conv),
    ``Generators.0.1.RDBs.{k}.conv{1..4}.0.weight`` and ``Generators.0.1.RDBs.{k}.conv5.weight`` (dense
    blocks, no biases), ``Generators.0.2.0.*`` (conv), ``Generators.0.3.0.*`` (``ConvTranspose2d(C, C, 6,
    2, 2)``), ``Generators.0.4.0.*`` (output conv). It may be G's own state dict or a whole detector's:
    when any key starts with ``backbone.srf_module.`` only those keys are read (the prefix dropped)
    and the rest is ignored; otherwise every key must belong to G.

    The ``released`` variant mirrors the authors' module nesting under ``net`` (ours) instead of
    ``Generators.0`` (theirs), so the mapping is that prefix swap and nothing else. C and the number
    of dense blocks are read from the weights.

    Raises:
        ValueError: no G keys, or missing / unexpected keys, or shapes that do not fit, all named.
    """
    own = _authors_keys(state_dict)
    first = _AUTHORS_G + "0.0.weight"
    if first not in own:
        raise ValueError(
            f"not an SRF-GAN generator state dict: no {first!r} (nor {AUTHORS_PREFIX + first!r}); "
            f"first keys: {', '.join(list(state_dict)[:5])}"
        )
    channels = int(own[first].shape[0])
    block_prefix = _AUTHORS_G + "1.RDBs."
    blocks = {int(k[len(block_prefix) :].split(".", 1)[0]) for k in own if k.startswith(block_prefix)}
    g = SRFGenerator(channels, num_blocks=max(blocks, default=-1) + 1, variant="released")
    expected = g.state_dict()
    mapped = {("net." + k[len(_AUTHORS_G) :] if k.startswith(_AUTHORS_G) else k): v for k, v in own.items()}
    back = {"net." + k[len(_AUTHORS_G) :]: k for k in own if k.startswith(_AUTHORS_G)}

    def authors(key: str) -> str:
        return back.get(key, _AUTHORS_G + key[len("net.") :])

    missing = [authors(k) for k in expected if k not in mapped]
    unexpected = [back.get(k, k) for k in mapped if k not in expected]
    shapes = [
        f"{authors(k)} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in mapped.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [f"authors' generator state dict (C={channels}, {len(blocks)} dense blocks) does not fit:"]
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
            if keys:
                parts.append(f"{label}: {', '.join(keys)};")
        raise ValueError(" ".join(parts))
    g.load_state_dict(mapped)
    return g


def authors_state_dict(generator: SRFGenerator, prefix: str = "") -> OrderedDict[str, Tensor]:
    """The inverse of :func:`load_authors_generator`: a ``released`` G's state dict in the authors' keys.

    Args:
        generator: a ``released`` :class:`SRFGenerator`.
        prefix: put before every key, e.g. :data:`AUTHORS_PREFIX` to drop it into an authors' detector.
    """
    if not isinstance(generator, SRFGenerator) or generator.variant != "released":
        raise ValueError(f"only a 'released' SRFGenerator has the authors' layout, got {generator!r}"[:200])
    return OrderedDict(
        (prefix + _AUTHORS_G + k[len("net.") :], v.detach().clone()) for k, v in generator.state_dict().items()
    )
