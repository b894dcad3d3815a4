"""The experiment runner writes complete, honest result files (quick profile, few steps)."""

import dataclasses
import json
import math

import pytest
import torch

from srfkit.experiments import EXPERIMENTS, run_experiment
from srfkit.results import RESULTS_DIR, load_result, mean_std, update_result
from srfkit.train import read_stage


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert mean_std([4.0])["std"] == 0.0
    no_objects = mean_std([math.nan, math.nan, math.nan])  # AP_L where the val split has no large object
    assert math.isnan(no_objects["mean"]) and math.isnan(no_objects["std"]) and no_objects["n"] == 3


def _rows(**per_seed_ap):
    return {
        name: {"per_seed": {s: {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}} for name, aps in per_seed_ap.items()
    }


def test_unknown_experiment_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="interpolation, progressive"):
        run_experiment("table9", "quick", "shapes", runs_root=tmp_path)


def test_every_experiment_has_a_docstring():
    assert {"interpolation", "progressive", "degradation", "semantic_level", "cross_head"} <= set(EXPERIMENTS)
    assert all(fn.__doc__ for fn in EXPERIMENTS.values())


def test_progressive_writes_rows_per_seed_and_reuses_stages(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    path = run_experiment(
        "progressive", "quick", "shapes", runs_root=runs, results_root=results, iters=2, progress=False
    )
    document = json.loads(path.read_text())
    assert path == results / "quick" / "progressive.json"
    entry = document["datasets"]["shapes"]
    assert set(entry["rows"]) == {"A1", "A2", "A3", "A4", "A5", "A1_matched", "nearest_M"}
    # Every row carries its paired comparison; the method against the budget match and against nearest_M.
    assert {"A5 - A1_matched", "A5 - nearest_M", "A2 - A1", "nearest_M - A1_matched"} <= set(entry["comparisons"])
    assert entry["comparisons"]["A5 - A1_matched"]["bbox"]["verdict"] in ("one seed", "no objects")
    nearest_m = read_stage(runs / "quick" / "shapes" / "seed0" / "extractor_default_nearest")["config"]
    assert nearest_m["detector"]["upsampler"]["name"] == "nearest" and nearest_m["srf_gan"] is None
    # The budget control trains the baseline as long as A5's backbone trained: stage 2 + stage 3 steps.
    matched = runs / "quick" / "shapes" / "seed0" / "guide_4steps" / "metrics.jsonl"
    assert len(matched.read_text().splitlines()) == 2 + 2
    for row in entry["rows"].values():
        box = row["summary"]["bbox"]["AP"]
        assert box["n"] == 1 and 0.0 <= box["mean"] <= 100.0
        assert set(row["per_seed"]) == {"0"}
    assert entry["provenance"]["git_commit"] and entry["wall_time_s"] > 0
    assert entry["config"]["options"] == {"iters": 2, "progress": False}
    assert entry["config"]["val_images"] == 8 and entry["config"]["val_objects"] > 8  # the quick val split
    cell = entry["rows"]["A5"]["cells"]["0"]
    assert cell["fingerprint"] == entry["config"]["fingerprint"] and cell["wall_s"] > 0 and cell["git_commit"]
    # Stage folders are shared: a second run trains nothing and reads cached evaluations.
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("final.pt")}
    run_experiment("progressive", "quick", "shapes", runs_root=runs, results_root=results, iters=2, progress=False)
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("final.pt")} == stamps
    assert load_result("quick", "progressive", results)["datasets"]["shapes"]["rows"].keys() == entry["rows"].keys()


def test_cost_from_the_command_line(tmp_path, monkeypatch):
    from srfkit.cli import main
    from srfkit.models import upsampler_names

    monkeypatch.setenv("SRFKIT_RESULTS_DIR", str(tmp_path))
    assert main(["experiments", "--profile", "quick", "--only", "cost", "--datasets", "shapes"]) == 0
    entry = json.loads((tmp_path / "quick" / "cost.json").read_text())["datasets"]["shapes"]
    rows = entry["rows"]
    assert set(rows) == set(upsampler_names())
    assert rows["nearest"]["added_params"] == 0 and rows["nearest"]["latency_ratio"] == 1.0
    assert rows["srf"]["added_params"] > rows["srf_light"]["added_params"] > rows["dysample"]["added_params"] > 0
    assert rows["nearest"]["upsampler_ratio"] == 1.0 and all(r["upsampler_ms"] > 0 for r in rows.values())


def test_fidelity_writes_a_probe_that_re_evaluates_exactly(tmp_path):
    from srfkit.experiments import probe_fidelity, probe_path

    runs, results = tmp_path / "runs", tmp_path / "results"
    run_experiment("fidelity", "quick", "shapes", runs_root=runs, results_root=results, iters=2, progress=False)
    entry = load_result("quick", "fidelity", results)["datasets"]["shapes"]
    for name in ("nearest", "bilinear", "bicubic", "srf", "srf_light", "srf_depthwise"):
        assert set(entry["fidelity"][name]) == {"photos", "val"}
    stored = entry["probe"]["fidelity"]
    probe = torch.load(probe_path("quick", "shapes", results), weights_only=True)
    assert probe_fidelity(probe) == stored


# live result folders (data/results/<profile>) and archived ones (data/results/archive/<name>)
COMMITTED_PROBES = sorted(p for where in ("*", "archive/*") for p in RESULTS_DIR.glob(f"{where}/fidelity_probe-*.pt"))


@pytest.mark.parametrize("path", COMMITTED_PROBES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_probe_gives_back_its_stored_fidelity(path):
    """A real run's G, re-evaluated on its stored features, gives the figure in the result file."""
    from srfkit.experiments import probe_fidelity

    dataset = path.stem.split("-", 1)[1]
    entry = load_result(path.parent.name, "fidelity", root=path.parent.parent)["datasets"][dataset]
    assert entry["probe"]["file"] == path.name
    recomputed = probe_fidelity(torch.load(path, weights_only=True))
    for level, metrics in entry["probe"]["fidelity"].items():
        for key, value in metrics.items():
            assert recomputed[level][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (level, key)


def test_an_invalidated_result_keeps_its_numbers_but_reads_as_invalid(tmp_path):
    from srfkit.results import invalidate_result, update_result, valid_entries

    entry = {"rows": {"a": {"summary": {}}}}
    update_result("cpu", "detectors", "shapes", entry, tmp_path)
    update_result("cpu", "detectors", "trees", entry, tmp_path)
    invalidate_result("cpu", "detectors", "a defect", tmp_path)
    document = load_result("cpu", "detectors", tmp_path)
    assert document["datasets"]["shapes"]["rows"] == entry["rows"]  # kept for the record
    assert valid_entries(document) == ({}, {"shapes": "a defect", "trees": "a defect"})
    update_result("cpu", "detectors", "shapes", entry, tmp_path)  # re-run: that dataset is valid again
    valid, invalid = valid_entries(load_result("cpu", "detectors", tmp_path))
    assert list(valid) == ["shapes"] and invalid == {"trees": "a defect"}
    with pytest.raises(FileNotFoundError, match="no such result file"):
        invalidate_result("cpu", "cost", "x", tmp_path)


def test_committed_results_from_before_the_issue_10_fixes_are_marked_invalid():
    """Entries of detectors, cross_head and semantic_level computed before 2026-11-30 carry the mark."""
    for name in ("detectors", "cross_head", "semantic_level"):
        document = load_result("cpu", name)
        for dataset, entry in (document or {}).get("datasets", {}).items():
            if entry["provenance"]["finished_utc"] < "2026-11-30":
                assert "invalidated" in entry, (name, dataset)


def test_paired_difference_gives_the_t_interval_of_the_per_seed_differences():
    from srfkit.results import paired_difference, t_critical

    rows = _rows(nearest=[47.4, 43.9, 43.4], srf=[57.5, 57.3, 50.3])  # measured at 1500 steps (facts.md)
    d = paired_difference(rows, "srf", "nearest")
    assert d["n"] == 3 and d["seeds"] == [0, 1, 2]
    assert d["mean"] == pytest.approx(10.133, abs=1e-3) and d["sd"] == pytest.approx(3.250, abs=1e-3)
    assert d["half_width"] == pytest.approx(4.303 * 3.250128 / 3**0.5, abs=1e-3)
    assert (round(d["low"], 1), round(d["high"], 1)) == (2.1, 18.2) and d["verdict"] == "gain"
    flat = paired_difference(_rows(nearest=[10.0, 11.0, 12.0], srf=[10.5, 10.5, 12.5]), "srf", "nearest")
    assert flat["verdict"].startswith("no detectable difference (within +-") and flat["low"] < 0 < flat["high"]
    worse = paired_difference(_rows(nearest=[10.0, 11.0, 12.0], srf=[8.0, 9.2, 9.9]), "srf", "nearest")
    assert worse["verdict"] == "loss"
    assert paired_difference(_rows(nearest=[1.0], srf=[2.0]), "srf", "nearest")["verdict"] == "one seed"
    assert t_critical(1) == 12.706 and t_critical(30) == 2.042 and 1.983 < t_critical(100) < 1.985
    with pytest.raises(ValueError):
        t_critical(0)


def test_chance_reading_counts_verdicts_against_what_chance_alone_gives():
    from srfkit.results import chance_reading, paired_difference

    rows = _rows(
        nearest=[10.0, 11.0, 12.0], up=[11.0, 12.1, 13.2], down=[8.0, 9.2, 9.9], flat=[10.5, 10.5, 12.5], one=[3.0]
    )
    found = {f"{r} - nearest": paired_difference(rows, r, "nearest") for r in ("up", "down", "flat", "one")}
    reading = chance_reading(found)
    assert reading["n"] == 3  # "one" has no interval
    assert reading["gains"] == ["up - nearest"] and reading["losses"] == ["down - nearest"]
    assert reading["expected"] == pytest.approx(0.15)
    assert chance_reading({}) == {"n": 0, "gains": [], "losses": [], "expected": 0.0}
    assert chance_reading(found, level=0.9)["expected"] == pytest.approx(0.3)


def test_seeds_for_half_width_is_the_least_n_whose_t_interval_is_that_narrow():
    from srfkit.results import paired_difference, seeds_for_half_width, t_critical

    # sd 1.2: n = 8 gives 2.365 * 1.2 / sqrt(8) = 1.003 (too wide), n = 9 gives 2.306 * 1.2 / 3 = 0.922
    assert seeds_for_half_width(1.2, 1.0) == 9
    for sd, target in ((0.7, 2.0), (1.4, 1.0), (3.3, 2.0), (2.0, 0.5)):
        n = seeds_for_half_width(sd, target)
        assert t_critical(n - 1) * sd / math.sqrt(n) <= target < t_critical(n - 2) * sd / math.sqrt(n - 1)
    assert seeds_for_half_width(0.0, 1.0) == 2  # no spread: two seeds already give a zero-width interval
    assert seeds_for_half_width(math.nan, 1.0) is None  # one seed: no spread to plan with
    assert seeds_for_half_width(50.0, 0.1) is None  # beyond `most`
    with pytest.raises(ValueError, match="positive"):
        seeds_for_half_width(1.0, 0.0)
    # consistent with the interval paired_difference reports for the same spread
    c = paired_difference(_rows(a=[10.0, 11.0, 12.0, 13.0], b=[9.0, 11.5, 10.0, 12.5]), "a", "b")
    assert seeds_for_half_width(c["sd"], c["half_width"]) == c["n"]


def test_learning_curve_cells_land_one_by_one_and_resume(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    path = run_experiment("learning_curve", "quick", "shapes", runs_root=runs, results_root=results, progress=False)
    entry = json.loads(path.read_text())["datasets"]["shapes"]
    assert list(entry["rows"]) == [f"{r}@{b}" for b in (2, 4, 6) for r in ("nearest", "srf", "srf_G")]
    assert entry["rows"]["nearest@4"]["cells"]["0"]["stage"].endswith("curve_nearest/step_000004.pt")
    assert entry["rows"]["srf_G@6"]["cells"]["0"]["stage"].endswith("curve_srf_G/final.pt")
    assert set(entry["comparisons"]) == {
        f"{a}@{b} - {c}@{b}" for b in (2, 4, 6) for a, c in (("srf", "nearest"), ("srf_G", "nearest"), ("srf_G", "srf"))
    }
    chain = runs / "quick" / "shapes" / "seed0" / "curve_srf"
    steps = [json.loads(line)["step"] for line in (chain / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # one chain, trained once through every budget
    config = json.loads((chain / "config.json").read_text())
    assert config["schedule"]["milestones"] == [] and config["schedule"]["iters"] == 6
    # a cell whose result is gone is re-created from its own chain (checkpoints kept), nothing retrained
    document = json.loads(path.read_text())
    del document["datasets"]["shapes"]["rows"]["srf@4"]["per_seed"]["0"]
    path.write_text(json.dumps(document))
    stamps = {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")}
    run_experiment("learning_curve", "quick", "shapes", runs_root=runs, results_root=results, progress=False)
    assert "0" in load_result("quick", "learning_curve", results)["datasets"]["shapes"]["rows"]["srf@4"]["per_seed"]
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*.pt")} == stamps


def test_rows_on_a_learning_curve_chain_reuse_its_checkpoint(tmp_path):
    from srfkit.experiments import Runs
    from srfkit.profiles import get_profile

    cpu = get_profile("cpu")  # constant-rate guide and target at 4,000 steps, a curve budget
    runs = Runs(cpu, "shapes", 0, tmp_path, record={})
    seed = tmp_path / "cpu" / "shapes" / "seed0"
    assert runs.detector() == seed / "curve_nearest" / "step_004000.pt"  # the guide (A1), stage 1's F
    assert runs.detector("srf") == seed / "curve_srf" / "step_004000.pt"  # srf_scratch
    assert runs.target("G") == seed / "curve_srf_G" / "step_004000.pt"  # A2
    assert runs.detector(iters=2000) == seed / "curve_nearest" / "step_002000.pt"
    assert runs.curve("nearest", max(cpu.curve_budgets)) == seed / "curve_nearest" / "final.pt"  # the chain's end
    assert runs.detector("bilinear") == seed / "det_default_bilinear"  # no curve for it
    assert runs.detector("srf", arch="retinanet") == seed / "det_retinanet_srf"
    assert runs.detector(iters=3500) == seed / "guide_3500steps"  # not a budget of the curve
    assert runs.target("G", variant="light") == seed / "target_default_G_srf_gan_light"  # no chain for it
    assert runs.target("G", freeze_g=True) == seed / "target_default_G_srf_gan_paper_frozen"
    assert runs.record[seed / "curve_srf"]["steps"] == 4000  # planned: only what the row needs
    assert runs.record[seed / "srf_gan_paper"]["steps"] == cpu.srf_gan.iters  # the srf_G chain's stage 1
    decayed = cpu.replace(guide=dataclasses.replace(cpu.guide, milestones=(2 / 3,)))
    assert Runs(decayed, "shapes", 0, tmp_path, record={}).detector("srf") == seed / "det_default_srf"
    assert Runs(decayed, "shapes", 0, tmp_path, record={}).detector() == seed / "guide"
    assert Runs(cpu, "shapes", 0, tmp_path, {"iters": 3}, record={}).detector("srf") == seed / "det_default_srf"
    other_target = cpu.replace(target=dataclasses.replace(cpu.target, lr=0.02))  # not the chain's rate
    assert Runs(other_target, "shapes", 0, tmp_path, record={}).target("G") == seed / "target_default_G_srf_gan_paper"


def test_a_chain_never_shrinks_when_the_curve_is_run_to_a_shorter_horizon(tmp_path):
    """A chain trained to 6 steps, asked for budget 4 as the longest of a shorter curve (``--curve-budgets
    2,4``), gives its 4-step checkpoint, not its 6-step final.pt, and trains nothing."""
    from srfkit.experiments import Runs
    from srfkit.profiles import get_profile

    quick = get_profile("quick")
    longer = quick.replace(guide=dataclasses.replace(quick.guide, milestones=()), curve_budgets=(2, 4, 6))
    chain = Runs(longer, "shapes", 0, tmp_path, {"progress": False}).curve("nearest", 6).parent
    before = {p.name: p.stat().st_mtime_ns for p in chain.iterdir()}
    short = Runs(longer.replace(curve_budgets=(2, 4)), "shapes", 0, tmp_path, {"progress": False})
    assert short.curve("nearest", 4) == chain / "step_000004.pt"
    assert short.curve("nearest", 2) == chain / "step_000002.pt"
    assert {p.name: p.stat().st_mtime_ns for p in chain.iterdir()} == before
    # and a chain that ends at a budget is read there when a longer curve is planned, without training
    shorter = Runs(longer.replace(curve_budgets=(2, 4)), "shapes", 0, tmp_path / "short", {"progress": False})
    end = shorter.curve("srf", 4)
    assert end.name == "final.pt"
    ended = {p.name: p.stat().st_mtime_ns for p in end.parent.iterdir()}
    assert Runs(longer, "shapes", 0, tmp_path / "short", {"progress": False}).curve("srf", 4) == end
    assert {p.name: p.stat().st_mtime_ns for p in end.parent.iterdir()} == ended


def test_default_family_rows_share_the_stage_folders_of_tables_4_and_5(tmp_path):
    from srfkit.experiments import ExperimentContext, Runs, cross_head, detectors, progressive
    from srfkit.profiles import get_profile

    ctx = ExperimentContext(get_profile("quick"), "shapes", (0,), tmp_path)  # shapes has masks: Mask R-CNN
    runs = Runs(ctx.profile, "shapes", 0, tmp_path, record={})
    table1, table3, table4 = detectors(ctx).rows, cross_head(ctx).rows, progressive(ctx).rows
    assert table1["mask_rcnn/nearest"](runs) == table3["mask_rcnn/baseline"](runs) == table4["A1"](runs)
    assert table1["mask_rcnn/G"](runs) == table4["A2"](runs)
    assert table1["mask_rcnn/M"](runs) == table3["mask_rcnn/mask_rcnn"](runs) == table4["A5"](runs)
    seed = tmp_path / "quick" / "shapes" / "seed0"
    assert table3["retinanet/mask_rcnn"](runs) == seed / "target_retinanet_M_extractor_default"
    assert table3["mask_rcnn/retinanet"](runs) == seed / "target_default_M_extractor_retinanet"
    assert table1["fcos/nearest"](runs) == seed / "det_fcos_nearest"


@pytest.mark.cpu_exact
def test_a_curve_checkpoint_equals_the_detector_trained_for_that_budget(tmp_path):
    """The reuse above is exact: the chain stopped and resumed at each budget gives the same weights
    as one run of the guide schedule for that many steps."""
    from srfkit.experiments import Runs
    from srfkit.profiles import get_profile
    from srfkit.train import train_guide
    from srfkit.train.checkpoint import checkpoint_path, load_checkpoint

    quick = get_profile("quick")
    flat = quick.replace(guide=dataclasses.replace(quick.guide, iters=4, milestones=()), curve_budgets=(2, 4, 6))
    runs = Runs(flat, "shapes", 0, tmp_path / "runs", {"progress": False})
    runs.curve("srf", 2)
    chain = runs.detector("srf")  # 4 steps: resumes the chain stopped at 2
    assert chain.name == "step_000004.pt"
    alone = tmp_path / "alone"
    train_guide(flat, "shapes", alone, seed=0, upsampler="srf", progress=False)
    a, b = load_checkpoint(chain)["models"]["detector"], load_checkpoint(checkpoint_path(alone))["models"]["detector"]
    assert a and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.cpu_exact
def test_a_chain_extended_to_a_longer_budget_equals_one_trained_that_long(tmp_path):
    """When the curve's longest budget grows, a finished chain goes on from its checkpoints: the old end is
    re-created bit for bit (and its set-aside final.pt removed), and the new end equals a chain that had
    the longer budgets from the start."""
    from srfkit.experiments import Runs
    from srfkit.profiles import get_profile
    from srfkit.train.checkpoint import load_checkpoint

    quick = get_profile("quick")
    short = quick.replace(guide=dataclasses.replace(quick.guide, milestones=()), curve_budgets=(2, 4))
    longer = short.replace(curve_budgets=(2, 4, 6))
    grown = Runs(short, "shapes", 0, tmp_path / "grown", {"progress": False})
    old_end = grown.curve("nearest", 4)
    assert old_end.name == "final.pt"
    before = load_checkpoint(old_end)["models"]["detector"]
    grown = dataclasses.replace(grown, profile=longer)
    end = grown.curve("nearest", 6)
    chain = end.parent
    assert not list(chain.glob("superseded_final_*"))  # re-created bit for bit, so removed
    again = load_checkpoint(chain / "step_000004.pt")["models"]["detector"]
    assert all(torch.equal(before[k], again[k]) for k in before)
    steps = [json.loads(line)["step"] for line in (chain / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    fresh = Runs(longer, "shapes", 0, tmp_path / "fresh", {"progress": False}).curve("nearest", 6)
    a, b = load_checkpoint(end)["models"]["detector"], load_checkpoint(fresh)["models"]["detector"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.cpu_exact
def test_the_srf_g_chain_at_a_budget_is_table_4s_a2_trained_that_long(tmp_path):
    """srf_G@b is stage 3 with the seed's stage-1 G reused, at the target schedule's rate: the chain's
    checkpoint at the target's length equals A2 in every weight (so A2 is the curve's point there)."""
    from srfkit.experiments import Runs
    from srfkit.profiles import get_profile
    from srfkit.train import train_target
    from srfkit.train.checkpoint import checkpoint_path, load_checkpoint

    quick = get_profile("quick")
    flat = dataclasses.replace(quick.guide, iters=4, milestones=())
    profile = quick.replace(guide=flat, target=flat, curve_budgets=(2, 4, 6))
    runs = Runs(profile, "shapes", 0, tmp_path / "runs", {"progress": False})
    point = runs.curve("srf_G", 4)
    assert runs.target("G") == point  # so the tables take A2 from the chain
    a2 = tmp_path / "a2"  # stage 3 run on its own, as the tables did before
    train_target(profile, "shapes", a2, seed=0, reuse="G", srf_gan_dir=runs.srf_gan(), progress=False)
    a = load_checkpoint(point)["models"]["detector"]
    b = load_checkpoint(checkpoint_path(a2))["models"]["detector"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("backbone.fpn.upsampler.net.") for k in a)  # G (a network) is inside the FPN


def test_campaign_plans_seed_by_seed_and_splits_seeds_between_workers(tmp_path, capsys):
    from srfkit.campaign import plan, remaining, run_campaign

    cells = plan("quick", ["shapes"], ["learning_curve"], {"learning_curve": 1}, tmp_path / "r", tmp_path / "res")
    assert [pc.cell.row for pc in cells] == [f"{r}@{b}" for b in (2, 4, 6) for r in ("nearest", "srf", "srf_G")]
    left, report = remaining(cells)
    assert len(left) == 9 and "0 of 9 cells done" in report and "no time estimate" in report
    assert "30 training steps left" in report  # three chains of 6 steps, and srf_G's guide and stage 1 (6 each)
    assert run_campaign(cells, worker=1, workers=2) == 0  # seed 0 belongs to worker 0
    assert run_campaign(cells, worker=0, workers=2, max_hours=0.0) == 1  # stops starting new cells
    left, report = remaining(cells)
    assert len(left) == 8 and "1 of 9 cells done" in report and "28 training steps left" in report
    assert "process-hours at" in report  # the nearest chain's measured step time
    assert "process-hours at 2.00 s/step" in remaining(cells, seconds_per_step=2.0)[1]
    from srfkit.campaign import stage_plan

    stages = stage_plan(cells)  # the chains the 5 cells left need: nearest half done, srf not started
    assert {f.name: (i["steps"], i["left"]) for f, i in stages.items()} == {
        "curve_nearest": (6, 4),
        "curve_srf": (6, 6),
        "curve_srf_G": (6, 6),
        "guide": (6, 6),
        "srf_gan_paper": (6, 6),
    }
    assert not (tmp_path / "r" / "quick" / "shapes" / "seed0" / "curve_srf").exists()  # planning trains nothing


def test_campaign_fit_hours_starts_only_cells_whose_chain_fits_the_sitting(tmp_path, capsys):
    """A sitting that ends (and may lose its stage folders) runs the cells it can finish, not one it
    would leave half-trained."""
    from srfkit.campaign import cell_steps, plan, remaining, run_campaign

    cells = plan("quick", ["shapes"], ["progressive"], {"progressive": 1}, tmp_path / "r", tmp_path / "res")
    steps = {pc.cell.row: cell_steps(pc) for pc in cells}
    # A1 is the 6-step guide; A5 needs guide, stage 1, extractor and target (6 each); A1_matched 2 x 6 from scratch
    assert steps["A1"] == 6 and steps["A5"] == 24 and steps["A1_matched"] == 12
    with pytest.raises(ValueError, match="--step-seconds"):  # nothing measured on this machine yet
        run_campaign(cells, fit_hours=1.0)
    a5, a1 = (next(pc for pc in cells if pc.cell.row == r) for r in ("A5", "A1"))
    assert run_campaign([a5, a1], fit_hours=10 / 3600, seconds_per_step=1.0) == 1  # A5 (24 s) skipped, A1 (6 s) ran
    out = capsys.readouterr().out
    assert "skipped progressive / A5 / seed 0: its training needs ~0.01 h" in out
    assert a1.done() and not a5.done()
    assert cell_steps(a1) == 0 and cell_steps(a5) == 18  # the guide is trained now: A5 needs the rest
    report = remaining(cells, seconds_per_step=360.0, by_row=True)[1]  # --plan's per-row lines
    rows = {line.split()[0]: " ".join(line.split()[1:]) for line in report.splitlines() if line.startswith("    ")}
    assert rows["A5"] == "1 left; one cell's chain at most 18 steps (~1.80 h)" and "A1" not in rows  # A1 is done


def test_campaign_curve_budgets_shorten_the_curve_and_keep_the_cells_fingerprint(tmp_path, capsys):
    from srfkit.campaign import parse_budgets, plan
    from srfkit.cli import main
    from srfkit.profiles import get_profile

    full = plan("quick", ["shapes"], ["learning_curve"], {"learning_curve": 1}, tmp_path / "r", tmp_path / "res")
    short_profile = get_profile("quick").replace(curve_budgets=parse_budgets("2,4"))
    short = plan(short_profile, ["shapes"], ["learning_curve"], {"learning_curve": 1}, tmp_path / "r", tmp_path / "res")
    assert [pc.cell.row for pc in short] == [f"{r}@{b}" for b in (2, 4) for r in ("nearest", "srf", "srf_G")]
    assert short[0].context.fingerprint == full[0].context.fingerprint  # the 6-step run later extends these chains
    args = ["campaign", "--profile", "quick", "--only", "learning_curve", "--seeds", "learning_curve=1"]
    assert main([*args, "--runs", str(tmp_path / "r"), "--curve-budgets", "2,4", "--plan"]) == 0
    assert "0 of 6 cells done" in capsys.readouterr().out
    for bad in ("4,2", "0,2", "2,x", "2,2"):
        with pytest.raises(ValueError, match="--curve-budgets"):
            parse_budgets(bad)


def test_campaign_selects_rows_across_seeds(tmp_path):
    from srfkit.campaign import plan, select_rows

    cells = plan("cpu", ["shapes"], ["progressive"], {"progressive": 2}, tmp_path / "r", tmp_path / "res")
    chosen = select_rows(cells, ["A1", "A2"])
    assert [(pc.cell.row, pc.cell.seed) for pc in chosen] == [("A1", 0), ("A2", 0), ("A1", 1), ("A2", 1)]
    with pytest.raises(ValueError, match="A9"):
        select_rows(cells, ["A1", "A9"])


def test_campaign_leaves_detectron2_tables_out_without_detectron2(tmp_path, monkeypatch):
    import srfkit.detection.d2 as d2
    from srfkit.campaign import DETECTRON2_EXPERIMENTS, plan

    monkeypatch.setattr(d2, "detectron2_available", lambda: False)
    cells = plan("quick", ["shapes"], None, None, tmp_path / "r", tmp_path / "res")
    planned = {pc.cell.experiment for pc in cells}
    assert planned and not planned & set(DETECTRON2_EXPERIMENTS)
    with pytest.raises(ImportError, match="make d2"):
        plan("quick", ["shapes"], ["d2_cascade"], None, tmp_path / "r", tmp_path / "res")
    monkeypatch.setattr(d2, "detectron2_available", lambda: True)
    cells = plan("quick", ["shapes"], ["d2_cascade"], {"d2_cascade": 1}, tmp_path / "r", tmp_path / "res")
    assert [pc.cell.row for pc in cells] == ["nearest", "srf_G"]  # planned without importing detectron2


def test_a_cell_of_new_settings_drops_the_seeds_of_old_ones(tmp_path):
    from srfkit.results import update_cell

    metrics = {"bbox": {"AP": 1.0}}
    update_result("cpu", "progressive", "shapes", {"rows": {"A1": {"per_seed": {"0": metrics}}}}, tmp_path)
    update_cell("cpu", "progressive", "shapes", "A1", 1, metrics, {"fingerprint": "new"}, root=tmp_path)
    update_cell("cpu", "progressive", "shapes", "A2", 1, {"bbox": {"AP": 3.0}}, {"fingerprint": "new"},
                comparisons=[("A2", "A1")], root=tmp_path)  # fmt: skip
    entry = load_result("cpu", "progressive", tmp_path)["datasets"]["shapes"]
    assert list(entry["rows"]["A1"]["per_seed"]) == ["1"]  # the pre-campaign seed 0 is gone
    assert entry["comparisons"]["A2 - A1"]["bbox"]["diffs"] == [2.0]
    update_cell("cpu", "progressive", "shapes", "A1", 2, metrics, {"fingerprint": "newer"}, root=tmp_path)
    entry = load_result("cpu", "progressive", tmp_path)["datasets"]["shapes"]
    assert set(entry["rows"]) == {"A1"} and list(entry["rows"]["A1"]["per_seed"]) == ["2"]


def test_a_comparison_added_to_a_table_after_its_cells_landed_is_computed_without_retraining(tmp_path):
    """Table 5 gained ``srf_scratch - nearest_conv`` after cells of both rows were written: the campaign
    recomputes the stored comparisons from the rows at its start, and rewrites nothing when they agree."""
    from srfkit.campaign import plan, refresh_tables
    from srfkit.results import refresh_comparisons, update_cell

    res = tmp_path / "res"
    old_pairs = [("srf_scratch", "nearest"), ("nearest_conv", "nearest")]
    aps = {"nearest": (10.0, 11.0, 12.0), "srf_scratch": (12.0, 12.5, 14.5), "nearest_conv": (10.5, 11.0, 12.5)}
    for row, values in aps.items():
        for seed, ap in enumerate(values):
            update_cell("quick", "interpolation", "shapes", row, seed, {"bbox": {"AP": ap}}, {"fingerprint": "f"},
                        comparisons=old_pairs, root=res)  # fmt: skip
    path = res / "quick" / "interpolation.json"
    assert (
        "srf_scratch - nearest_conv"
        not in load_result("quick", "interpolation", res)["datasets"]["shapes"]["comparisons"]
    )
    cells = plan("quick", ["shapes"], ["interpolation"], {"interpolation": 3}, tmp_path / "r", res)
    assert ("srf_scratch", "nearest_conv") in cells[0].table.comparisons
    assert refresh_tables(cells) == [path]
    entry = load_result("quick", "interpolation", res)["datasets"]["shapes"]
    new = entry["comparisons"]["srf_scratch - nearest_conv"]["bbox"]
    assert new["diffs"] == [1.5, 1.5, 2.0] and new["n"] == 3
    assert entry["comparisons"]["srf_scratch - nearest"]["bbox"]["diffs"] == [2.0, 1.5, 2.5]  # kept, recomputed
    assert entry["rows"]["nearest"]["per_seed"]["2"] == {"bbox": {"AP": 12.0}}  # cells untouched
    stamp = path.stat().st_mtime_ns
    assert refresh_tables(cells) == [] and path.stat().st_mtime_ns == stamp  # up to date: not rewritten
    assert not refresh_comparisons("quick", "progressive", "shapes", [("A2", "A1")], res)  # no file: nothing


def test_a_mask_cell_landing_beside_box_only_rows_compares_each_pair_on_what_both_measured(tmp_path):
    """Table 3: a Mask R-CNN cell lands while RetinaNet rows (no masks) are already in the file."""
    from srfkit.results import update_cell

    box, both = {"bbox": {"AP": 1.0}}, {"bbox": {"AP": 2.0}, "segm": {"AP": 1.5}}
    pairs = [("retinanet/G", "retinanet/baseline"), ("mask_rcnn/G", "mask_rcnn/baseline")]
    for row, metrics in (("retinanet/baseline", box), ("retinanet/G", box), ("mask_rcnn/baseline", both)):
        update_cell("cpu", "cross_head", "shapes", row, 0, metrics, {"fingerprint": "f"}, pairs, root=tmp_path)
    update_cell("cpu", "cross_head", "shapes", "mask_rcnn/G", 0, {"bbox": {"AP": 4.0}, "segm": {"AP": 2.5}},
                {"fingerprint": "f"}, pairs, root=tmp_path)  # fmt: skip
    compared = load_result("cpu", "cross_head", tmp_path)["datasets"]["shapes"]["comparisons"]
    assert set(compared["retinanet/G - retinanet/baseline"]) == {"row", "baseline", "bbox"}
    assert compared["mask_rcnn/G - mask_rcnn/baseline"]["segm"]["diffs"] == [1.0]
    assert compared["mask_rcnn/G - mask_rcnn/baseline"]["bbox"]["diffs"] == [2.0]


def test_plateau_reads_the_first_budget_within_tolerance_of_the_best():
    from srfkit.results import plateau

    def row(*aps):
        return {"per_seed": {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}}

    entry = {"rows": {"nearest@250": row(4, 6), "nearest@1000": row(30, 32), "nearest@2000": row(40, 42),
                      "nearest@4000": row(42, 42), "srf@250": row(50, 50)}}  # fmt: skip
    p = plateau(entry)
    assert p["budgets"] == [250, 1000, 2000, 4000] and p["means"] == [5.0, 31.0, 41.0, 42.0]
    assert p["best"] == 42.0 and p["best_at"] == 4000 and p["first_within"] == 2000 and p["rising"] is False
    entry["rows"]["nearest@4000"] = row(42.5, 42.5)  # 1.5 AP over the last segment: within 2 of the best,
    p = plateau(entry)  # but still moving by more than half the tolerance, so no plateau shown yet
    assert p["first_within"] == 2000 and p["last_gain"] == 1.5 and p["rising"] is True
    entry["rows"]["nearest@4000"] = row(50, 50)
    assert plateau(entry)["rising"] is True and plateau(entry)["first_within"] == 4000
    entry["rows"]["nearest@4000"] = row(40, 40)  # a dip: the best stays at 2,000 steps
    assert plateau(entry)["best_at"] == 2000 and plateau(entry)["rising"] is False
    assert plateau({"rows": {}})["first_within"] is None
    # a seed measured at some budgets only (a campaign in progress) stays out of the means
    entry["rows"]["nearest@250"]["per_seed"]["2"] = {"bbox": {"AP": 100.0}}
    p = plateau(entry)
    assert p["seeds"] == [0, 1] and p["means"][0] == 5.0


def test_budget_reading_places_a_budget_on_the_curve():
    from srfkit.results import budget_reading

    def row(*aps):
        return {"per_seed": {str(s): {"bbox": {"AP": ap}} for s, ap in enumerate(aps)}}

    entry = {"rows": {"nearest@1000": row(30, 32), "nearest@2000": row(40, 42), "nearest@4000": row(42, 42)}}
    r = budget_reading(entry, 2000)
    assert r["state"] == "near plateau" and r["at_budget"] == 41.0 and r["slope"] == 0.5
    assert budget_reading(entry, 1000)["state"] == "below plateau"
    assert budget_reading(entry, 3000)["at_budget"] is None
    entry["rows"]["nearest@4000"] = row(60, 62)  # still rising: no budget is near a plateau
    r = budget_reading(entry, 4000)
    assert r["state"] == "below plateau" and r["slope"] == 10.0
    assert budget_reading({"rows": {}}, 2000)["state"] == "unknown"


def test_fingerprint_ignores_what_cannot_change_the_numbers():
    from srfkit.experiments import fingerprint
    from srfkit.profiles import get_profile

    cpu = get_profile("cpu")
    base = fingerprint(cpu, {"progress": False}, None, "progressive")
    assert fingerprint(cpu, {"progress": True, "keep_last": None}, None, "progressive") == base
    assert fingerprint(cpu.replace(seeds=(0,)), {}, None, "progressive") == base
    assert fingerprint(cpu, {"iters": 5}, None, "progressive") != base
    assert fingerprint(cpu.replace(image_size=96), {}, None, "progressive") != base
    # the learning curve ignores the other stages' budgets, which are set from it
    longer = cpu.replace(target=cpu.target.__class__(**{**cpu.target.__dict__, "iters": 3000}))
    assert fingerprint(longer, {}, None, "learning_curve") == fingerprint(cpu, {}, None, "learning_curve")
    assert fingerprint(longer, {}, None, "progressive") != base


def test_findings_read_the_stored_comparisons(tmp_path):
    from srfkit.profiles import get_profile
    from srfkit.results import FINDINGS, findings, invalidate_result, update_cell

    metrics = {"bbox": {"AP": 10.0}}
    for seed, (a1, a2) in enumerate([(10.0, 12.0), (11.0, 13.5), (12.0, 14.0)]):
        for row, ap in (("A1", a1), ("A2", a2)):
            update_cell("cpu", "progressive", "shapes", row, seed, {"bbox": {"AP": ap}}, {"fingerprint": "x"},
                        comparisons=[("A2", "A1")], root=tmp_path)  # fmt: skip
    update_cell("cpu", "interpolation", "shapes", "nearest", 0, metrics, {"fingerprint": "x"}, root=tmp_path)
    invalidate_result("cpu", "interpolation", "an old budget", root=tmp_path)
    got = findings("cpu", "shapes", root=tmp_path)
    assert [f["question"] for f in got] == [q for q, *_ in FINDINGS]
    first = got[0]
    assert first["comparison"] == "A2 - A1" and first["n"] == 3 and first["mean"] == pytest.approx(6.5 / 3)
    assert first["verdict"] == "gain" and 0 < first["low"] < first["mean"] < first["high"]
    assert all(f["verdict"] == "not measured yet" and f["n"] == 0 for f in got[1:])  # invalidated or absent
    top = max(get_profile("cpu").curve_budgets)  # nothing measured: the cpu curve's longest budget
    assert [f["comparison"] for f in got[-3:]] == [f"srf@{top} - nearest@{top}", f"srf_G@{top} - nearest@{top}",
                                                   f"srf_G@{top} - srf@{top}"]  # fmt: skip
    # the curve questions go to the longest budget compared with paired seeds (6,000: two; 8,000: one)
    pairs = [("srf@6000", "nearest@6000"), ("srf@8000", "nearest@8000")]
    cells = [(0, "nearest@6000", 80.0), (0, "srf@6000", 81.0), (1, "nearest@6000", 81.0), (1, "srf@6000", 82.5),
             (0, "nearest@8000", 82.0), (0, "srf@8000", 82.0)]  # fmt: skip
    for seed, row, ap in cells:
        update_cell("cpu", "learning_curve", "shapes", row, seed, {"bbox": {"AP": ap}}, {"fingerprint": "x"},
                    comparisons=pairs, root=tmp_path)  # fmt: skip
    srf = findings("cpu", "shapes", root=tmp_path)[-3]
    assert srf["comparison"] == "srf@6000 - nearest@6000" and srf["n"] == 2 and srf["mean"] == pytest.approx(1.25)


def test_campaign_commits_a_result_file_in_the_checkout_that_holds_it(tmp_path, monkeypatch):
    """``campaign --commit`` from another working tree (SRFKIT_RESULTS_DIR pointing at the main checkout)
    commits only that file, in the checkout it lives in."""
    import subprocess

    from srfkit.campaign import _git_commit

    repo, elsewhere = tmp_path / "main", tmp_path / "worktree"
    elsewhere.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    result = repo / "data" / "results" / "cpu" / "progressive.json"
    result.parent.mkdir(parents=True)
    (repo / "other.txt").write_text("not committed\n")
    result.write_text("{}\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t"), monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@t")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t"), monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    subprocess.run([*git, "-C", str(repo), "add", str(result)], check=True)
    _git_commit(result, "cpu results: progressive", tries=1)
    log = subprocess.run([*git, "-C", str(repo), "log", "--name-only", "--format=%s"], capture_output=True, text=True)
    assert log.stdout.split() == ["cpu", "results:", "progressive", "data/results/cpu/progressive.json"]
