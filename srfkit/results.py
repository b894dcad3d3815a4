"""Result files of real runs: ``data/results/<profile>/<experiment>.json``.

Only the experiment runner (``python -m srfkit experiments``) writes them; chapters read them. Each file
holds the metrics per seed, their mean and standard deviation, the profile, the git commit, the device
and the wall time, so a reader can tell which run produced every number in the book.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from .fileio import write_json
from .filelock import file_lock
from .paths import repo_root

__all__ = [
    "RESULTS_DIR",
    "mean_std",
    "provenance",
    "results_path",
    "write_result",
    "update_result",
    "load_result",
    "available_results",
    "invalidate_result",
    "valid_entries",
    "t_critical",
    "paired_difference",
    "chance_reading",
    "seeds_for_half_width",
    "aggregate",
    "update_cell",
    "merge_entry",
    "plateau",
    "budget_reading",
    "PAPER_EQUAL_AP",
    "paper_agreement",
    "unmeasured_paper_rows",
    "FINDINGS",
    "findings",
]

RESULTS_DIR = (repo_root() or Path.cwd()) / "data" / "results"  # outside a checkout: under the working directory


def results_path(profile: str, experiment: str, root: Path | None = None) -> Path:
    """Where the result file of ``experiment`` run in ``profile`` lives."""
    return Path(root or os.environ.get("SRFKIT_RESULTS_DIR", RESULTS_DIR)) / profile / f"{experiment}.json"


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value) of per-seed values.

    A NaN among them (COCO's "no such objects", e.g. AP_L on a dataset without large objects)
    makes both NaN.
    """
    values = [float(v) for v in values]
    if not values or any(math.isnan(v) for v in values):
        return {"mean": math.nan, "std": math.nan, "n": len(values)}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=RESULTS_DIR.parent.parent
        )
        # "-dirty" means the code differs from the commit; result files being (re)written do not count.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)data/results"],
            capture_output=True,
            text=True,
            cwd=RESULTS_DIR.parent.parent,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance() -> dict:
    """Who and what produced a result: git commit, device, versions, host, UTC time."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return {
        "git_commit": _git_commit(),
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_result(profile: str, experiment: str, payload: dict, root: Path | None = None) -> Path:
    """Write ``payload`` plus provenance atomically to the experiment's result file."""
    path = results_path(profile, experiment, root)
    document = {"experiment": experiment, "profile": profile, **payload, "provenance": provenance()}
    write_json(path, document)
    return path


def update_result(profile: str, experiment: str, dataset: str, entry: dict, root: Path | None = None) -> Path:
    """Replace one dataset's entry in the experiment's result file, keeping the other datasets.

    Processes that run the same experiment on different datasets at once (one per core, say) take
    turns: the read-merge-write holds an exclusive lock (POSIX; elsewhere no locking).
    """
    path = results_path(profile, experiment, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.parent / f".{path.stem}.lock"):
        previous = load_result(profile, experiment, root) or {}
        datasets = {**previous.get("datasets", {}), dataset: entry}
        return write_result(profile, experiment, {"datasets": datasets}, root)


def load_result(profile: str, experiment: str, root: Path | None = None) -> dict | None:
    """The result document, or ``None`` when that experiment has not been run in that profile."""
    path = results_path(profile, experiment, root)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid result file ({err})") from err


def available_results(profile: str, root: Path | None = None) -> list[str]:
    """Experiments with a result file in ``profile``."""
    folder = results_path(profile, "x", root).parent
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def invalidate_result(profile: str, experiment: str, reason: str, root: Path | None = None) -> Path:
    """Mark every dataset entry of a result file as invalid (a defect found after it was computed).

    The numbers stay in the file for the record; readers (:func:`valid_entries`, the book) show the
    reason instead of them. Re-running the experiment on a dataset replaces that dataset's entry,
    and with it the mark.
    """
    path = results_path(profile, experiment, root)
    with file_lock(path.parent / f".{path.stem}.lock"):
        document = load_result(profile, experiment, root)
        if document is None:
            raise FileNotFoundError(f"{path}: no such result file")
        stamp = {"reason": reason, "marked_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        datasets = {name: {**entry, "invalidated": stamp} for name, entry in document.get("datasets", {}).items()}
        return write_result(profile, experiment, {"datasets": datasets}, root)


def valid_entries(document: Mapping | None) -> tuple[dict, dict[str, str]]:
    """``({dataset: entry} of the valid entries, {dataset: reason} of the invalidated ones)``."""
    valid, invalid = {}, {}
    for name, entry in ((document or {}).get("datasets") or {}).items():
        if "invalidated" in entry:
            invalid[name] = entry["invalidated"]["reason"]
        else:
            valid[name] = entry
    return valid, invalid


# --------------------------------------------------------------------------------- paired statistics

# Two-sided 95% quantiles of Student's t with df = 1..30 degrees of freedom (standard tables).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_critical(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the 95% two-sided interval).

    Tabulated for df <= 30; beyond, the Cornish-Fisher expansion around the normal 1.95996
    (error < 0.001 there).
    """
    if df < 1:
        raise ValueError(f"t_critical needs df >= 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def paired_difference(rows: Mapping, row: str, baseline: str, iou: str = "bbox", metric: str = "AP") -> dict:
    """``row`` minus ``baseline`` seed by seed, with the mean and its 95% t-interval.

    Seeds are paired: seed s of every row shares data order and the seed-s baseline, so the
    per-seed differences carry far less noise than either row's spread.

    Returns:
        ``{"n", "seeds", "diffs", "mean", "sd", "half_width", "low", "high", "verdict"}``. ``verdict``
        comes from the interval alone: ``"gain"`` when it lies above 0, ``"loss"`` below 0,
        ``"no detectable difference (within +-h AP)"`` otherwise; ``"one seed"`` without an interval
        (n < 2) and ``"no objects"`` when a value is NaN (no such ground truth).
    """
    ours, base = rows[row]["per_seed"], rows[baseline]["per_seed"]
    seeds = sorted((s for s in ours if s in base), key=lambda s: int(s))
    diffs = [float(ours[s][iou][metric]) - float(base[s][iou][metric]) for s in seeds]
    out = {"n": len(diffs), "seeds": [int(s) for s in seeds], "diffs": diffs}
    if any(math.isnan(d) for d in diffs):
        return {**out, "mean": math.nan, "sd": math.nan, "half_width": math.nan, "low": math.nan,
                "high": math.nan, "verdict": "no objects"}  # fmt: skip
    if len(diffs) < 2:
        mean = diffs[0] if diffs else math.nan
        return {**out, "mean": mean, "sd": math.nan, "half_width": math.nan, "low": math.nan,
                "high": math.nan, "verdict": "one seed"}  # fmt: skip
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    h = t_critical(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    low, high = mean - h, mean + h
    verdict = "gain" if low > 0 else "loss" if high < 0 else f"no detectable difference (within +-{h:.1f} AP)"
    return {**out, "mean": mean, "sd": sd, "half_width": h, "low": low, "high": high, "verdict": verdict}


def seeds_for_half_width(sd: float, target: float, most: int = 200) -> int | None:
    """How many paired seeds give a 95% t-interval of half width ``target`` AP, if the per-seed
    differences keep the spread ``sd`` measured so far: the least ``n >= 2`` with
    ``t(n - 1) * sd / sqrt(n) <= target``. ``None`` when ``sd`` is not finite (fewer than two seeds)
    or when more than ``most`` seeds would be needed. A planning figure: ``sd`` from a few seeds is
    itself uncertain.
    """
    if target <= 0:
        raise ValueError(f"seeds_for_half_width needs a positive target, got {target}")
    if not math.isfinite(sd):
        return None
    for n in range(2, most + 1):
        if t_critical(n - 1) * sd / math.sqrt(n) <= target:
            return n
    return None


def chance_reading(comparisons: Mapping[str, Mapping], level: float = 0.95) -> dict:
    """How many verdicts a set of paired comparisons would show by chance alone.

    A 95% interval excludes zero in about one comparison in twenty where the two rows do not differ
    at all, so a page of many comparisons shows some "gain" or "loss" verdicts even without any
    effect. Comparisons that share seeds and rows are correlated: this is a guide, not a test.

    Args:
        comparisons: name -> :func:`paired_difference` output (one IoU type).
        level: the intervals' coverage.

    Returns:
        ``{"n", "gains", "losses", "expected"}``: the comparisons with an interval (two or more
        seeds), the names whose verdict is ``"gain"`` / ``"loss"`` (in the given order), and
        ``(1 - level) * n``, the verdicts expected with no effect anywhere.
    """
    with_interval = {k: c for k, c in comparisons.items() if c.get("n", 0) >= 2 and c.get("verdict") != "no objects"}
    return {
        "n": len(with_interval),
        "gains": [k for k, c in with_interval.items() if c["verdict"] == "gain"],
        "losses": [k for k, c in with_interval.items() if c["verdict"] == "loss"],
        "expected": (1 - level) * len(with_interval),
    }


def aggregate(per_seed: Mapping[str, dict]) -> dict:
    """Mean and std over seeds for every IoU type and metric of per-seed ``coco_evaluate`` outputs."""
    first = next(iter(per_seed.values()))
    return {
        iou: {k: mean_std([per_seed[s][iou][k] for s in per_seed]) for k in first[iou]}
        for iou in first
        if isinstance(first[iou], dict)
    }


def update_cell(
    profile: str,
    experiment: str,
    dataset: str,
    row: str,
    seed: int,
    metrics: dict,
    cell: dict,
    comparisons: list[tuple[str, str]] = (),
    config: dict | None = None,
    root: Path | None = None,
) -> Path:
    """Merge one finished (row, seed) cell into the experiment's result file, at once and atomically.

    The row's ``per_seed[seed]`` gets ``metrics`` and ``cells[seed]`` the cell's record (stage folder,
    steps, wall time, commit, UTC time, profile fingerprint); the row's ``summary`` (mean and std
    over its seeds) and every paired comparison ``(row, baseline)`` whose two rows exist are
    recomputed (:func:`paired_difference`, box and mask AP). Other rows, seeds and datasets are kept;
    an invalidated entry is started afresh, and seeds recorded under another settings fingerprint
    than this cell's (or none: files of before the campaign) are dropped, so a row never mixes two
    regimes (git history keeps them). Safe with several processes (file lock).
    """
    path = results_path(profile, experiment, root)
    with file_lock(path.parent / f".{path.stem}.lock"):
        document = load_result(profile, experiment, root) or {}
        datasets = dict(document.get("datasets", {}))
        entry = datasets.get(dataset, {})
        if "invalidated" in entry or "rows" not in entry:
            entry = {"rows": {}}
        rows = _drop_stale(entry["rows"], cell.get("fingerprint"))
        entry["rows"] = rows
        record = rows.setdefault(row, {"per_seed": {}, "cells": {}})
        record.setdefault("cells", {})
        record["per_seed"][str(seed)] = metrics
        record["cells"][str(seed)] = cell
        record["summary"] = aggregate(record["per_seed"])
        entry["comparisons"] = _paired_comparisons(rows, comparisons)
        entry["seeds"] = sorted({int(s) for r in rows.values() for s in r["per_seed"]})
        entry["config"] = config or entry.get("config", {})
        entry["wall_time_s"] = sum(c.get("wall_s", 0.0) for r in rows.values() for c in r["cells"].values())
        entry["provenance"] = provenance()
        datasets[dataset] = entry
        return write_result(profile, experiment, {"datasets": datasets}, root)


def _paired_comparisons(rows: Mapping, comparisons: Sequence[tuple[str, str]]) -> dict:
    """``{"row - baseline": {"row", "baseline", "bbox", "segm"}}`` for each pair whose two rows exist."""
    return {
        f"{a} - {b}": {
            "row": a,
            "baseline": b,
            **{iou: paired_difference(rows, a, b, iou) for iou in ("bbox", "segm") if _measured(rows, (a, b), iou)},
        }
        for a, b in comparisons
        if a in rows and b in rows
    }


def refresh_comparisons(
    profile: str, experiment: str, dataset: str, comparisons: Sequence[tuple[str, str]], root: Path | None = None
) -> bool:
    """Recompute the stored paired comparisons of one dataset's entry from its rows, for ``comparisons``.

    For a table whose list of comparisons changed after its cells were written (a new control pair, say):
    nothing is retrained, and the file is rewritten only when the comparisons differ. Returns whether it
    was. A missing file, entry or an invalidated entry is left alone (``False``).
    """
    path = results_path(profile, experiment, root)
    if not path.is_file():
        return False
    with file_lock(path.parent / f".{path.stem}.lock"):
        document = load_result(profile, experiment, root) or {}
        datasets = dict(document.get("datasets", {}))
        entry = datasets.get(dataset)
        if not entry or "invalidated" in entry or "rows" not in entry:
            return False
        fresh = _paired_comparisons(entry["rows"], comparisons)
        if fresh == entry.get("comparisons"):
            return False
        datasets[dataset] = {**entry, "comparisons": fresh}
        write_result(profile, experiment, {"datasets": datasets}, root)
        return True


def merge_entry(profile: str, experiment: str, dataset: str, fields: dict, root: Path | None = None) -> Path:
    """Add (or replace) top-level ``fields`` of one dataset's entry, keeping its rows (file lock)."""
    path = results_path(profile, experiment, root)
    with file_lock(path.parent / f".{path.stem}.lock"):
        document = load_result(profile, experiment, root) or {}
        datasets = dict(document.get("datasets", {}))
        datasets[dataset] = {**datasets.get(dataset, {}), **fields}
        return write_result(profile, experiment, {"datasets": datasets}, root)


def _measured(rows: Mapping, names: Sequence[str], iou: str) -> bool:
    """Whether every seed of each named row has ``iou`` metrics (a RetinaNet row has no ``segm``)."""
    return all(iou in metrics for name in names for metrics in rows[name]["per_seed"].values())


def _drop_stale(rows: dict, fingerprint: str | None) -> dict:
    """``rows`` without the seeds whose cell record has another fingerprint (rows left empty go too)."""
    if fingerprint is None:
        return rows
    kept = {}
    for name, record in rows.items():
        cells = record.get("cells") or {}
        seeds = [s for s in record.get("per_seed", {}) if (cells.get(s) or {}).get("fingerprint") == fingerprint]
        if seeds:
            kept[name] = {
                **record,
                "per_seed": {s: record["per_seed"][s] for s in seeds},
                "cells": {s: cells[s] for s in seeds},
            }
            kept[name]["summary"] = aggregate(kept[name]["per_seed"])
    return kept


def plateau(entry: Mapping, row_prefix: str = "nearest", tolerance: float = 2.0, iou: str = "bbox") -> dict:
    """Where a learning curve of a result entry (rows ``<prefix>@<steps>``) reaches its plateau.

    Returns ``{"budgets", "means", "seeds", "best", "best_at", "first_within", "last_gain", "rising"}``:
    the measured budgets and the mean APs over ``seeds``, the seeds measured at every budget (so that a
    seed that has reached only some budgets does not bend the curve; all seeds of a budget when no seed
    is common), the best mean and its budget, the smallest budget whose mean is within ``tolerance``
    AP of the best (``None`` without rows), and the mean AP gained over the last segment (``None``
    with one budget). The best is the best *measured so far*: a curve still rising at its last budget
    has not shown its plateau, which ``"rising"`` says. It is true when the last segment gained more
    than half the ``tolerance``: a curve still moving by that much may well end more than
    ``tolerance`` above its best so far (the cpu nearest curve gained 1.7 AP from 6,000 to 8,000
    steps, where "within 2 AP of the best" would have called 6,000 steps a plateau).
    """
    per_budget = {}
    for name, record in entry.get("rows", {}).items():
        prefix, _, steps = name.partition("@")
        if prefix == row_prefix and record.get("per_seed"):
            per_budget[int(steps)] = record["per_seed"]
    if not per_budget:
        return {"budgets": [], "means": [], "seeds": [], "best": None, "best_at": None, "first_within": None,
                "last_gain": None, "rising": None}  # fmt: skip
    common = sorted(set.intersection(*(set(v) for v in per_budget.values())), key=int)
    points = []
    for steps, per_seed in sorted(per_budget.items()):
        values = [float(per_seed[s][iou]["AP"]) for s in (common or per_seed)]
        points.append((steps, statistics.fmean(values)))
    best = max(m for _, m in points)
    first = next(b for b, m in points if m >= best - tolerance)
    last_gain = points[-1][1] - points[-2][1] if len(points) > 1 else None
    return {
        "budgets": [b for b, _ in points],
        "means": [m for _, m in points],
        "seeds": [int(s) for s in common],
        "best": best,
        "best_at": next(b for b, m in points if m == best),
        "first_within": first,
        "last_gain": last_gain,
        "rising": last_gain is not None and last_gain > tolerance / 2,
    }


def budget_reading(entry: Mapping, budget: int, row_prefix: str = "nearest", tolerance: float = 2.0) -> dict:
    """Where a training budget sits on a learning curve of a result entry (see :func:`plateau`).

    Returns :func:`plateau`'s fields plus ``budget``, ``at_budget`` (the mean AP measured at that
    budget, ``None`` when the curve has no such point), ``slope`` (AP gained per 1,000 steps over the
    curve's last segment, ``None`` with fewer than two points) and ``state``: ``"near plateau"`` when
    the curve has stopped rising and the budget is at or past its first budget within ``tolerance``,
    ``"below plateau"`` when the curve is still rising past the budget or the budget comes before
    that first budget, ``"unknown"`` without a curve.
    """
    p = plateau(entry, row_prefix, tolerance)
    points = dict(zip(p["budgets"], p["means"]))
    slope = None
    if len(p["budgets"]) > 1:
        (b0, m0), (b1, m1) = list(points.items())[-2:]
        slope = 1000 * (m1 - m0) / (b1 - b0)
    if p["best"] is None:
        state = "unknown"
    elif p["rising"] or budget < p["first_within"]:
        state = "below plateau"
    else:
        state = "near plateau"
    return {**p, "budget": budget, "at_budget": points.get(budget), "slope": slope, "state": state}


# Differences between two of the paper's rows up to this size (box AP) are read as "equal in the paper":
# its tables print one decimal (Table 5's bilinear and bicubic sit 0.0 and -0.1 from nearest).
PAPER_EQUAL_AP = 0.2


def paper_agreement(
    compared: Mapping[str, Mapping],
    paper_rows: Mapping[str, Sequence],
    columns: Sequence[str],
    as_paper: Mapping[str, str] | None = None,
    column: str = "AP box",
) -> dict[str, dict]:
    """What the paper says of each paired comparison ``"row - baseline"``, and whether ours agrees.

    Args:
        compared: ``{"row - baseline": paired_difference(...)}`` (box AP), as the result files store them.
        paper_rows: the paper table's rows (:data:`srfkit.reference.PAPER_TABLES` ``[...]["rows"]``).
        columns: that table's column names; ``column`` picks the value compared.
        as_paper: our row -> the paper row it plays (default: the same name where the paper has it),
            e.g. ``{"srf_M": "srf", "A1_matched": "A1"}``: a budget-matched baseline plays the paper's
            baseline, a stricter test of the same claim.

    Returns:
        ``{comparison: {"paper": "A - B" or None, "paper_diff": float or None, "ours": mean, "low",
        "high", "n", "verdict": ours, "status": ...}}``. ``status`` follows from our interval's verdict alone:
        ``"reproduced"`` (the paper's sign, or no difference where the paper's rows are equal within
        :data:`PAPER_EQUAL_AP`), ``"opposite"`` (a gain where the paper has a loss, or the reverse),
        ``"differs"`` (a gain or loss where the paper's rows are equal), ``"excluded"`` (no detectable
        difference, and the paper's difference lies outside our interval: an effect of the paper's size
        did not appear at this scale), ``"undecided"`` (no detectable difference, with the paper's
        difference inside our interval: it cannot tell at this scale), ``"too few seeds"``
        (one seed, or no objects) and ``"not in the paper"`` (a control: no paper row for one side).
    """
    index = list(columns).index(column)
    as_paper = dict(as_paper or {})
    out = {}
    for name, c in compared.items():
        row, _, base = name.partition(" - ")
        p_row, p_base = (as_paper.get(r, r) for r in (row, base))
        verdict = c["verdict"]
        entry = {"paper": None, "paper_diff": None, "ours": c["mean"], "low": c.get("low", math.nan),
                 "high": c.get("high", math.nan), "n": c.get("n", 0), "verdict": verdict}  # fmt: skip
        if p_row not in paper_rows or p_base not in paper_rows or p_row == p_base:
            out[name] = {**entry, "status": "not in the paper"}
            continue
        diff = float(paper_rows[p_row][index]) - float(paper_rows[p_base][index])
        entry.update(paper=f"{p_row} - {p_base}", paper_diff=diff)
        paper_sign = 0 if abs(diff) <= PAPER_EQUAL_AP else (1 if diff > 0 else -1)
        ours_sign = {"gain": 1, "loss": -1}.get(verdict, 0)
        if verdict in ("one seed", "no objects"):
            status = "too few seeds"
        elif ours_sign == paper_sign:
            status = "reproduced"
        elif paper_sign == 0:
            status = "differs"
        elif ours_sign == 0:
            status = "undecided" if entry["low"] <= diff <= entry["high"] else "excluded"
        else:
            status = "opposite"
        out[name] = {**entry, "status": status}
    return out


def unmeasured_paper_rows(agreement: Mapping[str, Mapping], paper_rows: Mapping, baselines: Sequence[str]) -> list[str]:
    """The paper's rows (other than ``baselines``) that no comparison of ``agreement`` measures yet."""
    measured = {a["paper"].partition(" - ")[0] for a in agreement.values() if a.get("paper")}
    return [r for r in paper_rows if r not in measured and r not in baselines]


# The questions the book answers, in the order a reader asks them: (question, experiment, comparison).
# ``{top}`` is the learning curve's longest budget measured with paired seeds (see :func:`findings`). Each
# is read from the paired comparison its result file stores (verdict from the 95% t-interval alone).
FINDINGS: tuple[tuple[str, str, str], ...] = (
    ("Does G from stage 1, reused in the detector, beat nearest at the same budget?", "progressive", "A2 - A1"),
    ("Does a learned upsampler without the GAN stages (G from scratch) beat nearest?", "interpolation",
     "srf_scratch - nearest"),
    ("Do the GAN stages add anything over that learned upsampler?", "interpolation", "srf_G - srf_scratch"),
    ("Does capacity alone (nearest plus a block as large as G) beat nearest?", "interpolation",
     "nearest_conv - nearest"),
    ("Does G from scratch beat that same capacity after nearest (is it the learned upsampling)?", "interpolation",
     "srf_scratch - nearest_conv"),
    ("Does the full method (M reused) beat nearest trained as long?", "progressive", "A5 - A1_matched"),
    ("What does G add inside the method (against the same method with nearest)?", "progressive",
     "A5 - nearest_M"),
    ("At the curve's longest budget: does G from scratch still beat nearest (a higher plateau, not only faster "
     "learning)?", "learning_curve", "srf@{top} - nearest@{top}"),
    ("At the curve's longest budget: does the stage-1 G reused (A2 trained longer) still beat nearest?",
     "learning_curve", "srf_G@{top} - nearest@{top}"),
    ("At the curve's longest budget: do the GAN stages still add anything over G from scratch?", "learning_curve",
     "srf_G@{top} - srf@{top}"),
)  # fmt: skip


def _longest_compared(entry: Mapping, template: str, budgets: Sequence[int], iou: str = "bbox") -> str:
    """``template`` (a comparison name, perhaps with ``{top}``) at the longest of ``budgets`` where ``entry``
    stores it with two or more paired seeds, else with one, else at the longest budget (not measured)."""
    if "{top}" not in template:
        return template
    stored = entry.get("comparisons") or {}
    names = [template.format(top=b) for b in sorted(budgets, reverse=True)]
    seeds = {n: ((stored.get(n) or {}).get(iou) or {}).get("n") or 0 for n in names}
    for least in (2, 1):
        for name in names:
            if seeds[name] >= least:
                return name
    return names[0] if names else template.format(top=0)


def findings(profile: str = "cpu", dataset: str = "shapes", root: Path | None = None, iou: str = "bbox") -> list[dict]:
    """Each of :data:`FINDINGS` with what the result files say: ``{"question", "experiment", "comparison",
    "n", "mean", "low", "high", "verdict"}``; ``verdict`` is ``"not measured yet"`` (``n`` 0) when the
    file, a valid entry for ``dataset`` or the comparison is missing."""
    from .profiles import get_profile

    budgets = get_profile(profile).curve_budgets
    entries = {e: valid_entries(load_result(profile, e, root))[0].get(dataset) or {} for _, e, _ in FINDINGS}
    out = []
    for question, experiment, comparison in FINDINGS:
        entry = entries[experiment]
        comparison = _longest_compared(entry, comparison, budgets, iou)
        c = ((entry.get("comparisons") or {}).get(comparison) or {}).get(iou)
        row = {"question": question, "experiment": experiment, "comparison": comparison}
        if not c:
            out.append({**row, "n": 0, "mean": math.nan, "low": math.nan, "high": math.nan,
                        "verdict": "not measured yet"})  # fmt: skip
            continue
        out.append({**row, **{k: c.get(k, math.nan) for k in ("n", "mean", "low", "high")}, "verdict": c["verdict"]})
    return out
