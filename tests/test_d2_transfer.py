"""srfkit's stage-2 extractor M (torchvision engine) as the start of a detectron2 detector.

``srfkit.detection.d2.transfer.torchvision_to_detectron2`` copies M's ResNet body, FPN convs (level by
level) and G into detectron2's ``bottom_up``, ``fpn_lateral{k}``/``fpn_output{k}`` and ``srf_module``;
``train_detector(..., init_from=M)`` does it before training. Tests skip without detectron2.
"""

from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch
from conftest import perturbed_detector

from srfkit.detection.d2 import detectron2_available

needs_d2 = pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed (run `make d2`)")
pytestmark = needs_d2

# detectron2's output name of each pyramid level, against srfkit's torchvision keys
TV_TO_D2 = {"0": "p2", "1": "p3", "2": "p4", "3": "p5", "pool": "p6"}
ONE_STAGE_TV_TO_D2 = {"0": "p3", "1": "p4", "2": "p5", "p6": "p6", "p7": "p7"}
R50 = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.RES2_OUT_CHANNELS", "256"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _source(arch: str = "mask_rcnn", variant: str = "paper", seed: int = 0, **overrides):
    """A quick-profile srfkit detector with G whose backbone tensors (norms and G included) are all perturbed."""
    return perturbed_detector(arch, "srf", seed, upsampler_kwargs={"variant": variant}, **overrides)


def _d2(arch: str = "mask_rcnn", variant: str = "paper", opts: list[str] | None = None, upsampler: str = "srf"):
    from detectron2.modeling import build_model

    from srfkit.detection.d2.config import get_config

    torch.manual_seed(1)
    cfg = get_config(arch, "quick", upsampler=upsampler, variant=variant, device="cpu", num_classes=3, opts=opts)
    return build_model(cfg).eval()


def _outputs(model, x):
    with torch.no_grad():
        return model.backbone(x)


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------ equal features, level by level


@pytest.mark.parametrize(
    ("src_arch", "d2_arch", "names"),
    [("mask_rcnn", "mask_rcnn", TV_TO_D2), ("fcos", "centermask", ONE_STAGE_TV_TO_D2)],
    ids=["two-stage P2-P6", "one-stage P3-P7 from P5"],
)
def test_after_transfer_the_backbones_compute_the_same_pyramid(src_arch, d2_arch, names):
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _source(src_arch), _d2(d2_arch)
    x = torch.randn(2, 3, 96, 64)  # already normalised: each engine's pixel normalisation is bypassed
    before_src, before = _outputs(m, x), _outputs(d, x)
    assert [names[k] for k in before_src] == list(before)  # every level has its counterpart
    assert all((before_src[k] - before[names[k]]).abs().max() > 1e-2 for k in before_src)  # not equal by chance

    report = torchvision_to_detectron2(m, d)

    after_src, after = _outputs(m, x), _outputs(d, x)
    for key, value in after_src.items():
        torch.testing.assert_close(after[names[key]], value, atol=1e-5, rtol=1e-5, msg=f"level {names[key]}")
        assert torch.equal(value, before_src[key])  # the source is left as it was
    assert report["resnet"].startswith("ResNet-18") and report["norm"] == {"source": "GN", "destination": "GN"}
    assert report["upsampler"] == len(m.backbone.fpn.upsampler.state_dict()) > 0
    json.dumps(report)  # JSON-able


def test_bottleneck_resnet_with_frozen_bn_needs_the_stride_in_the_3x3_conv():
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m = _source("faster_rcnn", backbone="resnet50", norm="frozen")
    frozen = [*R50, "MODEL.RESNETS.NORM", "FrozenBN"]
    strided_1x1 = _d2("faster_rcnn", opts=[*frozen, "MODEL.RESNETS.STRIDE_IN_1X1", "True"])
    untouched = _snapshot(strided_1x1)
    with pytest.raises(ValueError, match="STRIDE_IN_1X1 False") as err:
        torchvision_to_detectron2(m, strided_1x1)
    assert "layer2.0.conv1" in str(err.value) and "res3.0.conv1" in str(err.value)  # names both sides
    assert all(torch.equal(v, untouched[k]) for k, v in strided_1x1.state_dict().items())

    d = _d2("faster_rcnn", opts=[*frozen, "MODEL.RESNETS.STRIDE_IN_1X1", "False"])
    report = torchvision_to_detectron2(m, d)
    assert report["resnet"].startswith("ResNet-50 (Bottleneck") and report["norm"]["destination"] == "FrozenBN"
    # the running statistics travel too
    src_var = m.backbone.body.layer3[2].bn2.running_var
    assert torch.equal(d.backbone.bottom_up.res4[2].conv2.norm.running_var, src_var)
    x = torch.randn(1, 3, 64, 64)
    a, b = _outputs(m, x), _outputs(d, x)
    for key, value in a.items():
        # a random ResNet-50 under FrozenBN does not normalise: features reach ~1e7, so float32 rounding
        # (the two engines' FrozenBN formulas differ in order) is judged against each level's scale
        scale = value.abs().max()
        assert scale > 0 and (b[TV_TO_D2[key]] - value).abs().max() <= 1e-5 * scale, key


# ------------------------------------------------------------------------------ heads, levels, report


def test_heads_are_untouched_and_reported_as_not_copied():
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _source(), _d2("cascade_mask_rcnn")
    before = _snapshot(d)
    report = torchvision_to_detectron2(m, d)
    after = d.state_dict()
    src_state = m.state_dict()
    loaded = report["loaded_keys"]
    assert report["loaded"] == len(loaded) and report["skipped"] == len(report["skipped_keys"])
    assert set(loaded) | set(report["skipped_keys"]) == set(after)
    assert all(torch.equal(after[k], src_state[s]) for k, s in loaded.items())
    assert all(torch.equal(after[k], before[k]) for k in report["skipped_keys"])
    heads = [k for k in after if not k.startswith("backbone.")]
    assert heads and set(heads) <= set(report["skipped_keys"])  # no head tensor is loaded
    assert all(s.startswith("backbone.") for s in loaded.values())  # nor read from M's heads
    assert {"proposal_generator", "roi_heads"} <= set(report["not_copied"])
    assert "never copied" in report["not_copied"]["roi_heads"]
    # every backbone tensor of the destination came from M
    assert not [k for k in report["skipped_keys"] if k.startswith("backbone.")]
    # by name: body, FPN level by level, G
    assert loaded["backbone.bottom_up.stem.conv1.norm.weight"] == "backbone.body.bn1.weight"
    assert loaded["backbone.bottom_up.res3.0.shortcut.weight"] == "backbone.body.layer2.0.downsample.0.weight"
    assert loaded["backbone.bottom_up.res5.1.conv2.norm.bias"] == "backbone.body.layer4.1.bn2.bias"
    assert loaded["backbone.fpn_lateral2.weight"] == "backbone.fpn.inner_blocks.0.0.weight"
    assert loaded["backbone.fpn_output5.bias"] == "backbone.fpn.layer_blocks.3.0.bias"
    assert all(
        loaded[f"backbone.srf_module.{k}"] == f"backbone.fpn.upsampler.{k}"
        for k in m.backbone.fpn.upsampler.state_dict()
    )


def test_fpn_convs_pair_by_pyramid_level_not_by_index():
    """M (P2-P5) into a detectron2 RetinaNet (P3-P7): P3 from M's second FPN block; P2 and P6/P7 reported."""
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _source(), _d2("retinanet")
    before = _snapshot(d)
    report = torchvision_to_detectron2(m, d)
    loaded = report["loaded_keys"]
    assert loaded["backbone.fpn_lateral3.weight"] == "backbone.fpn.inner_blocks.1.0.weight"
    assert loaded["backbone.fpn_output5.weight"] == "backbone.fpn.layer_blocks.3.0.weight"
    assert report["levels"]["P3"] == {
        "from": "inner_blocks.1, layer_blocks.1",
        "to": "fpn_lateral3, fpn_output3",
        "tensors": 4,
    }
    assert set(report["levels"]) == {"P3", "P4", "P5"}
    assert report["not_copied"]["P2"] == "only the source has P2"
    assert "P6/P7 from C5" in report["not_copied"]["extra_blocks"] and report["extra_blocks"] == 0
    assert torch.equal(d.state_dict()["backbone.top_block.p6.weight"], before["backbone.top_block.p6.weight"])
    x = torch.randn(1, 3, 64, 64)
    a, b = _outputs(m, x), _outputs(d, x)
    for tv_key, d2_key in (("1", "p3"), ("2", "p4"), ("3", "p5")):
        torch.testing.assert_close(b[d2_key], a[tv_key], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("d2_arch", "opts", "variant", "match"),
    [
        (
            "mask_rcnn",
            ["MODEL.RESNETS.DEPTH", "34"],
            "paper",
            r"ResNet depth differs: the source is ResNet-18.*ResNet-34",
        ),
        (
            "mask_rcnn",
            ["MODEL.FPN.OUT_CHANNELS", "64"],
            "paper",
            "FPN width differs: the source has 32 channels, the destination 64",
        ),
        (
            "mask_rcnn",
            ["MODEL.RESNETS.NORM", "BN"],
            "paper",
            "norm kind differs: the source ResNet uses GN, the destination BN",
        ),
        (
            "mask_rcnn",
            ["MODEL.FPN.NORM", "GN"],
            "paper",
            r"inner_blocks.0.0 \(without a norm\) is none, backbone.fpn_lateral2.norm is GN",
        ),
        ("mask_rcnn", [], "released", "upsampler configuration differs"),
        ("mask_rcnn", ["INPUT.FORMAT", "BGR"], "paper", "input normalisation differs"),
    ],
    ids=["depth", "width", "norm", "FPN norm", "G variant", "input format"],
)
def test_mismatches_are_refused_and_leave_the_destination_unchanged(d2_arch, opts, variant, match):
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _source(), _d2(d2_arch, variant=variant, opts=opts)
    before = _snapshot(d)
    with pytest.raises(ValueError, match=match):
        torchvision_to_detectron2(m, d)
    assert all(torch.equal(v, before[k]) for k, v in d.state_dict().items())


def test_a_destination_level_the_source_lacks_is_refused():
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    with pytest.raises(ValueError, match=r"destination FPN has P2, which the source lacks.*source has P3, P4, P5"):
        torchvision_to_detectron2(_source("fcos"), _d2("mask_rcnn"))


def test_g_can_be_left_out_and_input_check_switched_off():
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _source(), _d2(variant="released", opts=["INPUT.FORMAT", "BGR"])
    g_before = {k: v.clone() for k, v in d.backbone.srf_module.state_dict().items()}
    report = torchvision_to_detectron2(m, d, upsampler=False, check_input=False)
    assert report["upsampler"] == 0 and "upsampler" in report["not_copied"] and report["input"] is None
    assert all(torch.equal(v, g_before[k]) for k, v in d.backbone.srf_module.state_dict().items())
    assert torch.equal(d.backbone.fpn_lateral4.weight, m.backbone.fpn.inner_blocks[2][0].weight)


# ------------------------------------------------------------------------------------ train_detector


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    """A srfkit stage-2 extractor M (quick, shapes, G variant 'paper'): guide, srf-gan and extractor, 2 steps each."""
    from srfkit.train import train_extractor, train_guide, train_srf_gan

    root = tmp_path_factory.mktemp("m")
    fast = dict(iters=2, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guide = train_guide("quick", "shapes", root / "guide", **fast).out_dir
        srf_gan = train_srf_gan("quick", "shapes", root / "srf-gan", guide_dir=guide, **fast).out_dir
        return train_extractor(
            "quick", "shapes", root / "extractor", guide_dir=guide, srf_gan_dir=srf_gan, **fast
        ).out_dir


@pytest.fixture(scope="module")
def initialised(extractor, tmp_path_factory):
    """detectron2 Mask R-CNN started from M, 2 steps at learning rate 0 (so its final weights are its start)."""
    from srfkit.detection.d2.engine import train_detector

    out = tmp_path_factory.mktemp("d2init") / "mask_rcnn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_detector(
            "mask_rcnn",
            "shapes",
            "quick",
            output_dir=out,
            upsampler="srf",
            init_from=extractor,
            device="cpu",
            run_eval=False,
            opts=["SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", "0.0"],
        )
    return out


def test_train_detector_starts_from_m_and_writes_the_report(extractor, initialised):
    from srfkit.detection.d2.engine import TRANSFER_REPORT
    from srfkit.train import load_detector, load_generator

    report = json.loads((initialised / TRANSFER_REPORT).read_text())
    assert report["init_from"] == str(extractor) and report["config_changes"] == {}
    assert report["upsampler"] > 0 and set(report["levels"]) == {"P2", "P3", "P4", "P5"}
    assert {"proposal_generator", "roi_heads"} <= set(report["not_copied"])
    assert "MODEL:\n" in (initialised / "config.yaml").read_text()
    assert "variant: paper" in (initialised / "config.yaml").read_text().replace("VARIANT", "variant")  # M's G variant

    final = torch.load(initialised / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    final = {k: torch.as_tensor(v) for k, v in final.items()}
    g = load_generator(extractor)
    g_params = dict(g.named_parameters())
    assert g_params and all(torch.equal(final[f"backbone.srf_module.{k}"], v) for k, v in g_params.items())
    # G's BatchNorm statistics move in every training forward, even at learning rate 0; they went on
    # counting from M's: 2 steps x 3 top-down steps (P5 -> P4 -> P3 -> P2), one call each
    counts = {k: v for k, v in g.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counts and all(v > 0 for v in counts.values())  # M's G had trained
    assert all(int(final[f"backbone.srf_module.{k}"]) == int(v) + 2 * 3 for k, v in counts.items())
    m = load_detector(extractor)
    m_params, m_state = dict(m.named_parameters()), m.state_dict()
    copied = {k: s for k, s in report["loaded_keys"].items() if s in m_params}
    assert len(copied) > 100  # the ResNet body, FPN convs and G
    for key, src_key in copied.items():
        assert torch.equal(final[key], m_state[src_key]), key
    assert all(not k.startswith("backbone.") for k in report["skipped_keys"])


def test_a_resumed_run_keeps_its_checkpoint_not_m(extractor, initialised):
    """On resume the checkpoint holds the (trained) weights: M is not loaded over them again."""
    from srfkit.detection.d2.engine import TRANSFER_REPORT, train_detector

    report = initialised / TRANSFER_REPORT
    first = report.read_text()
    report.unlink()
    try:
        train_detector(
            "mask_rcnn",
            "shapes",
            "quick",
            output_dir=initialised,
            init_from=extractor,
            resume=True,
            device="cpu",
            run_eval=False,
            opts=["SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", "0.0"],
        )
        assert not report.exists()
    finally:
        report.write_text(first)


def test_another_upsampler_takes_m_without_its_g(extractor, tmp_path):
    from srfkit.detection.d2.engine import TRANSFER_REPORT, train_detector
    from srfkit.train import load_detector

    out = tmp_path / "nearest"
    train_detector(
        "faster_rcnn",
        "shapes",
        "quick",
        output_dir=out,
        upsampler="nearest",
        init_from=extractor,
        device="cpu",
        run_eval=False,
        opts=["SOLVER.MAX_ITER", "1", "SOLVER.BASE_LR", "0.0"],
    )
    report = json.loads((out / TRANSFER_REPORT).read_text())
    assert report["upsampler"] == 0 and "'nearest'" in report["not_copied"]["upsampler"]
    assert report["body"] == 60 and set(report["levels"]) == {"P2", "P3", "P4", "P5"}
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    lateral = load_detector(extractor).backbone.fpn.inner_blocks[0][0].weight
    assert torch.equal(torch.as_tensor(final["backbone.fpn_lateral2.weight"]), lateral)


def test_init_from_and_a_second_g_are_refused(extractor, tmp_path):
    from srfkit.detection.d2.engine import train_detector

    with pytest.raises(ValueError, match="pass one of them"):
        train_detector(
            "mask_rcnn",
            "shapes",
            "quick",
            output_dir=tmp_path / "x",
            init_from=extractor,
            srf_weights=extractor,
            device="cpu",
        )
    assert not (tmp_path / "x").exists()


def test_a_paper_config_is_fitted_to_the_torchvision_backbone():
    """The paper YAML strides in the 1x1 conv and reads BGR (MSRA weights): init_from changes both, on record."""
    from srfkit.detection.d2.config import get_config
    from srfkit.detection.d2.engine import _fit_config_to_source

    cfg = get_config("mask_rcnn", "paper", device="cpu", num_classes=3)
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.INPUT.FORMAT == "BGR"
    init = {"num_blocks": None, "config_changes": {}}
    _fit_config_to_source(cfg, _source(), init)
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False and cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([123.675, 116.28, 103.53])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([58.395, 57.12, 57.375])
    assert init["config_changes"]["MODEL.RESNETS.STRIDE_IN_1X1"] == [True, False]
    assert init["config_changes"]["INPUT.FORMAT"] == ["BGR", "RGB"]


def test_cli_passes_init_from_and_leaves_the_g_to_m(monkeypatch, tmp_path, capsys):
    from srfkit.detection.d2 import cli, engine

    calls = []
    monkeypatch.setattr(engine, "train_detector", lambda *a, **kw: calls.append((a, kw)) or {})
    parser = cli.configure_parser(argparse.ArgumentParser())
    assert cli.run_from_args(parser.parse_args(["--init-from", "runs/m", "--out", str(tmp_path)])) == 0
    ((_, kwargs),) = calls
    assert kwargs["init_from"] == "runs/m"
    assert "upsampler" not in kwargs and "variant" not in kwargs  # M's G decides
    args = parser.parse_args(["--compare", "--srf-weights", "g", "--init-from", "runs/m"])
    assert cli.run_from_args(args) == 2 and "--init-from" in capsys.readouterr().err
