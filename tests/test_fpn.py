"""SRFFeaturePyramidNetwork against torchvision's FeaturePyramidNetwork."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from srfkit.models import CARAFE, DySample, PerStepUpsampler, SRFFeaturePyramidNetwork, SRFGenerator, make_upsampler

IN_CHANNELS = [8, 16, 32, 64]


def _inputs(odd: bool) -> OrderedDict:
    torch.manual_seed(1)
    sizes = [(33, 25), (17, 13), (9, 7), (5, 4)] if odd else [(32, 24), (16, 12), (8, 6), (4, 3)]
    return OrderedDict((str(i), torch.randn(2, c, *s)) for i, (c, s) in enumerate(zip(IN_CHANNELS, sizes)))


def test_nearest_is_bit_identical_to_torchvision():
    torch.manual_seed(0)
    reference = FeaturePyramidNetwork(IN_CHANNELS, 16, extra_blocks=LastLevelMaxPool())
    ours = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="nearest", extra_blocks=LastLevelMaxPool())
    ours.load_state_dict(reference.state_dict())  # strict: nearest adds no keys
    for odd in (False, True):
        x = _inputs(odd)
        expected, got = reference(x), ours(x)
        assert list(expected) == list(got)
        for key in expected:
            assert torch.equal(expected[key], got[key]), key


def test_plain_fpn_state_dict_loads_into_srf_fpn():
    reference = FeaturePyramidNetwork(IN_CHANNELS, 16)
    ours = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="srf")
    result = ours.load_state_dict(reference.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(k.startswith("upsampler.") for k in result.missing_keys)


def test_srf_fpn_shares_one_generator_and_handles_odd_sizes():
    g = SRFGenerator(16)
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler=g)
    calls = []
    g.register_forward_hook(lambda module, args, out: calls.append(tuple(out.shape[-2:])))
    out = fpn(_inputs(odd=True))
    assert calls == [(9, 7), (17, 13), (33, 25)]  # three top-down steps, one module
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(33, 25), (17, 13), (9, 7), (5, 4)]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("name", "per_module"), [("carafe", 74_148), ("dysample", 8_224), ("dysample_dynamic", 16_448)]
)
def test_learned_peers_get_one_module_per_top_down_step(name, per_module):
    """As their published necks: a 4-level FPN at C=256 has 3 distinct modules under ``fpn.upsampler``."""
    torch.manual_seed(0)
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 256, upsampler=name)
    assert isinstance(fpn.upsampler, PerStepUpsampler) and not fpn.shares_upsampler
    steps = list(fpn.upsampler.steps)
    assert len(steps) == 3 and len({id(m) for m in steps}) == 3
    assert n_params(fpn.upsampler) == 3 * per_module
    assert all(n_params(m) == per_module for m in steps)
    plain = n_params(FeaturePyramidNetwork(IN_CHANNELS, 256))
    assert n_params(fpn) - plain == 3 * per_module


def test_per_step_modules_are_initialised_separately():
    torch.manual_seed(0)
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="carafe")
    w = [m.compressor.weight for m in fpn.upsampler.steps]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


def test_srf_and_fixed_interpolations_stay_shared():
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 256, upsampler="srf", upsampler_kwargs={"variant": "released"})
    assert isinstance(fpn.upsampler, SRFGenerator) and fpn.shares_upsampler
    assert n_params(fpn.upsampler) == 7_834_624
    for name in ("nearest", "bilinear", "bicubic", "srf_light"):
        assert not isinstance(SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler=name).upsampler, PerStepUpsampler)


def test_each_step_module_runs_once_on_its_own_level():
    torch.manual_seed(0)
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="dysample")
    calls = []
    for i, module in enumerate(fpn.upsampler.steps):
        module.register_forward_hook(lambda m, args, out, i=i: calls.append((i, tuple(out.shape[-2:]))))
    out = fpn(_inputs(odd=True))
    assert calls == [(2, (9, 7)), (1, (17, 13)), (0, (33, 25))]  # step i makes level i
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(33, 25), (17, 13), (9, 7), (5, 4)]


def test_per_step_equals_the_top_down_path_written_out():
    torch.manual_seed(0)
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="carafe").eval()
    for m in fpn.upsampler.steps:  # clearly different, non-uniform kernels per step
        torch.nn.init.normal_(m.encoder.weight, std=0.3)
    x = _inputs(odd=False)
    feats = list(x.values())
    inner = [fpn.inner_blocks[i](f) for i, f in enumerate(feats)]
    last = inner[3]
    expected = [fpn.layer_blocks[3](last)]
    for idx in (2, 1, 0):
        last = inner[idx] + fpn.upsampler.steps[idx](last, size=inner[idx].shape[-2:])
        expected.insert(0, fpn.layer_blocks[idx](last))
    with torch.no_grad():
        got = list(fpn(x).values())
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e.detach())


def test_share_option_overrides_the_default():
    shared = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="carafe", share_upsampler=True)
    assert isinstance(shared.upsampler, CARAFE)
    # A shared peer keeps the old state-dict layout, so such checkpoints load unchanged.
    keys = [k for k in shared.state_dict() if k.startswith("upsampler.")]
    assert keys and all(k.startswith(("upsampler.compressor.", "upsampler.encoder.")) for k in keys)
    per_step_srf = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler="srf", share_upsampler=False)
    assert isinstance(per_step_srf.upsampler, PerStepUpsampler) and len(per_step_srf.upsampler) == 3
    assert all(isinstance(m, SRFGenerator) for m in per_step_srf.upsampler.steps)


def test_a_module_given_for_per_step_use_serves_step_0_and_is_copied():
    torch.manual_seed(0)
    given = DySample(16)
    fpn = SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler=given)
    steps = list(fpn.upsampler.steps)
    assert steps[0] is given and all(isinstance(m, DySample) and m is not given for m in steps[1:])
    assert not torch.equal(steps[1].offset.weight, given.offset.weight)  # re-initialised copy
    # A module passed with sharing forced stays the one module (e.g. a trained G reused in an FPN).
    g = make_upsampler("carafe", 16)
    assert SRFFeaturePyramidNetwork(IN_CHANNELS, 16, upsampler=g, share_upsampler=True).upsampler is g


def test_per_step_upsampler_needs_its_step():
    up = PerStepUpsampler([make_upsampler("bilinear", 4), make_upsampler("nearest", 4)])
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(up(x, size=(6, 6), step=1), make_upsampler("nearest", 4)(x, size=(6, 6)))
    with pytest.raises(TypeError):
        up(x, size=(6, 6))
