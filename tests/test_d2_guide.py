"""Stage 1 (SRF-GAN) with a detectron2 F: a detectron2 output folder, or a config + checkpoint, as the guide.

A quick-size detectron2 Mask R-CNN trained 2 steps on shapes is F. Tests that need detectron2 skip with a
reason when it is not installed (``make d2`` installs it; CI does); the install-hint test runs without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from srfkit.detection.d2 import INSTALL_HINT, detectron2_available
from srfkit.profiles import get_profile

needs_d2 = pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed (run `make d2`)")
REPO = Path(__file__).resolve().parents[1]
QUICK = get_profile("quick")
FAST = dict(progress=False)
CLI = ["--profile", "quick", "--dataset", "shapes", "--no-progress"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def d2_run(tmp_path_factory):
    """A detectron2 output folder (config.yaml + model_final.pth): quick Mask R-CNN, nearest FPN, 2 steps."""
    if not detectron2_available():
        pytest.skip("detectron2 is not installed (run `make d2`)")
    from srfkit.detection.d2.engine import train_detector

    out = tmp_path_factory.mktemp("d2guide") / "mask_rcnn"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train_detector(
            "mask_rcnn",
            "shapes",
            "quick",
            output_dir=out,
            upsampler="nearest",
            device="cpu",
            run_eval=False,
            opts=["SOLVER.MAX_ITER", "2"],
        )
    assert (out / "config.yaml").is_file() and (out / "model_final.pth").is_file()
    return out


@pytest.fixture(scope="module")
def d2_stage(d2_run, tmp_path_factory):
    """``train_srf_gan(..., guide_dir=<detectron2 folder>, iters=2)``, run once."""
    from srfkit.train import train_srf_gan

    out = tmp_path_factory.mktemp("srf") / "srf-gan"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_srf_gan(QUICK, "shapes", out, guide_dir=d2_run, iters=2, **FAST)
    return result


def _d2_model(folder: Path):
    """The detectron2 model of a folder, rebuilt with detectron2's own calls (not srfkit's F)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from srfkit.detection.d2.backbone import add_srf_config

    cfg = add_srf_config(get_cfg())
    cfg.merge_from_file(str(folder / "config.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(folder / "model_final.pth"))
    return model


def _shapes():
    import srfkit.data

    return srfkit.data.load("shapes", "train", "quick")


# ------------------------------------------------------------------------------ without detectron2


def test_a_detectron2_guide_without_detectron2_says_how_to_install(tmp_path):
    folder = tmp_path / "d2"
    folder.mkdir()
    (folder / "config.yaml").write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n")
    (folder / "model_final.pth").write_bytes(b"not read")
    code = (
        "import sys; sys.modules['detectron2'] = None\n"
        "from srfkit import cli\n"
        "from srfkit.train import train_srf_gan\n"
        "from srfkit.detection.d2 import INSTALL_HINT\n"
        f"folder = {str(folder)!r}\n"
        "try:\n"
        "    train_srf_gan('quick', 'shapes', folder + '-out', guide_dir=folder, iters=1, progress=False)\n"
        "except ImportError as err:\n"
        "    assert str(err) == INSTALL_HINT, err\n"
        "else:\n"
        "    raise AssertionError('no ImportError')\n"
        "assert sys.modules['detectron2'] is None\n"
        "raise SystemExit(cli.main(['srf-gan', '--profile', 'quick', '--dataset', 'shapes', '--out', "
        "folder + '-cli', '--guide', folder]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "make d2" in proc.stderr and "make d2" in INSTALL_HINT
    assert not (tmp_path / "d2-out").exists() and not (tmp_path / "d2-cli").exists()


# ------------------------------------------------------------------------------- the contract of F


@needs_d2
def test_normalize_is_detectron2s_preprocessing_bgr_included():
    """``normalize`` equals detectron2's own ``preprocess_image`` (BGR order, mean/std, default divisor)."""
    from detectron2.modeling import build_model

    from srfkit.detection.d2.config import get_config
    from srfkit.detection.d2.features import D2FeatureExtractor

    cfg = get_config("mask_rcnn", "quick", upsampler="nearest", num_classes=3, device="cpu")
    cfg.INPUT.FORMAT = "BGR"
    cfg.MODEL.PIXEL_MEAN = [103.5, 116.3, 123.7]  # distinct per channel, so a wrong order shows
    cfg.MODEL.PIXEL_STD = [57.4, 57.1, 58.4]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    f = D2FeatureExtractor(model).eval()
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 40)]
    batch = f.normalize(images)
    ref = model.preprocess_image([{"image": img.flip(0) * 255} for img in images]).tensor  # detectron2 reads BGR
    assert f.size_divisible == model.backbone.size_divisibility == 32
    assert batch.shape == ref.shape == (2, 3, 64, 96)
    torch.testing.assert_close(batch, ref, rtol=0, atol=1e-5)
    assert tuple(f.normalize(images, size=(64, 128)).shape[-2:]) == (64, 128)
    assert tuple(f.normalize(images, size_divisible=64).shape[-2:]) == (64, 128)
    # a list goes normalise, pad, backbone: srfkit's contract (padded levels, srfkit's keys)
    with torch.no_grad():
        feats, ref_feats = f(images), model.backbone(ref)
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    for key, name in zip(feats, ("p2", "p3", "p4", "p5", "p6")):
        torch.testing.assert_close(feats[key], ref_feats[name], rtol=0, atol=1e-5)


@needs_d2
def test_stage_features_are_the_detectron2_models_own(d2_run):
    """What SRFGANStage trains on (F(I_lr), F(I) per level) equals the detectron2 model's backbone output
    on detectron2's own normalised batch (the folder's checkpoint, rebuilt with detectron2's calls)."""
    from detectron2.structures import ImageList

    from srfkit.train.inputs import PAD_DIVISOR, degrade, resize_to_profile
    from srfkit.train.loaders import load_guide_features
    from srfkit.train.specs import build_discriminator, build_upsampler, discriminator_spec, generator_spec
    from srfkit.train.srf_gan import SRFGANStage

    guide = load_guide_features(d2_run, channels=QUICK.fpn_channels)
    data = _shapes()
    spec = generator_spec(QUICK.fpn_channels, "paper", None)
    stage = SRFGANStage(
        build_upsampler(spec),
        spec,
        build_discriminator(discriminator_spec(QUICK)),
        guide.extractor,
        QUICK,
        data,
        guide_config=guide.config,
        sources=guide.sources,
    )
    assert stage.keys == ["0", "1", "2", "3"]
    images = [data.load_image(i) for i in range(2)]
    lr_feats, hr_feats = stage.features(images)

    model = _d2_model(d2_run)
    mean, std = model.pixel_mean, model.pixel_std
    hr = [resize_to_profile(img, None, QUICK)[0] for img in images]
    lr = [degrade(img, None, 0.5, stage.degrade_mode)[0] for img in hr]
    assert model.input_format == "RGB"
    hr_batch = ImageList.from_tensors([(img * 255 - mean) / std for img in hr], PAD_DIVISOR).tensor
    h, w = hr_batch.shape[-2] // 2, hr_batch.shape[-1] // 2
    lr_norm = [(img * 255 - mean) / std for img in lr]
    lr_batch = torch.stack([torch.nn.functional.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2])) for x in lr_norm])
    with torch.no_grad():
        ref_hr, ref_lr = model.backbone(hr_batch), model.backbone(lr_batch)
    for i, name in enumerate(("p2", "p3", "p4", "p5")):
        assert hr_feats[i].shape == ref_hr[name].shape and lr_feats[i].shape == ref_lr[name].shape
        assert lr_feats[i].shape[-1] * 2 == hr_feats[i].shape[-1]
        torch.testing.assert_close(hr_feats[i], ref_hr[name], rtol=0, atol=1e-5)
        torch.testing.assert_close(lr_feats[i], ref_lr[name], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ the stage


@needs_d2
def test_srf_gan_trains_on_a_detectron2_folder_and_records_it(d2_run, d2_stage):
    from srfkit.train import load_generator, read_stage
    from srfkit.train.evaluate import file_sha1

    assert d2_stage.steps == 2 and not d2_stage.skipped
    payload = read_stage(d2_stage.out_dir)
    sha1 = file_sha1(d2_run / "model_final.pth")
    guide = payload["config"]["guide"]
    assert guide["engine"] == "detectron2" and guide["weights_sha1"] == sha1
    assert guide["meta_architecture"] == "GeneralizedRCNN" and guide["fpn_channels"] == QUICK.fpn_channels
    assert payload["config"]["levels"] == [2, 3, 4, 5]
    sources = json.loads((d2_stage.out_dir / "config.json").read_text())["sources"]
    assert sources["guide_engine"] == "detectron2" and sources["guide"] == str(d2_run)
    assert sources["guide_config"] == str(d2_run / "config.yaml")
    assert sources["guide_weights"] == str(d2_run / "model_final.pth") and sources["guide_weights_sha1"] == sha1
    rows = [json.loads(r) for r in (d2_stage.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor([r["g_l1"], r["g_adv"]])).all() for r in rows)
    assert rows[0]["g_l1"] > 0
    g = load_generator(d2_stage.out_dir)  # stage 1's G loads as any srfkit G
    assert sum(p.numel() for p in g.parameters()) > 0


@needs_d2
def test_stage_2_takes_the_same_detectron2_f(d2_run, d2_stage, tmp_path):
    from srfkit.train import read_stage, train_extractor
    from srfkit.train.evaluate import file_sha1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_extractor(
            QUICK, "shapes", tmp_path / "m", guide_dir=d2_run, srf_gan_dir=d2_stage.out_dir, iters=2, **FAST
        )
    assert result.steps == 2
    payload = read_stage(result.out_dir)
    guide = payload["config"]["guide"]
    assert guide["engine"] == "detectron2" and guide["weights_sha1"] == file_sha1(d2_run / "model_final.pth")
    rows = [json.loads(r) for r in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([r["srf_l1"], r["srf_adv"]])).all() and r["srf_l1"] > 0 for r in rows)
    with pytest.raises(ValueError, match="init_from_guide"):  # a detectron2 F has no srfkit backbone to copy
        train_extractor(QUICK, "shapes", tmp_path / "m2", guide_dir=d2_run, srf_gan_dir=d2_stage.out_dir,
                        init_from_guide=True, iters=2, **FAST)  # fmt: skip
    assert not (tmp_path / "m2").exists()


@needs_d2
def test_explicit_config_and_weights_give_the_same_run(d2_run, d2_stage, tmp_path):
    from srfkit.train import read_stage, train_srf_gan

    result = train_srf_gan(
        QUICK,
        "shapes",
        tmp_path / "s",
        guide_config=d2_run / "config.yaml",
        guide_weights=d2_run / "model_final.pth",
        iters=2,
        **FAST,
    )
    ours, folder_run = read_stage(result.out_dir), read_stage(d2_stage.out_dir)
    assert ours["config"] == folder_run["config"]  # the same F recorded the same way (paths are sources)
    sources = json.loads((result.out_dir / "config.json").read_text())["sources"]
    assert sources["guide"] == str(d2_run / "model_final.pth")
    # same seed, same F: the same G and D, bit for bit
    for name in ("G", "D"):
        a, b = ours["models"][name], folder_run["models"][name]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@needs_d2
def test_guide_arguments_are_exclusive_and_complete(d2_run, tmp_path):
    from srfkit.train import train_srf_gan

    weights = d2_run / "model_final.pth"
    with pytest.raises(ValueError, match="not both"):
        train_srf_gan(QUICK, "shapes", tmp_path / "a", guide_dir=d2_run, guide_weights=weights, iters=1, **FAST)
    with pytest.raises(ValueError, match="needs both guide_config"):
        train_srf_gan(QUICK, "shapes", tmp_path / "b", guide_config=d2_run / "config.yaml", iters=1, **FAST)
    with pytest.raises(ValueError, match="needs both guide_config"):
        train_srf_gan(QUICK, "shapes", tmp_path / "c", iters=1, **FAST)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((d2_run / "config.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="model_final.pth"):
        train_srf_gan(QUICK, "shapes", tmp_path / "d", guide_dir=unfinished, iters=1, **FAST)
    assert not any((tmp_path / n).exists() for n in "abcd")


def _save_random_detector(cfg, folder: Path) -> tuple[Path, Path]:
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("model")
    (folder / "model.yaml").write_text(cfg.dump())
    return folder / "model.yaml", folder / "model.pth"


@needs_d2
def test_a_detectron2_f_of_another_width_or_without_p2_is_refused(tmp_path):
    from srfkit.detection.d2.config import get_config
    from srfkit.train import train_srf_gan

    wide = get_config("mask_rcnn", "quick", upsampler="nearest", num_classes=3, device="cpu")
    wide.MODEL.FPN.OUT_CHANNELS = 2 * QUICK.fpn_channels
    wide.MODEL.ROI_MASK_HEAD.CONV_DIM = 2 * QUICK.fpn_channels
    config, weights = _save_random_detector(wide, tmp_path / "wide")
    with pytest.raises(ValueError) as err:
        train_srf_gan(QUICK, "shapes", tmp_path / "a", guide_config=config, guide_weights=weights, **FAST)
    message = str(err.value)
    assert str(config) in message and f"{2 * QUICK.fpn_channels} channels" in message
    assert f"are {QUICK.fpn_channels} (fpn_channels)" in message

    # RetinaNet's FPN is P3-P7: no P2 for Eq. (2)
    retina = get_config("retinanet", "quick", upsampler="nearest", num_classes=3, device="cpu")
    config, weights = _save_random_detector(retina, tmp_path / "retina")
    with pytest.raises(ValueError, match="no P2") as err:
        train_srf_gan(QUICK, "shapes", tmp_path / "b", guide_config=config, guide_weights=weights, **FAST)
    assert str(config) in str(err.value)

    # a checkpoint that is not this config's model (its backbone missing) is refused, not silently random
    torch.save({"model": {"roi_heads.x": torch.zeros(1)}}, tmp_path / "other.pth")
    ours = get_config("mask_rcnn", "quick", upsampler="nearest", num_classes=3, device="cpu")
    config, _ = _save_random_detector(ours, tmp_path / "ours")
    with pytest.raises(ValueError, match="lacks .* backbone tensors"):
        train_srf_gan(QUICK, "shapes", tmp_path / "c", guide_config=config, guide_weights=tmp_path / "other.pth")
    assert not any((tmp_path / n).exists() for n in "abc")


@needs_d2
def test_a_model_zoo_config_name_is_checked_before_any_weights_are_read(tmp_path):
    """The paper's F: a model-zoo R-50 FPN (256 wide) against the quick profile (32): refused by name."""
    from srfkit.train.loaders import load_guide_features

    (tmp_path / "model_final.pkl").write_bytes(b"never read")
    name = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    with pytest.raises(ValueError, match=r"mask_rcnn_R_50_FPN_1x.yaml: F is 256 channels wide .* are 32"):
        load_guide_features(guide_config=name, guide_weights=tmp_path / "model_final.pkl", channels=32)


# ---------------------------------------------------------------------------------------- the CLI


@needs_d2
def test_cli_takes_a_detectron2_folder_or_config_and_weights(d2_run, tmp_path, capsys):
    from srfkit import cli
    from srfkit.train import read_stage

    assert cli.main(["srf-gan", *CLI, "--out", str(tmp_path / "a"), "--guide", str(d2_run), "--iters", "1"]) == 0
    assert "srf-gan: 1 steps" in capsys.readouterr().out
    assert read_stage(tmp_path / "a")["config"]["guide"]["engine"] == "detectron2"
    explicit = ["--guide-config", str(d2_run / "config.yaml"), "--guide-weights", str(d2_run / "model_final.pth")]
    assert cli.main(["srf-gan", *CLI, "--out", str(tmp_path / "b"), *explicit, "--iters", "1"]) == 0
    sources = json.loads((tmp_path / "b" / "config.json").read_text())["sources"]
    assert sources["guide_weights"] == str(d2_run / "model_final.pth")
    capsys.readouterr()
    both = ["--guide", str(d2_run), "--guide-weights", str(d2_run / "model_final.pth")]
    assert cli.main(["srf-gan", *CLI, "--out", str(tmp_path / "c"), *both]) == 1
    assert "not both" in capsys.readouterr().err
    assert cli.main(["srf-gan", *CLI, "--out", str(tmp_path / "d")]) == 2
    assert "--guide-config" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()
    # stage 2 from the command line takes the same F
    stage2 = ["extractor", *CLI, "--out", str(tmp_path / "m"), *explicit, "--srf-gan", str(tmp_path / "a")]
    assert cli.main([*stage2, "--iters", "1"]) == 0
    assert read_stage(tmp_path / "m")["config"]["guide"]["engine"] == "detectron2"
    assert cli.main(["extractor", *CLI, "--out", str(tmp_path / "m2"), "--srf-gan", str(tmp_path / "a")]) == 2
