"""Detectors over the SRF FPN: one training step each, and argument checks."""

import json

import pytest
import torch

from srfkit.detection import ARCHS, FeatureExtractor, build_detector, get_fpn
from srfkit.detection.builder import fcos_head_groups
from srfkit.models import NearestConv, SRFGenerator, make_upsampler, upsampler_names
from srfkit.models.generator import ResidualBlock
from srfkit.profiles import get_profile
from srfkit.train.specs import build_from_spec, build_upsampler, detector_spec, upsampler_spec

QUICK = get_profile("quick")


def _batch(size: int = 64):
    torch.manual_seed(0)
    images = [torch.rand(3, size, size) for _ in range(2)]
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[:, 8:40, 10:30] = 1
    targets = [
        {"boxes": torch.tensor([[10.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks} for _ in images
    ]
    return images, targets


@pytest.mark.parametrize("upsampler", ["nearest", "srf"])
@pytest.mark.parametrize("arch", ARCHS)
def test_one_training_step(arch, upsampler):
    torch.manual_seed(0)
    model = build_detector(arch, num_classes=3, upsampler=upsampler, profile="quick")
    model.train()
    images, targets = _batch(get_profile("quick").image_size)
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    upsampler_module = get_fpn(model).upsampler
    if upsampler == "srf":
        assert isinstance(upsampler_module, SRFGenerator)
        grads = [p.grad for p in upsampler_module.parameters()]
        assert all(g is not None for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and "boxes" in detections[0]


def test_profile_sizes_reach_the_model():
    model = build_detector("faster_rcnn", 3, profile="quick", image_size=48, fpn_channels=64)
    assert model.transform.min_size == (48,)
    assert get_fpn(model).layer_blocks[0][0].out_channels == 64
    assert model.rpn._pre_nms_top_n["training"] == get_profile("quick").rpn_pre_nms_top_n[0]


def test_feature_extractor_keeps_input_size():
    model = build_detector("mask_rcnn", 3, profile="quick").eval()
    feats = FeatureExtractor(model)(torch.rand(1, 3, 32, 48))
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert tuple(feats["0"].shape) == (1, get_profile("quick").fpn_channels, 8, 12)


def test_unknown_arch_lists_valid_names():
    with pytest.raises(ValueError, match="mask_rcnn, faster_rcnn, retinanet, fcos"):
        build_detector("yolo", 3)


def test_unknown_upsampler_lists_valid_names():
    with pytest.raises(ValueError, match="unknown upsampler 'lanczos'") as err:
        build_detector("mask_rcnn", 3, upsampler="lanczos")
    for name in ("nearest", "bilinear", "bicubic", "srf", "dysample", "carafe"):
        assert name in str(err.value)


def test_local_backbone_weights(tmp_path):
    import torchvision

    body = torchvision.models.resnet18(weights=None, norm_layer=torch.nn.BatchNorm2d)
    path = tmp_path / "r18.pt"
    torch.save(body.state_dict(), path)
    model = build_detector("faster_rcnn", 3, profile="quick", weights_backbone=path, norm="batch")
    loaded = model.backbone.body.conv1.weight
    assert torch.equal(loaded, body.conv1.weight)
    with pytest.raises(ValueError, match="r18.pt: does not match"):
        build_detector("faster_rcnn", 3, profile="quick", weights_backbone=path, norm="group")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_detector("faster_rcnn", 3, profile="quick", weights_backbone=tmp_path / "missing.pt")


def _sized_batch(size: int, n: int):
    """``n`` images of ``size`` px with one box and mask each (the box scaled from a 64 px layout)."""
    g = torch.Generator().manual_seed(n)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    x0, y0, x1, y1 = (v * size // 64 for v in (10, 8, 30, 40))
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[:, y0:y1, x0:x1] = 1
    box = torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32)
    return images, [{"boxes": box, "labels": torch.tensor([1]), "masks": masks} for _ in images]


@pytest.mark.parametrize("half", [False, True], ids=["full", "half"])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("arch", ARCHS)
def test_quick_profile_trains_every_arch_at_batch_1_and_2(arch, batch, half):
    """One forward+backward with finite losses, at the quick image size and at stage 2's half size.

    FCOS at batch 1 used to stop inside GroupNorm on its 1x1 P6/P7 maps (32 groups of 32 channels).
    """
    size = QUICK.image_size // 2 if half else QUICK.image_size
    torch.manual_seed(0)
    model = build_detector(arch, 3, profile=QUICK, image_size=size, max_size=size).train()
    images, targets = _sized_batch(size, batch)
    losses = model(images, targets)
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        assert len(model(images)) == batch


def test_fcos_head_norm_keeps_two_channels_per_group():
    assert [fcos_head_groups(c) for c in (256, 64, 32, 48, 2)] == [32, 32, 16, 24, 1]
    model = build_detector("fcos", 3, profile=QUICK)
    norms = [m for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 8 and all(m.num_groups == 16 for m in norms)
    with pytest.raises(ValueError, match="profile 'quick', arch 'fcos': .*fpn_channels=1"):
        build_detector("fcos", 3, profile=QUICK, fpn_channels=1)


def _groupnorm_widths(model: torch.nn.Module) -> list[int]:
    return [m.num_channels // m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_cpu_and_paper_profiles_build_every_arch(profile):
    """Every arch builds; every GroupNorm has >= 2 channels per group (so a 1x1 level never stops it).

    At the cpu profile each arch also takes one batch-1 training step at its 128 px; the paper
    profile (R-50 at 800 px) is only built. FCOS keeps torchvision's 32 head groups at both.
    """
    prof = get_profile(profile)
    for arch in ARCHS:
        torch.manual_seed(0)
        model = build_detector(arch, 3, profile=prof)
        assert all(w >= 2 for w in _groupnorm_widths(model)), arch
        if arch == "fcos":
            assert {m.num_groups for m in model.head.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}
        if profile == "cpu":
            images, targets = _sized_batch(prof.image_size, 1)
            losses = model.train()(images, targets)
            assert all(torch.isfinite(v) for v in losses.values()), (arch, losses)
            sum(losses.values()).backward()


# ------------------------------------------------------------------ nearest_conv: capacity without learned upsampling


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _layers(module: torch.nn.Module) -> list[str]:
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d, torch.nn.LeakyReLU)
    return [type(m).__name__.replace("Transpose", "") for m in module.modules() if isinstance(m, kinds)]


@pytest.mark.parametrize("channels", [64, 256])
def test_nearest_conv_has_the_paper_generators_parameters_and_layers(channels):
    control = make_upsampler("nearest_conv", channels)
    g = SRFGenerator(channels, variant="paper")
    assert isinstance(control, NearestConv) and "nearest_conv" in upsampler_names()
    assert _params(control) == _params(g) == {64: 514_176, 256: 8_200_704}[channels]
    assert _layers(control) == _layers(g)  # same conv/BN/LReLU sequence, the x2 step a stride-1 conv


def test_nearest_conv_is_nearest_of_x_plus_body():
    torch.manual_seed(0)
    control = make_upsampler("nearest_conv", 16).eval()
    x = torch.randn(2, 16, 5, 7)
    with torch.no_grad():
        full = control(x)
        expected = torch.nn.functional.interpolate(x + control.body(x), scale_factor=2, mode="nearest")
        assert full.shape == (2, 16, 10, 14) and torch.allclose(full, expected)
        assert torch.equal(control(x, size=(9, 13)), full[..., :9, :13])  # odd laterals: a crop, not a resample
    with pytest.raises(ValueError, match="NearestConv: cannot upsample a 5x7 map to 12x14"):
        control(x, size=(12, 14))


def test_nearest_conv_in_a_detector_and_its_stage_spec():
    spec = detector_spec("mask_rcnn", 3, upsampler_spec("nearest_conv", QUICK), QUICK)
    assert spec["upsampler"] == {"name": "nearest_conv", "kwargs": {}, "channels": QUICK.fpn_channels}
    two = build_upsampler(upsampler_spec("nearest_conv", QUICK, num_blocks=2))
    assert sum(isinstance(m, ResidualBlock) for m in two.modules()) == 2
    torch.manual_seed(0)
    model = build_from_spec(spec).train()
    assert isinstance(get_fpn(model).upsampler, NearestConv)
    images, targets = _batch(QUICK.image_size)
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in get_fpn(model).upsampler.parameters())
    torch.manual_seed(0)
    direct = build_detector("mask_rcnn", 3, upsampler="nearest_conv", profile=QUICK)
    assert _params(direct) == _params(model)


# ---------------------------------------------------------------------- share_upsampler in builders and stage specs


@pytest.mark.parametrize(("upsampler", "share"), [("dysample", True), ("srf", False), ("carafe", None)])
def test_share_upsampler_round_trip_through_the_detector_spec(upsampler, share):
    spec = detector_spec("faster_rcnn", 3, upsampler_spec(upsampler, QUICK), QUICK, share_upsampler=share)
    spec = json.loads(json.dumps(spec))  # as stored in a stage's config.json
    assert spec["overrides"] == ({} if share is None else {"share_upsampler": share})
    torch.manual_seed(0)
    model = build_from_spec(spec)
    expected_shared = {True: True, False: False, None: False}[share]  # None: CARAFE is per step
    assert get_fpn(model).shares_upsampler is expected_shared
    state = model.state_dict()
    prefix = "backbone.fpn.upsampler." + ("" if expected_shared else "steps.2.")
    assert any(k.startswith(prefix) for k in state)
    rebuilt = build_from_spec(spec)
    rebuilt.load_state_dict(state, strict=True)
    assert get_fpn(rebuilt).shares_upsampler is expected_shared
    built = build_detector("faster_rcnn", 3, upsampler, QUICK, share_upsampler=share)
    assert built.state_dict().keys() == state.keys()


def test_default_detector_spec_is_unchanged():
    spec = detector_spec("mask_rcnn", 3, upsampler_spec("nearest", QUICK), QUICK, image_size=32)
    assert spec["overrides"] == {"image_size": 32}
