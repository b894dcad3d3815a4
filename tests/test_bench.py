"""The upsampler benchmark's entry point runs end to end on a tiny input."""

import json

import pytest

from srfkit.bench.upsamplers import main, step_sizes
from srfkit.models import upsampler_names


def test_step_sizes_of_a_512_image():
    assert step_sizes(512) == [(16, 32), (32, 64), (64, 128)]
    assert step_sizes(100) == [(4, 7), (7, 13), (13, 25)]  # ceil, as ResNet strides give


def test_benchmark_main_prints_a_row_per_upsampler(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    rows = main(
        ["--size", "64", "--repeats", "1", "--warmup", "0", "--channels", "8", "--no-progress", "--json", str(out_json)]
    )
    names = upsampler_names()  # includes the peers: the benchmark module imports them
    assert {"dysample", "dysample_dynamic", "carafe", "nearest", "srf"} <= set(names)
    table = capsys.readouterr().out
    table_rows = [line.split() for line in table.splitlines()]
    for name in names:
        assert [r for r in table_rows if r and r[0] == name and r[1] == "8"], f"no table row for {name}"
    assert [r["upsampler"] for r in rows] == names
    by_name = {r["upsampler"]: r for r in rows}
    assert by_name["nearest"]["ratio"] == 1.0 and by_name["nearest"]["params"] == 0
    assert by_name["dysample"]["params"] == 8 * 32 + 32
    assert all(r["latency_ms"] > 0 and len(r["runs_ms"]) == 1 for r in rows)
    stored = json.loads(out_json.read_text())
    assert stored["steps_px"] == [[2, 4], [4, 8], [8, 16]]
    assert len(stored["rows"]) == len(names)


def test_benchmark_rejects_unknown_names():
    with pytest.raises(SystemExit, match="unknown upsampler"):
        main(["--only", "nearest,lanczos", "--no-progress"])


def test_stage_benchmark_times_every_stage_on_a_coco_folder(capsys, tmp_path, clean_coco):
    """``srfkit.bench.stages`` on a COCO-2017-layout folder (as on a GPU box): a timed row per stage."""
    from srfkit.bench.stages import main as stages_main

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").symlink_to(clean_coco.images_dir)
    (root / "annotations" / "instances_train2017.json").write_text(clean_coco.ann_file.read_text())
    assert stages_main(["--profile", "quick", "--coco-root", str(root), "--steps", "2", "--device", "cpu"]) == 0
    rows = {r[0]: r[1:] for r in (line.split() for line in capsys.readouterr().out.splitlines()) if r}
    for kind in ("guide", "guide_srf", "srf_gan", "extractor", "target"):
        wall, cpu, peak, hours = rows[kind]
        assert float(wall) > 0 and float(cpu) > 0 and peak == "-" and float(hours) >= 0
    assert "campaign" not in rows  # no campaign total for a user's COCO folder


def test_schedule_hours_are_each_stages_iterations_at_the_measured_rate():
    from srfkit.bench.stages import schedule_hours
    from srfkit.profiles import PAPER

    per_step = {k: {"wall_s": 0.36, "cpu_s": 0.1} for k in ("guide", "srf_gan", "extractor", "target")}
    hours = schedule_hours(per_step, "paper")
    assert hours["guide"] == pytest.approx(PAPER.guide.iters * 0.36 / 3600)
    assert hours["srf_gan"] == pytest.approx(150_000 * 0.36 / 3600) == pytest.approx(15.0)
    assert hours["extractor"] == pytest.approx(270_000 * 0.36 / 3600)


def test_detector_benchmark_rows_carry_params_latency_and_the_papers_figures(tmp_path, monkeypatch, capsys):
    from srfkit.bench.detectors import main as detectors_main
    from srfkit.models import make_upsampler
    from srfkit.profiles import QUICK

    monkeypatch.setenv("SRFKIT_RESULTS_DIR", str(tmp_path))
    rows = detectors_main(["--profile", "quick", "--archs", "faster_rcnn", "--runs", "1", "--warmup", "0", "--write"])
    assert [(r["arch"], r["upsampler"]) for r in rows] == [("faster_rcnn", "nearest"), ("faster_rcnn", "srf")]
    nearest, srf = rows
    g = sum(p.numel() for p in make_upsampler("srf", QUICK.fpn_channels).parameters())
    assert nearest["added_params"] == 0 and srf["added_params"] == g  # one shared G is all SRF adds
    assert all(r["latency_ms"] > 0 for r in rows) and nearest["latency_ratio"] == 1.0
    assert (nearest["paper_params"], nearest["paper_time_ms"]) == ("41M", 64)  # Table 1, Faster R-CNN NN
    assert (srf["paper_params"], srf["paper_time_ms"]) == ("51M", 109)  # and with SRF (G)
    stored = json.loads((tmp_path / "quick" / "detector_cost.json").read_text())
    assert stored["rows"] == json.loads(json.dumps(rows)) and stored["provenance"]["device"]
    assert "faster_rcnn  srf" in capsys.readouterr().out
    from srfkit.bench.detectors import added

    assert added(rows, "backbone_ms") == {"faster_rcnn": srf["backbone_ms"] - nearest["backbone_ms"]}
    assert added(rows[:1]) == {} and added(rows, "params") == {"faster_rcnn": g}
