"""The paper's experiments, run on the shipped data: ``python -m srfkit experiments``.

Each experiment trains what it needs through :mod:`srfkit.train` (stage folders are shared between
experiments, so the guide of seed 0 is trained once and serves every table), evaluates on the
validation split with :func:`srfkit.eval.coco_evaluate`, and writes
``data/results/<profile>/<experiment>.json`` through :func:`srfkit.results.update_result`:
per-seed metrics, their mean and standard deviation, the profile, git commit, device and wall time.

Experiments (paper table in brackets): ``interpolation`` (5, plus learned peers and light generators),
``progressive`` (4), ``degradation`` (6), ``semantic_level`` (7), ``cross_head`` (3), ``detectors`` (1),
``adversarial_grad`` (G with and without the adversarial gradient), ``fidelity`` (feature L1/PSNR/cosine
per level), ``cost`` (parameters and latency).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .profiles import RUN_ONLY_FIELDS, Profile, get_profile
from .results import load_result, merge_entry, provenance, results_path, update_cell, update_result
from .train.checkpoint import save_checkpoint
from .train.evaluate import evaluate_stage

__all__ = ["EXPERIMENTS", "Runs", "configure_parser", "run_experiment", "run_experiments", "run_from_args"]

# Upsamplers trained from scratch inside the detector (no SRF-GAN stages needed).
PLAIN_UPSAMPLERS = ("nearest", "bilinear", "bicubic", "dysample", "dysample_dynamic", "carafe")
# Generator variants trained by SRF-GAN (stage 1) and reused as G (stage 3).
GENERATOR_ROWS = {"srf_light": "light", "srf_depthwise": "depthwise"}
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The learning curve's rows: the baseline, the paper's G trained from scratch in the FPN, and the paper's
# method without M (Table 4's A2): the stage-1 G reused in the FPN and fine-tuned with the detector.
CURVE_UPSAMPLERS = ("nearest", "srf")
CURVE_ROWS = (*CURVE_UPSAMPLERS, "srf_G")
# At every budget each chain is compared with each chain before it: srf - nearest, srf_G - nearest, srf_G - srf.
CURVE_PAIRS = tuple((later, earlier) for earlier, later in itertools.combinations(CURVE_ROWS, 2))


@dataclass
class Runs:
    """Stage folders of one profile, dataset and seed, trained on first use and reused after.

    Folder layout: ``root/<profile>/<dataset>/seed<seed>/<stage-name>``. Every method returns the folder
    of a finished stage; an interrupted stage resumes.
    """

    profile: Profile
    dataset: str
    seed: int
    root: Path
    options: dict = field(default_factory=dict)
    weights_backbone: Path | None = None
    record: dict | None = None

    @property
    def folder(self) -> Path:
        return self.root / self.profile.name / self.dataset / f"seed{self.seed}"

    def _train(self, fn: Callable, name: str, **kwargs) -> Path:
        """Train (or resume, or skip) the stage ``fn`` into ``folder/name``; with ``record`` (a dict),
        only note ``{folder: {"stage", "steps", "upsampler"}}`` there (planning, see srfkit.campaign)."""
        out = self.folder / name
        if self.record is not None:
            stage = fn.__name__.removeprefix("train_")
            steps = kwargs.get("iters") or self.options.get("iters") or self.profile.schedule(stage).iters
            self.record[out] = {"stage": stage, "steps": int(steps), "upsampler": kwargs.get("upsampler")}
            return out
        fn(self.profile, self.dataset, out, seed=self.seed, resume=True, **{**self.options, **kwargs})
        return out

    def detector(self, upsampler: str = "nearest", arch: str | None = None, iters: int | None = None) -> Path:
        """A detector trained from scratch with a fixed or learned upsampler; nearest is the guide (A1).

        ``iters`` trains it for that many steps instead of the guide schedule's (a budget control).
        """
        from .train import train_guide

        name = "guide" if (upsampler, arch) == ("nearest", None) else f"det_{arch or 'default'}_{upsampler}"
        steps = iters or self.profile.guide.iters
        # Any from-scratch detector may be a curve point, the guide too (stages 1 and 2 read F from the
        # chain's checkpoint file as they would from a stage folder).
        if self.on_curve(upsampler, arch, steps):
            return self.curve(upsampler, steps)
        kwargs = dict(upsampler=upsampler, arch=arch, weights_backbone=self.weights_backbone)
        if iters is None:
            return self._train(train_guide, name, **kwargs)
        return self._train(train_guide, f"{name}_{iters}steps", iters=iters, **kwargs)

    def on_curve(self, upsampler: str, arch: str | None, steps: int) -> bool:
        """Whether a detector trained from scratch for ``steps`` with the guide schedule is a point of a
        learning-curve chain (:meth:`curve`), so that the chain's checkpoint can stand for it.

        True when the detector is the guide's architecture with an upsampler that the curve trains and
        ``steps`` is a chain length (:meth:`_chain_point`). The chain is deterministic: stopped and
        resumed at each budget it gives the same weights as one run of that length
        (``test_a_curve_checkpoint_equals_the_detector_trained_for_that_budget``).
        """
        return arch is None and upsampler in CURVE_UPSAMPLERS and self._chain_point(steps)

    def target_on_curve(self) -> bool:
        """Whether stage 3 with the paper's G reused (Table 4's A2) is a point of the ``srf_G`` chain.

        True when the target schedule is the guide's but for its length (the chain trains with the guide
        schedule's rate and warm-up) and that length is a chain point (:meth:`_chain_point`); then the
        chain's checkpoint at that length equals A2 in every weight
        (``test_the_srf_g_chain_at_a_budget_is_table_4s_a2_trained_that_long``).
        """
        guide, target = self.profile.guide, self.profile.target
        same_rate = dataclasses.replace(target, iters=guide.iters, checkpoint_every=guide.checkpoint_every) == guide
        return same_rate and self._chain_point(target.iters)

    def _chain_point(self, steps: int) -> bool:
        """Whether ``steps`` of the guide schedule are the first ``steps`` of a curve chain: the guide has a
        constant rate (no milestones: the same data order and learning rates), ``steps`` is one of the
        profile's ``curve_budgets``, and no loop option overrides the stage lengths."""
        return not self.profile.guide.milestones and steps in self.profile.curve_budgets and "iters" not in self.options

    def reuse_m_steps(self) -> int:
        """Optimiser steps behind a target detector that reuses M: stage 2's plus stage 3's."""
        if "iters" in self.options:  # every stage overridden (smoke runs)
            return 2 * self.options["iters"]
        return self.profile.extractor.iters + self.profile.target.iters

    def srf_gan(self, variant: str = "paper", adversarial_grad: bool = True, degrade_mode: str = "bilinear") -> Path:
        """Stage 1 against the guide's features."""
        from .train import train_srf_gan

        name = f"srf_gan_{variant}" + ("" if adversarial_grad else "_noadv") + _mode_suffix(degrade_mode)
        return self._train(
            train_srf_gan,
            name,
            guide_dir=self.detector(),
            variant=variant,
            adversarial_grad=adversarial_grad,
            degrade_mode=degrade_mode,
        )

    def d2(self, arch: str = "cascade_rcnn", upsampler: str = "nearest", srf_gan_dir: Path | None = None) -> Path:
        """A detectron2 detector (:mod:`srfkit.detection.d2`) trained from scratch with the target schedule.

        ``upsampler="srf"`` with ``srf_gan_dir`` builds the stage-1 G of that folder into the FPN (G
        reused, fine-tuned with the detector). The folder is detectron2's ``OUTPUT_DIR``; an
        interrupted run resumes from its last checkpoint, a finished one (``model_final.pth``) is kept.
        """
        name = f"d2_{arch}_{upsampler}"
        out = self.folder / name
        if self.record is not None:
            steps = self.options.get("iters") or self.profile.target.iters
            self.record[out] = {"stage": "target", "steps": int(steps), "upsampler": upsampler}
            return out
        from .detection.d2 import FINAL_CHECKPOINT, require_detectron2

        require_detectron2()
        if (out / FINAL_CHECKPOINT).is_file():
            return out
        from .detection.d2.engine import train_detector

        opts = ["SOLVER.MAX_ITER", str(self.options["iters"])] if "iters" in self.options else []
        srf = {"variant": "paper", "srf_weights": srf_gan_dir} if upsampler == "srf" else {}
        train_detector(
            arch,
            self.dataset,
            self.profile,
            output_dir=out,
            resume=(out / "last_checkpoint").is_file(),
            run_eval=False,
            upsampler=upsampler,
            seed=self.seed,
            opts=opts,
            **srf,
        )
        return out

    def curve(self, upsampler: str, budget: int) -> Path:
        """The checkpoint after ``budget`` steps of one learning-curve chain (``learning_curve``).

        One chain per row (:data:`CURVE_ROWS`) and seed trains for ``max(curve_budgets)`` steps with the
        guide schedule's learning rate and warm-up but no decay (a constant rate, so that the checkpoint
        at every budget is what that many steps give), keeping a checkpoint at each budget: a detector
        from scratch with ``nearest`` or ``srf`` in the FPN, or (``srf_G``) the target detector with
        the seed's stage-1 G reused, fine-tuned with it (Table 4's A2 trained longer). A chain resumes
        from its newest checkpoint, so asking for the budgets in order trains it once; when the longest
        budget grows, a finished chain is extended (:class:`~srfkit.train.loop.LoopOptions` ``extend``:
        the earlier budgets' checkpoints stay valid, the old end is re-created and checked).
        """
        from .train import train_guide, train_target
        from .train.checkpoint import checkpoint_path, run_iters

        budgets = self.profile.curve_budgets
        if budget not in budgets:
            raise ValueError(f"budget {budget} is not one of the profile's curve_budgets {budgets}")
        if upsampler not in CURVE_ROWS:
            raise ValueError(f"no learning-curve chain {upsampler!r}; chains: {', '.join(CURVE_ROWS)}")
        out = self.folder / f"curve_{upsampler}"
        # A chain never shrinks: one started for a longer curve (a run with fewer ``--curve-budgets``) keeps
        # its length, and a budget below its end is read from the periodic checkpoint, never its final.pt.
        # A finished chain that ends at ``budget`` (started for a shorter curve) is read as it is; it is
        # extended only when a longer budget is asked for.
        started = run_iters(out) or 0
        top = max(*budgets, started)
        schedule = dataclasses.replace(
            self.profile.guide, iters=top, milestones=(), checkpoint_every=functools.reduce(math.gcd, budgets)
        )
        ends_here = budget == started and checkpoint_path(out).is_file()
        wanted = checkpoint_path(out, None if budget == top or ends_here else budget)
        if self.record is not None:
            if upsampler == "srf_G":
                self.srf_gan()  # planned with the chain that needs it
            # A table row may need only the chain's first ``budget`` steps: plan the longest need.
            steps = max(budget, self.record.get(out, {}).get("steps", 0))
            self.record[out] = {"stage": "guide", "steps": steps, "upsampler": upsampler}
        elif not wanted.is_file() or (budget == top and started < top):  # missing, or a shorter end
            options = {k: v for k, v in self.options.items() if k != "iters"}  # the chain sets its own length
            # The chain's recorded profile carries only its own schedule (and no seed list or budgets), so
            # that setting the other stages' budgets or seed counts later does not make the chain foreign.
            chain = self.profile.replace(
                guide=schedule, srf_gan=schedule, extractor=schedule, target=schedule, seeds=(), curve_budgets=()
            )
            common = dict(seed=self.seed, resume=True, weights_backbone=self.weights_backbone)
            loop = {**options, "stop_at": budget, "keep_last": None, "extend": True}
            if upsampler == "srf_G":  # stage 1 (and its guide) first, only when the chain has steps to train
                train_target(chain, self.dataset, out, reuse="G", srf_gan_dir=self.srf_gan(), **common, **loop)
            else:
                train_guide(chain, self.dataset, out, upsampler=upsampler, **common, **loop)
        return wanted

    def extractor(
        self,
        arch: str | None = None,
        semantic_level: str = "same",
        degrade_mode: str = "bilinear",
        upsampler: str | None = None,
    ) -> Path:
        """Stage 2 from the paper-form G (``semantic_level``: Table 7's variants).

        ``upsampler`` (e.g. ``nearest``): the control without G, M with that upsampler and a fresh D,
        trained with the same detection and feature losses (no stage 1).
        """
        from .train import train_extractor

        name = f"extractor_{arch or 'default'}" + ("" if semantic_level == "same" else f"_{semantic_level}")
        name += _mode_suffix(degrade_mode) + (f"_{upsampler}" if upsampler else "")
        return self._train(
            train_extractor,
            name,
            guide_dir=self.detector(),
            srf_gan_dir=None if upsampler else self.srf_gan(degrade_mode=degrade_mode),
            upsampler=upsampler,
            arch=arch,
            semantic_level=semantic_level,
            degrade_mode=degrade_mode,
            weights_backbone=self.weights_backbone,
        )

    def target(
        self,
        reuse: str,
        arch: str | None = None,
        variant: str = "paper",
        freeze_g: bool = False,
        extractor: Path | None = None,
        srf_gan: Path | None = None,
    ) -> Path:
        """Stage 3 with G (``reuse="G"``) or M (``reuse="M"``) reused."""
        from .train import train_target

        plain_a2 = reuse == "G" and (arch, variant, freeze_g, srf_gan) == (None, "paper", False, None)
        if plain_a2 and self.target_on_curve():
            return self.curve("srf_G", self.profile.target.iters)
        if reuse == "G":
            srf_gan = srf_gan or self.srf_gan(variant)
            source = dict(srf_gan_dir=srf_gan)
            tag = srf_gan.name
        else:
            extractor = extractor or self.extractor()
            source = dict(extractor_dir=extractor)
            tag = extractor.name
        name = f"target_{arch or 'default'}_{reuse}_{tag}" + ("_frozen" if freeze_g else "")
        weights = dict(weights_backbone=self.weights_backbone) if reuse != "M" else {}
        return self._train(train_target, name, reuse=reuse, arch=arch, freeze_g=freeze_g, **source, **weights)


def _mode_suffix(mode: str) -> str:
    return "" if mode == "bilinear" else f"_deg{mode}"


@dataclass(frozen=True)
class Table:
    """A row experiment: rows (each a function of a seed's :class:`Runs` giving the stage folder or
    checkpoint to evaluate) and the paired comparisons ``(row, baseline)`` its verdicts come from."""

    rows: dict[str, Callable[[Runs], Path]]
    comparisons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Cell:
    """One (experiment, dataset, row, seed): train what the row needs in that seed's chain, evaluate it."""

    experiment: str
    dataset: str
    row: str
    seed: int


# Profile fields left out of a cell's fingerprint: the run-only ones (seed list, curve budgets) and data workers.
_NOT_IN_FINGERPRINT = (*RUN_ONLY_FIELDS, "num_workers")
# Loop options that cannot change them either (progress bars, checkpoint spacing and retention, workers).
_OPTIONS_NOT_IN_FINGERPRINT = ("progress", "keep_last", "checkpoint_every", "num_workers")


def fingerprint(
    profile: Profile, options: dict, weights_backbone: Path | None = None, experiment: str | None = None
) -> str:
    """Short hash of every setting a cell's numbers depend on (profile, loop options, backbone weights).

    A cell recorded under another fingerprint is stale: the campaign computes it again. Fields that
    cannot change the numbers are left out (seed list, workers, checkpoint spacing), and a
    ``learning_curve`` cell ignores the stage schedules its constant-rate chain does not use (so
    setting the other tables' budgets from the curve does not make the curve stale).
    """
    d = {k: v for k, v in profile.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
    for stage in ("guide", "srf_gan", "extractor", "target"):
        d[stage] = {k: v for k, v in d[stage].items() if k != "checkpoint_every"}
    if experiment == "learning_curve":
        d = {k: v for k, v in d.items() if k not in ("srf_gan", "extractor", "target")}
        d["guide"] = {k: v for k, v in d["guide"].items() if k not in ("iters", "milestones")}
    options = {k: v for k, v in options.items() if k not in _OPTIONS_NOT_IN_FINGERPRINT}
    blob = json.dumps([d, options, str(weights_backbone or "")], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def cell_done(document: dict | None, cell: Cell, key: str) -> bool:
    """Whether ``document`` (a result file) holds ``cell`` computed under fingerprint ``key``."""
    entry = ((document or {}).get("datasets") or {}).get(cell.dataset) or {}
    if "invalidated" in entry:
        return False
    record = (entry.get("rows") or {}).get(cell.row) or {}
    found = (record.get("cells") or {}).get(str(cell.seed))
    return bool(found) and found.get("fingerprint") == key and str(cell.seed) in record.get("per_seed", {})


def run_cell(ctx: ExperimentContext, table: Table, cell: Cell) -> dict:
    """Train (or reuse) the cell's chain, evaluate it, and merge it into the result file at once."""
    runs = ctx.runs(cell.seed)
    t0 = time.perf_counter()
    target = table.rows[cell.row](runs)
    progress = ctx.options.get("progress", True)
    metrics = evaluate_stage(target, cell.dataset, full_resolution=True, progress=progress)
    record = {
        "stage": str(target.relative_to(ctx.runs_root)) if target.is_relative_to(ctx.runs_root) else str(target),
        "wall_s": time.perf_counter() - t0,
        "fingerprint": ctx.fingerprint,
        **{k: provenance()[k] for k in ("git_commit", "finished_utc", "device")},
    }
    update_cell(
        ctx.profile.name,
        cell.experiment,
        cell.dataset,
        cell.row,
        cell.seed,
        metrics,
        record,
        comparisons=list(table.comparisons),
        config=ctx.config,
        root=ctx.results_root,
    )
    return metrics


@dataclass
class ExperimentContext:
    """What every experiment gets: profile, dataset, seeds, and where stage folders live."""

    profile: Profile
    dataset: str
    seeds: tuple[int, ...]
    runs_root: Path
    options: dict = field(default_factory=dict)
    results_root: Path | None = None
    weights_backbone: Path | None = None

    experiment: str | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.profile, self.options, self.weights_backbone, self.experiment)

    @functools.cached_property
    def config(self) -> dict:
        """What the result file records of how its cells were made (and the validation objects behind them)."""
        from .data import load

        val = load(self.dataset, "val", self.profile)
        return {
            "profile": self.profile.to_dict(),
            "options": self.options,
            "weights_backbone": str(self.weights_backbone or ""),
            "fingerprint": self.fingerprint,
            "val_images": len(val),
            "val_objects": sum(not a.get("iscrowd", 0) for a in val.coco.anns.values()),
        }

    def runs(self, seed: int) -> Runs:
        return Runs(self.profile, self.dataset, seed, self.runs_root, self.options, self.weights_backbone)


def interpolation(ctx: ExperimentContext) -> Table:
    """Table 5 plus peers and controls: one detector per FPN upsampler, SRF with G and with M reused.

    Controls: ``srf_scratch`` (the paper's G inside the detector from random init, no GAN stages),
    ``nearest_conv`` (nearest plus a block as large as G: capacity without learned upsampling),
    ``A1_matched`` (nearest trained as long as ``srf_M``'s backbone) and ``nearest_M`` (the whole
    method with nearest instead of G). Every row is compared with nearest; ``srf_M`` also with the
    budget-matched ``A1_matched`` and with ``nearest_M``, ``srf_G`` with ``srf_scratch``, and
    ``srf_scratch`` with ``nearest_conv``.
    """
    rows: dict[str, Callable[[Runs], Path]] = {name: (lambda r, n=name: r.detector(n)) for name in PLAIN_UPSAMPLERS}
    rows["srf_scratch"] = lambda r: r.detector("srf")
    rows["nearest_conv"] = lambda r: r.detector("nearest_conv")
    rows["srf_G"] = lambda r: r.target("G")
    rows["srf_M"] = lambda r: r.target("M")
    for row, variant in GENERATOR_ROWS.items():
        rows[f"{row}_G"] = lambda r, v=variant: r.target("G", variant=v)
    rows["A1_matched"] = lambda r: r.detector(iters=r.reuse_m_steps())
    rows["nearest_M"] = lambda r: r.target("M", extractor=r.extractor(upsampler="nearest"))
    comparisons = [(row, "nearest") for row in rows if row != "nearest"]
    comparisons += [("srf_M", "A1_matched"), ("srf_M", "nearest_M"), ("srf_G", "srf_scratch")]
    comparisons += [("srf_scratch", "nearest_conv")]  # a learned upsampler against the same capacity after nearest
    return Table(rows, tuple(comparisons))


def d2_cascade(ctx: ExperimentContext) -> Table:
    """Cascade R-CNN in detectron2 (the paper's own engine): nearest against SRF with G reused.

    ``srf_G`` builds the seed's stage-1 G (trained against the torchvision guide F of the same seed)
    into detectron2's FPN and fine-tunes it with the detector; both rows train from scratch with the
    target schedule. The paper's figure is +0.2 box AP (Cascade R-CNN S-101, 48.5 -> 48.7, Table 2, test-dev).
    """
    rows = {
        "nearest": lambda r: r.d2("cascade_rcnn"),
        "srf_G": lambda r: r.d2("cascade_rcnn", "srf", srf_gan_dir=r.srf_gan()),
    }
    return Table(rows, (("srf_G", "nearest"),))


def learning_curve(ctx: ExperimentContext) -> Table:
    """AP against training steps: Mask R-CNN with nearest, with the paper's G trained from scratch inside
    the FPN (no GAN stages) and with the stage-1 G reused (``srf_G``, Table 4's A2), at each of the
    profile's ``curve_budgets`` (one constant-rate chain per row and seed; see :meth:`Runs.curve`).
    Rows ``<row>@<steps>``; at each budget ``srf`` and ``srf_G`` are compared with ``nearest`` and
    ``srf_G`` with ``srf``. Tells faster learning from a higher plateau, and where the baseline's
    plateau is (the budget a number must be measured at to count).
    """
    rows: dict[str, Callable[[Runs], Path]] = {}
    for budget in ctx.profile.curve_budgets:
        for name in CURVE_ROWS:
            rows[f"{name}@{budget}"] = lambda r, u=name, b=budget: r.curve(u, b)
    comparisons = tuple((f"{a}@{b}", f"{c}@{b}") for b in ctx.profile.curve_budgets for a, c in CURVE_PAIRS)
    return Table(rows, comparisons)


def progressive(ctx: ExperimentContext) -> Table:
    """Table 4: A1 baseline, A2 G only, A3 the extractor itself, A4 M with G frozen, A5 everything.

    Not in the paper: ``A1_matched``, the baseline trained for as many steps as the backbone of A4 and
    A5 (stage 2 plus stage 3), so that reusing M is not credited with extra training, and
    ``nearest_M``, everything of the method but G (stage 2 with nearest and the same feature loss,
    then stage 3). A2 and A3 are compared with A1 (the same detector steps), A4 and A5 with
    ``A1_matched``, and A5 also with ``nearest_M`` (what G adds inside the method).
    """
    rows = {
        "A1": lambda r: r.detector(),
        "A2": lambda r: r.target("G"),
        "A3": lambda r: r.extractor(),
        "A4": lambda r: r.target("M", freeze_g=True),
        "A5": lambda r: r.target("M"),
        "A1_matched": lambda r: r.detector(iters=r.reuse_m_steps()),
        "nearest_M": lambda r: r.target("M", extractor=r.extractor(upsampler="nearest")),
    }
    comparisons = (
        ("A2", "A1"),
        ("A3", "A1"),
        ("A1_matched", "A1"),
        ("A4", "A1_matched"),
        ("A5", "A1_matched"),
        ("nearest_M", "A1_matched"),
        ("A5", "nearest_M"),
    )
    return Table(rows, comparisons)


def degradation(ctx: ExperimentContext) -> dict:
    """Table 6: the degradation function that makes I_lr in stages 1 and 2."""
    rows = {
        mode: (lambda r, m=mode: r.target("M", extractor=r.extractor(degrade_mode=m)))
        for mode in ("nearest", "bicubic", "bilinear")
    }
    return Table(rows, (("nearest", "bilinear"), ("bicubic", "bilinear")))


def semantic_level(ctx: ExperimentContext) -> dict:
    """Table 7: L_SRF(M, D, F) between the same or different pyramid levels.

    ``different`` is the paper's variant (section 4.2): full-size images to M and F, G(P3..P5) of M
    against P2..P4 of F (:mod:`srfkit.train.extractor`, ``semantic_level="different"``).
    """
    rows = {
        "different": lambda r: r.target("M", extractor=r.extractor(semantic_level="different")),
        "same": lambda r: r.target("M"),
    }
    return Table(rows, (("different", "same"),))


def _own_arch(ctx: ExperimentContext, archs: tuple[str, ...]) -> dict[str, str | None]:
    """``{arch: None}`` for the dataset's default family (the guide's: Mask R-CNN with masks, else Faster
    R-CNN), unchanged for the others: a row of that family is the same training as the default one, so it
    shares its stage folders (``guide``, ``extractor_default``, ``target_default_*``) with Tables 4 and 5
    instead of training a copy under another name."""
    from .data import load
    from .train.inputs import default_arch

    default = default_arch(load(ctx.dataset, "val", ctx.profile))
    return {arch: None if arch == default else arch for arch in archs}


def cross_head(ctx: ExperimentContext) -> dict:
    """Table 3: target detectors (rows) trained from extractors with another detection head."""
    heads = ("mask_rcnn", "retinanet", "centermask") if _has_masks(ctx) else ("faster_rcnn", "retinanet")
    own = _own_arch(ctx, heads)
    rows: dict[str, Callable[[Runs], Path]] = {}
    for target in heads:
        rows[f"{target}/baseline"] = lambda r, t=own[target]: r.detector(arch=t)
        for head in heads:
            rows[f"{target}/{head}"] = lambda r, t=own[target], h=own[head]: r.target(
                "M", arch=t, extractor=r.extractor(arch=h)
            )
    comparisons = tuple((row, row.split("/")[0] + "/baseline") for row in rows if not row.endswith("/baseline"))
    return Table(rows, comparisons)


def detectors(ctx: ExperimentContext) -> dict:
    """Table 1: each detector family with nearest, with G reused and with M reused."""
    archs = ("faster_rcnn", "retinanet", "fcos") + (("mask_rcnn", "centermask") if _has_masks(ctx) else ())
    own = _own_arch(ctx, archs)
    rows: dict[str, Callable[[Runs], Path]] = {}
    for arch in archs:
        rows[f"{arch}/nearest"] = lambda r, a=own[arch]: r.detector(arch=a)
        rows[f"{arch}/G"] = lambda r, a=own[arch]: r.target("G", arch=a)
        rows[f"{arch}/M"] = lambda r, a=own[arch]: r.target("M", arch=a)
    comparisons = tuple((row, row.split("/")[0] + "/nearest") for row in rows if not row.endswith("/nearest"))
    return Table(rows, comparisons)


def adversarial_grad(ctx: ExperimentContext) -> Table:
    """G trained with the adversarial gradient (the paper's equations) or without it (the authors' training
    code, in their AFI-GAN repository)."""
    rows = {
        "with_adversarial_grad": lambda r: r.target("G", srf_gan=r.srf_gan(adversarial_grad=True)),
        "without_adversarial_grad": lambda r: r.target("G", srf_gan=r.srf_gan(adversarial_grad=False)),
    }
    return Table(rows, (("with_adversarial_grad", "without_adversarial_grad"),))


def adversarial_grad_fidelity(ctx: ExperimentContext) -> dict:
    """Feature fidelity of the stage-1 G trained with and without the adversarial gradient."""
    return {
        "fidelity": {
            name: _fidelity_per_seed(ctx, {"srf": lambda r, a=flag: r.srf_gan(adversarial_grad=a)})["srf"]
            for name, flag in (("with_adversarial_grad", True), ("without_adversarial_grad", False))
        }
    }


def _fidelity_per_seed(ctx: ExperimentContext, learned: dict[str, Callable[[Runs], Path]]) -> dict:
    """Feature fidelity of fixed interpolations and trained generators on photos and the val split."""
    from .data import load
    from .eval import feature_fidelity
    from .models import make_upsampler
    from .train import load_feature_extractor, load_generator

    out: dict[str, dict] = {}
    for seed in ctx.seeds:
        runs = ctx.runs(seed)
        extractor = load_feature_extractor(runs.detector())
        upsamplers: dict[str, nn.Module] = {
            n: make_upsampler(n, ctx.profile.fpn_channels) for n in ("nearest", "bilinear", "bicubic")
        }
        upsamplers |= {name: load_generator(make(runs)) for name, make in learned.items()}
        for split_name, images in _fidelity_images(ctx, load).items():
            for name, up in upsamplers.items():
                with torch.no_grad():
                    value = feature_fidelity(up.eval(), extractor, images)
                out.setdefault(name, {}).setdefault(split_name, {})[seed] = value
    return out


def _fidelity_images(ctx: ExperimentContext, load: Callable) -> dict[str, torch.Tensor]:
    """A fixed batch of images per set, resized to the profile's square size."""
    import torch.nn.functional as F

    sets = {"photos": load("photos", split="val", profile=ctx.profile), "val": load(ctx.dataset, "val", ctx.profile)}
    size = ctx.profile.image_size
    batches = {}
    for name, dataset in sets.items():
        n = min(len(dataset), 8)
        images = [F.interpolate(dataset[i][0][None], size=(size, size), mode="bilinear") for i in range(n)]
        batches[name] = torch.cat(images)
    return batches


def fidelity(ctx: ExperimentContext) -> dict:
    """Feature L1 / PSNR / cosine per level for interpolations and every trained generator form.

    Also stores a small probe (the light G of the first seed and its guide features of two photos)
    beside the result file, with the fidelity it gives, so a test can re-evaluate it.
    """
    from .data import load
    from .train import load_feature_extractor

    learned = {"srf": lambda r: r.srf_gan()}
    learned |= {row: (lambda r, v=variant: r.srf_gan(v)) for row, variant in GENERATOR_ROWS.items()}
    result = {"fidelity": _fidelity_per_seed(ctx, learned)}
    runs = ctx.runs(ctx.seeds[0])
    images = _fidelity_images(ctx, load)["photos"][:2]
    probe = make_fidelity_probe(load_feature_extractor(runs.detector()), runs.srf_gan("light"), images)
    path = probe_path(ctx.profile.name, ctx.dataset, ctx.results_root)
    save_checkpoint(path, probe)
    result["probe"] = {"file": path.name, "seed": ctx.seeds[0], "generator": "srf_light"}
    result["probe"]["fidelity"] = probe_fidelity(probe)
    return result


def probe_path(profile: str, dataset: str, root: Path | None = None) -> Path:
    """``data/results/<profile>/fidelity_probe-<dataset>.pt``."""
    return results_path(profile, f"fidelity_probe-{dataset}", root).with_suffix(".pt")


@torch.no_grad()
def make_fidelity_probe(extractor: nn.Module, srf_gan_dir: Path, images: torch.Tensor) -> dict:
    """A trained G and the guide features it is judged on, small enough to commit.

    Features are stored in float16 (about 0.1 MB per image at C=64, 128 px); the recorded figure is
    computed from the stored values, so re-evaluating the probe must give it back exactly.
    """
    from .data import degrade
    from .train import read_stage

    stage = read_stage(srf_gan_dir)
    target, source = extractor(images), extractor(degrade(images)[0])
    levels = [k for k in target if k != "pool"]
    return {
        "format": "srfkit-fidelity-probe-1",
        "generator_spec": stage["config"]["generator"],
        "generator": stage["models"]["G"],
        "levels": {k: {"input": source[k].half(), "target": target[k].half()} for k in levels},
    }


@torch.no_grad()
def probe_fidelity(probe: dict) -> dict[str, dict[str, float]]:
    """Per-level fidelity of the probe's G on its stored features (see :func:`make_fidelity_probe`)."""
    from .eval import fidelity_metrics
    from .train.common import build_upsampler

    generator = build_upsampler(probe["generator_spec"])
    generator.load_state_dict(probe["generator"])
    generator.eval()
    out = {}
    for level, pair in probe["levels"].items():
        target = pair["target"].float()
        out[level] = fidelity_metrics(generator(pair["input"].float(), size=tuple(target.shape[-2:])), target)
    return out


def cost(ctx: ExperimentContext) -> dict:
    """Parameters and median CPU latency per image of the detector with each upsampler, and of the
    upsampler alone (its three top-down steps, timed interleaved with the others: the steadier figure)."""
    from .bench.upsamplers import benchmark
    from .data import load
    from .detection import build_detector
    from .eval import cost as measure
    from .models import upsampler_names

    num_classes = load(ctx.dataset, "val", ctx.profile).num_classes
    arch = "mask_rcnn" if _has_masks(ctx) else "faster_rcnn"
    rows = {}
    for name in upsampler_names():
        torch.manual_seed(0)
        model = build_detector(arch, num_classes, name, ctx.profile)
        rows[name] = measure(model, (ctx.profile.image_size, ctx.profile.image_size))
    base = rows["nearest"]
    for row in rows.values():
        row["added_params"] = row["params"] - base["params"]
        row["latency_ratio"] = row["latency_ms"] / base["latency_ms"]
    alone = benchmark(list(rows), ctx.profile.fpn_channels, ctx.profile.image_size, repeats=30, progress=False)
    for bench in alone:
        rows[bench["upsampler"]].update(upsampler_ms=bench["latency_ms"], upsampler_ratio=bench["ratio"])
    return {"arch": arch, "rows": rows}


def _has_masks(ctx: ExperimentContext) -> bool:
    from .data import load

    return bool(load(ctx.dataset, "val", ctx.profile).has_masks)


EXPERIMENTS: dict[str, Callable[[ExperimentContext], Table | dict]] = {
    "learning_curve": learning_curve,
    "interpolation": interpolation,
    "progressive": progressive,
    "degradation": degradation,
    "semantic_level": semantic_level,
    "cross_head": cross_head,
    "detectors": detectors,
    "adversarial_grad": adversarial_grad,
    "d2_cascade": d2_cascade,
    "fidelity": fidelity,
    "cost": cost,
}
# Whole-experiment extras written beside a row table's cells (computed once its cells exist).
EXTRAS: dict[str, Callable[[ExperimentContext], dict]] = {"adversarial_grad": adversarial_grad_fidelity}


def experiment_cells(name: str, context: ExperimentContext) -> tuple[Table, list[Cell]]:
    """The table of a row experiment and its cells, seed by seed (seed outermost, rows in order)."""
    table = EXPERIMENTS[name](context)
    if not isinstance(table, Table):
        raise ValueError(f"experiment {name!r} has no rows (it is computed as a whole)")
    cells = [Cell(name, context.dataset, row, seed) for seed in context.seeds for row in table.rows]
    return table, cells


def run_experiment(
    name: str,
    profile: str | Profile,
    dataset: str,
    runs_root: str | Path = "runs",
    seeds: tuple[int, ...] | None = None,
    results_root: Path | None = None,
    weights_backbone: str | Path | None = None,
    **options,
) -> Path:
    """Run one experiment and write its result file; returns the file's path.

    ``options`` are :class:`srfkit.train.LoopOptions` fields applied to every stage (e.g. ``iters``
    in tests); they are recorded in the result file. ``weights_backbone``: a local ResNet state dict
    for every detector built fresh (required by the ``paper`` profile's frozen BatchNorm).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    profile = get_profile(profile)
    seeds = tuple(seeds or profile.seeds)
    weights = Path(weights_backbone) if weights_backbone else None
    context = ExperimentContext(profile, dataset, seeds, Path(runs_root), options, results_root, weights, name)
    t0 = time.perf_counter()
    if name in ROW_EXPERIMENTS:
        table, cells = experiment_cells(name, context)
        document = load_result(profile.name, name, results_root)
        for cell in cells:  # each cell is merged into the result file the moment it is evaluated
            if not cell_done(document, cell, context.fingerprint):
                run_cell(context, table, cell)
        path = results_path(profile.name, name, results_root)
        if name in EXTRAS:
            path = merge_entry(profile.name, name, dataset, EXTRAS[name](context), results_root)
        return path
    payload = EXPERIMENTS[name](context)
    entry = {
        "seeds": list(seeds),
        "config": context.config,
        **payload,
        "wall_time_s": time.perf_counter() - t0,
        "provenance": provenance(),
    }
    return update_result(profile.name, name, dataset, entry, results_root)


def run_experiments(names: list[str], profile: str, datasets: list[str], **kwargs) -> list[Path]:
    """Run several experiments on several datasets, in order."""
    return [run_experiment(n, profile, d, **kwargs) for d in datasets for n in names]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m srfkit experiments``."""
    from .profiles import PROFILES

    parser.add_argument("--profile", choices=list(PROFILES), default="cpu", help="sizes and schedules [%(default)s]")
    parser.add_argument(
        "--only",
        default=",".join(EXPERIMENTS),
        help=f"comma-separated experiments to run (default: all): {', '.join(EXPERIMENTS)}",
    )
    parser.add_argument("--datasets", default="shapes,trees", help="comma-separated shipped datasets [%(default)s]")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where stage folders go [%(default)s]")
    parser.add_argument("--iters", type=int, default=None, help="override every stage's step count (smoke runs)")
    parser.add_argument(
        "--weights-backbone",
        type=Path,
        metavar="PATH",
        help="local ResNet state dict for every detector built fresh (required by the paper profile)",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Action of ``python -m srfkit experiments``."""
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(EXPERIMENTS)}")
    seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    options = {"iters": args.iters} if args.iters else {}
    for path in run_experiments(
        names,
        args.profile,
        args.datasets.split(","),
        runs_root=args.runs,
        seeds=seeds,
        weights_backbone=args.weights_backbone,
        **options,
    ):
        print(f"wrote {path}")
    return 0


# Experiments made of (row, seed) cells; the others (fidelity, cost) are computed as a whole.
ROW_EXPERIMENTS = tuple(n for n in EXPERIMENTS if n not in ("fidelity", "cost"))
