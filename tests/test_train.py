"""Training stages, loop, checkpoints and resume (quick profile, CPU, a tiny in-memory dataset)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import srfkit.data
from srfkit.detection import pyramid_keys
from srfkit.profiles import get_profile
from srfkit.train import (
    CheckpointMismatchError,
    NonFiniteLossError,
    load_detector,
    load_discriminator,
    load_feature_extractor,
    load_generator,
    read_stage,
    run_pipeline,
    train_extractor,
    train_guide,
    train_srf_gan,
    train_target,
)
from srfkit.train.checkpoint import config_diff, load_checkpoint, load_module_state, save_checkpoint
from srfkit.train.extractor import level_pairs
from srfkit.train.inputs import resize_to_profile
from srfkit.train.loop import InfiniteBatchSampler, warmup_multistep
from srfkit.train.specs import discriminator_widths

QUICK = get_profile("quick")
FAST = dict(progress=False)


class TinyDetection(torch.utils.data.Dataset):
    """Eight 64x64 images with two filled rectangles each (boxes, labels 1..2, masks): the data contract."""

    name = "tiny"
    num_classes = 3
    has_masks = True

    def __init__(self, n: int = 8, size: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = [self._make(size, g) for _ in range(n)]

    @staticmethod
    def _make(size, g):
        image = torch.rand(3, size, size, generator=g) * 0.2
        boxes, masks, labels = [], [], []
        for _ in range(2):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            w, h = torch.randint(8, size // 2, (2,), generator=g).tolist()
            label = int(torch.randint(1, 3, (1,), generator=g))
            image[label - 1, y0 : y0 + h, x0 : x0 + w] = 1.0
            mask = torch.zeros(size, size, dtype=torch.uint8)
            mask[y0 : y0 + h, x0 : x0 + w] = 1
            boxes.append([x0, y0, x0 + w, y0 + h])
            masks.append(mask)
            labels.append(label)
        boxes = torch.tensor(boxes, dtype=torch.float32)
        target = {
            "boxes": boxes,
            "labels": torch.tensor(labels),
            "masks": torch.stack(masks),
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "iscrowd": torch.zeros(2, dtype=torch.int64),
        }
        return image, target

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class PoisonAfter(TinyDetection):
    """Images turn to NaN after ``clean`` items were read: losses go non-finite mid-run."""

    def __init__(self, clean: int) -> None:
        super().__init__()
        self.clean, self.reads = clean, 0

    def __getitem__(self, i):
        self.reads += 1
        image, target = self.items[i]
        return (image if self.reads <= self.clean else torch.full_like(image, math.nan)), target


@pytest.fixture(scope="module")
def data():
    return TinyDetection()


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    """One quick pipeline shared by the tests: {stage: StageResult}."""
    return run_pipeline(QUICK, data, tmp_path_factory.mktemp("pipeline"), seed=0, **FAST)


def _rows(result):
    return [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]


def _models(path):
    return load_checkpoint(path)["models"]


# ------------------------------------------------------------------------------------------ stages


@pytest.mark.parametrize("stage", ["guide", "srf-gan", "extractor", "target"])
def test_every_stage_runs_with_finite_losses_and_writes_its_files(run, stage):
    result = run[stage]
    iters = QUICK.schedule(stage).iters
    rows = _rows(result)
    assert [r["step"] for r in rows] == list(range(1, iters + 1))
    for row in rows:
        losses = {k: v for k, v in row.items() if k not in ("step", "lr", "time_s", "cpu_s")}
        assert losses and all(math.isfinite(v) for v in losses.values()), row
    assert (result.out_dir / "final.pt").is_file() and result.checkpoint == result.out_dir / "final.pt"
    assert sorted(p.name for p in result.out_dir.glob("*.pt")) == ["final.pt"]  # periodic ones replaced
    final = load_checkpoint(result.out_dir / "final.pt")
    assert final["models"] and not final["optimizers"] and not final["rng"]  # weights only
    config = json.loads((result.out_dir / "config.json").read_text())
    assert config["stage"] == stage and config["seed"] == 0 and config["profile"]["name"] == "quick"
    assert result.steps == iters and result.metrics["time_per_step_s"] > 0


def test_stage_losses_are_the_expected_terms(run):
    assert {"d_real", "d_fake", "g_l1", "g_adv"} <= set(_rows(run["srf-gan"])[0])
    extractor = set(_rows(run["extractor"])[0])
    assert {"d_real", "d_fake", "srf_l1", "srf_adv", "loss_mask", "loss_classifier"} <= extractor
    lr = [r["lr"]["detector"] for r in _rows(run["guide"])]
    assert lr[0] == pytest.approx(QUICK.guide.lr * 0.001) and max(lr) == pytest.approx(QUICK.guide.lr)


def test_loaders_rebuild_every_model(run):
    guide = load_detector(run["guide"].out_dir)
    assert not guide.training
    feats = load_feature_extractor(run["guide"].out_dir)(torch.rand(1, 3, 64, 64))
    assert feats["0"].shape == (1, QUICK.fpn_channels, 16, 16)
    assert all(not p.requires_grad for p in load_feature_extractor(run["guide"].out_dir).parameters())
    g = load_generator(run["srf-gan"].out_dir)
    assert g(torch.rand(1, QUICK.fpn_channels, 5, 7)).shape == (1, QUICK.fpn_channels, 10, 14)
    # the extractor's G (fine-tuned in stage 2) is the target's starting G
    g2 = load_generator(run["extractor"].out_dir)
    assert any(not torch.equal(a, b) for a, b in zip(g.state_dict().values(), g2.state_dict().values()))
    d = load_discriminator(run["srf-gan"].out_dir)
    assert d.classifier.in_channels == discriminator_widths(QUICK)[-1] == 4 * QUICK.fpn_channels
    m = load_detector(run["extractor"].out_dir)
    assert m.transform.min_size == (QUICK.image_size // 2,)  # the degraded path is not resized back up
    assert load_detector(run["target"].out_dir).transform.min_size == (QUICK.image_size,)


def test_pipeline_skips_finished_stages(run, data):
    root = run["guide"].out_dir.parent
    again = run_pipeline(QUICK, data, root, seed=0, **FAST)
    assert all(r.skipped for r in again.values())
    assert len(_rows(again["guide"])) == QUICK.guide.iters


def test_a_finished_stage_with_other_settings_is_refused(run, data):
    with pytest.raises(CheckpointMismatchError, match="detector.arch: 'mask_rcnn' in the checkpoint, 'faster_rcnn'"):
        train_guide(QUICK, data, run["guide"].out_dir, arch="faster_rcnn", **FAST)


@pytest.mark.parametrize("adversarial_grad", [True, False])
def test_adversarial_term_alone_moves_g_only_when_its_gradient_flows(run, data, tmp_path, adversarial_grad):
    result = train_srf_gan(
        QUICK,
        data,
        tmp_path,
        guide_dir=run["guide"].out_dir,
        l1_weight=0.0,
        adversarial_grad=adversarial_grad,
        iters=3,
        warmup_iters=0,
        checkpoint_every=1,
        keep_last=None,
        **FAST,
    )
    before, after = _models(tmp_path / "step_000001.pt"), _models(result.checkpoint)
    g_params = [k for k, _ in load_generator(result.out_dir).named_parameters()]
    g_changed = [k for k in g_params if not torch.equal(before["G"][k], after["G"][k])]
    assert bool(g_changed) == adversarial_grad, g_changed[:3]
    assert any(not torch.equal(before["D"][k], after["D"][k]) for k in before["D"])  # D trains either way
    assert all(math.isfinite(r["g_adv"]) and r["g_adv"] > 0 for r in _rows(result))


def test_level_pairs_of_each_semantic_level():
    two_stage = {2: "0", 3: "1", 4: "2", 5: "3"}
    assert level_pairs(two_stage, two_stage, "same") == [("0", "0"), ("1", "1"), ("2", "2"), ("3", "3")]
    # The paper's variant: G(P3..P5) of M against P2..P4 of F.
    assert level_pairs(two_stage, two_stage, "different") == [("1", "0"), ("2", "1"), ("3", "2")]
    assert level_pairs(two_stage, two_stage, "different_lr") == [("0", "1"), ("1", "2"), ("2", "3")]
    with pytest.raises(KeyError):
        level_pairs(two_stage, two_stage, "shifted")


def test_different_semantic_level_is_the_papers_variant(run, data, tmp_path):
    """Full-size images to M and F; G(P_k) of M compared with F's P_{k-1} (section 4.2, Table 7)."""
    result = train_extractor(
        QUICK,
        data,
        tmp_path,
        guide_dir=run["guide"].out_dir,
        srf_gan_dir=run["srf-gan"].out_dir,
        semantic_level="different",
        iters=2,
        **FAST,
    )
    config = read_stage(result.out_dir)["config"]
    assert config["semantic_level"] == "different"
    assert [list(p) for p in config["level_pairs"]] == [["1", "0"], ["2", "1"], ["3", "2"]]
    assert config["detector"]["overrides"] == {}  # M is built for full-size images
    assert all(math.isfinite(r["srf_l1"]) for r in _rows(result))
    # the half-size variant keeps M at half size
    same = read_stage(run["extractor"].out_dir)["config"]
    assert same["semantic_level"] == "same" and same["detector"]["overrides"]["image_size"] == QUICK.image_size // 2
    with pytest.raises(ValueError, match="unknown semantic_level 'shifted'"):
        train_extractor(
            QUICK,
            data,
            tmp_path / "bad",
            guide_dir=run["guide"].out_dir,
            srf_gan_dir=run["srf-gan"].out_dir,
            semantic_level="shifted",
        )


def test_different_level_step_compares_g_of_m_with_the_finer_guide_level(run, data):
    """In the paper's variant the fake features are M's upsampler applied to M's level k (size of F's k-1)."""
    from srfkit.train.extractor import ExtractorStage, build_extractor

    guide, srf_gan = read_stage(run["guide"].out_dir), read_stage(run["srf-gan"].out_dir)
    model, spec = build_extractor(QUICK, data, "mask_rcnn", srf_gan, guide, half_size=False)
    stage = ExtractorStage(
        model,
        spec,
        load_discriminator(run["srf-gan"].out_dir),
        srf_gan["config"]["discriminator"],
        load_feature_extractor(run["guide"].out_dir),
        QUICK,
        data,
        semantic_level="different",
    )
    images, targets = [data[0][0], data[1][0]], [data[0][1], data[1][1]]
    m_images, m_targets, real = stage.inputs(images, targets)
    assert [tuple(i.shape) for i in m_images] == [(3, 64, 64)] * 2  # full size, not degraded
    assert torch.equal(m_targets[0]["boxes"], targets[0]["boxes"])
    assert [tuple(r.shape[-2:]) for r in real] == [(16, 16), (8, 8), (4, 4)]  # F's P2..P4 of 64 px


def test_guide_features_are_the_detectors_own(run):
    """F normalises and then zero-pads as the detector's transform does (not pad-then-normalise)."""
    detector = load_detector(run["guide"].out_dir)
    extractor = load_feature_extractor(run["guide"].out_dir)
    image = torch.rand(3, 64, 40)  # quick profile: no resize at 64 x 40; the transform pads to 64 x 64
    seen = {}
    handle = detector.backbone.register_forward_hook(lambda _m, _i, out: seen.update(out))
    with torch.no_grad():
        detector.eval()([image])
    handle.remove()
    with torch.no_grad():
        feats = extractor([image])
    for key, value in seen.items():
        assert torch.allclose(feats[key], value, atol=1e-6), key
    # padding before normalising (the old way) gives other features in the padded border
    with torch.no_grad():
        old = extractor(F.pad(image, (0, 24))[None])
    assert not torch.allclose(old["0"], seen["0"], atol=1e-4)


def test_norm_parameters_get_no_weight_decay():
    from srfkit.train.loop import decay_groups, norm_parameter_ids

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8), torch.nn.BatchNorm2d(8))
    groups = decay_groups(list(model.parameters()), norm_parameter_ids([model]))
    decay = {id(p) for p in groups[0]["params"]}
    no_decay = {id(p) for p in groups[1]["params"]}
    assert decay == {id(model[0].weight), id(model[0].bias)}
    assert no_decay == {id(p) for p in list(model[1].parameters()) + list(model[2].parameters())}
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0


def test_training_optimiser_exempts_norm_layers(run):
    """The loop's SGD groups: the guide's GroupNorm parameters get weight decay 0."""
    from srfkit.train.distributed import init_distributed
    from srfkit.train.guide import DetectorStage
    from srfkit.train.loop import LoopOptions, _Run

    detector = load_detector(run["guide"].out_dir)
    spec = read_stage(run["guide"].out_dir)["config"]["detector"]
    stage = DetectorStage("guide", detector, spec, TinyDetection(2))
    r = _Run(stage, QUICK.guide, run["guide"].out_dir, 0, LoopOptions(progress=False), init_distributed("cpu"))
    r.build_optim()
    groups = r.optimizers["detector"].param_groups
    gn = {id(p) for m in detector.modules() if isinstance(m, torch.nn.GroupNorm) for p in m.parameters()}
    assert gn and {id(p) for p in groups[1]["params"]} == gn and groups[1]["weight_decay"] == 0.0
    assert not gn & {id(p) for p in groups[0]["params"]} and groups[0]["weight_decay"] == 1e-4


def test_frozen_norm_without_backbone_weights_is_refused(data, tmp_path):
    frozen = QUICK.replace(norm="frozen")
    with pytest.raises(ValueError, match=r"norm='frozen'.*--weights-backbone PATH"):
        train_guide(frozen, data, tmp_path / "g", iters=1, **FAST)
    assert not (tmp_path / "g").exists()  # refused before anything was written


def test_frozen_norm_trains_from_local_backbone_weights(data, tmp_path):
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    frozen = QUICK.replace(norm="frozen")
    result = train_guide(frozen, data, tmp_path / "g", iters=1, weights_backbone=weights, **FAST)
    assert json.loads((result.out_dir / "config.json").read_text())["sources"]["weights_backbone"] == str(weights)


def test_target_reuses_m_or_keeps_g_frozen(run, data, tmp_path):
    m_state = _models(run["extractor"].checkpoint)["M"]
    result = train_target(
        QUICK, data, tmp_path / "m", arch="faster_rcnn", reuse="M", extractor_dir=run["extractor"].out_dir, iters=1
    )
    config = read_stage(result.out_dir)["config"]
    assert config["reused"]["loaded"] > 100 and config["reuse"] == "M"
    frozen = train_target(
        QUICK, data, tmp_path / "f", reuse="G", srf_gan_dir=run["srf-gan"].out_dir, freeze_g=True, iters=2, **FAST
    )
    g_after = load_generator(frozen.out_dir).state_dict()
    g_before = load_generator(run["srf-gan"].out_dir).state_dict()
    assert all(torch.equal(g_after[k], g_before[k]) for k in g_before)
    assert "backbone.fpn.upsampler.net.0.weight" in m_state
    with pytest.raises(ValueError, match="needs extractor_dir"):
        train_target(QUICK, data, tmp_path / "x", reuse="M")


# ------------------------------------------------------------------------------------------ resume


def _resume_case(stage, run, data, out, **kw):
    dirs = {"guide_dir": run["guide"].out_dir, "srf_gan_dir": run["srf-gan"].out_dir}
    fn, extra = {
        "guide": (train_guide, {}),
        "srf-gan": (train_srf_gan, {"guide_dir": dirs["guide_dir"]}),
        "extractor": (train_extractor, dirs),
        "target": (train_target, {"extractor_dir": run["extractor"].out_dir}),
    }[stage]
    return fn(QUICK, data, out, seed=0, **extra, **kw, **FAST)


@pytest.mark.cpu_exact
@pytest.mark.parametrize("stage", ["guide", "srf-gan", "extractor", "target"])
def test_interrupted_then_resumed_equals_uninterrupted(run, data, tmp_path, stage):
    stopped = _resume_case(stage, run, data, tmp_path, stop_at=4)  # dies after step 4; checkpoint at 3
    assert stopped.steps == 4 and not (tmp_path / "final.pt").exists()
    with pytest.raises(FileExistsError, match="resume"):
        _resume_case(stage, run, data, tmp_path)
    resumed = _resume_case(stage, run, data, tmp_path, resume=True)
    a, b = _models(resumed.checkpoint), _models(run[stage].checkpoint)
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("time_s", "cpu_s")} for r in rows]  # noqa: E731
    assert strip(_rows(resumed)) == strip(_rows(run[stage]))


@pytest.mark.cpu_exact
def test_only_a_constant_rate_run_is_extended_and_only_when_asked(data, tmp_path):
    import dataclasses

    flat = QUICK.replace(guide=dataclasses.replace(QUICK.guide, milestones=(), checkpoint_every=2))
    train_guide(flat, data, tmp_path / "flat", iters=4, keep_last=None, **FAST)
    with pytest.raises(CheckpointMismatchError, match="schedule.iters: 4 in the checkpoint, 6 now"):
        train_guide(flat, data, tmp_path / "flat", iters=6, resume=True, **FAST)  # not asked to extend
    longer = train_guide(flat, data, tmp_path / "flat", iters=6, resume=True, extend=True, keep_last=None, **FAST)
    assert longer.steps == 6 and not longer.skipped and not list((tmp_path / "flat").glob("superseded_*"))
    with pytest.raises(CheckpointMismatchError, match="schedule.iters: 6 in the checkpoint, 4 now"):
        train_guide(flat, data, tmp_path / "flat", iters=4, resume=True, extend=True, **FAST)  # never shorter
    decayed = QUICK.replace(guide=dataclasses.replace(QUICK.guide, milestones=(0.5,), checkpoint_every=2))
    train_guide(decayed, data, tmp_path / "decayed", iters=4, keep_last=None, **FAST)
    with pytest.raises(CheckpointMismatchError, match="schedule.iters"):  # its decay would move
        train_guide(decayed, data, tmp_path / "decayed", iters=6, resume=True, extend=True, **FAST)
    train_guide(flat, data, tmp_path / "pruned", iters=4, **FAST)  # keep_last=1: no periodic checkpoint left
    with pytest.raises(FileNotFoundError, match="no periodic checkpoint"):
        train_guide(flat, data, tmp_path / "pruned", iters=6, resume=True, extend=True, **FAST)
    assert (tmp_path / "pruned" / "final.pt").is_file()  # nothing lost


def test_a_finished_stage_stays_valid_when_only_run_only_fields_change(run, data):
    """More seeds or a longer learning curve in the profile do not make a finished stage foreign."""
    more = QUICK.replace(seeds=(0, 1, 2, 3), curve_budgets=(2, 4, 6, 8))
    again = train_guide(more, data, run["guide"].out_dir, seed=0, **FAST)
    assert again.skipped and again.checkpoint == run["guide"].checkpoint
    with pytest.raises(CheckpointMismatchError, match="image_size"):  # a setting of the stage still counts
        train_guide(QUICK.replace(image_size=QUICK.image_size + 32), data, run["guide"].out_dir, seed=0, **FAST)


def test_resume_from_another_configuration_is_refused(data, tmp_path):
    train_guide(QUICK, data, tmp_path, stop_at=3, **FAST)
    with pytest.raises(CheckpointMismatchError) as err:
        train_guide(QUICK, data, tmp_path, resume=True, arch="faster_rcnn", upsampler="bilinear", **FAST)
    message = str(err.value)
    assert "step_000003.pt" in message and "detector.arch" in message and "detector.upsampler.name" in message
    with pytest.raises(CheckpointMismatchError, match="seed: 0 in the checkpoint, 1 now"):
        train_guide(QUICK, data, tmp_path, resume=True, seed=1, **FAST)


def test_weights_of_another_architecture_are_refused(run):
    state = _models(run["srf-gan"].checkpoint)["G"]
    other = load_generator(run["srf-gan"].out_dir)
    other.net[0] = torch.nn.Conv2d(QUICK.fpn_channels, 8, 3)
    with pytest.raises(CheckpointMismatchError, match=r"shape differences net\.0\.weight"):
        load_module_state(other, state, source="G.pt")
    d = load_discriminator(run["srf-gan"].out_dir)
    with pytest.raises(CheckpointMismatchError, match="missing keys .*unexpected keys"):
        load_module_state(d, state, source="G.pt")


def test_non_finite_loss_stops_naming_stage_step_and_term(run, tmp_path):
    batch = QUICK.srf_gan.batch_size
    data = PoisonAfter(clean=3 * batch)  # steps 1-3 clean, step 4 NaN
    with pytest.raises(NonFiniteLossError) as err:
        train_srf_gan(QUICK, data, tmp_path, guide_dir=run["guide"].out_dir, **FAST)
    e = err.value
    assert e.stage == "srf-gan" and e.step == 4 and "d_real" in e.terms
    assert "stage 'srf-gan'" in str(e) and "step 4" in str(e) and "step_000003.pt" in str(e)
    assert (tmp_path / "step_000003.pt").is_file() and not (tmp_path / "final.pt").exists()
    assert load_checkpoint(tmp_path / "step_000003.pt")["step"] == 3


# -------------------------------------------------------------------------------------- components


def test_checkpoints_are_atomic_and_plain(tmp_path):
    path = save_checkpoint(tmp_path / "a.pt", {"format": "srfkit-checkpoint-1", "config": {"x": (1, 2)}, "t": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left
    assert load_checkpoint(path)["config"] == {"x": (1, 2)}
    torch.save({"w": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointMismatchError, match="foreign.pt: not an srfkit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    assert config_diff({"a": [1, 2], "b": 1}, {"a": (1, 2), "b": 2}) == ["b: 1 in the checkpoint, 2 now"]


def test_a_failed_write_names_the_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "step_000003.pt", {"format": "srfkit-checkpoint-1", "step": 3})

    def short_write(obj, f):  # what torch.save raises when the disk fills up mid-file
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 71943680 vs 71943568")

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(OSError, match=r"step_000003.pt: checkpoint not written .* MiB free on its disk"):
        save_checkpoint(path, {"format": "srfkit-checkpoint-1", "step": 6})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["step_000003.pt"]  # no temporary file left
    assert load_checkpoint(path)["step"] == 3


def test_sampler_resumes_mid_epoch_and_splits_ranks():
    full = list(InfiniteBatchSampler(10, 3, seed=0, start_step=0, end_step=8))
    assert list(InfiniteBatchSampler(10, 3, seed=0, start_step=5, end_step=8)) == full[5:]
    assert sorted(i for b in full[:3] for i in b)[:9] == sorted(i for b in full[:3] for i in b)
    ranks = [list(InfiniteBatchSampler(10, 5, seed=0, start_step=0, end_step=1, rank=r, world=2))[0] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10))


def test_warmup_then_step_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = QUICK.guide.__class__(iters=9, lr=1.0, batch_size=1, warmup_iters=2, milestones=(2 / 3, 8 / 9))
    sched = warmup_multistep(opt, schedule)
    lrs = []
    for _ in range(9):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.001, 0.5005, 1, 1, 1, 1, 0.1, 0.1, 0.01])


def test_resize_matches_the_detector_transform():
    image = torch.rand(3, 40, 80)
    target = {"boxes": torch.tensor([[4.0, 4.0, 20.0, 30.0]]), "masks": torch.ones(1, 40, 80, dtype=torch.uint8)}
    out, t = resize_to_profile(image, target, QUICK)  # shorter side 64 -> scale 1.6, capped by max 64 -> 0.8
    assert out.shape == (3, 32, 64) and t["masks"].shape == (1, 32, 64)
    assert torch.allclose(t["boxes"], torch.tensor([[3.2, 3.2, 16.0, 24.0]]))
    degraded, _ = srfkit.data.degrade(out, None, 0.5)
    assert degraded.shape == (3, 16, 32)
    assert F.l1_loss(degraded, F.interpolate(out[None], scale_factor=0.5, mode="bilinear")[0]) < 0.2


def test_discriminator_widths_scale_with_the_profile():
    assert discriminator_widths(get_profile("paper")) == (512, 1024, 1024)  # the paper's D
    assert discriminator_widths(QUICK) == (64, 128, 128)
    assert discriminator_widths(QUICK.replace(discriminator_widths=(8, 16, 16))) == (8, 16, 16)


def test_pyramid_keys_follow_strides(run):
    assert pyramid_keys(load_detector(run["guide"].out_dir)) == {2: "0", 3: "1", 4: "2", 5: "3"}
    from srfkit.detection import build_detector

    assert pyramid_keys(build_detector("retinanet", 3, profile=QUICK)) == {3: "0", 4: "1", 5: "2"}


def test_srf_gan_with_the_authors_discriminator_head(run, data, tmp_path):
    result = train_srf_gan(
        QUICK, data, tmp_path, guide_dir=run["guide"].out_dir, discriminator_head="authors", iters=1, **FAST
    )
    config = read_stage(result.out_dir)["config"]
    assert config["discriminator"]["head"] == "authors"
    d = load_discriminator(result.out_dir)
    assert d.classifier.kernel_size == (3, 3)
    # stage 2 takes that D as it is
    ext = train_extractor(
        QUICK, data, tmp_path / "m", guide_dir=run["guide"].out_dir, srf_gan_dir=result.out_dir, iters=1, **FAST
    )
    assert load_discriminator(ext.out_dir).classifier.kernel_size == (3, 3)
