"""SRFFeaturePyramidNetwork against torchvision's FeaturePyramidNetwork."""

from collections import OrderedDict

import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from srfkit.models import SRFFeaturePyramidNetwork, SRFGenerator

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
