"""Seconds per training step of every stage, and what the whole campaign costs: a benchmark, not a test.

``python -m srfkit.bench.stages --profile cpu`` trains each stage kind for a few steps on the shipped
``shapes`` data in a temporary folder (guide with nearest and with the paper's G, SRF-GAN, the
extractor, the target reusing G), prints the measured wall and CPU seconds per step, then multiplies
them by the training steps the campaign still needs (:func:`srfkit.campaign.stage_plan`) and prints the
total in process-hours. Run it on an otherwise idle machine for figures worth quoting.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

__all__ = ["measure", "campaign_cost", "main"]


def measure(profile: str = "cpu", steps: int = 6, dataset: str = "shapes") -> dict[str, dict[str, float]]:
    """``{kind: {"wall_s", "cpu_s"}}`` per step (the first step left out) for guide, guide_srf,
    srf_gan, extractor and target, each trained ``steps`` steps from scratch in a temporary folder."""
    from ..train import train_extractor, train_guide, train_srf_gan, train_target

    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="srfkit-bench-") as tmp:
        root = Path(tmp)
        common = dict(iters=steps, progress=False, keep_last=1)
        runs = {
            "guide": lambda: train_guide(profile, dataset, root / "guide", **common),
            "guide_srf": lambda: train_guide(profile, dataset, root / "guide_srf", upsampler="srf", **common),
            "srf_gan": lambda: train_srf_gan(profile, dataset, root / "srf_gan", guide_dir=root / "guide", **common),
            "extractor": lambda: train_extractor(
                profile, dataset, root / "extractor", guide_dir=root / "guide", srf_gan_dir=root / "srf_gan", **common
            ),
            "target": lambda: train_target(
                profile, dataset, root / "target", reuse="G", srf_gan_dir=root / "srf_gan", **common
            ),
        }
        for kind, run in runs.items():
            metrics = run().metrics
            out[kind] = {"wall_s": metrics["time_per_step_s"], "cpu_s": metrics["cpu_per_step_s"]}
    return out


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
    args = p.parse_args(argv)
    per_step = measure(args.profile, args.steps)
    print(f"{'stage':<12} {'wall s/step':>12} {'CPU s/step':>11}")
    for kind, t in per_step.items():
        print(f"{kind:<12} {t['wall_s']:>12.3f} {t['cpu_s']:>11.3f}")
    if args.campaign:
        cost = campaign_cost(per_step, args.profile)
        print(f"\ncampaign ({args.profile}, shapes): steps left per kind and process-hours at these rates")
        for kind, n in cost["steps"].items():
            print(f"{kind:<12} {n:>9,} steps {cost['hours'][kind]:>8.1f} h")
        print(f"{'total':<12} {sum(cost['steps'].values()):>9,} steps {cost['total_hours']:>8.1f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
