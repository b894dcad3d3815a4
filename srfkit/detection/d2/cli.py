"""The ``d2-train`` command: train and evaluate an SRF-FPN detector with detectron2.

``configure_parser(parser)`` adds the options to an ``argparse`` parser (works without detectron2);
``run_from_args(args)`` runs it and returns an exit code (2, with the install hint, when detectron2
is missing). Examples::

    python -m srfkit d2-train --arch cascade_mask_rcnn --profile quick --dataset shapes --out runs/d2/q
    python -m srfkit d2-train --arch mask_rcnn --profile paper --dataset coco --coco-root /data/coco \\
        --srf-weights runs/paper/srf-gan --num-gpus 8 --out runs/d2/mask-1x MODEL.WEIGHTS R-50.pkl
    python -m srfkit d2-train --compare --arch cascade_rcnn --profile cpu --seed 0 --srf-weights runs/cpu/srf-gan
    python -m srfkit d2-train --arch cascade_mask_rcnn --profile cpu --init-from runs/cpu/extractor --out runs/d2/m
"""

from __future__ import annotations

import argparse
import json
import sys

from . import ARCHS, INSTALL_HINT, detectron2_available

__all__ = ["configure_parser", "run_from_args"]


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``d2-train`` options to ``parser`` and return it."""
    from ...models import upsampler_names

    parser.add_argument("--arch", default="mask_rcnn", choices=ARCHS, help="detector (default: mask_rcnn)")
    parser.add_argument("--profile", default="quick", help="quick, cpu (sizes from the profile) or paper (YAML)")
    parser.add_argument("--schedule", default="1x", choices=("1x", "3x"), help="paper profile's schedule")
    parser.add_argument("--dataset", default="shapes", help="a shipped dataset, or 'coco' with --coco-root")
    parser.add_argument("--coco-root", default=None, help="COCO 2017 folder (train2017/, val2017/, annotations/)")
    parser.add_argument("--data-root", default=None, help="where shipped datasets are built")
    parser.add_argument(
        "--upsampler",
        default=None,
        choices=upsampler_names(),
        help="FPN top-down step (default: srf, or the --init-from stage's)",
    )
    parser.add_argument(
        "--variant", default=None, help="G variant for --upsampler srf (default: released, or the --init-from stage's)"
    )
    parser.add_argument(
        "--srf-weights", default=None, help="G: a srfkit srf-gan stage folder/checkpoint or the authors' checkpoint"
    )
    parser.add_argument("--srf-freeze", action="store_true", help="MODEL.SRF_FREEZE: keep G fixed")
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help="a srfkit stage folder with a detector (the stage-2 extractor M): its ResNet, FPN convs and G start "
        "the detectron2 backbone, never its heads; the report goes to OUT/transfer.json",
    )
    parser.add_argument("--seed", type=int, default=0, help="SEED of detectron2 (weights and data order) [%(default)s]")
    parser.add_argument("--out", default="runs/d2", help="OUTPUT_DIR (default: runs/d2)")
    parser.add_argument("--device", default=None, help="MODEL.DEVICE (default: cuda if available, else cpu)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    parser.add_argument("--no-eval", action="store_true", help="skip the COCOEvaluator run after training")
    parser.add_argument(
        "--compare", action="store_true", help="train nearest and SRF (G from --srf-weights) and report both"
    )
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine (detectron2's launch)")
    parser.add_argument("--num-machines", type=int, default=1, help="machines in the launch [%(default)s]")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank [%(default)s]")
    parser.add_argument("--dist-url", default="auto", help="rendezvous URL of detectron2's launch [%(default)s]")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="detectron2 config overrides: KEY VALUE ...")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``d2-train``; print the metrics as JSON; return the exit code."""
    if not detectron2_available():
        print(f"srfkit d2-train: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from .engine import compare_nearest_srf, train_detector

    launch = dict(
        num_gpus=args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank, dist_url=args.dist_url
    )
    common = dict(
        dataset=args.dataset,
        profile=args.profile,
        coco_root=args.coco_root,
        data_root=args.data_root,
        schedule=args.schedule,
        device=args.device,
        opts=args.opts or None,
        resume=args.resume,
        run_eval=not args.no_eval,
        **launch,
    )
    if args.variant is not None:  # else get_config's default, or the --init-from stage's G
        common["variant"] = args.variant
    if args.compare:
        if not args.srf_weights:
            print("srfkit d2-train: --compare needs --srf-weights (the G to reuse)", file=sys.stderr)
            return 2
        if args.init_from:
            print("srfkit d2-train: --compare trains from scratch; --init-from is for one run", file=sys.stderr)
            return 2
        result = compare_nearest_srf(
            args.srf_weights, seed=args.seed, out_dir=args.out, arch=args.arch, srf_freeze=args.srf_freeze, **common
        )
    else:
        if args.upsampler is not None:
            common["upsampler"] = args.upsampler
        result = train_detector(
            args.arch,
            output_dir=args.out,
            seed=args.seed,
            srf_weights=args.srf_weights,
            srf_freeze=args.srf_freeze,
            init_from=args.init_from,
            **common,
        )
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m srfkit.detection.d2.cli``: the command on its own."""
    parser = configure_parser(argparse.ArgumentParser(prog="srfkit d2-train", description=__doc__.splitlines()[0]))
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
