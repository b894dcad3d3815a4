"""What the book's chapters share: the profile, the run folder, metrics logs, plots and tables.

Chapters run in several places (``jupyter-book build`` executes them in ``book/``, nbval in
``_build/nbval/``, a reader's JupyterLab anywhere), so nothing here depends on the working directory:

* the profile comes from ``$SRFKIT_PROFILE`` (default ``quick``);
* trained stages live in ``$SRFKIT_RUNS_DIR/<profile>/<dataset>/<stage>`` (default: ``runs/`` at the
  repository root), one folder per profile and dataset shared by every chapter, so a book build
  trains each stage once (the trainers skip a finished stage).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "profile_name",
    "repo_root",
    "runs_root",
    "run_dir",
    "profile_note",
    "read_metrics",
    "plot_metrics",
    "html_table",
    "fmt",
    "result_rows",
    "result_source",
    "comparisons",
    "paired_rows",
    "paired_table",
    "forest_plot",
    "scale_note",
    "val_objects",
    "curve_figure",
    "curve_means_rows",
    "paper_vs_ours",
    "plot_paper_vs_ours",
    "fidelity_gains",
    "fidelity_rows",
    "provenance_table",
    "agreement_table",
    "table_reading",
    "regime_sentence",
]


def profile_name(default: str = "quick") -> str:
    """The profile the book runs in: ``$SRFKIT_PROFILE`` or ``default``."""
    return os.environ.get("SRFKIT_PROFILE", default)


def repo_root() -> Path:
    """The srfkit checkout (where ``pyproject.toml`` lives), else the working directory."""
    from ..paths import repo_root as checkout

    return checkout() or Path.cwd()


def runs_root() -> Path:
    """``$SRFKIT_RUNS_DIR`` or ``<repo>/runs``."""
    env = os.environ.get("SRFKIT_RUNS_DIR")
    return Path(env) if env else repo_root() / "runs"


def run_dir(dataset: str = "shapes", profile: str | None = None) -> Path:
    """The shared run folder of one profile and dataset: ``<runs_root>/<profile>/<dataset>``."""
    return runs_root() / (profile or profile_name()) / dataset


def profile_note(profile: str | None = None):
    """A Markdown note for the top of a chapter saying what the profile's numbers are worth."""
    from IPython.display import Markdown

    profile = profile or profile_name()
    if profile == "quick":
        text = (
            f"**Profile `{profile}`.** This page was executed with the *quick* profile: tiny images, tiny "
            "networks and a handful of training steps, so that every chapter runs in minutes on two CPU "
            "cores. **Its numbers mean nothing**: they only show that the code runs end to end. Set "
            "`SRFKIT_PROFILE=cpu` (real results on a CPU) or `paper` (a GPU box with COCO) to run it for real."
        )
    else:
        text = f"**Profile `{profile}`.** The live cells on this page ran with the `{profile}` profile."
    return Markdown(text)


def read_metrics(out_dir: str | Path) -> dict[str, np.ndarray]:
    """The JSON-lines metrics log of a stage folder as columns ``{name: (steps,) array}``.

    Keys missing on some lines are NaN there. Raises ``FileNotFoundError`` naming the file.
    """
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics log (has this stage been trained?)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not a JSON line ({err})") from err
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and isinstance(row[k], (int, float))]
    return {k: np.array([float(r.get(k, math.nan)) for r in rows]) for k in keys}


def plot_metrics(
    out_dir: str | Path,
    keys: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    logy: bool = False,
) -> Figure:
    """Loss curves of a stage folder: one line per key, against the step."""
    metrics = read_metrics(out_dir)
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise KeyError(f"{out_dir}: metrics.jsonl has no {missing}; it has {sorted(metrics)}")
    if ax is None:
        fig = Figure(figsize=(5.5, 3.2), layout="constrained")
        ax = fig.subplots()
    else:
        fig = ax.figure
    steps = metrics.get("step", np.arange(1, len(next(iter(metrics.values()))) + 1))
    for key in keys:
        ax.plot(steps, metrics[key], marker="o", markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(title or Path(out_dir).name, fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def fmt(value, digits: int = 1) -> str:
    """A table cell: numbers with ``digits`` decimals, ``{"mean", "std"}`` as ``mean ± std``, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, Mapping) and "mean" in value:
        mean, std = value["mean"], value.get("std")
        if std is None or value.get("n", 2) < 2:
            return fmt(mean, digits)
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


_TABLE_STYLE = (
    "<style>.srfkit-table{border-collapse:collapse;margin:0.4em 0 1em 0;font-size:0.9em}"
    ".srfkit-table th,.srfkit-table td{padding:0.15em 0.6em;border-bottom:1px solid #ddd;text-align:left}"
    ".srfkit-table caption{caption-side:top;font-weight:600;padding-bottom:0.3em}</style>"
)


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence],
    caption: str | None = None,
    digits: int = 1,
    groups: Sequence[tuple[str, int]] | None = None,
):
    """An HTML table (IPython ``HTML``) from rows of cells; ``groups`` adds a spanning header row
    of ``(label, number of columns)``, e.g. ``[("", 1), ("paper (COCO)", 2), ("ours", 2)]``."""
    from IPython.display import HTML

    # Columns that start a group get a rule on their left, so "paper" and "ours" read apart.
    starts, col = set(), 0
    for _, n in groups or []:
        if col:
            starts.add(col)
        col += n
    rule = " style='border-left:2px solid #888'"

    def cells(tag: str, values, text) -> str:
        return "".join(f"<{tag}{rule if j in starts else ''}>{text(v)}</{tag}>" for j, v in enumerate(values))

    parts = [_TABLE_STYLE, "<table class='srfkit-table'>"]
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    if groups:
        row, col = [], 0
        for label, n in groups:
            style = " style='text-align:center;border-left:2px solid #888'" if col else " style='text-align:center'"
            row.append(f"<th colspan='{n}'{style}>{html.escape(label)}</th>")
            col += n
        parts.append("<tr>" + "".join(row) + "</tr>")
    parts.append("<tr>" + cells("th", header, lambda h: html.escape(str(h))) + "</tr>")
    for r in rows:
        parts.append("<tr>" + cells("td", r, lambda c: html.escape(fmt(c, digits))) + "</tr>")
    parts.append("</table>")
    return HTML("".join(parts))


# --------------------------------------------------------------------------- result files (runner)


def _summary_cell(row: Mapping, iou: str, metric: str = "AP"):
    summary = row.get("summary", {}).get(iou)
    return None if summary is None or metric not in summary else summary[metric]


def result_rows(doc: Mapping, metric: str = "AP") -> dict[str, list[list]]:
    """``{dataset: [[row name, box <metric>, mask <metric>], ...]}`` from a runner result document.

    Cells are ``{"mean", "std", "n"}`` dicts (``fmt`` prints them as ``mean ± std``) or ``None``.
    """
    out = {}
    for dataset, entry in doc.get("datasets", {}).items():
        rows = entry.get("rows", {})
        out[dataset] = [
            [name, _summary_cell(r, "bbox", metric), _summary_cell(r, "segm", metric)] for name, r in rows.items()
        ]
    return out


def result_source(doc: Mapping, path: str | Path | None = None, writer: str | None = None) -> str:
    """One Markdown sentence saying which run made a result file (commit, device, seeds, time).

    ``path`` is where the file was read from (default: ``data/results/<profile>/<experiment>.json``);
    ``writer`` the command that wrote it (default: srfkit's experiment runner).
    """
    if path is None:
        path = f"data/results/{doc.get('profile', '?')}/{doc.get('experiment', '?')}.json"
    writer = writer or "srfkit's experiment runner (`python -m srfkit campaign` / `experiments`)"
    prov = doc.get("provenance", {})
    parts = []
    for dataset, entry in doc.get("datasets", {}).items():
        seeds = entry.get("seeds", [])
        wall = entry.get("wall_time_s")
        took = "" if not wall else f", {wall:.0f} s" if wall < 120 else f", {wall / 60:.0f} min"
        parts.append(f"`{dataset}`: seeds {seeds}{took}")
    runs = f" ({'; '.join(parts)})" if parts else ""
    return (
        f"*Source: `{path}`, written by {writer} at commit "
        f"`{prov.get('git_commit', '?')}` on {prov.get('device', '?')}, "
        f"finished {prov.get('finished_utc', '?')}{runs}.*"
    )


def comparisons(
    doc: Mapping, dataset: str, baseline_of: Callable[[str], str | None] | None = None, iou: str = "bbox"
) -> dict[str, dict]:
    """Paired comparisons of a result entry: ``{"row - baseline": paired_difference(...)}``.

    The runner stores them (``entry["comparisons"]``); for a file without them, ``baseline_of(row)``
    names each row's baseline (rows it maps to ``None``, to themselves or to a missing row are left
    out) and the differences are computed here with :func:`srfkit.results.paired_difference`.
    """
    from ..results import paired_difference

    entry = doc.get("datasets", {}).get(dataset, {})
    rows = entry.get("rows", {})
    stored = entry.get("comparisons")
    if stored:
        return {name: c[iou] for name, c in stored.items() if iou in c}
    out = {}
    for name in rows:
        base = baseline_of(name) if baseline_of else None
        if base is None or base == name or base not in rows:
            continue
        if iou not in next(iter(rows[name]["per_seed"].values()), {}):
            continue
        out[f"{name} - {base}"] = paired_difference(rows, name, base, iou=iou)
    return out


def _interval(c: Mapping) -> str:
    return "-" if not math.isfinite(c.get("low", math.nan)) else f"{c['low']:+.2f} to {c['high']:+.2f}"


def paired_rows(compared: Mapping[str, Mapping]) -> list[list]:
    """Rows ``[comparison, seeds, mean difference, 95% interval, verdict]`` of :func:`comparisons`."""
    return [[name, c["n"], c["mean"], _interval(c), c["verdict"]] for name, c in compared.items()]


def paired_table(compared: Mapping[str, Mapping], caption: str = "", iou: str = "bbox"):
    """:func:`paired_rows` as an HTML table (AP points; verdicts from the interval alone)."""
    kind = {"bbox": "box", "segm": "mask"}[iou]
    return html_table(
        ["comparison (row - baseline)", "paired seeds", f"mean {kind} AP difference", "95% t-interval", "verdict"],
        paired_rows(compared),
        caption=caption,
        digits=2,
    )


def forest_plot(compared: Mapping[str, Mapping], title: str = "", iou: str = "bbox") -> Figure:
    """One row per comparison: the mean paired difference and its 95% t-interval, a line at 0.

    Comparisons with one seed show the point alone (no interval); NaN ones are left out.
    """
    items = [(name, c) for name, c in compared.items() if math.isfinite(c.get("mean", math.nan))]
    fig = Figure(figsize=(7.5, 0.45 * max(len(items), 1) + 1.0), layout="constrained")
    ax = fig.subplots()
    for y, (_, c) in enumerate(reversed(items)):
        color = {"gain": "tab:green", "loss": "tab:red"}.get(c["verdict"], "0.35")
        if math.isfinite(c.get("low", math.nan)):
            ax.errorbar(c["mean"], y, xerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]], fmt="o",
                        color=color, capsize=3)  # fmt: skip
        else:
            ax.plot(c["mean"], y, "o", mfc="white", color=color)
    ax.axvline(0, color="0.5", lw=0.8)
    ax.set_yticks(range(len(items)), [f"{n} (n={c['n']})" for n, c in reversed(items)], fontsize=8)
    ax.set_xlabel(f"{'box' if iou == 'bbox' else 'mask'} AP difference, paired by seed (mean, 95% t-interval)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "paired differences (green: gain, red: loss, grey: no detectable difference)", fontsize=9)
    return fig


def scale_note(doc: Mapping, dataset: str, baseline: str, steps: int | None = None) -> str:
    """One Markdown line with the scale behind a table: profile, steps, the baseline's AP, objects.

    ``steps``: optimiser steps of the baseline (default: the guide schedule of the file's profile).
    The validation object count is the one the result file records, else it is counted on the
    dataset build of that profile when it is built here.
    """
    entry = doc.get("datasets", {}).get(dataset, {})
    profile = doc.get("profile", "?")
    config = entry.get("config", {}).get("profile") or {}
    steps = steps or (config.get("guide") or {}).get("iters")
    base = entry.get("rows", {}).get(baseline, {}).get("summary", {}).get("bbox", {}).get("AP")
    ap = f"{base['mean']:.1f} ± {base['std']:.1f} box AP over {base['n']} seeds" if base else "not in the file"
    objects = entry.get("config", {}).get("val_objects")
    objects = val_objects(dataset, profile) if objects is None else objects
    counted = f"{objects:,} validation objects" if objects is not None else "validation objects not counted here"
    return (
        f"*Scale: `{profile}` profile, `{dataset}`, baseline `{baseline}` trained {steps or '?'} steps: "
        f"{ap}; {counted}.*"
    )


def val_objects(dataset: str, profile: str) -> int | None:
    """Non-crowd annotations of a shipped dataset's validation split, or ``None`` when it is not built."""
    from ..data import is_built, load

    try:
        if not is_built(dataset, profile):
            return None
        return sum(not a.get("iscrowd", 0) for a in load(dataset, "val", profile, build=False).coco.anns.values())
    except (ValueError, FileNotFoundError):
        return None


def curve_figure(
    doc: Mapping, dataset: str, iou: str = "bbox", reference: Mapping | None = None, reference_label: str = ""
) -> Figure:
    """The learning curve: AP against training steps per row (each seed a faint line, the mean bold),
    and each paired comparison (``srf - nearest``, ``srf_G - nearest``, ``srf_G - srf``) with its 95%
    t-interval per budget (hollow: fewer than two seeds).

    ``reference``: another learning-curve document (for example one archived under earlier settings)
    whose mean curve of each row is drawn dashed in the row's colour, labelled ``reference_label``.
    """
    from ..results import plateau

    entry = doc["datasets"][dataset]
    curves: dict[str, dict[int, dict]] = {}
    for row, record in entry["rows"].items():
        name, _, steps = row.partition("@")
        curves.setdefault(name, {})[int(steps)] = record["per_seed"]
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax, dx = fig.subplots(1, 2)
    for k, (name, by_steps) in enumerate(curves.items()):
        steps = sorted(by_steps)
        seeds = sorted({s for st in steps for s in by_steps[st]}, key=int)
        color = f"C{k}"
        for s in seeds:
            pts = [(st, by_steps[st][s][iou]["AP"]) for st in steps if s in by_steps[st]]
            ax.plot(*zip(*pts), color=color, alpha=0.35, lw=1, marker=".")
        p = plateau(entry, name, iou=iou)  # the mean over the seeds measured at every budget
        label = f"{name} (mean of the {len(p['seeds'])} seeds at every budget)" if p["seeds"] else f"{name} (mean)"
        ax.plot(p["budgets"], p["means"], color=color, lw=2.2, marker="o", label=label)
        old = plateau((reference or {}).get("datasets", {}).get(dataset, {}), name, iou=iou)
        if old["budgets"]:
            ax.plot(old["budgets"], old["means"], color=color, lw=1.4, ls="--", label=f"{name}, {reference_label}")
    ax.set_xlabel("optimiser steps (constant learning rate after warm-up)")
    ax.set_ylabel(f"{'box' if iou == 'bbox' else 'mask'} AP")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    # right: each paired comparison ("srf - nearest", ...) at every budget, in the colour of its row
    pairs: dict[str, list[tuple[int, dict]]] = {}
    for n, c in comparisons(doc, dataset, iou=iou).items():
        a, b = (part.partition("@") for part in n.split(" - "))
        pairs.setdefault(f"{a[0]} - {b[0]}", []).append((int(a[2]), c))
    names = list(curves)
    top = max((st for by in curves.values() for st in by), default=1)
    for j, (pair, pts) in enumerate(pairs.items()):
        color = f"C{names.index(pair.split(' - ')[0])}" if pair.split(" - ")[0] in names else f"C{j}"
        shift = (j - (len(pairs) - 1) / 2) * 0.012 * top  # side by side at a shared budget
        style = "o" if pair.endswith(" - nearest") else "s"
        for k, (st, c) in enumerate(sorted(pts, key=lambda t: t[0])):
            label = pair if k == 0 else None
            if math.isfinite(c.get("low", math.nan)):
                dx.errorbar(st + shift, c["mean"], yerr=[[c["mean"] - c["low"]], [c["high"] - c["mean"]]], fmt=style,
                            color=color, capsize=3, label=label)  # fmt: skip
            elif math.isfinite(c.get("mean", math.nan)):
                dx.plot(st + shift, c["mean"], style, mfc="white", color=color, label=label)
    dx.axhline(0, color="0.5", lw=0.8)
    dx.set_xlabel("optimiser steps")
    dx.set_ylabel("paired difference by seed, AP (95% t-interval)")
    if pairs:
        dx.legend(fontsize=8)
    dx.grid(alpha=0.3)
    fig.suptitle(f"{doc.get('profile', '?')} profile, {dataset}: learning curve", fontsize=9)
    return fig


def curve_means_rows(docs: Mapping[str, Mapping | None], dataset: str, row_prefix: str = "nearest",
                     iou: str = "bbox") -> list[list]:  # fmt: skip
    """One row per budget: ``[steps, cell of docs[0], cell of docs[1], ...]``, each cell the mean AP of a
    learning-curve document's ``row_prefix`` chain over its seeds measured at every budget
    (:func:`srfkit.results.plateau`) with the seed count, ``"48.1 (n=2)"``; ``None`` where a document
    lacks that budget (or is ``None``). Compares curves run under different settings, budget by budget."""
    from ..results import plateau

    curves = []
    for doc in docs.values():
        p = plateau(((doc or {}).get("datasets") or {}).get(dataset, {}), row_prefix, iou=iou)
        curves.append({b: f"{m:.1f} (n={len(p['seeds'])})" for b, m in zip(p["budgets"], p["means"])})
    budgets = sorted({b for c in curves for b in c})
    return [[b, *(c.get(b) for c in curves)] for b in budgets]


def paper_vs_ours(
    table_key: str,
    doc: Mapping | None,
    dataset: str,
    row_map: Mapping[str, str] | None = None,
    label: str | None = None,
    digits: int = 1,
):
    """A paper table in its own layout, with our box and mask AP (mean ± std over seeds) beside it.

    Args:
        table_key: a key of :data:`srfkit.reference.PAPER_TABLES`.
        doc: our result document (from :func:`srfkit.results.load_result`), or ``None``.
        dataset: which dataset entry of ``doc`` to show.
        row_map: paper row key -> our row key (default: the same key).
        label: header over our columns (default ``ours (<profile>, <dataset>)``).
    """
    from ..reference import paper_table

    table = paper_table(table_key)
    columns = list(table["columns"])
    first_numeric = next(i for i, c in enumerate(columns) if c.startswith("AP"))
    ours_rows = {}
    if doc is not None:
        ours_rows = doc.get("datasets", {}).get(dataset, {}).get("rows", {})
    label = label or f"ours ({doc.get('profile', '?') if doc else '-'}, {dataset})"
    rows = []
    for key, values in table["rows"].items():
        ours = ours_rows.get((row_map or {}).get(key, key))
        box = _summary_cell(ours, "bbox") if ours else None
        mask = _summary_cell(ours, "segm") if ours else None
        rows.append([key, *values, box, mask])
    header = ["", *columns, "AP box", "AP mask"]
    groups = [("", 1 + first_numeric), ("paper (COCO val2017, quoted)", len(columns) - first_numeric), (label, 2)]
    return html_table(header, rows, caption=table["caption"], digits=digits, groups=groups)


def plot_paper_vs_ours(
    table_key: str,
    doc: Mapping | None,
    dataset: str,
    row_map: Mapping[str, str] | None = None,
    metric_column: str = "AP box",
) -> Figure:
    """Two bar panels: the paper's quoted ``metric_column`` per row, and our box AP (mean ± std)."""
    from ..reference import paper_table

    table = paper_table(table_key)
    col = table["columns"].index(metric_column)
    keys = list(table["rows"])
    paper = [table["rows"][k][col] for k in keys]
    ours_rows = (doc or {}).get("datasets", {}).get(dataset, {}).get("rows", {})
    means, stds = [], []
    for k in keys:
        cell = _summary_cell(ours_rows.get((row_map or {}).get(k, k), {}), "bbox")
        means.append(math.nan if cell is None else cell["mean"])
        stds.append(0.0 if cell is None else cell.get("std", 0.0))
    fig = Figure(figsize=(9, 2.8), layout="constrained")
    axes = fig.subplots(1, 2)
    y = np.arange(len(keys))
    axes[0].barh(y, [math.nan if v is None else v for v in paper], color="0.6")
    axes[0].set_title(f"paper (COCO, quoted): {metric_column}", fontsize=9)
    axes[1].barh(y, means, xerr=stds, color="C0", capsize=3)
    profile = (doc or {}).get("profile", "-")
    axes[1].set_title(f"ours ({profile}, {dataset}): box AP, mean ± std over seeds", fontsize=9)
    for ax in axes:
        ax.set_yticks(y, keys, fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    top = max([m + s for m, s in zip(means, stds) if not math.isnan(m)], default=0.0)
    axes[1].set_xlim(0, max(1.0, 1.1 * top))
    finite = [p for p in paper if p is not None]
    if finite:
        axes[0].set_xlim(min(finite) - 3, max(finite) + 1)
    return fig


def fidelity_gains(entry: Mapping, image_set: str, metric: str = "psnr", baseline: str = "nearest") -> dict:
    """Per upsampler of a ``fidelity`` entry: ``metric`` minus the baseline's, averaged over the FPN
    levels for each seed, then mean and std over seeds (:func:`srfkit.results.mean_std`).

    ``entry["fidelity"][upsampler][image_set][seed][level][metric]`` holds the values (dB for PSNR).
    """
    from ..results import mean_std

    table = entry["fidelity"]
    base = table[baseline][image_set]
    out = {}
    for name, sets in table.items():
        per_seed = sets.get(image_set)
        if per_seed is None:
            continue
        values = [
            sum(per_seed[s][lv][metric] - base[s][lv][metric] for lv in per_seed[s]) / len(per_seed[s])
            for s in per_seed
            if s in base
        ]
        out[name] = mean_std(values)
    return out


def fidelity_rows(doc: Mapping, dataset: str, image_set: str, metric: str = "l1") -> tuple[list[str], list[list]]:
    """Per-upsampler rows of a ``fidelity``-style result: ``(levels, [[name, mean±std per level], ...])``.

    ``doc["datasets"][dataset]["fidelity"][upsampler][image_set][seed][level][metric]`` holds the values;
    each cell is :func:`srfkit.results.mean_std` over the seeds.
    """
    from ..results import mean_std

    fidelity = doc["datasets"][dataset]["fidelity"]
    levels: list[str] = []
    rows = []
    for name, sets in fidelity.items():
        if image_set not in sets:
            continue
        per_seed = sets[image_set]
        if not levels:
            levels = list(next(iter(per_seed.values())))
        rows.append([name, *(mean_std([per_seed[s][lv][metric] for s in per_seed]) for lv in levels)])
    return levels, rows


def provenance_table(doc: Mapping, dataset: str, caption: str = ""):
    """Per-row provenance of a result entry: seeds, the commits and dates their cells were computed
    at, and the stage each was evaluated from (cells written by the campaign carry these)."""
    rows = []
    for name, row in doc.get("datasets", {}).get(dataset, {}).get("rows", {}).items():
        cells = row.get("cells") or {}
        seeds = sorted(row.get("per_seed", {}), key=int)
        commits = sorted({c.get("git_commit", "?")[:7] for c in cells.values()})
        dates = sorted(c.get("finished_utc", "")[:10] for c in cells.values() if c.get("finished_utc"))
        stages = sorted({_stage_label(c["stage"]) for c in cells.values() if c.get("stage")})
        when = "-" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
        rows.append([name, ", ".join(seeds), ", ".join(commits) or "-", when, ", ".join(stages) or "-"])
    return html_table(
        ["row", "seeds", "commit(s)", "computed (UTC)", "evaluated stage"], rows, caption=caption or "Provenance"
    )


def _stage_label(stage: str) -> str:
    """A stage folder's name, or ``folder/file`` for a checkpoint (a learning-curve point)."""
    path = Path(stage)
    return f"{path.parent.name}/{path.name}" if path.suffix == ".pt" else path.name


def agreement_table(agreement: Mapping[str, Mapping], caption: str = ""):
    """:func:`srfkit.results.paper_agreement` as a table: the paper's difference beside ours."""
    rows = [[n, a["paper"] or "-", a["paper_diff"], a["ours"], a["verdict"], a["status"]] for n, a in agreement.items()]
    header = [
        "ours (row - baseline)", "paper's rows", "paper box AP difference", "ours (mean)", "our verdict", "reading"
    ]  # fmt: skip
    return html_table(header, rows, caption=caption, digits=1)


_READING_ORDER = ("reproduced", "opposite", "differs", "excluded", "undecided", "too few seeds", "not in the paper")
_READING_WORDS = {
    "reproduced": "Reproduced",
    "opposite": "Opposite to the paper",
    "differs": "Not reproduced (the paper's rows are equal, ours differ)",
    "excluded": (
        "Not reproduced at this scale (no detectable difference; the paper's difference lies outside our interval)"
    ),
    "undecided": "Cannot be told at this scale (the paper's difference lies inside our interval)",
    "too few seeds": "Too few seeds for an interval",
    "not in the paper": "Controls not in the paper",
}


def table_reading(agreement: Mapping[str, Mapping], missing: list[str] | None = None, regime: str = "") -> str:
    """A closing paragraph for one table: what reproduced, what did not, what cannot be told here.

    Args:
        agreement: :func:`srfkit.results.paper_agreement` of the table's comparisons.
        missing: the paper's rows that have no measured comparison yet.
        regime: a sentence on the scale (e.g. where the budget sits on the learning curve).
    """
    groups: dict[str, list[str]] = {}
    for name, a in agreement.items():
        paper = "" if a["paper_diff"] is None else f"paper {a['paper_diff']:+.1f}; "
        ours = "-" if not math.isfinite(a["ours"]) else f"{a['ours']:+.1f}"
        if math.isfinite(a.get("low", math.nan)):
            ours += f", 95% {a['low']:+.1f} to {a['high']:+.1f}"
        groups.setdefault(a["status"], []).append(f"{name} ({paper}ours {ours}, n={a['n']}: {a['verdict']})")
    parts = [f"**{_READING_WORDS[k]}:** " + "; ".join(groups[k]) + "." for k in _READING_ORDER if k in groups]
    if missing:
        parts.append(f"**Not measured yet:** {', '.join(missing)}.")
    if not parts:
        parts.append("*No comparison in this file yet.*")
    return " ".join(parts + ([regime] if regime else []))


def regime_sentence(curve_doc: Mapping | None, dataset: str, budget: int) -> str:
    """Where a table's training budget sits on the learning curve (:func:`srfkit.results.budget_reading`),
    and what that means for reading its verdicts; empty without a curve for ``dataset``."""
    from ..results import budget_reading

    entry = (curve_doc or {}).get("datasets", {}).get(dataset)
    if not entry:
        return ""
    r = budget_reading(entry, budget)
    if r["state"] == "unknown":
        return ""
    at = f" ({r['at_budget']:.1f} box AP there" if r["at_budget"] is not None else " (no curve point there"
    at += f"; best measured {r['best']:.1f} at {r['best_at']:,} steps"
    at += f", means of the {len(r['seeds'])} seed(s) at every budget" if r["seeds"] else ""
    slope = f", still rising {r['slope']:.1f} AP per 1,000 steps at {r['budgets'][-1]:,})" if r["rising"] else ")"
    if r["state"] == "below plateau":
        meaning = "a gain here says a row learns faster at this budget, not that it reaches a higher plateau."
    else:
        meaning = "the baseline has learned the task, so a difference here is one of the final accuracy."
    return f"*Regime: every row trains {budget:,} steps; the nearest baseline is {r['state']}{at}{slope}: {meaning}*"
