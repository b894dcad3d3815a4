"""The resumable campaign: every (experiment, row, seed) cell of the cpu results, one at a time.

``python -m srfkit campaign --profile cpu`` plans the cells of the row experiments
(:data:`srfkit.experiments.ROW_EXPERIMENTS`), seed by seed, skips those already in
``data/results/<profile>/<experiment>.json`` under the current settings (their fingerprint), trains
what each remaining cell needs in its own seed's chain of stage folders (reusing the folders that
exist, re-creating the ones that do not, for example on a new machine), evaluates it and merges it
into the result file at once (atomically, under a file lock: several processes may run). It prints
what remains with an estimate from the wall times of the cells finished so far.

One process per core: ``--workers 2 --worker 0`` and ``--workers 2 --worker 1`` split the seeds
between two processes (seed index modulo workers), so each seed's chain is trained by one process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .experiments import EXPERIMENTS as _EXPERIMENTS
from .experiments import (
    ROW_EXPERIMENTS,
    Cell,
    ExperimentContext,
    Table,
    cell_done,
    run_cell,
)
from .profiles import Profile, get_profile
from .results import load_result, refresh_comparisons, results_path

__all__ = [
    "DETECTRON2_EXPERIMENTS",
    "SEED_COUNTS",
    "PlannedCell",
    "plan",
    "remaining",
    "parse_budgets",
    "select_rows",
    "stage_plan",
    "cell_steps",
    "measured_seconds_per_step",
    "refresh_tables",
    "run_campaign",
    "configure_parser",
    "run_from_args",
]

# How many of the profile's seeds each experiment gets (issue 11: >= 5 for Tables 4 and 5, >= 3 for the
# others). The order is the campaign's: the curve comes first, since its longest budgets are the only cells
# near the baseline's plateau (at the tables' 4,000 steps its chains are also their guide A1, srf_scratch
# and A2; the 8,000-step nearest point is A1_matched).
SEED_COUNTS: dict[str, int] = {
    "learning_curve": 5,
    "progressive": 5,
    "interpolation": 5,
    "semantic_level": 3,
    "degradation": 3,
    "adversarial_grad": 3,
    "detectors": 3,
    "cross_head": 3,
    "d2_cascade": 3,
}
# Experiments that need detectron2 (srfkit.detection.d2): left out of a default plan without it.
DETECTRON2_EXPERIMENTS = ("d2_cascade",)


@dataclass(frozen=True)
class PlannedCell:
    """A cell with the context and table it belongs to."""

    cell: Cell
    context: ExperimentContext
    table: Table

    def done(self) -> bool:
        document = load_result(self.context.profile.name, self.cell.experiment, self.context.results_root)
        return cell_done(document, self.cell, self.context.fingerprint)


def plan(
    profile: str | Profile,
    datasets: list[str],
    experiments: list[str] | None = None,
    seed_counts: dict[str, int] | None = None,
    runs_root: Path = Path("runs"),
    results_root: Path | None = None,
    weights_backbone: Path | None = None,
    **options,
) -> list[PlannedCell]:
    """Every cell, ordered seed by seed (then dataset, experiment in :data:`SEED_COUNTS` order, row)."""
    profile = get_profile(profile)
    from .detection.d2 import INSTALL_HINT, detectron2_available

    if not experiments:
        experiments = [e for e in SEED_COUNTS if e in ROW_EXPERIMENTS]
        if not detectron2_available():
            experiments = [e for e in experiments if e not in DETECTRON2_EXPERIMENTS]
    unknown = [e for e in experiments if e not in ROW_EXPERIMENTS]
    if unknown:
        raise ValueError(f"not campaign experiments: {', '.join(unknown)}; valid: {', '.join(ROW_EXPERIMENTS)}")
    needs_d2 = [e for e in experiments if e in DETECTRON2_EXPERIMENTS]
    if needs_d2 and not detectron2_available():
        raise ImportError(f"{', '.join(needs_d2)} need detectron2. {INSTALL_HINT}")
    counts = {**SEED_COUNTS, **(seed_counts or {})}
    seeds = sorted({s for e in experiments for s in profile.seeds[: counts.get(e, len(profile.seeds))]})
    contexts = {
        (d, e): ExperimentContext(
            profile,
            d,
            tuple(profile.seeds[: counts.get(e, len(profile.seeds))]),
            Path(runs_root),
            options,
            results_root,
            weights_backbone,
            e,
        )
        for d in datasets
        for e in experiments
    }
    tables = {key: _EXPERIMENTS[key[1]](ctx) for key, ctx in contexts.items()}
    cells = []
    for seed in seeds:
        for d in datasets:
            for e in experiments:
                ctx, table = contexts[(d, e)], tables[(d, e)]
                if seed in ctx.seeds:
                    cells += [PlannedCell(Cell(e, d, row, seed), ctx, table) for row in table.rows]
    return cells


def select_rows(cells: list[PlannedCell], rows: list[str]) -> list[PlannedCell]:
    """The planned cells of the named rows (order kept); a name that no planned table has is an error."""
    known = {row for pc in cells for row in pc.table.rows}
    unknown = [r for r in rows if r not in known]
    if unknown:
        raise ValueError(f"no planned table has row(s) {', '.join(unknown)}; rows: {', '.join(sorted(known))}")
    return [pc for pc in cells if pc.cell.row in rows]


def remaining(
    cells: list[PlannedCell], seconds_per_step: float | None = None, by_row: bool = False
) -> tuple[list[PlannedCell], str]:
    """The cells still to run and a report: cells and training steps left per experiment, and hours.

    ``by_row`` adds a line per row with cells left: how many, and the longest chain one of them still
    needs on its own (:func:`cell_steps`), which is what a sitting of fixed length (``--fit-hours``) can
    or cannot finish.

    Steps come from :func:`stage_plan` (each stage folder counted once, for the first experiment that
    needs it; finished folders cost nothing, unfinished ones what is left after their newest
    checkpoint). Hours are those steps times ``seconds_per_step``, by default the mean measured wall
    time per step of the stage folders that exist (their ``metrics.jsonl``); evaluation is not counted.
    """
    left = [pc for pc in cells if not pc.done()]
    plan, owner = stage_plan(left), {}
    for pc in left:  # which experiment first needs each folder
        record: dict[Path, dict] = {}
        pc.table.rows[pc.cell.row](replace(pc.context.runs(pc.cell.seed), record=record))
        for folder in record:
            owner.setdefault(folder, pc.cell.experiment)
    if seconds_per_step is None:
        seconds_per_step = measured_seconds_per_step(plan)
    lines, total_steps = [], 0
    for experiment in dict.fromkeys(pc.cell.experiment for pc in cells):
        n_left = sum(pc.cell.experiment == experiment for pc in left)
        n_all = sum(pc.cell.experiment == experiment for pc in cells)
        steps = sum(info["left"] for f, info in plan.items() if owner.get(f) == experiment)
        total_steps += steps
        hours = f"~{steps * seconds_per_step / 3600:6.2f} h" if seconds_per_step else "      ? h"
        lines.append(f"  {experiment:<16} {n_all - n_left:>4} done {n_left:>4} left {steps:>8,} steps {hours}")
        if by_row:
            chains: dict[str, list[int]] = {}
            for pc in left:
                if pc.cell.experiment == experiment:
                    chains.setdefault(pc.cell.row, []).append(cell_steps(pc))
            for row, need in chains.items():
                longest = f" (~{max(need) * seconds_per_step / 3600:.2f} h)" if seconds_per_step else ""
                most = f"{max(need):>7,} steps{longest}"
                lines.append(f"    {row:<22} {len(need):>3} left; one cell's chain at most {most}")
    head = f"campaign: {len(cells) - len(left)} of {len(cells)} cells done; {total_steps:,} training steps left"
    if seconds_per_step:
        head += f", about {total_steps * seconds_per_step / 3600:.1f} process-hours at {seconds_per_step:.2f} s/step"
    else:
        head += " (no step measured yet: no time estimate; python -m srfkit.bench.stages measures one)"
    return left, "\n".join([head, *lines])


def measured_seconds_per_step(folders) -> float | None:
    """The mean measured wall time per training step of the stage folders that exist (their
    ``metrics.jsonl``), ``None`` when none has any."""
    from .train.loop import summarize_metrics

    rates = [summarize_metrics(Path(f) / "metrics.jsonl")[1].get("time_per_step_s") for f in folders]
    rates = [r for r in rates if r]
    return statistics.fmean(rates) if rates else None


def cell_steps(pc: PlannedCell) -> int:
    """Training steps the cell still needs: what is left of every stage folder of its seed's chain
    (0 for a finished cell or one whose folders are all trained)."""
    return sum(info["left"] for info in stage_plan([pc]).values())


def stage_plan(cells: list[PlannedCell]) -> dict[Path, dict]:
    """The stage folders the cells not yet done need, with the training steps each has left.

    ``{folder: {"stage", "steps", "upsampler", "left"}}``: found by walking each cell's row with a
    recording :class:`~srfkit.experiments.Runs` (nothing is trained); ``left`` is 0 for a finished
    folder and counts from the newest checkpoint of an unfinished one.
    """
    from .train.checkpoint import FINAL_NAME, latest_checkpoint, list_checkpoints, run_iters

    record: dict[Path, dict] = {}
    for pc in cells:
        if pc.done():
            continue
        runs = replace(pc.context.runs(pc.cell.seed), record=record)
        pc.table.rows[pc.cell.row](runs)
    for folder, info in record.items():
        done = 0
        if (folder / FINAL_NAME).is_file():  # finished, at the length it was trained for (a chain may grow)
            done = min(info["steps"], run_iters(folder) or info["steps"])
        elif latest_checkpoint(folder) is not None:
            done = max((step for step, _ in list_checkpoints(folder)), default=0)
        info["left"] = max(info["steps"] - done, 0)
    return record


def refresh_tables(cells: list[PlannedCell]) -> list[Path]:
    """Recompute the stored paired comparisons of each planned table whose list of comparisons changed
    since its cells were written (:func:`srfkit.results.refresh_comparisons`; nothing is retrained).
    Returns the result files rewritten."""
    tables = {(pc.cell.experiment, pc.cell.dataset): pc for pc in cells}
    return [
        results_path(pc.context.profile.name, experiment, pc.context.results_root)
        for (experiment, dataset), pc in tables.items()
        if refresh_comparisons(
            pc.context.profile.name, experiment, dataset, pc.table.comparisons, pc.context.results_root
        )
    ]


def run_campaign(
    cells: list[PlannedCell],
    worker: int = 0,
    workers: int = 1,
    commit: bool = False,
    max_hours: float | None = None,
    fit_hours: float | None = None,
    seconds_per_step: float | None = None,
) -> int:
    """Run this worker's cells that are not done, in order; returns how many it ran.

    A worker takes the seeds whose index in the profile's seed list is ``worker`` modulo ``workers``.
    ``commit=True`` commits each result file to git as its cell lands. ``max_hours``: start no new cell
    once that much wall time has passed (the first cell always runs; a cell in progress finishes).
    ``fit_hours``: for a sitting that ends (and may lose its stage folders) after that many hours,
    start only cells whose training (:func:`cell_steps` times ``seconds_per_step``, by default the
    step time measured in this machine's stage folders) fits in the time left; a cell that does not
    fit is skipped, and later ones that do are run. Evaluation is not counted: leave a margin.
    First the planned tables' stored comparisons are brought up to date (:func:`refresh_tables`).
    """
    if fit_hours is not None and seconds_per_step is None:
        seconds_per_step = measured_seconds_per_step(stage_plan(cells))
        if seconds_per_step is None:
            raise ValueError(
                "--fit-hours needs a step time: no stage folder here has one yet; pass --step-seconds "
                "(python -m srfkit.bench.stages measures it)"
            )
    for path in refresh_tables(cells):
        print(f"[worker {worker}] {path.name}: stored comparisons brought up to the table's list", flush=True)
        if commit:
            _git_commit(path, f"{path.parent.name} results: {path.stem} comparisons recomputed from stored cells")
    t0, ran = time.perf_counter(), 0
    for pc in cells:
        seeds = pc.context.profile.seeds
        if seeds.index(pc.cell.seed) % workers != worker or pc.done():
            continue
        if ran and max_hours is not None and time.perf_counter() - t0 > max_hours * 3600:
            break
        c = pc.cell
        if fit_hours is not None:
            need, left = cell_steps(pc) * seconds_per_step, fit_hours * 3600 - (time.perf_counter() - t0)
            if need > left:
                print(f"[worker {worker}] skipped {c.experiment} / {c.row} / seed {c.seed}: its training needs "
                      f"~{need / 3600:.2f} h, {max(left, 0) / 3600:.2f} h left", flush=True)  # fmt: skip
                continue
        print(f"[worker {worker}] {c.experiment} / {c.dataset} / {c.row} / seed {c.seed}", flush=True)
        metrics = run_cell(pc.context, pc.table, c)
        ran += 1
        box = metrics["bbox"]["AP"]
        print(f"[worker {worker}] -> box AP {box:.2f} ({time.perf_counter() - t0:.0f} s so far)", flush=True)
        if commit:
            path = results_path(pc.context.profile.name, c.experiment, pc.context.results_root)
            _git_commit(path, f"{pc.context.profile.name} results: {c.experiment} {c.dataset} {c.row} seed {c.seed}")
    return ran


def _git_commit(path: Path, message: str, tries: int = 10) -> None:
    """Commit one result file (only that path), retrying while another git process holds the index."""
    for _ in range(tries):
        run = subprocess.run(
            ["git", "commit", "-q", "-m", message, "--", str(path)],
            cwd=path.parent,  # the checkout that holds the file (SRFKIT_RESULTS_DIR may point at another)
            capture_output=True,
            text=True,
        )
        if run.returncode == 0 or "nothing" in run.stdout + run.stderr:
            return
        if "index.lock" not in run.stderr:
            subprocess.run(["git", "add", "--", str(path)], cwd=path.parent, capture_output=True)
        time.sleep(3)
    print(f"campaign: could not commit {path}: {run.stderr.strip()}")


def parse_budgets(text: str) -> tuple[int, ...]:
    """``"250,500,1000"`` -> ``(250, 500, 1000)``; budgets must be positive and increasing."""
    try:
        budgets = tuple(int(b) for b in text.split(","))
    except ValueError as err:
        raise ValueError(f"--curve-budgets {text!r}: not a comma-separated list of step counts") from err
    if not budgets or budgets[0] <= 0 or any(a >= b for a, b in zip(budgets, budgets[1:])):
        raise ValueError(f"--curve-budgets {text!r}: budgets must be positive and increasing")
    return budgets


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m srfkit campaign``."""
    from .profiles import PROFILES

    p.add_argument("--profile", choices=list(PROFILES), default="cpu", help="sizes and schedules [%(default)s]")
    p.add_argument("--datasets", default="shapes", help="comma-separated shipped datasets [%(default)s]")
    p.add_argument(
        "--only", default=None, help=f"comma-separated experiments [all, in this order: {', '.join(SEED_COUNTS)}]"
    )
    p.add_argument(
        "--seeds",
        default=None,
        metavar="EXP=N,...",
        help="seed counts per experiment, e.g. learning_curve=3,progressive=6 [see srfkit.campaign.SEED_COUNTS]",
    )
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where stage folders go [%(default)s]")
    p.add_argument("--worker", type=int, default=0, help="this process's index among --workers [%(default)s]")
    p.add_argument("--workers", type=int, default=1, help="processes sharing the campaign (seeds split) [%(default)s]")
    p.add_argument(
        "--plan", action="store_true", help="print what remains (per experiment and row) and the estimate, run nothing"
    )
    p.add_argument(
        "--rows",
        default=None,
        help="comma-separated row names: run only those cells now (e.g. A1,A2 over every seed before the "
        "rest); the other rows stay planned for a later run",
    )
    p.add_argument(
        "--curve-budgets",
        default=None,
        metavar="N,N,...",
        help="learning-curve budgets for this run instead of the profile's (a run-only field: cells keep "
        "their fingerprint, and a later run with longer budgets extends the chains), e.g. 250,500,1000,2000",
    )
    p.add_argument("--commit", action="store_true", help="git-commit each result file as its cell lands")
    p.add_argument("--max-hours", type=float, default=None, help="start no new cell after this many hours")
    p.add_argument(
        "--fit-hours",
        type=float,
        default=None,
        help="the sitting ends after this many hours: start only cells whose training fits in the time left",
    )
    p.add_argument(
        "--step-seconds",
        type=float,
        default=None,
        help="seconds per training step for --fit-hours and --plan [measured in the stage folders here]",
    )
    p.add_argument("--weights-backbone", type=Path, metavar="PATH", help="local ResNet state dict (paper profile)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run_from_args(args: argparse.Namespace) -> int:
    """Action of ``python -m srfkit campaign``."""
    counts = {}
    for item in filter(None, (args.seeds or "").split(",")):
        name, _, n = item.partition("=")
        counts[name] = int(n)
    profile = get_profile(args.profile)
    if args.curve_budgets:
        profile = profile.replace(curve_budgets=parse_budgets(args.curve_budgets))
    cells = plan(
        profile,
        args.datasets.split(","),
        args.only.split(",") if args.only else None,
        counts,
        runs_root=args.runs,
        weights_backbone=args.weights_backbone,
        progress=args.progress,
    )
    if args.rows:
        cells = select_rows(cells, args.rows.split(","))
    _, report = remaining(cells, args.step_seconds, by_row=args.plan)
    print(report, flush=True)
    if args.plan:
        return 0
    if not 0 <= args.worker < args.workers:
        raise ValueError(f"--worker {args.worker} is not in 0..{args.workers - 1}")
    ran = run_campaign(
        cells,
        args.worker,
        args.workers,
        commit=args.commit,
        max_hours=args.max_hours,
        fit_hours=args.fit_hours,
        seconds_per_step=args.step_seconds,
    )
    print(f"[worker {args.worker}] ran {ran} cells", flush=True)
    print(remaining(cells)[1], flush=True)
    return 0
