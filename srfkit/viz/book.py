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
    "gain_rows",
    "gain_table",
    "paper_vs_ours",
    "plot_paper_vs_ours",
    "paper_headline",
    "fidelity_rows",
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


def result_source(doc: Mapping, path: str | Path | None = None) -> str:
    """One Markdown sentence saying which run made a result file (commit, device, seeds, time).

    ``path`` is where the file was read from (default: ``data/results/<profile>/<experiment>.json``).
    """
    if path is None:
        path = f"data/results/{doc.get('profile', '?')}/{doc.get('experiment', '?')}.json"
    prov = doc.get("provenance", {})
    parts = []
    for dataset, entry in doc.get("datasets", {}).items():
        seeds = entry.get("seeds", [])
        wall = entry.get("wall_time_s")
        took = "" if not wall else f", {wall:.0f} s" if wall < 120 else f", {wall / 60:.0f} min"
        parts.append(f"`{dataset}`: seeds {seeds}{took}")
    return (
        f"*Source: `{path}`, written by "
        f"`python -m srfkit experiments` at commit `{prov.get('git_commit', '?')}` on {prov.get('device', '?')}, "
        f"finished {prov.get('finished_utc', '?')} ({'; '.join(parts)}).*"
    )


def gain_rows(doc: Mapping, dataset: str, baseline_of: Callable[[str], str | None], iou: str = "bbox") -> list[list]:
    """Rows ``[row, baseline, gain, spread, seeds, verdict]`` of :func:`srfkit.results.gain_over`
    for every row of ``doc``'s ``dataset`` entry that ``baseline_of(row)`` pairs with a baseline
    (rows it maps to ``None``, or to a row the file lacks, are left out). AP points."""
    from ..results import gain_over

    rows = doc.get("datasets", {}).get(dataset, {}).get("rows", {})
    out = []
    for name in rows:
        base = baseline_of(name)
        if base is None or base == name or base not in rows:
            continue
        if iou not in next(iter(rows[name]["per_seed"].values()), {}):
            continue
        g = gain_over(rows, name, base, iou=iou)
        out.append([name, base, g["gain"], g["spread"], g["n"], g["verdict"]])
    return out


def gain_table(doc: Mapping, dataset: str, baseline_of: Callable[[str], str | None], iou: str = "bbox"):
    """:func:`gain_rows` as an HTML table."""
    kind = {"bbox": "box", "segm": "mask"}[iou]
    return html_table(
        ["row", "against", f"{kind} AP gain", "seed spread (larger std)", "seeds", "verdict (gain vs 2 x spread)"],
        gain_rows(doc, dataset, baseline_of, iou),
        caption=f"Our {kind} AP gains on {dataset}, read against the seed-to-seed spread",
        digits=2,
    )


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


def paper_headline() -> dict[str, float]:
    """The paper's headline figures, derived from its quoted tables (never typed in a chapter).

    Returns ``box_ap``/``mask_ap`` of the baseline (Table 4, A1) and of the full method (A5), their
    gains, the Mask R-CNN parameter counts with NN and with SRF (Table 1, millions), and the added
    time per image averaged over the three detector families of Table 1 (ms, M reuse vs NN).
    """
    from ..reference import paper_table

    t4 = paper_table("table4_progressive")["rows"]
    t1 = paper_table("table1_detectors")
    col = {name: i for i, name in enumerate(t1["columns"])}
    rows = t1["rows"]

    def millions(text: str) -> float:
        return float(str(text).rstrip("M"))

    families = ("retinanet", "faster_rcnn", "mask_rcnn")
    added_ms = [rows[f"{f}/M"][col["Time (ms)"]] - rows[f"{f}/nearest"][col["Time (ms)"]] for f in families]
    return {
        "box_ap_baseline": t4["A1"][3],
        "box_ap_srf": t4["A5"][3],
        "box_gain": round(t4["A5"][3] - t4["A1"][3], 1),
        "mask_ap_baseline": t4["A1"][4],
        "mask_ap_srf": t4["A5"][4],
        "mask_gain": round(t4["A5"][4] - t4["A1"][4], 1),
        "params_nn_m": millions(rows["mask_rcnn/nearest"][col["# Params"]]),
        "params_srf_m": millions(rows["mask_rcnn/M"][col["# Params"]]),
        "added_params_m": millions(rows["mask_rcnn/M"][col["# Params"]])
        - millions(rows["mask_rcnn/nearest"][col["# Params"]]),
        "added_ms": sum(added_ms) / len(added_ms),
    }


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
