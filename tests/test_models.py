"""SRF generator, feature-patch discriminator and the upsampler registry."""

import pytest
import torch

from srfkit.models import (
    GENERATOR_VARIANTS,
    FeaturePatchDiscriminator,
    Interpolation,
    SRFGenerator,
    fit_to_size,
    learned_output_size,
    make_upsampler,
    upsampler_names,
)
from srfkit.train.specs import build_discriminator

FIXED = ("nearest", "bilinear", "bicubic")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant", GENERATOR_VARIANTS)
@pytest.mark.parametrize(
    ("h", "w", "size"), [(8, 8, None), (7, 9, None), (7, 9, (13, 17)), (5, 6, (9, 11)), (5, 6, (10, 11))]
)
def test_generator_shapes(variant, h, w, size):
    torch.manual_seed(0)
    g = SRFGenerator(32, variant=variant).eval()
    out = g(torch.randn(2, 32, h, w), size=size)
    expected = size if size is not None else (2 * h, 2 * w)
    assert out.shape == (2, 32, *expected)
    assert torch.isfinite(out).all()


def test_generator_parameter_count_at_256():
    counts = {v: n_params(SRFGenerator(256, variant=v)) for v in GENERATOR_VARIANTS}
    for variant, count in counts.items():
        print(f"SRFGenerator(256, variant={variant!r}): {count:,} parameters ({count / 1e6:.2f}M)")
    # The paper's form: 3x3 conv, 5 residual blocks, conv, 4x4 deconv, 1x1 conv (about 8.2M).
    assert 8.1e6 < counts["paper"] < 8.3e6
    # The authors' released module, exactly (bias-free dense-block convs).
    assert counts["released"] == 7_834_624
    assert counts["light"] < counts["depthwise"] < counts["paper"]


def test_generator_is_bilinear_plus_residual():
    """Zeroing the last conv leaves exactly the bilinear x2 shortcut."""
    g = SRFGenerator(16).eval()
    last = g.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.randn(1, 16, 5, 6)
    expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(g(x), expected)


def test_generator_crop_matches_full_output():
    """An odd target size is the (2H, 2W) learned output cropped, plus bilinear to that size."""
    torch.manual_seed(0)
    g = SRFGenerator(16).eval()
    x = torch.randn(1, 16, 5, 6)
    full_residual = g.net(x)
    out = g(x, size=(9, 11))
    shortcut = torch.nn.functional.interpolate(x, size=(9, 11), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out - shortcut, full_residual[..., :9, :11])


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match="paper, released"):
        SRFGenerator(16, variant="tiny")


def test_discriminator_logits_shape():
    d = FeaturePatchDiscriminator(32, widths=(16, 32, 32))
    logits = d(torch.randn(3, 32, 10, 7))
    assert logits.shape == (3, 1, 10, 7)


@pytest.mark.parametrize(("head", "kernel", "count"), [("paper", 1, 15_344_129), ("authors", 3, 15_352_321)])
def test_discriminator_heads(head, kernel, count):
    """The paper's 1x1 output conv (default) and the authors' 3x3 one, at the paper's widths and C=256."""
    d = FeaturePatchDiscriminator(256, head=head)
    assert d.classifier.kernel_size == (kernel, kernel)
    assert n_params(d) == count
    small = FeaturePatchDiscriminator(8, widths=(8, 8, 8), head=head)
    assert small(torch.randn(2, 8, 5, 6)).shape == (2, 1, 5, 6)


def test_discriminator_default_head_and_unknown_head():
    assert FeaturePatchDiscriminator(8, widths=(8, 8, 8)).head == "paper"
    with pytest.raises(ValueError, match="valid: paper, authors"):
        FeaturePatchDiscriminator(8, head="patchgan")


def test_discriminator_spec_head_round_trip():
    """Old configs (no ``head``) rebuild the paper's D; a stored ``head`` is honoured."""
    old = {"channels": 8, "widths": [8, 16, 16]}
    assert build_discriminator(old).classifier.kernel_size == (1, 1)
    assert build_discriminator({**old, "head": "authors"}).classifier.kernel_size == (3, 3)


@pytest.mark.parametrize("name", upsampler_names())
@pytest.mark.parametrize("size", [None, (12, 16), (11, 15)])
def test_every_upsampler_shape(name, size):
    torch.manual_seed(0)
    up = make_upsampler(name, 32)
    x = torch.randn(2, 32, 6, 8, requires_grad=True)
    out = up(x, size=size)
    assert out.shape == (2, 32, *(size or (12, 16)))
    out.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_make_upsampler_rejects_unknown_name():
    with pytest.raises(ValueError, match="valid: nearest, bilinear, bicubic"):
        make_upsampler("lanczos", 8)


def test_make_upsampler_passes_modules_through():
    g = SRFGenerator(8)
    assert make_upsampler(g, 8) is g


def test_fit_to_size_crops_and_pads():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert fit_to_size(x, (3, 3)).shape == (1, 1, 3, 3)
    padded = fit_to_size(x, (5, 6))
    assert padded.shape == (1, 1, 5, 6)
    assert torch.equal(padded[..., :4, :4], x)
    assert torch.equal(padded[..., 4, :4], x[..., 3, :])  # replicated border


LEARNED = [n for n in upsampler_names() if n not in FIXED]


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("size", [(13, 16), (12, 17), (10, 16), (12, 14), (24, 32), (6, 8)])
def test_learned_upsamplers_refuse_sizes_that_are_not_x2(name, size):
    """Only (2H or 2H - 1) x (2W or 2W - 1) is allowed; the message names both sizes."""
    up = make_upsampler(name, 16).eval()
    with pytest.raises(ValueError, match=rf"6x8 map to {size[0]}x{size[1]}"):
        up(torch.randn(1, 16, 6, 8), size=size)


@pytest.mark.parametrize("variant", GENERATOR_VARIANTS)
def test_every_generator_variant_refuses_a_non_x2_size(variant):
    g = SRFGenerator(16, variant=variant).eval()
    with pytest.raises(ValueError, match=r"SRFGenerator.*5x6 map to 12x12"):
        g(torch.randn(1, 16, 5, 6), size=(12, 12))


@pytest.mark.parametrize("name", FIXED)
def test_fixed_interpolations_accept_any_size(name):
    up = make_upsampler(name, 4)
    assert isinstance(up, Interpolation)
    assert up(torch.randn(1, 4, 6, 8), size=(13, 30)).shape == (1, 4, 13, 30)


def test_learned_output_size():
    x = torch.zeros(1, 1, 5, 7)
    assert learned_output_size(x, None) == (10, 14)
    assert learned_output_size(x, (9, 13)) == (9, 13)
    assert learned_output_size(x, torch.Size([10, 13])) == (10, 13)
    assert learned_output_size(x, None, scale=4) == (20, 28)
    assert learned_output_size(x, (17, 26), scale=4) == (17, 26)  # ceil(17 / 4) = 5, ceil(26 / 4) = 7
    with pytest.raises(ValueError, match=r"Mine: cannot upsample a 5x7 map to 11x14"):
        learned_output_size(x, (11, 14), name="Mine")
