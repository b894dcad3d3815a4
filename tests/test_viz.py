"""srfkit.viz: reductions, comparison panels, the widget's logic (controls change the drawn data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from srfkit.detection import FeatureExtractor, build_detector
from srfkit.models import make_upsampler
from srfkit.viz import FeatureComparison, compare_level, extract_pair, plot_comparison, reduce_channels


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    extractor = FeatureExtractor(build_detector("faster_rcnn", 3, profile="quick")).eval()
    c = 32  # quick profile FPN width
    upsamplers = {name: make_upsampler(name, c) for name in ("nearest", "bilinear", "bicubic")}
    upsamplers["srf"] = make_upsampler("srf", c, variant="light")
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 64, generator=g), torch.rand(3, 48, 64, generator=g)]
    return extractor, upsamplers, images


def test_reduce_channels():
    x = torch.tensor([[[1.0, -4.0]], [[3.0, 2.0]]])  # (C=2, H=1, W=2)
    assert torch.equal(reduce_channels(x, "mean"), torch.tensor([[2.0, -1.0]]))
    assert torch.equal(reduce_channels(x, "max_abs"), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(reduce_channels(x, 1), torch.tensor([[3.0, 2.0]]))
    assert torch.equal(reduce_channels(x[None], 0), x[0])
    with pytest.raises(ValueError, match="out of range"):
        reduce_channels(x, 2)
    with pytest.raises(ValueError, match="unknown reduction"):
        reduce_channels(x, "median")


def test_compare_level_shapes_and_errors(setup):
    extractor, upsamplers, images = setup
    target, low = extract_pair(extractor, images[0])
    assert list(target) == list(low) == ["0", "1", "2", "3", "pool"]
    assert target["0"].shape == (1, 32, 16, 16) and low["0"].shape == (1, 32, 8, 8)
    panels = compare_level(target, low, upsamplers, "0", "mean")
    assert panels.target.shape == (16, 16) and panels.low_res.shape == (8, 8)
    assert set(panels.outputs) == set(upsamplers) == set(panels.errors) == set(panels.metrics)
    for name in upsamplers:
        assert panels.outputs[name].shape == (16, 16)
        assert (panels.errors[name] >= 0).all()
        # The mean-reduced error map is the per-pixel L1, so its mean is the level's L1 metric.
        assert np.isclose(panels.errors[name].mean(), panels.metrics[name]["l1"], rtol=1e-4)
        assert -1 <= panels.metrics[name]["cosine"] <= 1
    # Nearest x2 repeats each input pixel in a 2x2 block.
    near = panels.outputs["nearest"]
    assert np.allclose(near[::2, ::2], panels.low_res)
    with pytest.raises(ValueError, match="unknown level"):
        compare_level(target, low, upsamplers, "p9")


def test_plot_comparison_draws_every_panel(setup):
    extractor, upsamplers, images = setup
    target, low = extract_pair(extractor, images[0])
    panels = compare_level(target, low, upsamplers, "1", "max_abs")
    fig = plot_comparison(panels, image=images[0])
    assert isinstance(fig, Figure)
    drawn = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    # image + target + input + (output, error) per upsampler
    assert len(drawn) == 3 + 2 * len(upsamplers)
    assert any(np.array_equal(np.asarray(a), panels.target) for a in drawn)


def test_widget_controls_change_drawn_data(setup):
    extractor, upsamplers, images = setup
    comp = FeatureComparison(extractor, upsamplers, images, names=["a", "b"])
    assert comp.state == {"image": 0, "level": "0", "reduction": "mean"}
    assert comp.channel_control.disabled
    png0 = comp.image_view.value
    assert png0[:8] == b"\x89PNG\r\n\x1a\n"

    comp.level_control.value = "1"  # as a reader's click would
    assert comp.last_panels.level == "1" and comp.last_panels.target.shape == (8, 8)
    assert comp.image_view.value != png0
    png1 = comp.image_view.value

    comp.reduction_control.value = "channel"
    assert not comp.channel_control.disabled and comp.state["reduction"] == 0
    comp.channel_control.value = 5
    assert comp.state["reduction"] == 5
    expected = comp.panels(image=0, level="1", reduction=5).target
    assert np.array_equal(comp.last_panels.target, expected)
    assert comp.image_view.value != png1

    png2 = comp.image_view.value
    comp.image_control.value = 1
    assert comp.last_panels.target.shape == (6, 8)  # the 48x64 image at stride 8
    assert comp.image_view.value != png2
    assert "bicubic" in comp.metrics_view.value

    comp.set_state(image=0, level="0", reduction="max_abs")
    assert comp.state == {"image": 0, "level": "0", "reduction": "max_abs"}
    assert comp.channel_control.disabled


def test_widget_static_figure_matches_state(setup):
    extractor, upsamplers, images = setup
    comp = FeatureComparison(extractor, upsamplers, images, levels=["0", "1"])
    comp.set_state(level="1")
    fig = comp.static_figure()
    arrays = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images]
    assert any(np.array_equal(a, comp.last_panels.target) for a in arrays)
    assert "level 1" in fig.get_suptitle()
    bundle = comp._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_widget_rejects_bad_input(setup):
    extractor, upsamplers, images = setup
    with pytest.raises(ValueError, match="at least one upsampler"):
        FeatureComparison(extractor, {}, images)
    with pytest.raises(ValueError, match="must be \\(3, H, W\\)"):
        FeatureComparison(extractor, upsamplers, [torch.rand(1, 8, 8)])
    with pytest.raises(ValueError, match="unknown levels"):
        FeatureComparison(extractor, upsamplers, images, levels=["7"])


def test_widget_metrics_match_feature_fidelity(setup):
    """The figures the widget prints are srfkit.eval.feature_fidelity's for that image and level."""
    from srfkit.eval import feature_fidelity

    extractor, upsamplers, images = setup
    comp = FeatureComparison(extractor, upsamplers, images)
    comp.set_state(image=1, level="1")
    for name, up in upsamplers.items():
        expected = feature_fidelity(up, extractor, images[1][None], levels=["1"])["1"]
        got = comp.last_panels.metrics[name]
        for key in ("l1", "psnr", "cosine"):
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (name, key)


# ------------------------------------------------------------------------------ chapter helpers


def test_book_paths_follow_the_environment(monkeypatch, tmp_path):
    from srfkit.viz import book

    monkeypatch.setenv("SRFKIT_PROFILE", "cpu")
    monkeypatch.setenv("SRFKIT_RUNS_DIR", str(tmp_path))
    assert book.profile_name() == "cpu"
    assert book.run_dir("trees") == tmp_path / "cpu" / "trees"
    monkeypatch.delenv("SRFKIT_RUNS_DIR")
    assert book.run_dir("shapes", "quick") == book.repo_root() / "runs" / "quick" / "shapes"
    assert "mean nothing" in book.profile_note("quick").data


def test_read_metrics_columns_and_errors(tmp_path):
    from srfkit.viz.book import plot_metrics, read_metrics

    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "lr": {"G": 0.1}, "g_l1": 2.0}\n{"step": 2, "g_l1": 1.5, "g_adv": 0.7}\n'
    )
    cols = read_metrics(tmp_path)
    assert list(cols["step"]) == [1, 2] and list(cols["g_l1"]) == [2.0, 1.5]
    assert np.isnan(cols["g_adv"][0]) and cols["g_adv"][1] == 0.7
    assert "lr" not in cols  # nested values are not columns
    fig = plot_metrics(tmp_path, ["g_l1"])
    assert np.array_equal(fig.axes[0].lines[0].get_ydata(), [2.0, 1.5])
    with pytest.raises(KeyError, match="no \\['d_real'\\]"):
        plot_metrics(tmp_path, ["d_real"])
    with pytest.raises(FileNotFoundError, match="no metrics log"):
        read_metrics(tmp_path / "missing")
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="metrics.jsonl:1"):
        read_metrics(tmp_path)


def test_tables_paper_beside_ours():
    from srfkit.reference import paper_table
    from srfkit.viz.book import fmt, html_table, paper_vs_ours, result_rows, result_source

    assert fmt({"mean": 1.234, "std": 0.5, "n": 3}) == "1.2 ± 0.5"
    assert fmt({"mean": 1.234, "std": 0.0, "n": 1}) == "1.2"
    assert fmt(None) == "-" and fmt(float("nan")) == "nan" and fmt("x") == "x"
    assert "<th colspan='2'" in html_table(["a", "b"], [[1, 2]], groups=[("g", 2)]).data

    summary = {"bbox": {"AP": {"mean": 12.5, "std": 1.0, "n": 3}}, "segm": {"AP": {"mean": 10.0, "std": 0.5, "n": 3}}}
    doc = {
        "experiment": "interpolation",
        "profile": "cpu",
        "datasets": {"shapes": {"seeds": [0, 1, 2], "wall_time_s": 300, "rows": {"srf_M": {"summary": summary}}}},
        "provenance": {"git_commit": "abc", "device": "cpu (2 cores)", "finished_utc": "2026"},
    }
    assert result_rows(doc) == {"shapes": [["srf_M", summary["bbox"]["AP"], summary["segm"]["AP"]]]}
    text = result_source(doc)
    assert "data/results/cpu/interpolation.json" in text and "abc" in text and "5 min" in text
    assert "experiment runner" in text
    bench = {"experiment": "detector_cost", "profile": "paper", "rows": [], "provenance": doc["provenance"]}
    text = result_source(bench, writer="`python -m srfkit.bench.detectors`")
    assert "written by `python -m srfkit.bench.detectors` at commit `abc`" in text and "()" not in text

    html = paper_vs_ours("table5_interpolation", doc, "shapes", {"srf": "srf_M"}).data
    quoted = paper_table("table5_interpolation")["rows"]["srf"]
    assert f">{quoted[0]:.1f}</td>" in html  # the paper's number, quoted
    assert "12.5 ± 1.0" in html and "10.0 ± 0.5" in html  # ours, from the file
    assert "paper (COCO val2017, quoted)" in html and "ours (cpu, shapes)" in html
    empty = paper_vs_ours("table5_interpolation", None, "shapes").data
    assert "12.5" not in empty and empty.count(">-</td>") >= 8


def test_comparisons_pair_each_row_with_its_baseline_seed_by_seed():
    from srfkit.viz.book import comparisons, forest_plot, paired_rows, paired_table

    def seeds(*aps):
        return {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}

    rows = {
        "A1": {"per_seed": seeds(10, 11, 12)},
        "A2": {"per_seed": seeds(16, 17.5, 18)},
        "A3": {"per_seed": seeds(2, 3, 4)},
        "A4": {"per_seed": seeds(10.5, 10.5, 12.5)},
    }
    doc = {"datasets": {"trees": {"rows": rows}}}
    got = comparisons(doc, "trees", lambda row: "A1")
    assert list(got) == ["A2 - A1", "A3 - A1", "A4 - A1"]
    assert got["A2 - A1"]["diffs"] == [6.0, 6.5, 6.0] and got["A2 - A1"]["verdict"] == "gain"
    assert got["A3 - A1"]["verdict"] == "loss"
    assert got["A4 - A1"]["verdict"].startswith("no detectable difference (within +-")
    assert comparisons(doc, "trees", lambda row: None) == {}
    assert comparisons(doc, "trees", lambda row: "A1", iou="segm") == {}  # no mask AP in these rows
    table = paired_rows(got)
    assert table[0][:2] == ["A2 - A1", 3] and table[0][2] == pytest.approx(6.1667, abs=1e-3)
    assert "6.17" in paired_table(got).data and "t-interval" in paired_table(got).data
    # stored comparisons (written by the runner) win over recomputation
    doc["datasets"]["trees"]["comparisons"] = {"A2 - A1": {"row": "A2", "baseline": "A1", "bbox": got["A3 - A1"]}}
    assert comparisons(doc, "trees", lambda row: "A1")["A2 - A1"]["verdict"] == "loss"
    fig = forest_plot(got)
    assert len(fig.axes[0].get_yticklabels()) == 3 and "A2 - A1 (n=3)" in [
        t.get_text() for t in fig.axes[0].get_yticklabels()
    ]


def test_curve_figure_and_scale_note():
    from srfkit.viz.book import curve_figure, scale_note

    def seeds(*aps):
        return {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}

    rows = {"nearest@100": {"per_seed": seeds(1, 2), "summary": {"bbox": {"AP": {"mean": 1.5, "std": 0.7, "n": 2}}}},
            "srf@100": {"per_seed": seeds(2, 4)},
            "nearest@200": {"per_seed": seeds(5, 6)},
            "srf@200": {"per_seed": seeds(7, 7)}}  # fmt: skip
    doc = {"profile": "cpu", "datasets": {"shapes": {"rows": rows, "config": {"profile": {"guide": {"iters": 300}}}}}}
    fig = curve_figure(doc, "shapes")
    left, right = fig.axes
    assert len(left.lines) == 2 * (2 + 1)  # per upsampler: two seeds and the mean
    assert [tuple(line.get_xdata()) for line in left.lines][2] == (100, 200)
    rows["nearest@200"]["per_seed"]["2"] = {"bbox": {"AP": 100.0}}  # a seed at one budget only
    left = curve_figure(doc, "shapes").axes[0]
    assert tuple(left.lines[3].get_ydata()) == (1.5, 5.5)  # the nearest mean: seeds 0 and 1 only
    assert left.get_legend().get_texts()[0].get_text() == "nearest (mean of the 2 seeds at every budget)"
    note = scale_note(doc, "shapes", "nearest@100")
    assert "`cpu` profile" in note and "300 steps" in note and "1.5 ± 0.7 box AP over 2 seeds" in note
    # the right panel: one series per paired comparison, each budget a point with its interval
    from srfkit.results import paired_difference

    rows.update({"srf_G@100": {"per_seed": seeds(3, 5)}, "srf_G@200": {"per_seed": seeds(8, 9)}})
    pairs = [(f"{a}@{b}", f"{c}@{b}") for b in (100, 200) for a, c in (("srf", "nearest"), ("srf_G", "nearest"),
                                                                        ("srf_G", "srf"))]  # fmt: skip
    doc["datasets"]["shapes"]["comparisons"] = {f"{a} - {c}": {"bbox": paired_difference(rows, a, c)} for a, c in pairs}
    right = curve_figure(doc, "shapes").axes[1]
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["srf - nearest", "srf_G - nearest", "srf_G - srf"]
    assert len(right.containers) == 6  # 3 comparisons x 2 budgets, each with its error bar
    # a reference document (an archived curve) adds one dashed mean line per row it has
    old = {"datasets": {"shapes": {"rows": {"nearest@100": {"per_seed": seeds(0, 1)},
                                            "nearest@300": {"per_seed": seeds(2, 4)}}}}}  # fmt: skip
    left = curve_figure(doc, "shapes", reference=old, reference_label="RoI rule 36").axes[0]
    dashed = [line for line in left.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and tuple(dashed[0].get_xdata()) == (100, 300)
    assert tuple(dashed[0].get_ydata()) == (0.5, 3.0) and dashed[0].get_label() == "nearest, RoI rule 36"
    from srfkit.viz.book import curve_means_rows

    table = curve_means_rows({"now": doc, "archived": old, "missing": None}, "shapes")
    assert table == [
        [100, "1.5 (n=2)", "0.5 (n=2)", None],
        [200, "5.5 (n=2)", None, None],
        [300, None, "3.0 (n=2)", None],
    ]


def test_fidelity_rows_mean_over_seeds():
    from srfkit.viz.book import fidelity_rows

    def cell(v):
        return {"l1": v, "psnr": 10.0, "cosine": 0.5}

    doc = {
        "datasets": {
            "shapes": {
                "fidelity": {
                    "nearest": {"val": {"0": {"0": cell(1.0), "1": cell(2.0)}, "1": {"0": cell(3.0), "1": cell(2.0)}}},
                    "srf": {"photos": {"0": {"0": cell(0.5), "1": cell(0.5)}}},
                }
            }
        }
    }
    levels, rows = fidelity_rows(doc, "shapes", "val")
    assert levels == ["0", "1"] and [r[0] for r in rows] == ["nearest"]
    assert rows[0][1]["mean"] == 2.0 and rows[0][1]["n"] == 2 and rows[0][2]["std"] == 0.0


def test_paper_agreement_reads_each_comparison_against_the_papers_rows():
    from srfkit.reference import paper_table
    from srfkit.results import paired_difference, paper_agreement
    from srfkit.viz.book import agreement_table, table_reading

    def seeds(*aps):
        return {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}

    rows = {
        "A1": {"per_seed": seeds(10, 11, 12)},
        "A2": {"per_seed": seeds(16, 17.5, 18)},  # gain; the paper: +0.8
        "A3": {"per_seed": seeds(12.5, 13.4, 14.6)},  # gain; the paper: A3 below A1 (-6.5)
        "A1_matched": {"per_seed": seeds(20, 22, 24)},
        "A5": {"per_seed": seeds(21, 21, 25)},  # vs A1_matched: undecided; the paper's A5 - A1 is +2.6
        "A4": {"per_seed": seeds(20.5)},  # one seed
    }
    pairs = [("A2", "A1"), ("A3", "A1"), ("A5", "A1_matched"), ("A4", "A1_matched"), ("A1_matched", "A1")]
    compared = {f"{r} - {b}": paired_difference(rows, r, b) for r, b in pairs}
    table = paper_table("table4_progressive")
    got = paper_agreement(compared, table["rows"], table["columns"], as_paper={"A1_matched": "A1"})
    assert got["A2 - A1"]["status"] == "reproduced" and got["A2 - A1"]["paper_diff"] == pytest.approx(0.8)
    assert got["A3 - A1"]["status"] == "opposite" and got["A3 - A1"]["paper"] == "A3 - A1"
    assert got["A5 - A1_matched"]["status"] == "undecided" and got["A5 - A1_matched"]["paper"] == "A5 - A1"
    assert got["A4 - A1_matched"]["status"] == "too few seeds"
    # no detectable difference, but an interval too narrow to hold the paper's +2.6: not reproduced here
    tight = {"A5": {"per_seed": seeds(10.1, 10.9, 12.0)}, "A1": rows["A1"]}
    excluded = paper_agreement({"A5 - A1": paired_difference(tight, "A5", "A1")}, table["rows"], table["columns"])
    assert excluded["A5 - A1"]["status"] == "excluded" and excluded["A5 - A1"]["high"] < 2.6
    assert "**Not reproduced at this scale (no detectable difference;" in table_reading(excluded)
    assert got["A1_matched - A1"]["status"] == "not in the paper"  # both sides play the paper's A1
    # rows the paper prints as equal (Table 5: bilinear 0.0, bicubic -0.1 from nearest)
    t5 = paper_table("table5_interpolation")
    rows5 = {"nearest": {"per_seed": seeds(10, 11, 12)}, "bilinear": {"per_seed": seeds(10.2, 10.9, 12.1)},
             "bicubic": {"per_seed": seeds(12, 13, 14)}}  # fmt: skip
    five = paper_agreement({f"{r} - nearest": paired_difference(rows5, r, "nearest") for r in ("bilinear", "bicubic")},
                           t5["rows"], t5["columns"])  # fmt: skip
    assert five["bilinear - nearest"]["status"] == "reproduced" and five["bicubic - nearest"]["status"] == "differs"
    text = table_reading(got, missing=["A4"], regime="At 2,000 steps.")
    assert text.startswith("**Reproduced:** A2 - A1 (paper +0.8; ours +6.2, 95% ")
    assert (
        "**Opposite to the paper:** A3 - A1" in text
        and "**Cannot be told at this scale (the paper's difference lies inside our interval):** A5 - A1_matched"
        in text
    )
    assert "**Not measured yet:** A4." in text and text.endswith("At 2,000 steps.")
    html = agreement_table(got).data
    assert "A5 - A1" in html and "undecided" in html and ">2.6</td>" in html
    assert table_reading({}) == "*No comparison in this file yet.*"


def test_provenance_table_lists_each_rows_cells():
    from srfkit.viz.book import provenance_table

    cells = {
        "0": {"git_commit": "16bc91b6b9", "finished_utc": "2026-11-29T10:00:00Z", "stage": "cpu/shapes/seed0/guide"},
        "1": {"git_commit": "0144b642aa", "finished_utc": "2026-11-30T08:27:06Z", "stage": "cpu/shapes/seed1/guide"},
    }
    doc = {"datasets": {"shapes": {"rows": {"A1": {"per_seed": {"1": {}, "0": {}}, "cells": cells}}}}}
    html = provenance_table(doc, "shapes").data
    assert "<td>0, 1</td>" in html and "0144b64, 16bc91b" in html and "2026-11-29 to 2026-11-30" in html
    assert "<td>guide</td>" in html
    curve_cells = {"0": {"git_commit": "0144b642aa", "stage": "cpu/shapes/seed0/curve_srf/step_002000.pt"}}
    doc["datasets"]["shapes"]["rows"]["srf_scratch"] = {"per_seed": {"0": {}}, "cells": curve_cells}
    assert "<td>curve_srf/step_002000.pt</td>" in provenance_table(doc, "shapes").data


def test_unmeasured_rows_and_regime_sentence():
    from srfkit.results import unmeasured_paper_rows
    from srfkit.viz.book import regime_sentence

    agreement = {"A2 - A1": {"paper": "A2 - A1"}, "A5 - A1_matched": {"paper": "A5 - A1"}, "x - A1": {"paper": None}}
    rows = {"A1": [], "A2": [], "A3": [], "A4": [], "A5": []}
    assert unmeasured_paper_rows(agreement, rows, ["A1"]) == ["A3", "A4"]

    def seeds(*aps):
        return {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}

    curve = {"datasets": {"shapes": {"rows": {"nearest@1000": {"per_seed": seeds(20, 22)},
                                              "nearest@2000": {"per_seed": seeds(45, 47)},
                                              "nearest@4000": {"per_seed": seeds(72, 74)}}}}}  # fmt: skip
    text = regime_sentence(curve, "shapes", 2000)
    assert "trains 2,000 steps" in text and "below plateau (46.0 box AP there" in text and "13.5 AP per 1,000" in text
    assert "learns faster" in text and "best measured 73.0 at 4,000 steps, means of the 2 seed(s)" in text
    curve["datasets"]["shapes"]["rows"]["nearest@8000"] = {"per_seed": seeds(72.5, 74.5)}  # flat: a plateau
    text = regime_sentence(curve, "shapes", 4000)
    assert "near plateau (73.0 box AP there; best measured 73.5 at 8,000" in text and "still rising" not in text
    assert "final accuracy" in text
    assert regime_sentence(None, "shapes", 2000) == "" and regime_sentence(curve, "trees", 2000) == ""


def test_table2_quotes_match_the_gains_the_paper_prints():
    from srfkit.reference import paper_table

    rows = paper_table("table2_testdev")["rows"]
    printed = {"retinanet": 2.5, "faster_rcnn": 1.5, "mask_rcnn": 2.5, "mask_rcnn_3x": 0.8, "centermask": 2.7,
               "cascade_rcnn": 0.2}  # the "[+x]" of the paper's Table 2, box AP  # fmt: skip
    for family, gain in printed.items():
        assert rows[f"{family}/srf"][4] - rows[f"{family}/nearest"][4] == pytest.approx(gain, abs=1e-6)
