"""The one training loop every stage uses.

A stage (see :class:`Stage`) owns its modules and computes its losses; the loop owns everything
else: SGD (momentum 0.9, weight decay 1e-4, none on normalisation layers) per optimiser group, linear warm-up
then step decay (:func:`warmup_multistep`), gradient clipping, AMP on CUDA only, the data order
(:class:`InfiniteBatchSampler`), non-finite loss detection, ``tqdm`` progress, the JSON-lines
metrics log, periodic and final checkpoints, bit-identical resume and ``torchrun`` processes.

Bit-identical resume holds on the CPU (tested). On CUDA a resumed or extended run is the same run up to
the last bits: the backward kernels of roi_align and interpolate add with atomics in no fixed order
(seen on an H200, 2026-11-30: the bit-identity tests fail there, the rest of the suite passes), and an
extended chain then keeps the superseded ``final.pt`` beside the new one and warns.

Files written in ``out_dir`` (by rank 0): ``config.json`` (the run's settings), ``metrics.jsonl``
(one line per step: ``step``, ``lr``, ``time_s`` (wall seconds of the step), ``cpu_s`` (process CPU
seconds of the step) and every loss term), ``step_000123.pt`` every ``checkpoint_every`` steps (the
newest ``keep_last`` kept) and ``final.pt`` (weights only) at the end, which replaces them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm.auto import tqdm

from ..data.coco import collate_train
from ..filelock import file_lock
from ..profiles import Profile, Schedule
from .checkpoint import (
    CHECKPOINT_FORMAT,
    check_config,
    checkpoint_path,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_module_state,
    save_checkpoint,
    set_rng_state,
)
from .distributed import DistEnv, all_gather_objects, init_distributed

__all__ = [
    "LoopOptions",
    "NonFiniteLossError",
    "Stage",
    "StageResult",
    "StepContext",
    "InfiniteBatchSampler",
    "decay_groups",
    "loop_options",
    "norm_parameter_ids",
    "seed_everything",
    "summarize_metrics",
    "train_loop",
    "warmup_multistep",
]

MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
WARMUP_FACTOR = 0.001


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite. Attributes: ``stage``, ``step``, ``terms``, ``checkpoint``."""

    def __init__(self, stage: str, step: int, terms: dict[str, float], checkpoint: Path | None) -> None:
        self.stage, self.step, self.terms, self.checkpoint = stage, step, terms, checkpoint
        listing = ", ".join(f"{k}={v}" for k, v in terms.items())
        kept = f"last good checkpoint kept: {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(
            f"stage {stage!r}: non-finite loss at step {step} ({listing}); training stopped, {kept}. "
            "Resume from it with a lower learning rate or gradient clipping (clip_grad)."
        )


@dataclass
class LoopOptions:
    """Settings of the loop that are not in the profile's :class:`~srfkit.profiles.Schedule`.

    Attributes:
        iters, batch_size, lr, warmup_iters, checkpoint_every: override the schedule's field when set
            (``iters`` also moves the milestones, which are fractions of it).
        clip_grad: clip each optimiser group's gradient norm to this value (``None``: no clipping).
        amp: mixed precision (float16 autocast + GradScaler); only ever used on CUDA.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if present).
        progress: show a ``tqdm`` bar (rank 0 only).
        keep_last: periodic checkpoints kept while the run goes on (oldest deleted); once ``final.pt``
            (weights only) is written they are all deleted, since a finished run never resumes.
            ``None`` keeps every file.
        stop_at: stop after this step without writing ``final.pt`` (simulates an interruption).
        num_workers: DataLoader workers (default: the profile's).
        extend: let a constant-rate run (no milestones) go on past the ``iters`` it was written with
            (learning-curve chains whose longest budget grew): its checkpoints of fewer ``iters`` load,
            and its ``final.pt`` is set aside as ``superseded_final_<steps>.pt`` (weights only, it
            cannot resume), the steps after the last periodic checkpoint are trained again and the new
            checkpoint at that step is checked equal to it before the set-aside file is removed.
    """

    iters: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup_iters: int | None = None
    checkpoint_every: int | None = None
    clip_grad: float | None = None
    amp: bool = True
    device: str | None = None
    progress: bool = True
    keep_last: int | None = 1
    stop_at: int | None = None
    num_workers: int | None = None
    extend: bool = False

    def schedule(self, base: Schedule) -> Schedule:
        """``base`` with this object's overrides applied."""
        names = ("iters", "batch_size", "lr", "warmup_iters", "checkpoint_every")
        changes = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return dataclasses.replace(base, **changes)


def loop_options(profile: Profile, options: dict) -> LoopOptions:
    """:class:`LoopOptions` from keyword options (unknown names raise ``TypeError``).

    Unset ``num_workers`` and ``clip_grad`` come from the profile (``clip_grad=None`` disables clipping).
    """
    opts = LoopOptions(**options)
    if "clip_grad" not in options:
        opts.clip_grad = profile.clip_grad
    if opts.num_workers is None:
        opts.num_workers = profile.num_workers
    return opts


@dataclass
class StageResult:
    """What a finished (or skipped, or stopped) stage leaves behind.

    Attributes:
        stage: stage name. out_dir: its folder. checkpoint: ``final.pt`` (or the last periodic one
        if stopped early). steps: optimiser steps done. metrics: last step's losses, plus
        ``time_per_step_s`` and ``cpu_per_step_s`` (means over the steps of this process' run).
        wall_time_s: seconds spent in this call. skipped: the stage was already finished.
    """

    stage: str
    out_dir: Path
    checkpoint: Path | None
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    skipped: bool = False


class Stage:
    """One training stage: its modules, optimiser groups, config and step.

    Subclasses fill ``self.modules`` (everything saved in checkpoints, by name), ``self.frozen``
    (helpers such as the guide F: moved to the device, kept in eval mode, never saved), the run's
    ``self._config`` and ``self._sources``, and implement :meth:`param_groups` and :meth:`step`. The loop
    replaces entries of ``self.run`` (initially the same modules) by their DistributedDataParallel
    wrappers under torchrun; forward passes go through ``self.run[name]``, saving through
    ``self.modules[name]``.
    """

    name = "stage"
    ddp_modules: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.modules: dict[str, nn.Module] = {}
        self.frozen: dict[str, nn.Module] = {}
        self.run: dict[str, nn.Module] = {}
        self._config: dict[str, Any] = {}
        self._sources: dict[str, Any] = {}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimiser name -> trainable parameters (one SGD and one LR scheduler each)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Plain-container settings that define the run (compared on resume)."""
        return self._config

    def sources(self) -> dict[str, Any]:
        """Informative settings stored in config.json but not compared on resume (e.g. input folders)."""
        return self._sources

    def train_mode(self) -> None:
        """Set train/eval modes before each step (frozen parts stay in eval)."""
        for module in self.modules.values():
            module.train()
        for module in self.frozen.values():
            module.eval()

    def to(self, device: torch.device) -> None:
        for module in (*self.modules.values(), *self.frozen.values()):
            module.to(device)

    def wrap(self, env: DistEnv) -> None:
        self.run = {k: (env.wrap(m) if k in self.ddp_modules else m) for k, m in self.modules.items()}

    def step(self, batch: tuple[list[torch.Tensor], list[dict]], ctx: StepContext) -> None:
        """One training step; calls ``ctx.update(optimiser_name, loss_terms)`` once per optimiser."""
        raise NotImplementedError


class StepContext:
    """What a stage's :meth:`Stage.step` may use: ``device``, ``autocast()`` and ``update()``."""

    def __init__(self, stage: str, env: DistEnv, optimizers: dict, scaler, clip_grad: float | None, amp: bool):
        self.stage, self.env, self.optimizers, self.scaler = stage, env, optimizers, scaler
        self.clip_grad, self.amp = clip_grad, amp
        self.device = env.device
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.logs: dict[str, float] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        """float16 autocast on CUDA when AMP is on; a no-op otherwise. Wrap forward passes only."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def update(self, name: str, terms: dict[str, torch.Tensor], total: torch.Tensor | None = None) -> None:
        """Check ``terms``, then backward ``total`` (default: their sum) and step optimiser ``name``.

        Every term is logged (averaged over processes). A NaN or infinite term raises
        :class:`NonFiniteLossError` before any weight changes. When ``total`` has no gradient path
        (e.g. only detached terms), no step is taken, so weight decay and momentum do not move the
        weights either.
        """
        total = sum(terms.values()) if total is None else total
        keys = [*terms, "total"]
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()] + [total.detach().float()])
        values = self.env.mean(values).cpu()
        bad = {k: float(v) for k, v in zip(keys, values) if not math.isfinite(float(v))}
        if bad:
            raise NonFiniteLossError(self.stage, self.step, bad, self.last_checkpoint)
        self.logs.update({k: float(v) for k, v in zip(keys[:-1], values[:-1])})
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        if not total.requires_grad:
            return
        self.scaler.scale(total).backward()
        if self.clip_grad is not None:
            self.scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.scaler.step(optimizer)


def warmup_multistep(optimizer: torch.optim.Optimizer, schedule: Schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up (factor 0.001 -> 1 over ``warmup_iters``), then x0.1 at each milestone step.

    The detectron2 ``WarmupMultiStepLR`` rule, as the paper's schedules use it. Stepped once per
    optimiser step.
    """
    milestones = sorted(schedule.milestone_steps())
    warmup = schedule.warmup_iters

    def factor(step: int) -> float:
        warm = 1.0 if step >= warmup else WARMUP_FACTOR + (1 - WARMUP_FACTOR) * step / warmup
        return warm * 0.1 ** sum(step >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class InfiniteBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices for steps ``start_step .. end_step - 1``, resumable at any step.

    The index stream is epoch after epoch of :class:`~torch.utils.data.DistributedSampler`
    (shuffled with ``seed`` and the epoch number, split across ``world_size`` ranks), cut into
    batches of ``batch_size``; step ``k`` always gets the same batch, so resuming at step ``k``
    reproduces the data order exactly.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int, start_step: int, end_step: int, rank: int = 0, world: int = 1
    ) -> None:
        if num_items == 0:
            raise ValueError("the training dataset is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.end_step, self.rank, self.world = start_step, end_step, rank, world

    def _epoch(self, epoch: int) -> list[int]:
        sampler = DistributedSampler(range(self.num_items), self.world, self.rank, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    def __len__(self) -> int:
        return max(self.end_step - self.start_step, 0)

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = len(self._epoch(0))
        epoch, offset = divmod(self.start_step * self.batch_size, per_epoch)
        batch: list[int] = []
        remaining = len(self)
        while remaining > 0:
            for index in self._epoch(epoch)[offset:]:
                batch.append(index)
                if len(batch) == self.batch_size:
                    yield batch
                    batch, remaining = [], remaining - 1
                    if remaining == 0:
                        return
            epoch, offset = epoch + 1, 0


# Layers whose weight and bias get no weight decay (detectron2's WEIGHT_DECAY_NORM = 0, which the authors used).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def norm_parameter_ids(modules) -> set[int]:
    """``id`` of every parameter that belongs to a normalisation layer of ``modules``."""
    return {
        id(p)
        for module in modules
        for layer in module.modules()
        if isinstance(layer, NORM_LAYERS)
        for p in layer.parameters(recurse=False)
    }


def decay_groups(params: list[nn.Parameter], norm_ids: set[int]) -> list[dict]:
    """SGD parameter groups: weight decay 1e-4, and 0 for normalisation parameters (empty groups left out)."""
    groups = [
        {"params": [p for p in params if id(p) not in norm_ids], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if id(p) in norm_ids], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]] or [{"params": [], "weight_decay": WEIGHT_DECAY}]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _move(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(v, device) for v in obj)
    return obj


def summarize_metrics(path: Path) -> tuple[int, dict[str, float]]:
    """(steps logged, last step's numbers plus mean ``time_per_step_s`` / ``cpu_per_step_s``)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()] if path.exists() else []
    rows = [r for r in rows if "step" in r and "error" not in r]
    if not rows:
        return 0, {}
    last = {k: v for k, v in rows[-1].items() if isinstance(v, (int, float)) and k not in ("step",)}
    last.pop("time_s", None), last.pop("cpu_s", None)
    timed = rows[1:] if len(rows) > 1 else rows  # the first step pays one-off costs
    last["time_per_step_s"] = sum(r["time_s"] for r in timed) / len(timed)
    last["cpu_per_step_s"] = sum(r["cpu_s"] for r in timed) / len(timed)
    return rows[-1]["step"], last


class _Run:
    """State of one call of :func:`train_loop` (kept out of the function to keep it short)."""

    def __init__(self, stage: Stage, schedule: Schedule, out_dir: Path, seed: int, options: LoopOptions, env):
        self.stage, self.schedule, self.out_dir, self.seed, self.options, self.env = (
            stage,
            schedule,
            out_dir,
            seed,
            options,
            env,
        )
        self.amp = bool(options.amp) and env.device.type == "cuda"
        self.config = {
            **stage.config(),
            "stage": stage.name,
            "seed": seed,
            "schedule": dataclasses.asdict(schedule),
            "clip_grad": options.clip_grad,
            "amp": self.amp,
            "world_size": env.world_size,
        }
        self.metrics_path = out_dir / "metrics.jsonl"

    def build_optim(self) -> None:
        groups = self.stage.param_groups()
        norms = norm_parameter_ids(self.stage.modules.values())
        self.optimizers = {
            k: torch.optim.SGD(decay_groups(p, norms), lr=self.schedule.lr, momentum=MOMENTUM)
            for k, p in groups.items()
        }
        self.schedulers = {k: warmup_multistep(o, self.schedule) for k, o in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(self.env.device.type, enabled=self.amp)

    def payload(self, step: int, final: bool = False) -> dict:
        """Checkpoint contents; ``final`` keeps only the weights (nothing resumes a finished run)."""
        payload = {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage.name,
            "step": step,
            "config": self.config,
            "models": {k: m.state_dict() for k, m in self.stage.modules.items()},
            "optimizers": {},
            "schedulers": {},
            "scaler": None,
            "rng": [],
        }
        if not final:
            payload["optimizers"] = {k: o.state_dict() for k, o in self.optimizers.items()}
            payload["schedulers"] = {k: s.state_dict() for k, s in self.schedulers.items()}
            payload["scaler"] = self.scaler.state_dict() if self.amp else None
            payload["rng"] = all_gather_objects(self.env, get_rng_state())
        return payload

    def check(self, saved: dict, source: Path) -> None:
        """Refuse a checkpoint ``config`` of another run; with ``options.extend``, one of a constant-rate
        run with fewer ``iters`` is this run's (see :class:`LoopOptions`)."""
        current = self.config
        if self.options.extend and _extendable(saved, current):
            saved, current = _without_iters(saved), _without_iters(current)
        check_config(saved, current, source=source)

    def restore(self, path: Path) -> int:
        payload = load_checkpoint(path)
        self.check(payload["config"], path)
        for k, module in self.stage.modules.items():
            load_module_state(module, payload["models"][k], source=path)
        for k, opt in self.optimizers.items():
            opt.load_state_dict(payload["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(payload["schedulers"][k])
        if payload["scaler"]:
            self.scaler.load_state_dict(payload["scaler"])
        set_rng_state(payload["rng"][self.env.rank])
        return int(payload["step"])

    def save(self, step: int, final: bool) -> Path:
        payload = self.payload(step, final)  # every rank joins a periodic checkpoint's RNG gather
        path = checkpoint_path(self.out_dir, None if final else step)
        if self.env.is_main:
            save_checkpoint(path, payload)
            keep = self.options.keep_last
            if keep is not None:  # only after the new file is safely in place
                periodic = list_checkpoints(self.out_dir)
                for _, old in periodic if final else periodic[: max(len(periodic) - keep, 0)]:
                    old.unlink(missing_ok=True)
        self.env.barrier()
        return path

    def start_files(self, start: int) -> None:
        if not self.env.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        info = {**self.config, "sources": self.stage.sources()}
        (self.out_dir / "config.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
        if self.metrics_path.exists():  # drop steps after the checkpoint we resume from
            keep = [ln for ln in self.metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start]
            self.metrics_path.write_text("".join(ln + "\n" for ln in keep))

    def log(self, row: dict) -> None:
        if self.env.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def loader(self, dataset: Dataset, start: int, end: int) -> DataLoader:
        sampler = InfiniteBatchSampler(
            len(dataset), self.schedule.batch_size, self.seed, start, end, self.env.rank, self.env.world_size
        )
        workers = self.options.num_workers if self.options.num_workers is not None else 0
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=workers,
            collate_fn=collate_train,
            generator=torch.Generator().manual_seed(self.seed + start),
            pin_memory=self.env.device.type == "cuda",
        )


def _extendable(saved: dict, current: dict) -> bool:
    """Whether a checkpoint of ``saved`` config belongs to a constant-rate run that ``current`` continues."""
    a, b = saved.get("schedule") or {}, current.get("schedule") or {}
    return not a.get("milestones") and not b.get("milestones") and a.get("iters", math.inf) <= b.get("iters", -1)


def _without_iters(config: Any) -> Any:
    """``config`` with ``iters`` left out of every constant-rate schedule in it (the run's and its profile's)."""
    if isinstance(config, dict):
        flat = "iters" in config and "milestones" in config and not config["milestones"]
        return {k: _without_iters(v) for k, v in config.items() if not (flat and k == "iters")}
    return config


SUPERSEDED = "superseded_final_{:06d}.pt"


def _set_aside_final(run: _Run, steps: int) -> None:
    """Rename ``final.pt`` of a shorter constant-rate run so that the run resumes from its periodic checkpoints."""
    periodic = [s for s, _ in list_checkpoints(run.out_dir) if s < steps]
    if not periodic:
        raise FileNotFoundError(
            f"{run.out_dir}: cannot extend the finished {steps}-step run to {run.schedule.iters} steps: no periodic "
            "checkpoint with optimiser state is left (final.pt holds weights only); train it again in a new folder"
        )
    if run.env.is_main:
        checkpoint_path(run.out_dir).rename(run.out_dir / SUPERSEDED.format(steps))
    run.env.barrier()


def _check_superseded(out_dir: Path, last_step: int) -> None:
    """Remove each set-aside ``final.pt`` that the extended run has re-created bit for bit (the periodic
    checkpoint at its step holds the same weights); warn and keep it when the weights differ."""
    for old in sorted(out_dir.glob(SUPERSEDED.replace("{:06d}", "*"))):
        steps = int(old.stem.rpartition("_")[2])
        again = checkpoint_path(out_dir, steps)
        if steps > last_step or not again.is_file():
            continue
        a, b = load_checkpoint(old)["models"], load_checkpoint(again)["models"]
        same = a.keys() == b.keys() and all(
            a[m].keys() == b[m].keys() and all(torch.equal(a[m][k], b[m][k]) for k in a[m]) for m in a
        )
        if same:
            old.unlink()
        else:
            warnings.warn(
                f"{again}: the extended run did not re-create the weights of the earlier final.pt at step {steps} "
                f"(kept as {old.name}); points of this run before and after that step may not be comparable",
                stacklevel=2,
            )


def _check_start(run: _Run, resume: bool) -> Path | None:
    latest = latest_checkpoint(run.out_dir)
    if latest is not None and not resume:
        raise FileExistsError(
            f"{run.out_dir} already holds checkpoints of an unfinished run ({latest.name}); "
            "pass resume=True (--resume) to continue it, or choose another output folder"
        )
    return latest


def train_loop(
    stage: Stage,
    dataset: Dataset,
    out_dir: str | Path,
    schedule: Schedule,
    seed: int = 0,
    resume: bool = False,
    options: LoopOptions | None = None,
) -> StageResult:
    """Train ``stage`` on ``dataset`` for ``schedule.iters`` steps, writing into ``out_dir``.

    A finished run (``final.pt`` with the same config) is not trained again: its result comes back
    with ``skipped=True``; a different config there is refused. Unfinished checkpoints without
    ``resume`` are refused too, so nothing is overwritten by accident. ``resume=True`` continues from
    the newest periodic checkpoint (weights, optimisers, schedulers, AMP scaler, every RNG of every
    rank, and the data order), or starts afresh when there is none.

    Raises:
        NonFiniteLossError: a loss term became NaN/inf (the last good checkpoint stays).
        CheckpointMismatchError: resuming from a checkpoint of another configuration.
    """
    options = options or LoopOptions()
    env = init_distributed(options.device)
    run = _Run(stage, options.schedule(schedule), Path(out_dir), seed, options, env)
    with _folder_lock(run.out_dir, env):  # a second process on the same folder waits, then skips
        return _train(run, dataset, resume)


@contextlib.contextmanager
def _folder_lock(out_dir: Path, env: DistEnv) -> Iterator[None]:
    """Exclusive lock on ``out_dir/.lock`` held by rank 0 (POSIX only; elsewhere no locking)."""
    if not env.is_main:
        env.barrier()
        yield
        return
    with file_lock(out_dir / ".lock"):
        env.barrier()
        yield


def _train(run: _Run, dataset: Dataset, resume: bool) -> StageResult:
    stage, env, seed = run.stage, run.env, run.seed
    t0 = time.perf_counter()
    final = checkpoint_path(run.out_dir)
    if final.is_file():
        saved = load_checkpoint(final)["config"]
        run.check(saved, final)  # refuses a different config
        if saved["schedule"]["iters"] == run.schedule.iters:
            steps, metrics = summarize_metrics(run.metrics_path)
            return StageResult(stage.name, run.out_dir, final, steps, metrics, time.perf_counter() - t0, skipped=True)
        _set_aside_final(run, saved["schedule"]["iters"])  # extend: go on from the last periodic checkpoint
    stage.to(env.device)
    run.build_optim()
    latest = _check_start(run, resume)
    start = run.restore(latest) if latest is not None else 0
    if latest is None:
        seed_everything(seed + env.rank)
    run.start_files(start)
    stage.wrap(env)
    last = _loop(run, dataset, start)
    if env.is_main:
        _check_superseded(run.out_dir, last[0])
    steps, metrics = summarize_metrics(run.metrics_path) if env.is_main else (last[0], {})
    return StageResult(stage.name, run.out_dir, last[1], steps, metrics, time.perf_counter() - t0)


def _loop(run: _Run, dataset: Dataset, start: int) -> tuple[int, Path | None]:
    stage, schedule, env = run.stage, run.schedule, run.env
    end = schedule.iters if run.options.stop_at is None else min(run.options.stop_at, schedule.iters)
    ctx = StepContext(stage.name, env, run.optimizers, run.scaler, run.options.clip_grad, run.amp)
    ctx.last_checkpoint = latest_checkpoint(run.out_dir)
    bar = tqdm(total=schedule.iters, initial=start, desc=stage.name, disable=not (run.options.progress and env.is_main))
    step = start
    try:
        tick, cpu = time.perf_counter(), time.process_time()
        for batch in run.loader(dataset, start, end):
            step, ctx.step, ctx.logs = step + 1, step + 1, {}
            stage.train_mode()
            stage.step(_move(batch, env.device), ctx)
            lrs = {k: s.get_last_lr()[0] for k, s in run.schedulers.items()}
            with warnings.catch_warnings():  # an optimiser with no gradient this step was not stepped
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                for sched in run.schedulers.values():
                    sched.step()
            run.scaler.update()
            now, now_cpu = time.perf_counter(), time.process_time()
            run.log({"step": step, "lr": lrs, "time_s": now - tick, "cpu_s": now_cpu - cpu, **ctx.logs})
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in ctx.logs.items()}, refresh=False)
            if step == schedule.iters:
                ctx.last_checkpoint = run.save(step, final=True)
            elif step % schedule.checkpoint_every == 0:
                ctx.last_checkpoint = run.save(step, final=False)
            tick, cpu = time.perf_counter(), time.process_time()
    except NonFiniteLossError as err:
        run.log({"step": err.step, "error": str(err)})
        raise
    finally:
        bar.close()
    return step, ctx.last_checkpoint
