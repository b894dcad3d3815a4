"""What the chapter 'Beyond the paper' computes: FPN upsamplers' parameters, CPU time, and their
accuracy and feature fidelity against that cost.

Every function takes what it works on as arguments (the benchmark rows of
:func:`srfkit.bench.upsamplers.benchmark`, result documents of :func:`srfkit.results.load_result`,
widths, names) and returns rows for :func:`srfkit.viz.book.html_table`, dicts or matplotlib Figures;
nothing here reads a file or the environment except :func:`live_interpolation`, which runs an
experiment. Units: parameters are counts of trainable parameters, times are milliseconds for the
three top-down steps of one image (batch 1), AP is in points, PSNR in dB.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..bench.upsamplers import n_params
from ..models import SRFFeaturePyramidNetwork, make_upsampler
from .book import comparisons, fidelity_gains

__all__ = [
    "UPSAMPLERS",
    "FAMILY_COLOR",
    "ROW_UPSAMPLER",
    "ROW_MARKER",
    "PUBLISHED_MODULES",
    "START_CHECKS",
    "FRONTIER_COLUMNS",
    "SUMMARY_ROWS",
    "human",
    "literature_rows",
    "literature_claims",
    "size_checks",
    "param_counts",
    "param_rows",
    "growth",
    "published_counts",
    "published_rows",
    "start_checks",
    "run_benchmark",
    "index_timing",
    "added_ms",
    "depthwise_rows",
    "params_time_figure",
    "fpn_param_counts",
    "detector_cost",
    "cost_points",
    "live_interpolation",
    "gains_over_nearest",
    "frontier",
    "verdict_lines",
    "fidelity_cost_rows",
    "fidelity_cost_figure",
    "fidelity_summary",
    "status_rows",
    "missing_result",
    "literature_gains",
    "widest_interval",
]

UPSAMPLERS = ("nearest", "bilinear", "bicubic", "dysample", "dysample_dynamic", "carafe", "srf", "srf_light",
              "srf_depthwise")  # fmt: skip
"""The registry names the chapter compares: fixed interpolations, learned peers, SRF's generators."""

FIXED = ("nearest", "bilinear", "bicubic")

FAMILY_COLOR = {"nearest": "0.45", "bilinear": "0.45", "bicubic": "0.45", "dysample": "C1", "dysample_dynamic": "C1",
                "carafe": "C1", "srf": "C0", "srf_light": "C0", "srf_depthwise": "C0"}  # fmt: skip
"""Colour per upsampler family: grey fixed, orange learned peers, blue SRF."""

ROW_UPSAMPLER = {"srf_G": "srf", "srf_M": "srf", "srf_scratch": "srf", "srf_light_G": "srf_light",
                 "srf_depthwise_G": "srf_depthwise"}  # fmt: skip
"""The registry upsampler of an ``interpolation`` result row whose name is not one (the rest map to themselves)."""

ROW_MARKER = {"nearest": "o", "bilinear": "s", "bicubic": "D", "dysample": "o", "dysample_dynamic": "s",
              "carafe": "D", "srf_G": "o", "srf_M": "*", "srf_scratch": "P", "srf_light_G": "s",
              "srf_depthwise_G": "D"}  # fmt: skip
"""Marker per ``interpolation`` result row in :func:`frontier`'s figure."""

PUBLISHED_MODULES = {"carafe": 3, "dysample": 4, "dysample_dynamic": 4}
"""Modules per detector behind the peers' published parameter counts (CARAFE: one per top-down step)."""

START_CHECKS = {
    "dysample_init": "DySample at initialisation vs bilinear",
    "dysample_zero_offsets": "DySample, zero offsets vs bilinear",
    "carafe_uniform": "CARAFE, uniform kernels vs box filter + nearest",
}
"""Labels of :func:`start_checks`' keys."""

FRONTIER_COLUMNS = ["row", "box AP", "gain over nearest", "± (95%)", "added params", "added ms", "verdict"]

SUMMARY_ROWS = ("srf_M", "srf_G", "srf_scratch", "srf_light_G", "srf_depthwise_G", "dysample", "dysample_dynamic",
                "carafe", "nearest_conv")  # fmt: skip
"""Result rows summarised by :func:`verdict_lines`, in that order."""

FPN_IN_CHANNELS = (64, 128, 256, 512)
"""Backbone widths of the P2-P5 FPN on which :func:`fpn_param_counts` counts (they do not change the count)."""


def human(n: float) -> str:
    """A parameter count as ``8.20M`` / ``32.7K`` / ``0``."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else f"{n:.0f}"


# --------------------------------------------------------------------------- literature (quoted)


def literature_rows(peer_results: Mapping[str, Mapping], headline: Mapping[str, float]) -> list[list]:
    """Rows ``[method, Faster box AP, gain, Mask box AP, gain, added params]`` of the quoted figures.

    ``peer_results``: :data:`srfkit.reference.PEER_RESULTS` (``nearest`` is the baseline of the gains);
    ``headline``: :func:`srfkit.reference.paper_headline` (SRF's row, Mask R-CNN only).
    """
    base = peer_results["nearest"]
    rows = [[name, v["faster_box"], f"{v['faster_box'] - base['faster_box']:+.1f}", v["mask_box"],
             f"{v['mask_box'] - base['mask_box']:+.1f}", human(v["added_params"])]
            for name, v in peer_results.items()]  # fmt: skip
    rows.append(["srf (paper, M reused)", "-", "-", headline["box_ap_srf"], f"{headline['box_gain']:+.1f}",
                 human(headline["added_params_m"] * 1e6)])  # fmt: skip
    return rows


def literature_claims(peer_results: Mapping[str, Mapping], headline: Mapping[str, float]) -> dict[str, float]:
    """The quoted figures read as claims: ``peer_gain`` (DySample's Faster R-CNN box AP gain),
    ``gain_ratio`` (SRF's gain over it) and ``orders`` (log10 of SRF's added parameters over DySample's)."""
    peer_gain = peer_results["dysample"]["faster_box"] - peer_results["nearest"]["faster_box"]
    return {
        "peer_gain": peer_gain,
        "gain_ratio": headline["box_gain"] / peer_gain,
        "orders": math.log10(headline["added_params_m"] * 1e6 / peer_results["dysample"]["added_params"]),
    }


# --------------------------------------------------------------------------- parameters


def size_checks(
    names: Iterable[str],
    channels: int,
    in_hw: tuple[int, int] = (9, 7),
    size: tuple[int, int] = (17, 13),
    batch: int = 2,
    seed: int = 0,
) -> dict[str, dict]:
    """Run each upsampler once at its default x2 and once at ``size`` on a random ``(batch, channels, *in_hw)`` map.

    Returns ``{name: {"default": shape, "sized": shape, "finite": bool}}`` (shapes as tuples).
    """
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, *in_hw)
    out = {}
    with torch.no_grad():
        for name in names:
            up = make_upsampler(name, channels).eval()
            y = up(x)
            out[name] = {"default": tuple(y.shape), "sized": tuple(up(x, size=size).shape),
                         "finite": bool(torch.isfinite(y).all())}  # fmt: skip
    return out


def param_counts(names: Iterable[str], widths: Iterable[int]) -> dict[tuple[str, int], int]:
    """Trainable parameters of one registry module per ``(name, width)``."""
    return {(name, c): n_params(make_upsampler(name, c)) for name in names for c in widths}


def param_rows(
    params: Mapping[tuple[str, int], int], names: Sequence[str], widths: Sequence[int], reference: int = 256
) -> list[list]:
    """Rows ``[name, count at each width ("1,234"), share of srf's count at width reference ("1.23%")]``."""
    srf = params[("srf", reference)]
    return [[name, *[f"{params[(name, c)]:,}" for c in widths], f"{params[(name, reference)] / srf:.2%}"]
            for name in names]  # fmt: skip


def growth(name: str, low: int = 32, high: int = 256) -> float:
    """How many times more parameters one module has at width ``high`` than at ``low``."""
    return n_params(make_upsampler(name, high)) / n_params(make_upsampler(name, low))


def published_counts(
    params: Mapping[tuple[str, int], int],
    peer_results: Mapping[str, Mapping],
    modules: Mapping[str, int] = PUBLISHED_MODULES,
    width: int = 256,
) -> dict[str, dict]:
    """Our per-module counts times the modules per detector against the published per-detector counts.

    Returns ``{name: {"one", "modules", "ours", "quoted", "rel_error"}}``, ``rel_error`` = |ours - quoted| / quoted.
    """
    out = {}
    for name, copies in modules.items():
        one, quoted = params[(name, width)], peer_results[name]["added_params"]
        ours = copies * one
        out[name] = {"one": one, "modules": copies, "ours": ours, "quoted": quoted,
                     "rel_error": abs(ours - quoted) / quoted}  # fmt: skip
    return out


def published_rows(counts: Mapping[str, Mapping]) -> list[list]:
    """Rows ``[name, one module, modules, ours x modules, quoted]`` of :func:`published_counts`."""
    return [[n, f"{c['one']:,}", c["modules"], f"{c['ours']:,}", f"{c['quoted']:,.0f}"] for n, c in counts.items()]


def start_checks(channels: int, side: int = 8, seed: int = 0) -> dict[str, float]:
    """What DySample and CARAFE compute before training, on a random ``(1, channels, side, side)`` map.

    Returns the max abs difference (keys of :data:`START_CHECKS`) of DySample at initialisation and
    with zero offsets to bilinear x2, and of CARAFE with constant logits (uniform kernels) to a
    ``k_up`` x ``k_up`` box filter followed by nearest x2.
    """
    torch.manual_seed(seed)
    x = torch.randn(1, channels, side, side)
    bilinear = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    dys = make_upsampler("dysample", channels).eval()
    car = make_upsampler("carafe", channels).eval()
    with torch.no_grad():
        at_init = (dys(x) - bilinear).abs().max().item()
        dys.offset.weight.zero_()
        zero_offsets = (dys(x) - bilinear).abs().max().item()
        car.encoder.weight.zero_()
        box = F.avg_pool2d(x, car.k_up, stride=1, padding=car.k_up // 2, count_include_pad=True)
        box_err = (car(x) - F.interpolate(box, scale_factor=2, mode="nearest")).abs().max().item()
    return {"dysample_init": at_init, "dysample_zero_offsets": zero_offsets, "carafe_uniform": box_err}


# --------------------------------------------------------------------------- time


def run_benchmark(
    names: Sequence[str], widths: Iterable[int], image_size: int, repeats: int = 7, warmup: int = 1, threads: int = 1
) -> tuple[list[dict], float]:
    """:func:`srfkit.bench.upsamplers.main` (it prints its table) on ``names`` at each width: the three
    top-down steps of one ``image_size`` px square image, CPU, ``threads`` threads, median of ``repeats``.

    Returns ``(rows, wall seconds)``; rows as :func:`srfkit.bench.upsamplers.benchmark` (``nearest`` always in).
    """
    from ..bench.upsamplers import main

    t0 = time.perf_counter()
    args = ["--size", image_size, "--channels", *widths, "--repeats", repeats, "--warmup", warmup, "--threads", threads]
    rows = main([*map(str, args), "--only", ",".join(names), "--no-progress"])
    return rows, time.perf_counter() - t0


def index_timing(bench: Iterable[Mapping]) -> dict[tuple[str, int], Mapping]:
    """Benchmark rows (``upsampler``, ``channels``, ``params``, ``latency_ms``, ``ratio``) by ``(name, width)``.

    ``ValueError`` when a latency is not finite and positive, or a ``(name, width)`` comes twice.
    """
    out = {}
    for r in bench:
        key = (r["upsampler"], r["channels"])
        if not (math.isfinite(r["latency_ms"]) and r["latency_ms"] > 0):
            raise ValueError(f"{key}: latency {r['latency_ms']} ms is not finite and positive")
        if key in out:
            raise ValueError(f"{key} benchmarked twice")
        out[key] = r
    return out


def added_ms(timing: Mapping[tuple[str, int], Mapping], width: int, names: Iterable[str] | None = None) -> dict:
    """Milliseconds each upsampler adds over ``nearest`` at ``width``: ``{name: ms}`` (nearest: 0).

    ``timing``: :func:`index_timing` output; ``names``: default every upsampler timed at that width.
    """
    names = [n for (n, c) in timing if c == width] if names is None else list(names)
    base = timing[("nearest", width)]["latency_ms"]
    return {n: timing[(n, width)]["latency_ms"] - base for n in names}


def depthwise_rows(
    params: Mapping[tuple[str, int], int], timing: Mapping[tuple[str, int], Mapping], widths: Iterable[int]
) -> list[list]:
    """Rows ``[C, "4.2x fewer", "1.50x faster" | "0.80x (slower!)"]``: srf_depthwise against srf per width."""
    rows = []
    for c in widths:
        p_ratio = params[("srf", c)] / params[("srf_depthwise", c)]
        t_ratio = timing[("srf", c)]["latency_ms"] / timing[("srf_depthwise", c)]["latency_ms"]
        rows.append([c, f"{p_ratio:.1f}x fewer", f"{t_ratio:.2f}x" + (" (slower!)" if t_ratio < 1 else " faster")])
    return rows


def params_time_figure(
    params: Mapping[tuple[str, int], int],
    timing: Mapping[tuple[str, int], Mapping],
    names: Sequence[str],
    widths: Sequence[int],
    image_size: int,
) -> Figure:
    """One panel per width: added ms over nearest (y) against parameters (x, log; 0 drawn at 1).

    Each upsampler is one point coloured by family; learned ones are labelled by name and the three
    parameter-free interpolations share one label, "interpolations".
    """
    fig = Figure(figsize=(3.8 * len(widths), 3.2), layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False)[0]
    for ax, c in zip(axes, widths):
        ms = added_ms(timing, c, names)
        last_free = [n for n in names if not params[(n, c)]][-1:]  # one label for the parameter-free ones
        for n in names:
            xv = max(params[(n, c)], 1)
            ax.scatter(xv, ms[n], s=30, color=FAMILY_COLOR.get(n, "k"))
            if params[(n, c)] or n in last_free:
                label = n if params[(n, c)] else "interpolations"
                offset = (3, -9) if n == "dysample_dynamic" else (3, 3)  # keep the two DySample labels apart
                ax.annotate(label, (xv, ms[n]), fontsize=7, xytext=offset, textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("parameters (log; 0 drawn at 1)")
        ax.set_ylabel("added ms, 3 steps (CPU, 1 thread)")
        ax.set_title(f"C = {c}, {image_size}x{image_size} image", fontsize=9)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.margins(x=0.12, y=0.1)
        ax.grid(alpha=0.3)
    return fig


def fpn_param_counts(names: Iterable[str], width: int) -> dict[str, int]:
    """Trainable parameters of all upsampler modules of a P2-P5 SRF FPN of width ``width`` (shared G:
    one module; DySample and CARAFE: one per top-down step, three)."""
    return {n: n_params(SRFFeaturePyramidNetwork(list(FPN_IN_CHANNELS), width, n).upsampler) for n in names}


def detector_cost(entry: Mapping, upsampler_ms: Mapping[str, float], fpn_counts: Mapping[str, int]) -> dict:
    """A ``cost`` result entry beside the upsampler-only benchmark.

    ``entry["rows"][name]`` holds ``added_params`` and ``latency_ms`` (whole detector, ms per image);
    ``upsampler_ms``: :func:`added_ms` at the entry's width; ``fpn_counts``: :func:`fpn_param_counts`.
    Returns ``rows`` (``[name, "added params", whole-detector added ms, upsamplers-alone added ms]`` for
    the names of ``upsampler_ms`` in the entry), ``floor`` (max - min latency of the three fixed
    interpolations: the measurement noise), ``nearest_ms`` and ``stale`` (names whose recorded
    ``added_params`` differ from ``fpn_counts``).
    """
    det = entry["rows"]
    fixed = [det[n]["latency_ms"] for n in FIXED if n in det]
    names = [n for n in upsampler_ms if n in det]
    return {
        "rows": [
            [n, f"{det[n]['added_params']:,}", det[n]["latency_ms"] - det["nearest"]["latency_ms"], upsampler_ms[n]]
            for n in names
        ],
        "floor": max(fixed) - min(fixed),
        "nearest_ms": det["nearest"]["latency_ms"],
        "stale": [n for n in names if n in fpn_counts and det[n]["added_params"] != fpn_counts[n]],
    }


def cost_points(
    timing: Mapping[tuple[str, int], Mapping], names: Iterable[str], width: int, image_size: int
) -> tuple[dict[str, float], dict[str, int], str]:
    """Added ms (upsamplers alone, :func:`added_ms`) and added parameters (:func:`fpn_param_counts`) per
    upsampler at ``width``, and a note saying where they come from (``image_size``: the benchmark's, px).

    ``ValueError`` when the benchmark has no run at that width.
    """
    names = list(names)
    if ("nearest", width) not in timing:
        raise ValueError(f"no benchmark at C = {width}; add it to the benchmarked widths")
    source = f"ms: upsamplers alone, C = {width}, {image_size} px; params: the FPN's upsampler modules"
    return added_ms(timing, width, names), fpn_param_counts(names, width), source


# --------------------------------------------------------------------------- accuracy


def live_interpolation(profile: str, runs_root: str | Path, dataset: str = "shapes") -> tuple[dict, str, float]:
    """Run the ``interpolation`` experiment now, writing its result file to a temporary folder (thrown away).

    Stage folders go under ``runs_root`` (shared with other chapters' live runs: trained once, reused).
    Returns ``(document, a label for its path, seconds taken)``.
    """
    from ..experiments import run_experiment
    from ..results import load_result

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="srfkit-beyond-") as results_tmp:
        path = run_experiment("interpolation", profile, dataset, runs_root=runs_root, results_root=results_tmp,
                              progress=False)  # fmt: skip
        doc = load_result(profile, "interpolation", root=results_tmp)
    if doc is None:
        raise RuntimeError(f"the live run wrote no result file ({path})")
    return doc, f"<temporary folder>/{profile}/interpolation.json", time.perf_counter() - t0


def gains_over_nearest(doc: Mapping, dataset: str) -> dict[str, dict]:
    """Each row's paired box-AP difference to ``nearest`` (:func:`srfkit.viz.book.comparisons`), by row name."""
    compared = comparisons(doc, dataset, lambda row: "nearest")
    return {n.split(" - ")[0]: c for n, c in compared.items() if n.endswith(" - nearest")}


def frontier(
    doc: Mapping,
    dataset: str,
    ms: Mapping[str, float],
    n_par: Mapping[str, int],
    cost_source: str = "",
    ms_label: str = "added ms",
) -> dict:
    """Box-AP gain over nearest (paired, 95%) against added ms and added parameters.

    ``ms``, ``n_par`` and ``cost_source``: :func:`cost_points` at the document's width. Rows whose
    upsampler has no cost there (controls such as ``nearest_M``) are left out. Returns ``compared``
    (:func:`gains_over_nearest`), ``rows`` (:data:`FRONTIER_COLUMNS`: row, box AP mean ± std, mean
    gain, half width, "added params", added ms, verdict), ``caption`` (profile, dataset, seeds, cost
    source) and ``figure`` (two panels sharing y: gain against ``ms_label`` and against parameters,
    log, 0 drawn at 1; error bars the 95% half width). ``ValueError`` when a plotted AP or gain is
    not finite.
    """
    entry = doc["datasets"][dataset]
    compared = gains_over_nearest(doc, dataset)
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    rows = []
    for name, c in compared.items():
        up = ROW_UPSAMPLER.get(name, name)
        if up not in ms:
            continue
        ap = entry["rows"][name]["summary"]["bbox"]["AP"]
        if not (math.isfinite(ap["mean"]) and math.isfinite(c["mean"])):
            raise ValueError(f"{dataset}/{name}: box AP {ap['mean']} or gain {c['mean']} is not finite")
        rows.append([name, ap, c["mean"], c.get("half_width"), f"{n_par[up]:,}", ms[up], c["verdict"]])
        err = c.get("half_width") if math.isfinite(c.get("half_width") or math.nan) else None
        for ax, xv in ((axes[0], ms[up]), (axes[1], max(n_par[up], 1))):
            ax.errorbar(xv, c["mean"], yerr=err, fmt=ROW_MARKER.get(name, "o"), color=FAMILY_COLOR.get(up, "k"),
                        capsize=3, ms=6, alpha=0.85, label=name if ax is axes[1] else None)  # fmt: skip
    for ax in axes:
        ax.axhline(0, color="0.5", lw=0.8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    axes[0].set_xlabel(ms_label)
    axes[0].set_ylabel("box AP gain over nearest (paired mean, 95% interval)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("added parameters (log; 0 drawn at 1)")
    fig.suptitle(f"{doc['profile']} profile, {dataset}: grey fixed, orange learned peers, blue SRF", fontsize=9)
    caption = f"{doc['profile']} profile, {dataset}, seeds {entry['seeds']}" + (
        f"; cost: {cost_source}" if cost_source else ""
    )
    return {"compared": compared, "rows": rows, "caption": caption, "figure": fig}


def verdict_lines(verdicts: Mapping[str, Mapping[str, Mapping]], rows: Sequence[str] = SUMMARY_ROWS) -> list[str]:
    """Markdown bullets, one per dataset and row of ``rows`` present: gain over nearest, seeds, interval, verdict.

    ``verdicts``: ``{dataset: gains_over_nearest(...)}``.
    """
    lines = []
    for dataset, compared in verdicts.items():
        for row in rows:
            if row in compared:
                c = compared[row]
                interval = "" if c["verdict"] == "one seed" else f", 95% interval {c['low']:+.2f} to {c['high']:+.2f}"
                lines.append(f"- `{dataset}`, **{row}**: {c['mean']:+.2f} box AP over nearest ({c['n']} paired "
                             f"seeds{interval}): {c['verdict']}.")  # fmt: skip
    return lines


# --------------------------------------------------------------------------- feature fidelity

_IMAGE_SETS = (("val", "o"), ("photos", "^"))


def fidelity_cost_rows(fid: Mapping, params: Mapping[str, int], ms: Mapping[str, float]) -> list[list]:
    """Rows ``[dataset, image set, upsampler, PSNR gain over nearest (mean/std/n, dB), "added params", added ms]``.

    ``fid``: a ``fidelity`` result document; gains from :func:`srfkit.viz.book.fidelity_gains` (mean
    over FPN levels, then over seeds); ``params`` and ``ms`` per upsampler name (one module, width C).
    ``ValueError`` when a mean gain is not finite.
    """
    rows = [[dataset, image_set, name, g, f"{params[name]:,}", ms[name]]
            for dataset, entry in fid["datasets"].items() for image_set, _ in _IMAGE_SETS
            for name, g in fidelity_gains(entry, image_set).items()]  # fmt: skip
    bad = [r[:3] for r in rows if not math.isfinite(r[3]["mean"])]
    if bad:
        raise ValueError(f"non-finite PSNR gains: {bad}")
    return rows


def fidelity_cost_figure(
    fid: Mapping, params: Mapping[str, int], ms: Mapping[str, float], width: int, image_size: int
) -> Figure:
    """Two panels sharing y: PSNR gain over nearest (dB, ± std over seeds) against parameters (log;
    interpolations at 1) and against added ms. Circles validation images (labelled), triangles photos."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for _, image_set, name, g, _, _ in fidelity_cost_rows(fid, params, ms):
        marker = dict(_IMAGE_SETS)[image_set]
        for ax, xv in ((axes[0], max(params[name], 1)), (axes[1], ms[name])):
            ax.errorbar(xv, g["mean"], yerr=g["std"] if g["n"] > 1 else None, fmt=marker,
                        color=FAMILY_COLOR.get(name, "k"), capsize=3, ms=5)  # fmt: skip
            if image_set == "val":
                ax.annotate(name, (xv, g["mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    axes[0].set_xscale("log")
    axes[0].set_xlabel(f"added parameters at C = {width} (log; interpolations at 1)")
    axes[1].set_xlabel(f"added ms, upsamplers alone (C = {width}, {image_size} px)")
    axes[0].set_ylabel("feature PSNR gain over nearest (dB)")
    for ax in axes:
        ax.axhline(0, color="0.5", lw=0.8)
        ax.grid(alpha=0.3)
    fig.suptitle("cpu profile, stage-1 generators (circles: validation images, triangles: photos)", fontsize=9)
    return fig


def fidelity_summary(entry: Mapping, metric: str = "psnr") -> dict:
    """One ``fidelity`` entry's validation-image reading: ``val`` (``metric`` per upsampler, mean over
    every seed and FPN level), ``best`` (its argmax), ``beats_bilinear`` (the ``srf*`` generators above
    bilinear) and ``n_seeds``."""
    val = {}
    for name, sets in entry["fidelity"].items():
        cells = [lv[metric] for s in sets["val"].values() for lv in s.values()]
        val[name] = sum(cells) / len(cells)
    best = max(val, key=val.get)
    beats = [n for n in val if n.startswith("srf") and val[n] > val["bilinear"]]
    return {"val": val, "best": best, "beats_bilinear": beats, "n_seeds": len(entry["seeds"])}


# --------------------------------------------------------------------------- summary


def _seeds(doc: Mapping) -> list[int]:
    return sorted({s for e in doc["datasets"].values() for s in e["seeds"]})


def status_rows(widths: Iterable[int], image_size: int, cpu_ap: Mapping | None, fid: Mapping | None) -> list[list]:
    """Rows ``[claim, source, status]`` of what was and was not reproduced; ``cpu_ap`` and ``fid`` the cpu
    profile's ``interpolation`` and ``fidelity`` documents, ``None`` when absent."""
    return [
        ["parameters of every upsampler", "computed exactly here (C = " + ", ".join(map(str, widths)) + ")",
         "reproduced: CARAFE's and DySample's published counts follow from ours x modules"],
        ["CPU time of the upsamplers", f"measured here ({image_size} px, one thread)",
         "measured; the paper's GPU milliseconds are not (no GPU here)"],
        ["COCO AP gains (SRF, DySample, CARAFE)", "quoted from the papers", "not reproduced: no COCO, no GPU"],
        ["AP gains on the shipped data, cpu profile", "data/results/cpu/interpolation.json" if cpu_ap else "absent",
         f"datasets {list(cpu_ap['datasets'])}, seeds {_seeds(cpu_ap)}" if cpu_ap
         else "not yet run: the accuracy plot above is a quick-profile demonstration"],
        ["feature fidelity, cpu profile", "data/results/cpu/fidelity.json" if fid else "absent",
         f"datasets {list(fid['datasets'])}, seeds {_seeds(fid)}" if fid else "not yet run"],
    ]  # fmt: skip


def missing_result(experiment: str, consequence: str, profile: str = "cpu") -> str:
    """An italic Markdown line: ``<profile>/<experiment>.json`` does not exist yet, the command that makes
    it, and ``consequence`` (what the chapter leaves out)."""
    return (f"*No `data/results/{profile}/{experiment}.json` yet (`python -m srfkit experiments --profile {profile} "
            f"--only {experiment}` makes it): {consequence}.*")  # fmt: skip


def literature_gains(peer_results: Mapping[str, Mapping]) -> list[float]:
    """The peers' quoted Faster R-CNN box-AP gains over the quoted nearest baseline."""
    base = peer_results["nearest"]["faster_box"]
    return [v["faster_box"] - base for k, v in peer_results.items() if k != "nearest"]


def widest_interval(doc: Mapping, dataset: str) -> float | None:
    """The largest finite 95% half width of the rows' paired differences to nearest, ``None`` if none."""
    widths = [c["half_width"] for c in gains_over_nearest(doc, dataset).values()
              if math.isfinite(c.get("half_width") or math.nan)]  # fmt: skip
    return max(widths) if widths else None
