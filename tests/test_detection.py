"""Detectors over the SRF FPN: one training step each, and argument checks."""

import pytest
import torch

from srfkit.detection import ARCHS, FeatureExtractor, build_detector, get_fpn
from srfkit.models import SRFGenerator
from srfkit.profiles import get_profile


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
