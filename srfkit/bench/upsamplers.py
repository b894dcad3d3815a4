"""Parameters and latency (CPU, or a GPU with ``--device cuda``) of every registered FPN upsampler (a
benchmark, not a test).

``python -m srfkit.bench.upsamplers [--channels 256 128] [--repeats 20] [--threads 1] [--json PATH]``

For each upsampler and channel width C it times the three top-down steps of an FPN over a
``--size`` x ``--size`` image (512 by default): maps at strides 32, 16 and 8 (16, 32 and 64 px)
upsampled to the lateral sizes at strides 16, 8 and 4 (32, 64 and 128 px), batch 1, on the CPU,
under ``torch.inference_mode``. The figure is the median over ``--repeats`` runs of the three steps
together, and its ratio to ``nearest`` measured in the same run. Runs are interleaved (one run of
every upsampler per round, in a seeded random order per round) so that changes in machine load and
cache state hit all of them alike.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

import srfkit.models.peers  # noqa: F401  (registers dysample, dysample_dynamic, carafe)
from srfkit.eval.cost import count_parameters, time_interleaved
from srfkit.fileio import write_json
from srfkit.models import make_upsampler, upsampler_names

__all__ = ["STRIDES", "step_sizes", "benchmark", "format_table", "main"]

STRIDES = (32, 16, 8)
"""Strides of the maps that are upsampled (P5, P4, P3 -> the sizes of P4, P3, P2)."""

REFERENCE = "nearest"


def step_sizes(image_size: int) -> list[tuple[int, int]]:
    """(input side, output side) in px of the three top-down steps for a square image.

    A ResNet map at stride s of an image of side S has side ceil(S / s).
    """
    return [(math.ceil(image_size / s), math.ceil(image_size / (s // 2))) for s in STRIDES]


def n_params(module: nn.Module) -> int:
    """Trainable parameters (buffers such as DySample's fixed positions excluded)."""
    return count_parameters(module, trainable_only=True)


def benchmark(
    names: list[str],
    channels: int,
    image_size: int = 512,
    repeats: int = 20,
    warmup: int = 2,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Time the three top-down steps for each upsampler in ``names`` at width ``channels`` on ``device``
    (on CUDA the device is synchronised before and after each timed run).

    Returns one dict per upsampler: ``upsampler``, ``channels``, ``params`` (int), ``latency_ms``
    (median over ``repeats``, milliseconds for all three steps of one image), ``runs_ms`` (every
    run) and ``ratio`` (``latency_ms`` over that of ``nearest``; ``nearest`` is always measured).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(dict.fromkeys([REFERENCE, *names]))
    torch.manual_seed(seed)
    device = torch.device(device)
    modules = {name: make_upsampler(name, channels).eval().to(device) for name in names}
    steps = step_sizes(image_size)
    inputs = [(torch.randn(1, channels, i, i).to(device), (o, o)) for i, o in steps]

    def three_steps(module: nn.Module) -> None:
        for x, size in inputs:
            module(x, size=size)

    with torch.inference_mode():
        runs = time_interleaved(
            {name: (lambda m=module: three_steps(m)) for name, module in modules.items()},
            device,
            warmup,
            repeats,
            seed,
            rounds=lambda it: tqdm(it, desc=f"C={channels}", disable=not progress, leave=False),
        )
    reference = statistics.median(runs[REFERENCE])
    rows = []
    for name, module in modules.items():
        median = statistics.median(runs[name])
        rows.append(
            {
                "upsampler": name,
                "channels": channels,
                "params": n_params(module),
                "latency_ms": median,
                "ratio": median / reference,
                "runs_ms": runs[name],
            }
        )
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table: upsampler, C, parameters, median ms, ratio to nearest."""
    header = f"{'upsampler':<18} {'C':>4} {'params':>11} {'median ms':>10} {'x nearest':>10}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['upsampler']:<18} {row['channels']:>4} {row['params']:>11,} "
            f"{row['latency_ms']:>10.2f} {row['ratio']:>10.2f}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m srfkit.bench.upsamplers",
        description="Parameters and median latency of the FPN upsamplers (three top-down steps of one image), "
        "as a ratio to nearest measured in the same run.",
    )
    p.add_argument("--channels", type=int, nargs="+", default=[256, 128], help="FPN widths C (default: 256 128)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per upsampler; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default: 2)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--size", type=int, default=512, help="image side in px (default: 512)")
    p.add_argument("--only", default=None, help="comma-separated upsampler names (nearest is always included)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures to PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... [%(default)s]")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark, print the table to stdout and return the rows (see :func:`benchmark`)."""
    args = _parser().parse_args(argv)
    names = upsampler_names()
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise SystemExit(f"unknown upsampler(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        names = wanted
    if args.threads < 1 or args.size < 32:
        raise SystemExit("--threads must be >= 1 and --size >= 32")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        rows = []
        for channels in args.channels:
            rows += benchmark(
                names,
                channels,
                args.size,
                repeats=args.repeats,
                warmup=args.warmup,
                progress=not args.no_progress,
                device=args.device,
            )
    finally:
        torch.set_num_threads(previous_threads)
    steps = ", ".join(f"{i}->{o}" for i, o in step_sizes(args.size))
    where = (
        f"{torch.cuda.get_device_name(torch.device(args.device))}"
        if torch.device(args.device).type == "cuda"
        else f"CPU, {args.threads} thread(s)"
    )
    print(
        f"FPN upsamplers: three top-down steps of a {args.size}x{args.size} image (px {steps}), batch 1, {where}, "
        f"median of {args.repeats} run(s); ratio to nearest in the same run.\n"
        f"torch {torch.__version__}, {platform.machine()} {platform.processor() or ''}".rstrip()
    )
    print(format_table(rows))
    if args.json is not None:
        payload = {
            "image_size": args.size,
            "steps_px": step_sizes(args.size),
            "threads": args.threads,
            "device": where,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "rows": rows,
        }
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
