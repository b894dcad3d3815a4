"""srfkit.viz.upsampler_costs: what the 'Beyond the paper' chapter computes, on tiny widths and synthetic
benchmark rows and result documents."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from srfkit.reference import PEER_RESULTS, paper_headline
from srfkit.viz import upsampler_costs as uc

# --------------------------------------------------------------------------- synthetic inputs


def bench_row(name: str, channels: int, ms: float, params: int = 0) -> dict:
    return {"upsampler": name, "channels": channels, "params": params, "latency_ms": ms, "ratio": math.nan}


def det_rows(per_seed_ap: dict[str, list[float]]) -> dict:
    """``interpolation``-style rows from box AP per seed: per_seed and a summary (mean, std, n)."""
    from srfkit.results import mean_std

    return {
        name: {"per_seed": {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)},
               "summary": {"bbox": {"AP": mean_std(aps)}}}
        for name, aps in per_seed_ap.items()
    }  # fmt: skip


def interpolation_doc(per_seed_ap: dict[str, list[float]], profile: str = "cpu", dataset: str = "shapes") -> dict:
    seeds = list(range(len(next(iter(per_seed_ap.values())))))
    return {"profile": profile, "datasets": {dataset: {"seeds": seeds, "rows": det_rows(per_seed_ap)}}}


def fidelity_doc(psnr: dict[str, dict[str, list[list[float]]]]) -> dict:
    """``{name: {image_set: [[psnr per level] per seed]}}`` as a one-dataset ``fidelity`` document."""
    table = {
        name: {image_set: {str(s): {str(lv): {"psnr": v} for lv, v in enumerate(levels)}
                           for s, levels in enumerate(per_seed)} for image_set, per_seed in sets.items()}
        for name, sets in psnr.items()
    }  # fmt: skip
    n_seeds = len(next(iter(next(iter(psnr.values())).values())))
    return {"profile": "cpu", "datasets": {"shapes": {"seeds": list(range(n_seeds)), "fidelity": table}}}


# --------------------------------------------------------------------------- literature


def test_human():
    assert [uc.human(8.2e6), uc.human(32.7e3), uc.human(220e3), uc.human(0), uc.human(999)] == [
        "8.20M", "32.7K", "220.0K", "0", "999"
    ]  # fmt: skip


def test_literature_rows_and_claims():
    h = paper_headline()
    rows = uc.literature_rows(PEER_RESULTS, h)
    assert len(rows) == len(PEER_RESULTS) + 1
    by_name = {r[0]: r for r in rows}
    assert (
        by_name["nearest"][2] == "+0.0"
        and by_name["dysample"][2] == "+1.1"
        and by_name["dysample_dynamic"][4] == "+1.3"
    )
    assert by_name["dysample"][5] == "32.7K" and by_name["carafe"][5] == "220.0K"
    assert rows[-1][0] == "srf (paper, M reused)" and rows[-1][4] == f"{h['box_gain']:+.1f}"
    claims = uc.literature_claims(PEER_RESULTS, h)
    assert claims["peer_gain"] == pytest.approx(1.1)
    assert claims["gain_ratio"] == pytest.approx(h["box_gain"] / 1.1)
    assert claims["orders"] == pytest.approx(math.log10(h["added_params_m"] * 1e6 / 32.7e3))
    assert uc.literature_gains(PEER_RESULTS) == pytest.approx([1.1, 1.1, 1.2])


# --------------------------------------------------------------------------- parameters


def test_size_checks_honour_odd_sizes():
    checks = uc.size_checks(["nearest", "bicubic", "dysample", "carafe", "srf_light"], 8)
    assert set(checks) == {"nearest", "bicubic", "dysample", "carafe", "srf_light"}
    for name, c in checks.items():
        assert c == {"default": (2, 8, 18, 14), "sized": (2, 8, 17, 13), "finite": True}, name


def test_param_counts_exact():
    params = uc.param_counts(["nearest", "bilinear", "dysample", "dysample_dynamic", "carafe", "srf"], [4, 8, 16])
    assert len(params) == 18
    for c in (4, 8, 16):
        assert params[("nearest", c)] == params[("bilinear", c)] == 0
        assert params[("dysample", c)] == 32 * c + 32  # 1x1 conv C -> 2 x 4 groups x 2^2 sub-pixels, with bias
        assert params[("dysample_dynamic", c)] == 2 * (32 * c + 32)  # plus the scope conv of the same shape
        assert params[("carafe", c)] == (64 * c + 64) + (9 * 64 * 100 + 100)  # compressor + 3x3 encoder to 5^2 x 2^2
        assert params[("srf", c)] == 125 * c * c + 34 * c  # C x C convolutions: quadratic in C
    assert params[("srf", 8)] == 8272


def test_param_rows_and_growth():
    params = {("nearest", 8): 0, ("srf", 8): 8272, ("dysample", 8): 288,
              ("nearest", 16): 0, ("srf", 16): 32544, ("dysample", 16): 544}  # fmt: skip
    rows = uc.param_rows(params, ["nearest", "dysample", "srf"], [8, 16], reference=16)
    assert rows == [["nearest", "0", "0", "0.00%"], ["dysample", "288", "544", "1.67%"],
                    ["srf", "8,272", "32,544", "100.00%"]]  # fmt: skip
    assert uc.growth("dysample", 8, 16) == pytest.approx(544 / 288)
    assert uc.growth("srf", 8, 16) == pytest.approx(32544 / 8272)


def test_published_counts_synthetic_and_real():
    params = {("carafe", 256): 100, ("dysample", 256): 50}
    peers = {"carafe": {"added_params": 310.0}, "dysample": {"added_params": 200.0}}
    counts = uc.published_counts(params, peers, modules={"carafe": 3, "dysample": 4})
    assert counts["carafe"] == {"one": 100, "modules": 3, "ours": 300, "quoted": 310.0,
                                "rel_error": pytest.approx(10 / 310)}  # fmt: skip
    assert counts["dysample"]["ours"] == 200 and counts["dysample"]["rel_error"] == 0
    assert uc.published_rows(counts) == [["carafe", "100", 3, "300", "310"], ["dysample", "50", 4, "200", "200"]]
    # the real check the chapter makes: our per-module counts x modules against the quoted per-detector counts
    real = uc.published_counts(uc.param_counts(["carafe", "dysample", "dysample_dynamic"], [256]), PEER_RESULTS)
    assert real["carafe"]["ours"] == 3 * 74148 and real["dysample"]["ours"] == 4 * 8224
    assert all(c["rel_error"] < 0.05 for c in real.values()), real


def test_start_checks():
    checks = uc.start_checks(8)
    assert list(checks) == list(uc.START_CHECKS)
    assert checks["dysample_init"] > 1e-4  # random initial offsets move it off bilinear
    assert checks["dysample_zero_offsets"] < 1e-5 and checks["carafe_uniform"] < 1e-5


def test_fpn_param_counts_per_step_and_shared():
    counts = uc.fpn_param_counts(["nearest", "dysample", "carafe", "srf"], 8)
    assert counts == {"nearest": 0, "dysample": 3 * 288, "carafe": 3 * (64 * 8 + 64 + 57700), "srf": 8272}


# --------------------------------------------------------------------------- time


def synthetic_timing() -> tuple[dict, dict]:
    bench = [bench_row("nearest", 8, 1.0), bench_row("srf", 8, 3.0, 8272), bench_row("srf_depthwise", 8, 6.0, 2344),
             bench_row("dysample", 8, 1.5, 288), bench_row("nearest", 16, 2.0), bench_row("srf", 16, 12.0, 32544),
             bench_row("srf_depthwise", 16, 4.0, 6864), bench_row("dysample", 16, 2.5, 544)]  # fmt: skip
    params = {(r["upsampler"], r["channels"]): r["params"] for r in bench}
    return uc.index_timing(bench), params


def test_index_timing_and_added_ms():
    timing, _ = synthetic_timing()
    assert len(timing) == 8 and timing[("srf", 16)]["latency_ms"] == 12.0
    assert uc.added_ms(timing, 8) == {"nearest": 0.0, "srf": 2.0, "srf_depthwise": 5.0, "dysample": 0.5}
    assert uc.added_ms(timing, 16, ["srf"]) == {"srf": 10.0}
    with pytest.raises(ValueError, match="not finite"):
        uc.index_timing([bench_row("nearest", 8, math.nan)])
    with pytest.raises(ValueError, match="twice"):
        uc.index_timing([bench_row("nearest", 8, 1.0), bench_row("nearest", 8, 2.0)])


def test_depthwise_rows():
    timing, params = synthetic_timing()
    assert uc.depthwise_rows(params, timing, [8, 16]) == [
        [8, "3.5x fewer", "0.50x (slower!)"],
        [16, "4.7x fewer", "3.00x faster"],
    ]


def test_params_time_figure():
    timing, params = synthetic_timing()
    bench = [bench_row("bilinear", 8, 1.1), bench_row("bilinear", 16, 2.1)]
    timing.update(uc.index_timing(bench))
    params.update({("bilinear", 8): 0, ("bilinear", 16): 0})
    names = ["nearest", "bilinear", "dysample", "srf", "srf_depthwise"]
    fig = uc.params_time_figure(params, timing, names, [8, 16], image_size=64)
    axes = fig.axes
    assert len(axes) == 2
    for ax, c in zip(axes, (8, 16)):
        assert len(ax.collections) == len(names)  # one scatter point per upsampler
        assert [t.get_text() for t in ax.texts] == ["interpolations", "dysample", "srf", "srf_depthwise"]
        assert ax.get_xscale() == "log" and ax.get_title() == f"C = {c}, 64x64 image"
        assert ax.get_ylabel() == "added ms, 3 steps (CPU, 1 thread)"
    offsets = axes[1].collections[3].get_offsets()  # srf at C = 16: (params, added ms)
    assert tuple(offsets[0]) == (32544, 10.0)


def test_detector_cost():
    entry = {"rows": {"nearest": {"added_params": 0, "latency_ms": 100.0},
                      "bilinear": {"added_params": 0, "latency_ms": 104.0},
                      "bicubic": {"added_params": 0, "latency_ms": 99.0},
                      "srf": {"added_params": 8272, "latency_ms": 103.0},
                      "dysample": {"added_params": 999, "latency_ms": 101.0}}}  # fmt: skip
    ms = {"nearest": 0.0, "bilinear": 0.1, "bicubic": 0.2, "srf": 2.0, "dysample": 0.3, "carafe": 1.0}
    out = uc.detector_cost(entry, ms, {"srf": 8272, "dysample": 864})
    assert out["floor"] == 5.0 and out["nearest_ms"] == 100.0
    assert out["stale"] == ["dysample"]  # recorded 999, the FPN has 864
    assert out["rows"][3] == ["srf", "8,272", 3.0, 2.0] and [r[0] for r in out["rows"]] == [
        "nearest", "bilinear", "bicubic", "srf", "dysample"
    ]  # fmt: skip


def test_cost_points():
    timing, _ = synthetic_timing()
    ms, n_par, source = uc.cost_points(timing, ["nearest", "dysample", "srf"], 8, image_size=64)
    assert ms == {"nearest": 0.0, "dysample": 0.5, "srf": 2.0}
    assert n_par == {"nearest": 0, "dysample": 3 * 288, "srf": 8272}
    assert source == "ms: upsamplers alone, C = 8, 64 px; params: the FPN's upsampler modules"
    with pytest.raises(ValueError, match="C = 32"):
        uc.cost_points(timing, ["nearest"], 32, image_size=64)


def test_run_benchmark_tiny(capsys):
    rows, seconds = uc.run_benchmark(["bilinear"], [4], image_size=32, repeats=1, warmup=0)
    assert {(r["upsampler"], r["channels"]) for r in rows} == {("nearest", 4), ("bilinear", 4)}
    assert seconds > 0 and all(r["params"] == 0 for r in rows)
    assert "FPN upsamplers" in capsys.readouterr().out  # the bench prints its table


# --------------------------------------------------------------------------- accuracy


PAIRED = {
    "nearest": [10.0, 11.0, 12.0],
    "bilinear": [10.1, 10.9, 12.0],  # -> diffs +0.1, -0.1, 0: no detectable difference
    "srf_G": [12.0, 14.0, 16.0],  # -> +2, +3, +4: gain
    "srf_M": [7.0, 6.5, 6.0],  # -> -3, -4.5, -6: loss
    "nearest_M": [10.0, 11.0, 12.5],  # no cost of its own: left out of the frontier
}


def test_frontier_rows_verdicts_and_figure():
    doc = interpolation_doc(PAIRED)
    ms = {"nearest": 0.0, "bilinear": 0.1, "srf": 2.0}
    n_par = {"nearest": 0, "bilinear": 0, "srf": 8272}
    out = uc.frontier(doc, "shapes", ms, n_par, cost_source="ms: test", ms_label="added ms (test)")
    compared = out["compared"]
    assert set(compared) == {"bilinear", "srf_G", "srf_M", "nearest_M"}
    assert compared["srf_G"]["verdict"] == "gain" and compared["srf_G"]["mean"] == pytest.approx(3.0)
    assert compared["srf_M"]["verdict"] == "loss" and compared["srf_M"]["mean"] == pytest.approx(-4.5)
    assert compared["bilinear"]["verdict"].startswith("no detectable difference")
    rows = {r[0]: r for r in out["rows"]}
    assert list(rows) == ["bilinear", "srf_G", "srf_M"]  # nearest is the baseline, nearest_M has no cost
    half = 4.302653 * 1.0 / math.sqrt(3)  # t(2) x sd 1 / sqrt(3)
    assert rows["srf_G"][1]["mean"] == pytest.approx(14.0) and rows["srf_G"][2] == pytest.approx(3.0)
    assert rows["srf_G"][3] == pytest.approx(half, rel=1e-4)
    assert rows["srf_G"][4:] == ["8,272", 2.0, "gain"] and rows["srf_M"][4:] == ["8,272", 2.0, "loss"]
    assert len(out["rows"][0]) == len(uc.FRONTIER_COLUMNS)
    assert out["caption"] == "cpu profile, shapes, seeds [0, 1, 2]; cost: ms: test"
    axes = out["figure"].axes
    assert len(axes) == 2
    assert axes[0].get_xlabel() == "added ms (test)" and axes[1].get_xscale() == "log"
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["bilinear", "srf_G", "srf_M"]
    assert axes[0].get_legend() is None
    assert "grey fixed, orange learned peers, blue SRF" in out["figure"].get_suptitle()


def test_frontier_rejects_non_finite_ap():
    doc = interpolation_doc({"nearest": [10.0, 11.0], "bilinear": [math.nan, 11.0]})
    with pytest.raises(ValueError, match="not finite"):
        uc.frontier(doc, "shapes", {"nearest": 0.0, "bilinear": 0.1}, {"nearest": 0, "bilinear": 0})


def test_gains_over_nearest_keeps_only_nearest_baselines():
    doc = {"datasets": {"d": {"rows": {}, "comparisons": {
        "srf_G - nearest": {"bbox": {"mean": 1.0}}, "srf_M - srf_G": {"bbox": {"mean": 2.0}}}}}}  # fmt: skip
    assert uc.gains_over_nearest(doc, "d") == {"srf_G": {"mean": 1.0}}


def test_verdict_lines_and_widest_interval():
    doc = interpolation_doc(PAIRED)
    compared = uc.gains_over_nearest(doc, "shapes")
    lines = uc.verdict_lines({"shapes": compared})
    assert len(lines) == 2  # srf_M and srf_G, in SUMMARY_ROWS order; bilinear and nearest_M are not summarised
    assert lines[0].startswith("- `shapes`, **srf_M**: -4.50 box AP over nearest (3 paired seeds, 95% interval -8.23")
    assert lines[0].endswith(": loss.") and lines[1].endswith(": gain.")
    one_seed = uc.gains_over_nearest(interpolation_doc({"nearest": [1.0], "dysample": [2.5]}), "shapes")
    assert uc.verdict_lines({"q": one_seed}) == [
        "- `q`, **dysample**: +1.50 box AP over nearest (1 paired seeds): one seed."
    ]
    assert uc.widest_interval(doc, "shapes") == pytest.approx(compared["srf_M"]["half_width"])
    assert compared["srf_M"]["half_width"] > compared["srf_G"]["half_width"] > compared["bilinear"]["half_width"] > 0
    assert uc.widest_interval(interpolation_doc({"nearest": [1.0], "dysample": [2.5]}), "shapes") is None


def test_live_interpolation_uses_a_temporary_results_folder(monkeypatch, tmp_path):
    import srfkit.experiments
    from srfkit.results import write_result

    calls = []

    def fake_run_experiment(name, profile, dataset, runs_root, results_root, progress):
        calls.append((name, profile, dataset, Path(runs_root), Path(results_root), progress))
        doc = interpolation_doc({"nearest": [1.0], "srf_G": [2.0]}, profile=profile, dataset=dataset)
        return write_result(profile, name, {"datasets": doc["datasets"]}, Path(results_root))

    monkeypatch.setattr(srfkit.experiments, "run_experiment", fake_run_experiment)
    doc, label, seconds = uc.live_interpolation("quick", tmp_path / "runs", dataset="shapes")
    assert calls[0][:4] == ("interpolation", "quick", "shapes", tmp_path / "runs") and calls[0][5] is False
    assert not calls[0][4].exists()  # the result file was thrown away
    assert doc["profile"] == "quick" and list(doc["datasets"]) == ["shapes"]
    assert label == "<temporary folder>/quick/interpolation.json" and seconds >= 0


# --------------------------------------------------------------------------- feature fidelity

FIDELITY = {
    "nearest": {"val": [[10.0, 12.0], [11.0, 13.0]], "photos": [[9.0, 9.0], [9.0, 9.0]]},
    "bilinear": {"val": [[11.0, 13.0], [12.0, 14.0]], "photos": [[9.5, 9.5], [9.5, 9.5]]},  # +1 / +0.5
    "srf": {"val": [[12.0, 14.0], [12.0, 14.0]], "photos": [[10.0, 10.0], [9.0, 9.0]]},  # +1.5 +- / +0.5
    "srf_light": {"val": [[10.5, 12.5], [11.5, 13.5]], "photos": [[9.0, 9.0], [9.0, 9.0]]},  # +0.5 / 0
}


def test_fidelity_cost_rows_and_summary():
    fid = fidelity_doc(FIDELITY)
    params = {"nearest": 0, "bilinear": 0, "srf": 8272, "srf_light": 4880}
    ms = {"nearest": 0.0, "bilinear": 0.1, "srf": 2.0, "srf_light": 0.5}
    rows = uc.fidelity_cost_rows(fid, params, ms)
    assert len(rows) == 8 and [r[1] for r in rows] == ["val"] * 4 + ["photos"] * 4
    by = {(r[1], r[2]): r for r in rows}
    assert by[("val", "bilinear")][3] == {"mean": 1.0, "std": 0.0, "n": 2}
    assert by[("val", "srf")][3]["mean"] == pytest.approx(1.5) and by[("val", "srf")][3]["std"] > 0
    assert by[("photos", "srf")][3]["mean"] == pytest.approx(0.5) and by[("val", "nearest")][3]["mean"] == 0
    assert by[("val", "srf")][4:] == ["8,272", 2.0]
    summary = uc.fidelity_summary(fid["datasets"]["shapes"])
    assert summary["val"]["srf"] == pytest.approx(13.0) and summary["val"]["bilinear"] == pytest.approx(12.5)
    assert summary["best"] == "srf" and summary["beats_bilinear"] == ["srf"] and summary["n_seeds"] == 2
    fid["datasets"]["shapes"]["fidelity"]["srf"]["val"]["0"]["0"]["psnr"] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        uc.fidelity_cost_rows(fid, params, ms)


def test_fidelity_cost_figure():
    fid = fidelity_doc(FIDELITY)
    params = {"nearest": 0, "bilinear": 0, "srf": 8272, "srf_light": 4880}
    ms = {"nearest": 0.0, "bilinear": 0.1, "srf": 2.0, "srf_light": 0.5}
    fig = uc.fidelity_cost_figure(fid, params, ms, width=8, image_size=64)
    axes = fig.axes
    assert len(axes) == 2 and axes[0].get_xscale() == "log"
    assert axes[0].get_xlabel() == "added parameters at C = 8 (log; interpolations at 1)"
    assert axes[1].get_xlabel() == "added ms, upsamplers alone (C = 8, 64 px)"
    for ax in axes:
        assert len(ax.containers) == 8  # one error bar per (image set, upsampler)
        assert sorted(t.get_text() for t in ax.texts) == sorted(FIDELITY)  # labels on the validation points only


# --------------------------------------------------------------------------- summary


def test_status_rows_and_missing_result():
    absent = uc.status_rows([32, 256], 128, None, None)
    assert [r[0] for r in absent] == [
        "parameters of every upsampler",
        "CPU time of the upsamplers",
        "COCO AP gains (SRF, DySample, CARAFE)",
        "AP gains on the shipped data, cpu profile",
        "feature fidelity, cpu profile",
    ]
    assert (
        absent[0][1] == "computed exactly here (C = 32, 256)" and absent[1][1] == "measured here (128 px, one thread)"
    )
    assert absent[3][1:] == ["absent", "not yet run: the accuracy plot above is a quick-profile demonstration"]
    assert absent[4][1:] == ["absent", "not yet run"]
    ap = {"datasets": {"shapes": {"seeds": [0, 2]}, "trees": {"seeds": [1, 2]}}}
    present = uc.status_rows([64], 64, ap, fidelity_doc(FIDELITY))
    assert present[3][1:] == ["data/results/cpu/interpolation.json", "datasets ['shapes', 'trees'], seeds [0, 1, 2]"]
    assert present[4][1:] == ["data/results/cpu/fidelity.json", "datasets ['shapes'], seeds [0, 1]"]
    assert uc.missing_result("cost", "skipped") == (
        "*No `data/results/cpu/cost.json` yet (`python -m srfkit experiments --profile cpu --only cost` "
        "makes it): skipped.*"
    )
