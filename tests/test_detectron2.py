"""detectron2 as the second engine: SRF-FPN backbone, checkpoints, training, COCOEvaluator, F for stage 1.

Tests that need detectron2 skip with a reason when it is not installed (``make d2`` installs it; CI does).
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

needs_d2 = pytest.mark.skipif(not detectron2_available(), reason="detectron2 is not installed (run `make d2`)")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------ without detectron2


def test_srfkit_imports_without_detectron2():
    code = (
        "import sys; sys.modules['detectron2'] = None\n"
        "import srfkit, srfkit.models, srfkit.detection, srfkit.train, srfkit.detection.d2.cli\n"
        "assert sys.modules['detectron2'] is None\n"
        "import argparse\n"
        "from srfkit.detection.d2.cli import configure_parser, run_from_args\n"
        "args = configure_parser(argparse.ArgumentParser()).parse_args(['--arch', 'cascade_rcnn'])\n"
        "raise SystemExit(run_from_args(args))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "make d2" in proc.stderr and "pip install" in proc.stderr
    assert "make d2" in INSTALL_HINT


# --------------------------------------------------------------------------------------- backbone


def _quick_cfg(arch: str = "mask_rcnn", **kwargs):
    from srfkit.detection.d2.config import get_config

    kwargs.setdefault("num_classes", 3)
    return get_config(arch, "quick", device="cpu", **kwargs)


@needs_d2
@pytest.mark.parametrize(
    "arch,ours,theirs",
    [
        ("mask_rcnn", "build_srf_resnet_fpn_backbone", "build_resnet_fpn_backbone"),
        ("retinanet", "build_srf_retinanet_resnet_fpn_backbone", "build_retinanet_resnet_fpn_backbone"),
    ],
)
def test_nearest_is_bit_identical_to_detectron2_fpn(arch, ours, theirs):
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY
    from detectron2.modeling.backbone import FPN

    from srfkit.detection.d2.backbone import SRFFPN

    cfg = _quick_cfg(arch, upsampler="nearest")
    shape = ShapeSpec(channels=3)
    torch.manual_seed(0)
    reference = BACKBONE_REGISTRY.get(theirs)(cfg, shape).eval()
    ours_fpn = BACKBONE_REGISTRY.get(ours)(cfg, shape).eval()
    assert type(reference) is FPN and isinstance(ours_fpn, SRFFPN)
    ours_fpn.load_state_dict(reference.state_dict(), strict=True)  # a detectron2 FPN state dict, unchanged
    assert set(ours_fpn.state_dict()) == set(reference.state_dict())
    for size in ((64, 64), (96, 160)):
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            a, b = reference(x), ours_fpn(x)
        assert list(a) == list(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k


@needs_d2
def test_registry_names_and_upsamplers():
    from detectron2.layers import ShapeSpec
    from detectron2.modeling import BACKBONE_REGISTRY

    from srfkit.detection.d2.backbone import BUILDERS

    for name in BUILDERS:
        assert name in BACKBONE_REGISTRY
    for up in ("bilinear", "bicubic", "srf", "srf_light", "dysample", "carafe"):
        cfg = _quick_cfg(upsampler=up, variant="paper")
        cfg.MODEL.SRF_FREEZE = up == "srf"
        fpn = BACKBONE_REGISTRY.get("build_resnet_fpn_sr_backbone")(cfg, ShapeSpec(channels=3)).train()
        out = fpn(torch.randn(1, 3, 64, 64))
        assert [tuple(v.shape[-2:]) for v in out.values()] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
        if up == "srf":  # MODEL.SRF_FREEZE: no gradient, eval mode kept under train()
            assert not any(p.requires_grad for p in fpn.srf_module.parameters())
            assert not fpn.srf_module.training


def authors_generator_keys(channels: int, blocks: int = 3, growth: int = 32) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' G (their generator_rdb.py, as recorded in the project's facts)."""
    c, g = channels, growth
    shapes = {"Generators.0.0.0.weight": (c, c, 3, 3), "Generators.0.0.0.bias": (c,)}
    for k in range(blocks):
        for i in range(4):
            shapes[f"Generators.0.1.RDBs.{k}.conv{i + 1}.0.weight"] = (g, c + i * g, 3, 3)
        shapes[f"Generators.0.1.RDBs.{k}.conv5.weight"] = (c, c + 4 * g, 3, 3)
    shapes |= {"Generators.0.2.0.weight": (c, c, 3, 3), "Generators.0.2.0.bias": (c,)}
    shapes |= {"Generators.0.3.0.weight": (c, c, 6, 6), "Generators.0.3.0.bias": (c,)}
    shapes |= {"Generators.0.4.0.weight": (c, c, 3, 3), "Generators.0.4.0.bias": (c,)}
    return shapes


def test_authors_generator_layout_is_7_8m_parameters():
    assert sum(torch.Size(s).numel() for s in authors_generator_keys(256).values()) == 7_834_624


@pytest.fixture(scope="module")
def authors_checkpoint():
    """A full Mask R-CNN state dict in the authors' layout (random G), and the model it came from."""
    from detectron2.modeling import build_model

    pytest.importorskip("srfkit.models", reason="srfkit.models").__dict__.get("load_authors_generator") or pytest.skip(
        "srfkit.models.load_authors_generator is not there yet"
    )
    cfg = _quick_cfg(upsampler="srf", variant="released")
    model = build_model(cfg)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.srf_module.")}
    gen = torch.Generator().manual_seed(1)
    for key, shape in authors_generator_keys(cfg.MODEL.FPN.OUT_CHANNELS).items():
        state["backbone.srf_module." + key] = 0.01 * torch.randn(shape, generator=gen)
    return cfg, state


@needs_d2
def test_authors_checkpoint_loads_strictly(authors_checkpoint, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from srfkit.detection.d2.backbone import load_authors_checkpoint

    cfg, state = authors_checkpoint
    model = build_model(cfg)
    load_authors_checkpoint(model, state, strict=True)
    ours = model.state_dict()
    g_keys = [k for k in state if k.startswith("backbone.srf_module.Generators.0.")]
    assert len(g_keys) == 3 * 5 + 8
    for k in g_keys:
        assert torch.equal(ours["backbone.srf_module.net." + k[len("backbone.srf_module.Generators.0.") :]], state[k])
    # strict: a missing G key raises
    broken = {k: v for k, v in state.items() if k != g_keys[-1]}
    with pytest.raises((RuntimeError, ValueError)):
        load_authors_checkpoint(build_model(cfg), broken, strict=True)
    # the same file as MODEL.SRF.WEIGHTS (a detectron2-style checkpoint with "model") loads G only
    path = tmp_path / "authors_final.pth"
    torch.save({"model": state, "iteration": 7}, path)
    cfg2 = cfg.clone()
    cfg2.MODEL.SRF.WEIGHTS = str(path)
    g_model = build_model(cfg2)
    assert torch.equal(g_model.backbone.srf_module.state_dict()["net.0.0.weight"], state[g_keys[0]])
    # and detectron2's own checkpointer reads it too (non-strict by design, but every key matches)
    fresh = build_model(cfg)
    incompatible = DetectionCheckpointer(fresh)._load_model({"model": dict(state), "matching_heuristics": False})
    assert not incompatible.missing_keys and not incompatible.unexpected_keys


@needs_d2
def test_srf_weights_from_a_srfkit_state_dict(tmp_path):
    from detectron2.modeling import build_model

    from srfkit.models import make_upsampler

    g = make_upsampler("srf", 32, variant="light")
    torch.save(g.state_dict(), tmp_path / "g.pt")
    cfg = _quick_cfg(upsampler="srf", variant="light", srf_weights=tmp_path / "g.pt")
    loaded = build_model(cfg).backbone.srf_module.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in g.state_dict().items())


# ---------------------------------------------------------------------------- training and eval


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Quick-size Mask R-CNN and Cascade Mask R-CNN with SRF-FPN (released G), trained and evaluated."""
    if not detectron2_available():
        pytest.skip("detectron2 is not installed (run `make d2`)")
    from srfkit.detection.d2.engine import train_detector

    root = tmp_path_factory.mktemp("d2")
    out = {}
    for arch in ("mask_rcnn", "cascade_mask_rcnn"):
        # score threshold 0: a few-step model still predicts something, so both evaluators see detections
        metrics = train_detector(
            arch,
            "shapes",
            "quick",
            output_dir=root / arch,
            upsampler="srf",
            variant="released",
            device="cpu",
            opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "SOLVER.MAX_ITER", "3"],
        )
        out[arch] = (root / arch, metrics)
    return out


@needs_d2
@pytest.mark.parametrize("arch", ["mask_rcnn", "cascade_mask_rcnn"])
def test_quick_detectors_train_and_evaluate(trained, arch):
    out_dir, metrics = trained[arch]
    assert set(metrics) == {"bbox", "segm"}
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert (out_dir / "model_final.pth").is_file()
    record = json.loads((out_dir / "srfkit_result.json").read_text())
    assert record["iters"] == 3
    lines = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in line for line in lines)


@needs_d2
@pytest.mark.parametrize("task", ["bbox", "segm"])
def test_coco_evaluator_equals_srfkit(trained, task):
    from detectron2.data import MetadataCatalog

    from srfkit.detection.d2.data import dataset_name
    from srfkit.eval.coco_eval import summarize

    out_dir, metrics = trained["mask_rcnn"]
    results = json.loads((out_dir / "inference" / "coco_instances_results.json").read_text())
    assert results, "the model predicted nothing"
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(MetadataCatalog.get(dataset_name("shapes", "quick", "val")).json_file)
    ours = summarize(gt, results, task, sorted(gt.getImgIds()))
    for name, value in ours.items():
        assert value == pytest.approx(metrics[task][name], abs=1e-6, nan_ok=True), name


# ------------------------------------------------------------------------------ F for stage 1


@needs_d2
def test_feature_extractor_from_config_and_checkpoint(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from srfkit.detection.d2.features import build_feature_extractor

    cfg = _quick_cfg(upsampler="nearest")
    model = build_model(cfg).eval()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("guide")
    (tmp_path / "guide.yaml").write_text(cfg.dump())
    f = build_feature_extractor(tmp_path / "guide.yaml", tmp_path / "guide.pth")
    assert not any(p.requires_grad for p in f.parameters())
    images = torch.rand(2, 3, 64, 96)
    feats = f(images)
    assert list(feats) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape) for v in feats.values()] == [
        (2, 32, 16, 24),
        (2, 32, 8, 12),
        (2, 32, 4, 6),
        (2, 32, 2, 3),
        (2, 32, 1, 2),
    ]
    with torch.no_grad():
        x = (images * 255 - model.pixel_mean.view(1, 3, 1, 1)) / model.pixel_std.view(1, 3, 1, 1)
        ref = model.backbone(x)
    assert torch.equal(ref["p2"], feats["0"]) and torch.equal(ref["p6"], feats["pool"])
    odd = f(torch.rand(1, 3, 50, 70))  # not a multiple of 32: padded, then cropped back
    assert tuple(odd["0"].shape[-2:]) == (13, 18) and tuple(odd["3"].shape[-2:]) == (2, 3)


@needs_d2
def test_compare_nearest_srf_reuses_g(tmp_path):
    from srfkit.detection.d2.engine import compare_nearest_srf
    from srfkit.models import make_upsampler

    g = make_upsampler("srf", 32, variant="released")
    torch.save(g.state_dict(), tmp_path / "g.pt")
    result = compare_nearest_srf(
        tmp_path / "g.pt",
        "shapes",
        "quick",
        seed=0,
        out_dir=tmp_path / "cmp",
        arch="cascade_rcnn",
        variant="released",
        device="cpu",
        opts=["SOLVER.MAX_ITER", "2"],
    )
    assert set(result["nearest"]) == {"bbox"} and set(result["srf"]) == {"bbox"}
    assert set(result["gain"]["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert (tmp_path / "cmp" / "nearest-seed0" / "model_final.pth").is_file()
    srf_state = torch.load(tmp_path / "cmp" / "srf-seed0" / "model_final.pth", weights_only=False)["model"]
    assert any(k.startswith("backbone.srf_module.") for k in srf_state)


# ------------------------------------------------------------------------------ a campaign table


@needs_d2
def test_d2_cascade_cells_train_evaluate_and_cache(tmp_path):
    from srfkit.experiments import run_experiment
    from srfkit.results import load_result
    from srfkit.train.evaluate import EVAL_CACHE, evaluate_stage

    runs, results = tmp_path / "runs", tmp_path / "results"
    run_experiment("d2_cascade", "quick", "shapes", runs_root=runs, seeds=(0,), results_root=results, iters=2)
    entry = load_result("quick", "d2_cascade", results)["datasets"]["shapes"]
    assert set(entry["rows"]) == {"nearest", "srf_G"}
    assert entry["comparisons"]["srf_G - nearest"]["bbox"]["n"] == 1
    seed = runs / "quick" / "shapes" / "seed0"
    srf = seed / "d2_cascade_rcnn_srf"
    logged = (srf / "metrics.json").read_text()
    assert "total_loss" in logged and "bbox/AP" not in logged  # training itself evaluated nothing
    assert (srf / "model_final.pth").is_file() and (seed / "srf_gan_paper" / "final.pt").is_file()
    state = torch.load(srf / "model_final.pth", weights_only=False)["model"]
    assert any(k.startswith("backbone.srf_module.") for k in state)  # G is inside detectron2's FPN
    # evaluate_stage reads a detectron2 run folder: cached under the checkpoint's hash, refused elsewhere
    cached = json.loads((srf / EVAL_CACHE).read_text())["entries"]
    assert [e["key"]["engine"] for e in cached] == ["detectron2"]
    assert evaluate_stage(srf) == entry["rows"]["srf_G"]["per_seed"]["0"]
    with pytest.raises(ValueError, match="its own val split"):
        evaluate_stage(srf, dataset="trees")
    (srf / "model_final.pth").rename(srf / "moved.pth")
    with pytest.raises(FileNotFoundError, match="has not finished"):
        evaluate_stage(srf)
