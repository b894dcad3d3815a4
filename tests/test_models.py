"""SRF generator, feature-patch discriminator and the upsampler registry."""

import pytest
import torch

from srfkit.models import (
    GENERATOR_VARIANTS,
    FeaturePatchDiscriminator,
    SRFGenerator,
    fit_to_size,
    make_upsampler,
    upsampler_names,
)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant", GENERATOR_VARIANTS)
@pytest.mark.parametrize(("h", "w", "size"), [(8, 8, None), (7, 9, None), (7, 9, (13, 17)), (4, 5, (9, 11))])
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
    # The authors' released RRDB form (about 7.8M in facts.md).
    assert 7.7e6 < counts["released"] < 7.9e6
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
    assert n_params(FeaturePatchDiscriminator(256)) > 10_000_000  # 512/1024/1024 3x3 blocks


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
