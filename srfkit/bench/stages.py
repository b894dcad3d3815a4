"""Seconds per training step of every stage, and what the whole campaign costs: a benchmark, not a test.

``python -m srfkit.bench.stages --profile cpu`` trains each stage kind for a few steps on the shipped
``shapes`` data in a temporary folder (guide with nearest and with the paper's G, SRF-GAN, the
extractor, the target reusing G), prints the measured wall and CPU seconds per step, then multiplies
them by the training steps the campaign still needs (:func:`srfkit.campaign.stage_plan`) and prints the
total in process-hours. Run it on an otherwise idle machine for figures worth quoting.

On a GPU box the same script times the paper profile on a COCO-layout folder, with peak GPU memory per
stage and the hours of each stage's full schedule at the measured rate::

    python -m srfkit.bench.stages --profile paper --coco-root /data/coco --weights-backbone r50.pth --steps 20
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

__all__ = ["measure", "campaign_cost", "schedule_hours", "main"]


def measure(
    profile: str = "cpu",
    steps: int = 6,
    dataset="shapes",
    device: str | None = None,
    weights_backbone: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """Per-step cost of guide, guide_srf, srf_gan, extractor and target, each trained ``steps`` steps
    from scratch in a temporary folder.

    Args:
        profile: the profile whose models, image size and batch size are timed.
        steps: steps per stage kind; the first is not timed.
        dataset: a shipped dataset name, or a :class:`~srfkit.data.CocoDetection` (a COCO folder).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if present).
        weights_backbone: a local ResNet state dict (``norm="frozen"`` profiles refuse to train without).

    Returns:
        ``{kind: {"wall_s", "cpu_s"}}`` seconds per step, plus ``"peak_gib"`` (peak CUDA memory
        allocated during that stage) when the stage ran on a GPU.
    """
    import torch

    from ..device import default_device
    from ..train import train_extractor, train_guide, train_srf_gan, train_target

    dev = default_device(device)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="srfkit-bench-") as tmp:
        root = Path(tmp)
        common = dict(iters=steps, progress=False, keep_last=1, device=str(dev))
        wb = dict(weights_backbone=weights_backbone)
        runs = {
            "guide": lambda: train_guide(profile, dataset, root / "guide", **wb, **common),
            "guide_srf": lambda: train_guide(profile, dataset, root / "guide_srf", upsampler="srf", **wb, **common),
            "srf_gan": lambda: train_srf_gan(profile, dataset, root / "srf_gan", guide_dir=root / "guide", **common),
            "extractor": lambda: train_extractor(
                profile,
                dataset,
                root / "extractor",
                guide_dir=root / "guide",
                srf_gan_dir=root / "srf_gan",
                **wb,
                **common,
            ),
            "target": lambda: train_target(
                profile, dataset, root / "target", reuse="G", srf_gan_dir=root / "srf_gan", **wb, **common
            ),
        }
        for kind, run in runs.items():
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            metrics = run().metrics
            out[kind] = {"wall_s": metrics["time_per_step_s"], "cpu_s": metrics["cpu_per_step_s"]}
            if dev.type == "cuda":
                out[kind]["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return out


def schedule_hours(per_step: dict[str, dict[str, float]], profile: str = "paper") -> dict[str, float]:
    """Hours of each stage's full schedule in ``profile`` at the measured wall seconds per step.

    The schedules' batch sizes are per process, so for the paper profile (8 processes, as the paper
    trained) this is the wall time of the DDP run if each process keeps the single-process step time."""
    from ..profiles import get_profile

    prof = get_profile(profile)
    iters = {
        "guide": prof.guide.iters,
        "guide_srf": prof.guide.iters,
        "srf_gan": prof.srf_gan.iters,
        "extractor": prof.extractor.iters,
        "target": prof.target.iters,
    }
    return {k: iters[k] * per_step[k]["wall_s"] / 3600 for k in per_step}


def _kind(info: dict) -> str:
    """Which measured kind a planned stage's steps cost like."""
    if info["stage"] == "guide":
        return "guide" if info.get("upsampler") in (None, "nearest", "bilinear", "bicubic") else "guide_srf"
    return info["stage"]


def campaign_cost(per_step: dict[str, dict[str, float]], profile: str = "cpu", datasets=("shapes",)) -> dict:
    """Steps left and process-hours (wall seconds per step as measured) of the campaign's unfinished stages."""
    from ..campaign import plan, stage_plan

    steps: dict[str, int] = {}
    for info in stage_plan(plan(profile, list(datasets))).values():
        steps[_kind(info)] = steps.get(_kind(info), 0) + info["left"]
    hours = {k: n * per_step[k]["wall_s"] / 3600 for k, n in steps.items()}
    return {"steps": steps, "hours": hours, "total_hours": sum(hours.values())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu", help="profile to time [%(default)s]")
    p.add_argument("--steps", type=int, default=6, help="steps per stage kind (the first is not timed) [%(default)s]")
    p.add_argument("--no-campaign", dest="campaign", action="store_false", help="skip the campaign total")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", default="shapes", help="shipped dataset to time on [%(default)s]")
    data.add_argument("--coco-root", type=Path, metavar="DIR", help="a COCO folder (train2017/, annotations/)")
    p.add_argument("--device", help="cpu, cuda, ... [CUDA if present]")
    p.add_argument("--weights-backbone", type=Path, metavar="PATH", help="local ResNet state dict (paper profile)")
    args = p.parse_args(argv)
    from ..profiles import get_profile

    dataset = args.dataset
    if args.coco_root is not None:
        from ..data import load_coco_root

        dataset = load_coco_root(args.coco_root, "train")
    per_step = measure(args.profile, args.steps, dataset, args.device, args.weights_backbone)
    hours = schedule_hours(per_step, args.profile)
    print(f"{'stage':<12} {'wall s/step':>12} {'CPU s/step':>11} {'peak GiB':>9} {'schedule h':>11}")
    for kind, t in per_step.items():
        peak = f"{t['peak_gib']:>9.2f}" if "peak_gib" in t else f"{'-':>9}"
        print(f"{kind:<12} {t['wall_s']:>12.3f} {t['cpu_s']:>11.3f} {peak} {hours[kind]:>11.1f}")
    print("(schedule h: the profile's full schedule of that stage at this rate, per process)")
    if args.campaign and args.coco_root is None and get_profile(args.profile).dataset_images[0] > 0:
        cost = campaign_cost(per_step, args.profile)
        print(f"\ncampaign ({args.profile}, shapes): steps left per kind and process-hours at these rates")
        for kind, n in cost["steps"].items():
            print(f"{kind:<12} {n:>9,} steps {cost['hours'][kind]:>8.1f} h")
        print(f"{'total':<12} {sum(cost['steps'].values()):>9,} steps {cost['total_hours']:>8.1f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
