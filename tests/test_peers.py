"""Learned upsampler peers (DySample, DySample+, CARAFE): shapes, gradients and known answers."""

import pytest
import torch
import torch.nn.functional as F

import srfkit.models.peers  # noqa: F401  (registers the peers)
from srfkit.models import PerStepUpsampler, SRFFeaturePyramidNetwork, make_upsampler, upsampler_names
from srfkit.models.peers import CARAFE, DySample

PEERS = ("dysample", "dysample_dynamic", "carafe")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_peers_are_registered():
    assert set(PEERS) <= set(upsampler_names())


@pytest.mark.parametrize("name", PEERS)
@pytest.mark.parametrize(
    ("h", "w", "size"), [(8, 8, None), (7, 9, None), (7, 9, (13, 17)), (5, 6, (9, 11)), (3, 3, (5, 6))]
)
def test_peer_shapes(name, h, w, size):
    torch.manual_seed(0)
    up = make_upsampler(name, 16).eval()
    out = up(torch.randn(2, 16, h, w), size=size)
    expected = size if size is not None else (2 * h, 2 * w)
    assert out.shape == (2, 16, *expected)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", PEERS)
def test_peer_gradients_reach_input_and_every_parameter(name):
    torch.manual_seed(0)
    up = make_upsampler(name, 16)
    if name == "dysample_dynamic":
        # The zero-initialised scope conv gets a gradient only through non-zero offsets, which
        # its partner conv provides; give both some weight so the check is meaningful.
        torch.nn.init.normal_(up.scope.weight, std=0.1)
    x = torch.randn(2, 16, 6, 7, requires_grad=True)
    up(x, size=(11, 14)).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in up.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_parameter_counts():
    counts = {(name, c): n_params(make_upsampler(name, c)) for name in PEERS for c in (256, 128)}
    for (name, c), count in counts.items():
        print(f"{name} at C={c}: {count:,} parameters")
    # 1x1 conv C -> 2 * groups(4) * 2^2 = 32 offsets, plus bias.
    assert counts["dysample", 256] == 256 * 32 + 32 == 8224
    # DySample+ adds an equally sized scope conv (ratio 2, as 65.5K / 32.7K in the paper).
    assert counts["dysample_dynamic", 256] == 2 * counts["dysample", 256]
    # CARAFE: 1x1 C -> 64, 3x3 64 -> 5^2 * 2^2 = 100; three of them (one per FPN step) are about 0.22M.
    assert counts["carafe", 256] == (256 * 64 + 64) + (64 * 9 * 100 + 100) == 74148
    assert 0.2e6 < 3 * counts["carafe", 256] < 0.24e6
    # The published DySample figures (+32.7K, +65.5K) are 4 and 8 times the 1x1 weights without biases.
    assert (4 * 256 * 32, 8 * 256 * 32) == (32_768, 65_536)
    assert 3 * counts["dysample", 256] == 24_672 and 4 * counts["dysample", 256] == 32_896


@pytest.mark.parametrize(("name", "size"), [("dysample", (9, 11)), ("carafe", (9, 11)), ("dysample", (6, 10))])
def test_peers_refuse_a_size_that_is_not_x2(name, size):
    """Padding a 4x5 map's 8x10 output to 9x11 (or cropping it to 6) used to pass silently."""
    up = make_upsampler(name, 8)
    with pytest.raises(ValueError, match=rf"cannot upsample a 4x5 map to {size[0]}x{size[1]}"):
        up(torch.randn(1, 8, 4, 5), size=size)


@pytest.mark.parametrize("name", PEERS)
def test_reset_parameters_is_the_initialisation(name):
    torch.manual_seed(0)
    up = make_upsampler(name, 64)
    for p in up.parameters():
        torch.nn.init.constant_(p, 0.5)
    up.reset_parameters()
    if isinstance(up, DySample):
        assert up.offset.weight.std().item() == pytest.approx(0.001, rel=0.2)
        assert not up.offset.bias.any()
        if up.scope is not None:
            assert not up.scope.weight.any() and not up.scope.bias.any()
    else:
        assert up.encoder.weight.std().item() == pytest.approx(0.001, rel=0.2)
        assert not up.encoder.bias.any() and not up.compressor.bias.any()
        bound = (6 / (64 + 64)) ** 0.5  # Xavier-uniform, 1x1 conv 64 -> 64
        assert up.compressor.weight.abs().max() <= bound and up.compressor.weight.std() > bound / 3


def test_dysample_initial_offsets_are_small():
    torch.manual_seed(0)
    up = DySample(32)
    x = torch.randn(1, 32, 8, 8)
    learned = up.offsets(x) - up.init_pos
    assert learned.abs().max() < 0.05  # std 0.001 weights, x 0.25
    assert up.offset.weight.std().item() == pytest.approx(0.001, rel=0.2)


@pytest.mark.parametrize("dynamic", [False, True])
def test_dysample_zero_offsets_equal_bilinear_x2(dynamic):
    """With zero learned offsets the sampling points are the fixed sub-pixel positions i -+ 0.25 px.

    Bilinear x2 with align_corners=False maps output pixel p to source p / 2 - 0.25, i.e. i - 0.25
    for p = 2i and i + 0.25 for p = 2i + 1, and clamps at the borders like border padding does: so
    the two are the same function.
    """
    torch.manual_seed(0)
    up = DySample(16, groups=4, dynamic_scope=dynamic).double()
    torch.nn.init.zeros_(up.offset.weight)
    torch.nn.init.zeros_(up.offset.bias)
    if dynamic:  # the scope no longer matters once the offsets are zero; make it non-trivial anyway
        torch.nn.init.normal_(up.scope.weight)
    x = torch.randn(2, 16, 5, 7, dtype=torch.float64)
    expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("axis", "shift"), [(-1, 1.0), (-2, 1.0), (-1, -1.0)])
def test_dysample_constant_offset_translates_one_group(axis, shift):
    """A bias of 4 * shift on one coordinate of group 0 moves its sampling points by ``shift`` px.

    Checks the (x, y) order of the offset channels and that groups own their channels: group 0 reads
    the map translated by one low-resolution pixel, the other groups stay bilinear.
    """
    torch.manual_seed(0)
    c, groups, s = 8, 4, 2
    up = DySample(c, groups=groups).double()
    torch.nn.init.zeros_(up.offset.weight)
    with torch.no_grad():
        bias = torch.zeros(2, groups, s * s, dtype=torch.float64)
        bias[0 if axis == -1 else 1, 0] = 4 * shift  # x 0.25 static factor = shift px
        up.offset.bias.copy_(bias.flatten())
    x = torch.randn(1, c, 8, 8, dtype=torch.float64)
    out = up(x)
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    moved = F.interpolate(torch.roll(x, -int(shift), dims=axis), scale_factor=2, mode="bilinear", align_corners=False)
    g0 = slice(0, c // groups)
    # Away from the borders (where clamping differs from rolling) group 0 equals the translated map.
    inner = [slice(None)] * 4
    inner[axis] = slice(4, -4)
    inner[1] = g0
    torch.testing.assert_close(out[tuple(inner)], moved[tuple(inner)], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, c // groups :], bilinear[:, c // groups :], rtol=0, atol=1e-12)


def box5_then_nearest(x: torch.Tensor) -> torch.Tensor:
    """Independent expected value: 5x5 mean over the zero-padded map, then nearest x2."""
    c = x.shape[1]
    box = torch.full((c, 1, 5, 5), 1 / 25, dtype=x.dtype)
    smoothed = F.conv2d(x, box, padding=2, groups=c)  # zero padding, divides by 25 everywhere
    return smoothed.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


@pytest.mark.parametrize("impl", ["shifts", "unfold"])
def test_carafe_uniform_kernels_are_box_filter_then_nearest(impl):
    torch.manual_seed(0)
    up = CARAFE(16, impl=impl).double()
    torch.nn.init.zeros_(up.encoder.weight)
    torch.nn.init.zeros_(up.encoder.bias)  # every logit 0 -> softmax 1/25 on each tap
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    out = up(x)
    torch.testing.assert_close(out, box5_then_nearest(x), rtol=0, atol=1e-12)
    # The same through the pooling op (count_include_pad matches unfold's zero padding).
    pooled = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    torch.testing.assert_close(out, F.interpolate(pooled, scale_factor=2, mode="nearest"), rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["shifts", "unfold"])
def test_carafe_one_hot_kernels_pick_a_neighbour(impl):
    """A dominant logit on one tap copies that neighbour: centre tap for three sub-pixels (nearest x2),
    the right-hand neighbour (tap row 2, column 3) for sub-pixel (0, 1), zero beyond the border."""
    up = CARAFE(4, impl=impl).double()
    torch.nn.init.zeros_(up.encoder.weight)
    with torch.no_grad():
        bias = torch.full((25, 4), -1e3, dtype=torch.float64)  # channel = tap * 4 + sub-pixel
        bias[12, [0, 2, 3]] = 0.0
        bias[2 * 5 + 3, 1] = 0.0
        up.encoder.bias.copy_(bias.flatten())
    x = torch.randn(1, 4, 5, 6, dtype=torch.float64)
    out = up(x)
    right = F.pad(x[..., 1:], (0, 1))  # x[i, j + 1], zero past the right border
    torch.testing.assert_close(out[..., 0::2, 0::2], x, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., 1::2, 0::2], x, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., 1::2, 1::2], x, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., 0::2, 1::2], right, rtol=0, atol=1e-12)


def test_carafe_implementations_agree():
    torch.manual_seed(0)
    a = CARAFE(16, impl="shifts")
    torch.nn.init.normal_(a.encoder.weight, std=0.1)  # clearly non-uniform kernels
    b = CARAFE(16, impl="unfold")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 16, 7, 5)
    torch.testing.assert_close(a(x, size=(13, 10)), b(x, size=(13, 10)))


def test_carafe_kernels_sum_to_one():
    torch.manual_seed(0)
    up = CARAFE(16)
    k = up.kernels(torch.randn(2, 16, 4, 5))
    assert k.shape == (2, 25, 4, 4, 5)
    torch.testing.assert_close(k.sum(1), torch.ones(2, 4, 4, 5))


def test_peers_reject_bad_input():
    with pytest.raises(ValueError, match="multiple of groups"):
        DySample(6, groups=4)
    with pytest.raises(ValueError, match="unknown impl"):
        CARAFE(8, impl="cuda")
    with pytest.raises(ValueError, match=r"\(N, 8, H, W\)"):
        DySample(8)(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, 8, H, W\)"):
        CARAFE(8)(torch.randn(1, 4, 3, 3))


@pytest.mark.parametrize("name", PEERS)
def test_peers_in_fpn_with_odd_laterals(name):
    torch.manual_seed(0)
    fpn = SRFFeaturePyramidNetwork([8, 16, 32], 16, upsampler=name).eval()
    feats = {"a": torch.randn(1, 8, 25, 19), "b": torch.randn(1, 16, 13, 10), "c": torch.randn(1, 32, 7, 5)}
    out = fpn(feats)
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(25, 19), (13, 10), (7, 5)]
    # One module per top-down step, all under ``upsampler``: the only keys a plain FPN state dict lacks.
    assert isinstance(fpn.upsampler, PerStepUpsampler) and len(fpn.upsampler) == 2
    extra = [k for k in fpn.state_dict() if not k.startswith(("inner_blocks.", "layer_blocks."))]
    assert extra and all(k.startswith(("upsampler.steps.0.", "upsampler.steps.1.")) for k in extra)
