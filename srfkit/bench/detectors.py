"""Parameters and inference latency of whole detectors with each upsampler, at a profile's size: the
``# Params`` and ``Time (ms)`` columns of the paper's Table 1 (a benchmark, not a test).

``python -m srfkit.bench.detectors --profile paper --device cuda --write`` builds RetinaNet, Faster
R-CNN and Mask R-CNN (random weights, 80 classes) with nearest interpolation and with the paper's G,
times ``--runs`` forward passes of one ``--size`` image each, and of the backbone + FPN alone (eval mode,
no gradients, the device synchronised around each pass, the models of one detector interleaved) and
prints them beside the paper's figures (Titan Xp, detectron2). The score thresholds are set to 0 so
that every pass carries the full ``detections_per_img`` boxes through the heads: with random weights
the number of boxes that pass a threshold would otherwise decide the mask head's cost. ``--write``
stores the rows with provenance in ``data/results/<profile>/detector_cost.json``.
"""

from __future__ import annotations

import argparse

import torch

__all__ = ["measure", "added", "main"]

ARCHS = ("retinanet", "faster_rcnn", "mask_rcnn")
UPSAMPLERS = ("nearest", "srf")
# Table 1's rows for each (arch, upsampler): the paper's SRF rows reuse G (the same network as M's).
_PAPER_ROW = {"nearest": "nearest", "srf": "G"}


def _full_load(model: torch.nn.Module) -> None:
    """Score threshold 0: every image keeps ``detections_per_img`` boxes (see the module's doc)."""
    heads = getattr(model, "roi_heads", None)
    if heads is not None:
        heads.score_thresh = 0.0
    elif hasattr(model, "score_thresh"):
        model.score_thresh = 0.0


def _setting(profile: str, size: tuple[int, int] | None, device: str | None):
    """(profile, (H, W), device) of a run: the size defaults to the profile's ``image_size`` x ``max_size``."""
    from ..device import default_device
    from ..profiles import get_profile

    prof = get_profile(profile)
    return prof, tuple(size) if size else (prof.image_size, prof.max_size), default_device(device)


def measure(
    profile: str = "paper",
    size: tuple[int, int] | None = None,
    archs=ARCHS,
    upsamplers=UPSAMPLERS,
    device: str | None = None,
    warmup: int = 5,
    runs: int = 30,
    num_classes: int = 81,
    seed: int = 0,
) -> list[dict]:
    """One row per (arch, upsampler): ``params`` (int), ``latency_ms`` (median of whole forward passes),
    ``backbone_ms`` (median of the backbone + FPN alone on the same resized image), ``added_params``,
    ``latency_ratio`` and ``backbone_ratio`` against the same arch with ``nearest``, and the paper's
    figures for it.

    The models of one arch are timed interleaved, one pass of each per round in a seeded random order,
    so that clock ramps and load changes hit them alike (:func:`srfkit.eval.cost.time_interleaved`).

    Args:
        profile: the profile whose detectors are built (backbone, FPN width, heads).
        size: (H, W) of the timed image (default: the profile's ``image_size`` x ``max_size``).
        device: where to run (default: CUDA if present).
        num_classes: classes with the background (81: COCO's 80).
    """
    import statistics

    from ..detection import build_detector
    from ..eval.cost import count_parameters, example_input, time_interleaved
    from ..reference import paper_table

    prof, size, dev = _setting(profile, size, device)
    table = paper_table("table1_detectors")
    col = {name: i for i, name in enumerate(table["columns"])}
    rows = []
    for arch in archs:
        models = {}
        for name in upsamplers:
            torch.manual_seed(seed)
            models[name] = build_detector(arch, num_classes, name, prof).to(dev).eval()
            _full_load(models[name])
        images = example_input(models[upsamplers[0]], size, dev)
        with torch.inference_mode():
            batch = models[upsamplers[0]].transform(images)[0].tensors  # resized and padded as in forward
            calls = {}
            for name, m in models.items():
                calls[name, "latency_ms"] = lambda m=m, x=images: m(x)
                calls[name, "backbone_ms"] = lambda m=m, x=batch: m.backbone(x)
            times = time_interleaved(calls, dev, warmup, runs, seed)
        passes = ("latency_ms", "backbone_ms")
        base = None
        for name, model in models.items():
            row = {"arch": arch, "upsampler": name, "params": count_parameters(model)}
            row.update({key: statistics.median(times[name, key]) for key in passes})
            base = row if name == "nearest" else base
            if base is not None:
                row["added_params"] = row["params"] - base["params"]
                row["latency_ratio"] = row["latency_ms"] / base["latency_ms"]
                row["backbone_ratio"] = row["backbone_ms"] / base["backbone_ms"]
            paper = table["rows"].get(f"{arch}/{_PAPER_ROW.get(name, name)}")
            if paper is not None:
                row["paper_params"] = paper[col["# Params"]]
                row["paper_time_ms"] = paper[col["Time (ms)"]]
            rows.append(row)
        del models
    return rows


def added(rows: list[dict], key: str = "backbone_ms", upsampler: str = "srf") -> dict[str, float]:
    """arch -> ``row[key]`` of ``upsampler`` minus that of ``nearest`` for the same arch, over the rows of
    :func:`measure` (or of a stored ``detector_cost.json``); arches without both rows are left out."""
    base = {r["arch"]: r[key] for r in rows if r["upsampler"] == "nearest"}
    return {r["arch"]: r[key] - base[r["arch"]] for r in rows if r["upsampler"] == upsampler and r["arch"] in base}


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'detector':<12} {'upsampler':<9} {'params':>8} {'added':>7} {'ms':>8} {'x NN':>6} {'FPN ms':>7} "
        f"{'x NN':>6} {'paper params':>13} {'paper ms':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        added = f"{r['added_params'] / 1e6:>6.2f}M" if "added_params" in r else f"{'-':>7}"
        ratio = f"{r['latency_ratio']:>6.2f}" if "latency_ratio" in r else f"{'-':>6}"
        fpn_ratio = f"{r['backbone_ratio']:>6.2f}" if "backbone_ratio" in r else f"{'-':>6}"
        lines.append(
            f"{r['arch']:<12} {r['upsampler']:<9} {r['params'] / 1e6:>7.2f}M {added} {r['latency_ms']:>8.1f} "
            f"{ratio} {r['backbone_ms']:>7.1f} {fpn_ratio} {r.get('paper_params', '-'):>13} "
            f"{r.get('paper_time_ms', '-'):>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m srfkit.bench.detectors", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="paper", help="profile whose detectors are timed [%(default)s]")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size [profile's size x max size]")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated detectors [%(default)s]")
    p.add_argument("--upsamplers", default=",".join(UPSAMPLERS), help="comma-separated [%(default)s]")
    p.add_argument("--device", help="cpu, cuda, ... [CUDA if present]")
    p.add_argument("--warmup", type=int, default=5, help="untimed passes first [%(default)s]")
    p.add_argument("--runs", type=int, default=30, help="timed passes; the median is reported [%(default)s]")
    p.add_argument("--write", action="store_true", help="store the rows in data/results/<profile>/detector_cost.json")
    args = p.parse_args(argv)
    ups = [u.strip() for u in args.upsamplers.split(",") if u.strip()]
    if "nearest" not in ups:
        ups.insert(0, "nearest")
    prof, size, dev = _setting(args.profile, args.size, args.device)
    rows = measure(
        args.profile,
        size,
        [a.strip() for a in args.archs.split(",") if a.strip()],
        ups,
        args.device,
        args.warmup,
        args.runs,
    )
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s)"
    print(
        f"detectors of profile {args.profile!r}, one {size[0]}x{size[1]} image per pass, {where}, median of "
        f"{args.runs} pass(es); paper: Titan Xp, detectron2, COCO images (Table 1; SRF rows reuse G)"
    )
    print(format_table(rows))
    if args.write:
        from ..results import write_result

        path = write_result(
            prof.name,
            "detector_cost",
            {"image_size": list(size), "device_name": where, "warmup": args.warmup, "runs": args.runs, "rows": rows},
        )
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
