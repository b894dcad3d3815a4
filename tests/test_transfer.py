"""Weight transfer between detector families by pyramid level, and what stages 2-3 reuse."""

import json

import pytest
import torch
from torch import nn

from srfkit.detection import build_detector, get_fpn, pyramid_keys, transfer_backbone
from srfkit.profiles import get_profile
from srfkit.train import read_stage, train_target
from srfkit.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from srfkit.train.common import pyramid_keys as train_pyramid_keys
from srfkit.train.extractor import build_extractor
from srfkit.train.loop import seed_everything
from srfkit.train.specs import build_from_spec, detector_spec, generator_spec, upsampler_spec
from srfkit.train.target import build_target

QUICK = get_profile("quick")
TWO_STAGE, ONE_STAGE = ("mask_rcnn", "faster_rcnn"), ("retinanet", "fcos")
_P2_BLOCKS = ("backbone.fpn.inner_blocks.0.", "backbone.fpn.layer_blocks.0.")  # P2 in a two-stage FPN


def _state(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def _heads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything outside the backbone: RPN, RoI heads, one-stage heads."""
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def _fill_levels(model: nn.Module) -> None:
    """Lateral and output conv of level P_k: weights 10k+1 / 10k+3, biases 10k+2 / 10k+4."""
    fpn = get_fpn(model)
    with torch.no_grad():
        for i, level in enumerate(pyramid_keys(model)):
            for j, blocks in enumerate((fpn.inner_blocks, fpn.layer_blocks)):
                blocks[i][0].weight.fill_(10 * level + 2 * j + 1)
                blocks[i][0].bias.fill_(10 * level + 2 * j + 2)


def _level_values(model: nn.Module) -> dict[int, tuple[float | None, ...]]:
    """Level -> (lateral weight, lateral bias, output weight, output bias) values; None where not constant."""
    fpn = get_fpn(model)
    out = {}
    for i, level in enumerate(pyramid_keys(model)):
        tensors = [t.detach() for c in (fpn.inner_blocks[i][0], fpn.layer_blocks[i][0]) for t in (c.weight, c.bias)]
        out[level] = tuple(float(t.flatten()[0]) if bool((t == t.flatten()[0]).all()) else None for t in tensors)
    return out


def _constant(level: int) -> tuple[float, ...]:
    return tuple(float(10 * level + n) for n in (1, 2, 3, 4))


# -------------------------------------------------------------------------------------------- levels


@pytest.mark.parametrize("arch", TWO_STAGE + ONE_STAGE)
def test_pyramid_keys_follow_strides_and_agree_with_train(arch):
    model = build_detector(arch, 3, profile=QUICK)
    expected = {2: "0", 3: "1", 4: "2", 5: "3"} if arch in TWO_STAGE else {3: "0", 4: "1", 5: "2"}
    assert pyramid_keys(model) == expected == train_pyramid_keys(model)
    feats = model.backbone(torch.rand(1, 3, 64, 64))
    for level, key in expected.items():
        assert feats[key].shape[-1] == 64 // 2**level


# ------------------------------------------------------------------------------------------ transfer


@pytest.mark.parametrize("src_arch, dst_arch", [("faster_rcnn", "retinanet"), ("fcos", "mask_rcnn")])
def test_transfer_copies_each_level_into_the_same_level(src_arch, dst_arch):
    torch.manual_seed(0)
    src = build_detector(src_arch, 3, "srf", profile=QUICK)
    torch.manual_seed(1)
    dst = build_detector(dst_arch, 3, "srf", profile=QUICK)
    _fill_levels(src)
    dst_heads = _heads(dst)
    dst_p2 = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith(_P2_BLOCKS)}

    report = transfer_backbone(src, dst)

    shared = sorted(set(pyramid_keys(src)) & set(pyramid_keys(dst)))
    assert shared == [3, 4, 5]
    after = _level_values(dst)
    for level in shared:
        assert after[level] == _constant(level), f"P{level} got {after[level]}"
    if dst_arch in TWO_STAGE:  # P2 only the destination has: left as it was
        assert len(dst_p2) == 4 and all(torch.equal(v, dst.state_dict()[k]) for k, v in dst_p2.items())
        assert "only the destination has P2" in report["not_copied"]["P2"]
    else:
        assert "only the source has P2" in report["not_copied"]["P2"]
    # heads untouched, body and G copied
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in dst_heads.items())
    src_state, dst_state = src.state_dict(), dst.state_dict()
    for prefix in ("backbone.body.", "backbone.fpn.upsampler."):
        keys = [k for k in src_state if k.startswith(prefix)]
        assert keys and all(torch.equal(src_state[k], dst_state[k]) for k in keys), prefix
    # the report: JSON-able, per part and level
    assert json.loads(json.dumps(report)) == report
    assert report["levels"] == {
        f"P{k}": {"from": list(pyramid_keys(src)).index(k), "to": list(pyramid_keys(dst)).index(k), "tensors": 4}
        for k in shared
    }
    assert report["body"] == len([k for k in dst_state if k.startswith("backbone.body.")])
    assert report["upsampler"] == len([k for k in dst_state if k.startswith("backbone.fpn.upsampler.")]) > 0
    assert report["loaded"] == report["body"] + 12 + report["extra_blocks"] + report["upsampler"]
    assert report["loaded"] + report["skipped"] == len(dst_state)
    assert "extra_blocks" in report["not_copied"]  # max pool P6 vs P6/P7 convs


def test_one_stage_extra_blocks_copied_and_ddp_unwrapped():
    torch.manual_seed(0)
    src = build_detector("retinanet", 3, profile=QUICK)
    dst = build_detector("fcos", 3, profile=QUICK)
    with torch.no_grad():
        get_fpn(src).extra_blocks.p7.weight.fill_(7.0)
    heads = _heads(dst)

    class Wrapper(nn.Module):  # stands for DistributedDataParallel: the model is .module
        def __init__(self, module):
            super().__init__()
            self.module = module

    report = transfer_backbone(Wrapper(src), Wrapper(dst))
    assert report["extra_blocks"] == 4 and "extra_blocks" not in report["not_copied"]
    assert bool((get_fpn(dst).extra_blocks.p7.weight == 7.0).all())
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in heads.items())


def test_shape_mismatch_names_the_tensor_and_copies_nothing():
    src = build_detector("faster_rcnn", 3, profile=QUICK)
    dst = build_detector("retinanet", 3, profile=QUICK, fpn_channels=64)
    before = _state(dst)
    with pytest.raises(
        ValueError, match=r"inner_blocks\.1\.0\.bias \(32,\) into backbone\.fpn\.inner_blocks\.0\.0\.bias \(64,\)"
    ):
        transfer_backbone(src, dst)
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in before.items())


def test_upsampler_copied_only_when_asked_and_when_alike():
    src = build_detector("faster_rcnn", 3, "srf", profile=QUICK)
    dst = build_detector("faster_rcnn", 3, "carafe", profile=QUICK)
    g_before = _state(dst, "backbone.fpn.upsampler.")
    with pytest.raises(ValueError, match="FPN upsampler .*upsampler=False"):
        transfer_backbone(src, dst)
    report = transfer_backbone(src, dst, upsampler=False)
    assert report["upsampler"] == 0 and "upsampler" in report["not_copied"]
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in g_before.items())
    assert torch.equal(src.backbone.body.conv1.weight, dst.backbone.body.conv1.weight)


# ----------------------------------------------------------------------------- stages 2 and 3 reuse


class TwoImages(torch.utils.data.Dataset):
    name, num_classes, has_masks = "two", 3, True

    def __getitem__(self, i):
        mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
        mask[:, 8:40, 10:30] = 1
        target = {"boxes": torch.tensor([[10.0, 8.0, 30.0, 40.0]]), "labels": torch.tensor([1 + i]), "masks": mask}
        return torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)), target

    def __len__(self):
        return 2


def _extractor_payload(arch: str) -> dict:
    """A finished stage 2 as read_stage returns it: M (half-size, G inside) with weights unlike any fresh ones."""
    spec = detector_spec(arch, 3, upsampler_spec("srf", QUICK), QUICK, image_size=32, max_size=32)
    torch.manual_seed(123)
    model = build_from_spec(spec)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    return {
        "format": CHECKPOINT_FORMAT,
        "stage": "extractor",
        "config": {"detector": spec},
        "models": {"M": model.state_dict()},
    }


@pytest.mark.parametrize("m_arch, t_arch", [("faster_rcnn", "faster_rcnn"), ("faster_rcnn", "retinanet")])
def test_target_reusing_m_keeps_its_heads_fresh(tmp_path, m_arch, t_arch):
    payload = _extractor_payload(m_arch)
    save_checkpoint(tmp_path / "extractor" / "final.pt", payload)
    # lr 0: the one step changes no weight, so final.pt holds T as built. No AMP: M's weights moved by
    # +0.5 overflow float16 (a NaN loss at step 1 when CUDA is visible).
    result = train_target(
        QUICK, TwoImages(), tmp_path / "target", arch=t_arch, reuse="M", extractor_dir=tmp_path / "extractor",
        iters=1, lr=0.0, warmup_iters=0, progress=False, amp=False,
    )  # fmt: skip
    config = read_stage(result.out_dir)["config"]
    t_state = load_checkpoint(result.checkpoint)["models"]["detector"]

    seed_everything(0)
    fresh = build_from_spec(config["detector"])
    fresh_heads = _heads(fresh)
    assert fresh_heads and all(torch.equal(t_state[k], v) for k, v in fresh_heads.items())
    m_state = payload["models"]["M"]
    m_model = build_from_spec(payload["config"]["detector"])
    m_model.load_state_dict(m_state)
    m_keys, t_keys = pyramid_keys(m_model), pyramid_keys(fresh)
    for level in (3, 4, 5):
        for blocks in ("inner_blocks", "layer_blocks"):
            src = f"backbone.fpn.{blocks}.{list(m_keys).index(level)}.0.weight"
            dst = f"backbone.fpn.{blocks}.{list(t_keys).index(level)}.0.weight"
            assert torch.equal(t_state[dst], m_state[src]), dst
    for k in (k for k in m_state if k.startswith(("backbone.body.", "backbone.fpn.upsampler."))):
        if not k.endswith(
            ("running_mean", "running_var", "num_batches_tracked")
        ):  # G's BN statistics move in train mode
            assert torch.equal(t_state[k], m_state[k]), k
    reused = config["reused"]
    assert reused["loaded"] > 0 and set(reused["levels"]) == (
        {"P2", "P3", "P4", "P5"} if t_arch == m_arch else {"P3", "P4", "P5"}
    )
    assert config["reuse"] == "M"


def test_build_target_none_and_m_draw_the_same_fresh_heads():
    payload = _extractor_payload("faster_rcnn")
    seed_everything(0)
    with_m, spec, reused = build_target(QUICK, "faster_rcnn", 3, "M", payload)
    seed_everything(0)
    plain = build_from_spec(spec)
    assert all(torch.equal(v, with_m.state_dict()[k]) for k, v in _heads(plain).items())
    assert reused["levels"]["P2"] == {"from": 0, "to": 0, "tensors": 4}


def test_extractor_init_from_guide_takes_backbone_and_fpn_only():
    guide_spec = detector_spec("faster_rcnn", 3, upsampler_spec("nearest", QUICK), QUICK)
    torch.manual_seed(5)
    guide_model = build_from_spec(guide_spec)
    _fill_levels(guide_model)
    guide = {"stage": "guide", "config": {"detector": guide_spec}, "models": {"detector": guide_model.state_dict()}}
    g_cfg = generator_spec(QUICK.fpn_channels)
    torch.manual_seed(6)
    g_state = build_from_spec(detector_spec("faster_rcnn", 3, g_cfg, QUICK)).backbone.fpn.upsampler.state_dict()
    srf_gan = {"stage": "srf-gan", "config": {"generator": g_cfg}, "models": {"G": g_state}}

    seed_everything(0)
    fresh, _ = build_extractor(QUICK, TwoImages(), "retinanet", srf_gan, guide, init_from_guide=False)
    seed_everything(0)
    model, _ = build_extractor(QUICK, TwoImages(), "retinanet", srf_gan, guide, init_from_guide=True)

    assert all(torch.equal(v, model.state_dict()[k]) for k, v in _heads(fresh).items())
    assert torch.equal(model.backbone.body.conv1.weight, guide_model.backbone.body.conv1.weight)
    assert _level_values(model) == {k: _constant(k) for k in (3, 4, 5)}
    g = get_fpn(model).upsampler.state_dict()
    assert all(torch.equal(g[k], v) for k, v in g_state.items())  # stage 1's G, not the guide's


def test_per_step_upsamplers_copied_by_the_level_each_step_makes():
    torch.manual_seed(0)
    src = build_detector("faster_rcnn", 3, "carafe", profile=QUICK)
    dst = build_detector("retinanet", 3, "carafe", profile=QUICK)
    src_steps, dst_steps = get_fpn(src).upsampler.steps, get_fpn(dst).upsampler.steps
    assert (len(src_steps), len(dst_steps)) == (3, 2)  # steps make P2, P3, P4 / P3, P4
    with torch.no_grad():
        for step, level in zip(src_steps, (2, 3, 4)):
            for p in step.parameters():
                p.fill_(float(level))
    tensors_per_step = len(dst_steps[0].state_dict())
    report = transfer_backbone(src, dst)
    for step, level in zip(dst_steps, (3, 4)):
        assert all(bool((p == level).all()) for p in step.parameters()), f"step making P{level}"
    assert report["upsampler"] == 2 * tensors_per_step > 0
    assert "only the source" in report["not_copied"]["upsampler step P2"]
    back = transfer_backbone(dst, src)  # one-stage -> two-stage: the step making P2 stays as it was
    assert "only the destination" in back["not_copied"]["upsampler step P2"]
    assert all(bool((p == 2).all()) for p in src_steps[0].parameters())
