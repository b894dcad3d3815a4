"""Command line: ``python -m srfkit <command> ...`` (also installed as ``srfkit``).

Commands: ``guide``, ``srf-gan``, ``extractor``, ``target`` (stages 0-3 of SRF-GAN) and
``pipeline`` (all four in order, skipping finished ones). Run under
``torchrun --nproc_per_node N -m srfkit ...`` for several processes.

More commands plug in through :func:`add_subcommand` (a registry; the parser is built from it when
:func:`main` runs)::

    def configure(parser):              # add the command's options to its argparse sub-parser
        parser.add_argument("--name")
    def run(args) -> int | None:         # do the work; return an exit code (None = 0)
        ...
    add_subcommand("experiments", configure, run, help="run the paper's ablations")
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import experiments

__all__ = ["Subcommand", "SUBCOMMANDS", "add_subcommand", "build_parser", "main"]


@dataclass(frozen=True)
class Subcommand:
    """One ``python -m srfkit <name>`` command: its help, option setup and action."""

    name: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    help: str = ""


SUBCOMMANDS: dict[str, Subcommand] = {}


def add_subcommand(
    name: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    help: str = "",
) -> Subcommand:
    """Register a command; ``configure(parser)`` adds its options, ``run(args)`` executes it."""
    if name in SUBCOMMANDS:
        raise ValueError(f"command {name!r} is already registered")
    SUBCOMMANDS[name] = Subcommand(name, configure, run, help)
    return SUBCOMMANDS[name]


# ---------------------------------------------------------------------------------------- options


def _data_options(p: argparse.ArgumentParser) -> None:
    from .profiles import PROFILES

    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="quick",
        help="sizes and schedules: quick (seconds, tests), cpu (2 CPU cores), paper (GPU, COCO) [%(default)s]",
    )
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--dataset",
        metavar="NAME",
        help="shipped dataset (srfkit.data.load): shapes, trees, nuclei; photos (no boxes) suits srf-gan only",
    )
    data.add_argument(
        "--coco-root",
        metavar="DIR",
        type=Path,
        help="a COCO folder with train2017/ and annotations/instances_train2017.json",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of weights, data order and sampling [%(default)s]")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output folder")


def _loop_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training loop (defaults: the profile's schedule)")
    g.add_argument("--iters", type=int, help="optimiser steps (milestones stay fractions of it)")
    g.add_argument("--batch-size", type=int, help="images per step and process")
    g.add_argument("--lr", type=float, help="base learning rate after warm-up")
    g.add_argument("--warmup-iters", type=int, help="linear warm-up steps")
    g.add_argument("--checkpoint-every", type=int, help="write a checkpoint every N steps")
    g.add_argument(
        "--keep-last",
        type=int,
        default=1,
        help="periodic checkpoints kept while training; the final weights replace them (-1: keep all) [%(default)s]",
    )
    g.add_argument("--clip-grad", type=float, help="clip the gradient norm of each optimiser to this value")
    g.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA (never on CPU)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ... [CUDA if present; torchrun: cuda:LOCAL_RANK]")
    g.add_argument("--workers", dest="num_workers", type=int, help="DataLoader workers [profile's]")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("--threads", type=int, help="CPU threads of this process (torch.set_num_threads) [torch's default]")


def _arch(p: argparse.ArgumentParser, flag: str = "--arch", what: str = "detector") -> None:
    from .detection import ARCHS

    p.add_argument(flag, choices=ARCHS, help=f"{what} family [mask_rcnn if the dataset has masks, else faster_rcnn]")


def _srf_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SRF loss (Eq. 2-3)")
    g.add_argument("--l1-weight", type=float, default=1.0, help="weight of the per-level L1 term [%(default)s]")
    g.add_argument(
        "--adv-weight", type=float, default=1e-3, help="lambda, weight of the adversarial term [%(default)s]"
    )
    g.add_argument(
        "--no-adversarial-grad",
        dest="adversarial_grad",
        action="store_false",
        help="detach D(G(x)) in G's loss as the authors' training code does (their AFI-GAN repository; "
        "G learns from L1 only)",
    )


def _upsampler(p: argparse.ArgumentParser, default: str, help: str) -> None:
    from .models import upsampler_names

    p.add_argument("--upsampler", choices=upsampler_names(), default=default, help=f"{help} [%(default)s]")


def _weights_backbone(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights-backbone",
        type=Path,
        metavar="PATH",
        help="local ResNet state dict (torchvision layout) to start detector backbones from; required by "
        "profiles with frozen BatchNorm (paper); nothing is downloaded",
    )


def _out(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help=help)


def _configure_guide(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _out(p, "output folder (checkpoints, metrics.jsonl, config.json)")
    _arch(p)
    _upsampler(p, "nearest", "FPN top-down upsampler")
    _weights_backbone(p)
    _loop_options(p)


def _guide_options(p: argparse.ArgumentParser) -> None:
    """F of stages 1 and 2: a srfkit guide or detectron2 output folder, or a detectron2 config + checkpoint."""
    g = p.add_argument_group("F, the frozen feature extractor: --guide DIR, or --guide-config with --guide-weights")
    g.add_argument(
        "--guide",
        type=Path,
        metavar="DIR",
        help="finished guide stage folder, or a detectron2 output folder (config.yaml + model_final.pth)",
    )
    g.add_argument(
        "--guide-config",
        metavar="YAML",
        help="detectron2 config of F: a YAML file, a srfkit d2 arch or a detectron2 model-zoo config name",
    )
    g.add_argument(
        "--guide-weights",
        type=Path,
        metavar="FILE",
        help="detectron2 checkpoint of F (.pth/.pkl, your file; nothing is downloaded)",
    )


def _guide_kwargs(args: argparse.Namespace) -> dict | None:
    """The guide arguments of a train_* call, or ``None`` (after printing why) when no F was given."""
    if args.guide is None and args.guide_config is None and args.guide_weights is None:
        print("error: give F: --guide DIR, or --guide-config with --guide-weights", file=sys.stderr)
        return None
    return dict(guide_dir=args.guide, guide_config=args.guide_config, guide_weights=args.guide_weights)


def _without_detectron2(err: ImportError) -> int:
    """Exit status 2 with the install hint for a detectron2 F without detectron2; other errors propagate."""
    from .detection.d2 import INSTALL_HINT

    if str(err) != INSTALL_HINT:
        raise err
    print(f"error: {err}", file=sys.stderr)
    return 2


def _configure_srf_gan(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _out(p, "output folder (checkpoints, metrics.jsonl, config.json)")
    _guide_options(p)
    p.add_argument("--variant", default="paper", help="generator form: paper, released, light, depthwise [%(default)s]")
    p.add_argument("--num-blocks", type=int, help="residual blocks of G [variant's default]")
    p.add_argument(
        "--d-head",
        choices=("paper", "authors"),
        default="paper",
        help="D's output conv: paper (1x1, the paper's text) or authors (3x3, their training code) [%(default)s]",
    )
    _srf_options(p)
    _loop_options(p)


def _configure_extractor(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _out(p, "output folder (checkpoints, metrics.jsonl, config.json)")
    _guide_options(p)
    p.add_argument("--srf-gan", type=Path, required=True, metavar="DIR", help="finished srf-gan stage folder (G, D)")
    _arch(p, what="extractor head")
    p.add_argument(
        "--semantic-level",
        choices=("same", "different", "different_lr"),
        default="same",
        help="levels the SRF loss compares (Table 7): same (the method); different (the paper's variant: "
        "full-size images to M and F, G(P3..P5) of M against P2..P4 of F); different_lr (M's P_k of the "
        "half-size image against F's P_k+1) [%(default)s]",
    )
    _weights_backbone(p)
    _srf_options(p)
    _loop_options(p)


def _configure_target(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _out(p, "output folder (checkpoints, metrics.jsonl, config.json)")
    _arch(p, what="target detector")
    p.add_argument(
        "--reuse",
        choices=("G", "M", "none"),
        default="G",
        help="G: generator weights only; M: the whole extractor where shapes match; none [%(default)s]",
    )
    p.add_argument("--srf-gan", type=Path, metavar="DIR", help="srf-gan stage folder to take G from")
    p.add_argument("--extractor", type=Path, metavar="DIR", help="extractor stage folder to take G or M from")
    p.add_argument("--freeze-g", action="store_true", help="keep G fixed instead of fine-tuning it (Table 4, A4)")
    _upsampler(p, "nearest", "upsampler when --reuse none")
    _weights_backbone(p)
    _loop_options(p)


def _configure_pipeline(p: argparse.ArgumentParser) -> None:
    _data_options(p)
    _out(p, "root folder; stages go to DIR/guide, DIR/srf-gan, DIR/extractor, DIR/target")
    _arch(p, what="guide and extractor")
    _arch(p, "--target-arch", "target detector")
    p.add_argument("--reuse", choices=("G", "M", "none"), default="G", help="what the target reuses [%(default)s]")
    p.add_argument(
        "--no-adversarial-grad",
        dest="adversarial_grad",
        action="store_false",
        help="stages 1-2: detach D(G(x)) in G's loss, as the authors' training code (AFI-GAN repository) does",
    )
    _weights_backbone(p)
    _loop_options(p)


# ------------------------------------------------------------------------------------------- runs

_LOOP_KEYS = (
    "iters",
    "batch_size",
    "lr",
    "warmup_iters",
    "checkpoint_every",
    "keep_last",
    "clip_grad",
    "amp",
    "device",
    "num_workers",
    "progress",
)


def _common(args: argparse.Namespace) -> dict:
    """profile, dataset, seed, resume and the loop options of a parsed command line."""
    from .profiles import get_profile

    profile = get_profile(args.profile)
    loop = {k: getattr(args, k) for k in _LOOP_KEYS if getattr(args, k, None) is not None}
    if loop.get("keep_last", 0) < 0:
        loop["keep_last"] = None
    return dict(profile=profile, dataset=_dataset(args, profile), seed=args.seed, resume=args.resume, **loop)


def _dataset(args: argparse.Namespace, profile):
    """The shipped dataset's name, or the train split of ``--coco-root``, flipped as the profile says
    (shipped datasets get their flip in :func:`srfkit.train.inputs.resolve_dataset`)."""
    if args.dataset is not None:
        return args.dataset
    from .data import RandomHorizontalFlip, load_coco_root
    from .profiles import get_profile

    hflip = get_profile(profile).train_hflip
    return load_coco_root(args.coco_root, "train", transforms=RandomHorizontalFlip(hflip) if hflip > 0 else None)


def _report(result) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    if result.skipped:
        print(f"{result.stage}: already finished in {result.out_dir} ({result.steps} steps), skipped")
        return
    m = result.metrics
    losses = ", ".join(f"{k}={v:.4g}" for k, v in m.items() if not k.endswith("_per_step_s"))
    print(
        f"{result.stage}: {result.steps} steps in {result.wall_time_s:.1f} s "
        f"({m.get('time_per_step_s', float('nan')):.3f} s/step wall, {m.get('cpu_per_step_s', float('nan')):.3f} "
        f"s/step CPU); checkpoint {result.checkpoint}; last losses: {losses}"
    )


def _run_guide(args: argparse.Namespace) -> None:
    from .train import train_guide

    _report(
        train_guide(
            out_dir=args.out,
            arch=args.arch,
            upsampler=args.upsampler,
            weights_backbone=args.weights_backbone,
            **_common(args),
        )
    )


def _srf_kwargs(args: argparse.Namespace) -> dict:
    return dict(l1_weight=args.l1_weight, adv_weight=args.adv_weight, adversarial_grad=args.adversarial_grad)


def _run_srf_gan(args: argparse.Namespace) -> int | None:
    from .train import train_srf_gan

    guide = _guide_kwargs(args)
    if guide is None:
        return 2
    try:
        result = train_srf_gan(
            out_dir=args.out,
            **guide,
            variant=args.variant,
            num_blocks=args.num_blocks,
            discriminator_head=args.d_head,
            **_srf_kwargs(args),
            **_common(args),
        )
    except ImportError as err:
        return _without_detectron2(err)
    _report(result)
    return None


def _run_extractor(args: argparse.Namespace) -> int | None:
    from .train import train_extractor

    guide = _guide_kwargs(args)
    if guide is None:
        return 2
    try:
        result = train_extractor(
            out_dir=args.out,
            **guide,
            srf_gan_dir=args.srf_gan,
            arch=args.arch,
            semantic_level=args.semantic_level,
            weights_backbone=args.weights_backbone,
            **_srf_kwargs(args),
            **_common(args),
        )
    except ImportError as err:
        return _without_detectron2(err)
    _report(result)
    return None


def _run_target(args: argparse.Namespace) -> None:
    from .train import train_target

    _report(
        train_target(
            out_dir=args.out,
            arch=args.arch,
            reuse=args.reuse,
            srf_gan_dir=args.srf_gan,
            extractor_dir=args.extractor,
            freeze_g=args.freeze_g,
            upsampler=args.upsampler,
            weights_backbone=args.weights_backbone,
            **_common(args),
        )
    )


def _run_pipeline(args: argparse.Namespace) -> None:
    from .train import run_pipeline

    results = run_pipeline(
        out_root=args.out,
        arch=args.arch,
        target_arch=args.target_arch,
        reuse=args.reuse,
        adversarial_grad=args.adversarial_grad,
        weights_backbone=args.weights_backbone,
        **_common(args),
    )
    for result in results.values():
        _report(result)


add_subcommand("guide", _configure_guide, _run_guide, "stage 0: train the guide detector (gives F)")
add_subcommand("srf-gan", _configure_srf_gan, _run_srf_gan, "stage 1: train G and D on guide features (Eq. 2)")
add_subcommand("extractor", _configure_extractor, _run_extractor, "stage 2: train the SRF extractor M (Eq. 3)")
add_subcommand("target", _configure_target, _run_target, "stage 3: train a target detector reusing G or M")
add_subcommand("pipeline", _configure_pipeline, _run_pipeline, "stages 0-3 in order, skipping finished ones")


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", type=Path, required=True, metavar="DIR", help="a finished guide/extractor/target folder")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--dataset", metavar="NAME", help="shipped dataset [the one the stage trained on]")
    data.add_argument(
        "--coco-root",
        type=Path,
        metavar="DIR",
        help="a COCO 2017 folder (val2017/, annotations/) [the one the stage trained on, if any]",
    )
    p.add_argument("--split", default="val", choices=("val", "train"), help="split to evaluate [%(default)s]")
    p.add_argument(
        "--full-resolution",
        action="store_true",
        help="reset the detector's resize to the profile's full size (the extractor M trains at half size)",
    )
    p.add_argument("--eval-images", type=int, help="evaluate only the first N images [profile's eval_images]")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics here [DIR/eval-<split>.json]")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _run_evaluate(args: argparse.Namespace) -> None:
    from .fileio import write_json
    from .train.evaluate import evaluate_stage, format_metrics

    metrics = evaluate_stage(
        args.stage,
        args.dataset,
        split=args.split,
        full_resolution=args.full_resolution,
        eval_images=args.eval_images,
        progress=args.progress,
        coco_root=args.coco_root,
    )
    out = args.json or args.stage / f"eval-{args.split}.json"
    write_json(out, {"stage": str(args.stage), "split": args.split, "metrics": metrics})
    print(format_metrics(metrics))
    print(f"wrote {out}")


def _configure_d2(p: argparse.ArgumentParser) -> None:
    from .detection.d2.cli import configure_parser

    configure_parser(p)


def _run_d2(args: argparse.Namespace) -> int:
    from .detection.d2.cli import run_from_args

    return run_from_args(args)


add_subcommand(
    "d2-train", _configure_d2, _run_d2, "train/evaluate an SRF-FPN detector with detectron2 (the second engine)"
)


def _configure_campaign(p: argparse.ArgumentParser) -> None:
    from .campaign import configure_parser

    configure_parser(p)


def _run_campaign(args: argparse.Namespace) -> int:
    from .campaign import run_from_args

    return run_from_args(args)


add_subcommand(
    "campaign",
    _configure_campaign,
    _run_campaign,
    "every (experiment, row, seed) cell of the results, resumable; writes each cell as it lands",
)
add_subcommand("evaluate", _configure_evaluate, _run_evaluate, "COCO AP of a finished stage folder (table + JSON)")
add_subcommand(
    "experiments",
    experiments.configure_parser,
    experiments.run_from_args,
    "the paper's ablations on shipped data; writes data/results/<profile>/<experiment>.json",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``srfkit`` argument parser, one sub-parser per registered command."""
    parser = argparse.ArgumentParser(
        prog="python -m srfkit",
        description="SRF-GAN re-implemented: train its stages from the command line "
        "(several processes: torchrun --nproc_per_node N -m srfkit <command> ...).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for command in SUBCOMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(p)
        p.set_defaults(_run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; expected failures print one ``error:`` line and return 1."""
    from .train.checkpoint import CheckpointMismatchError
    from .train.loop import NonFiniteLossError

    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        code = args._run(args)
    except (NonFiniteLossError, CheckpointMismatchError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        code = 1
    finally:
        _shutdown()
    return int(code or 0)


def _shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
