"""Profiles hold every size and schedule."""

import pytest

from srfkit import default_device, get_profile
from srfkit.profiles import PROFILES


def test_profiles_exist_and_scale_up():
    quick, cpu, paper = (get_profile(n) for n in ("quick", "cpu", "paper"))
    assert quick.image_size < cpu.image_size < paper.image_size
    assert quick.fpn_channels < cpu.fpn_channels < paper.fpn_channels == 256
    assert paper.backbone == "resnet50"


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_stage_writes_at_least_two_checkpoints(name):
    profile = get_profile(name)
    for stage in ("guide", "srf-gan", "extractor", "target"):
        schedule = profile.schedule(stage)
        assert schedule.iters // schedule.checkpoint_every >= 2, (name, stage)
        assert all(0 < m < schedule.iters for m in schedule.milestone_steps())


def test_unknown_profile_and_stage():
    with pytest.raises(ValueError, match="quick, cpu, paper"):
        get_profile("huge")
    with pytest.raises(ValueError, match="guide, srf-gan"):
        get_profile("quick").schedule("stage9")


def test_replace_rejects_unknown_fields():
    assert get_profile("quick").replace(image_size=32).image_size == 32
    with pytest.raises(TypeError):
        get_profile("quick").replace(imagesize=32)


def test_default_device_is_cpu_without_cuda():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert default_device().type == expected
    assert default_device("cpu").type == "cpu"
