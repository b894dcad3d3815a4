"""detectron2's SRF-FPN with one upsampler per top-down step, as srfkit's torchvision FPN.

``SRFFPN.srf_module`` is one shared module for the SRF generators and the fixed interpolations, and a
``PerStepUpsampler`` (``srf_module.steps.{i}``, ``i`` the finest-first index of the level the step
makes) for DySample and CARAFE; ``MODEL.SRF.SHARE`` (``auto``/``shared``/``per_step``) overrides.
Skips without detectron2.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("detectron2")

from conftest import perturbed_detector  # noqa: E402
from detectron2.modeling import build_backbone, build_model  # noqa: E402

from srfkit.detection.d2.backbone import SHARE_CHOICES, SRFFPN, share_from_cfg  # noqa: E402
from srfkit.detection.d2.config import get_config  # noqa: E402
from srfkit.models import SRFGenerator, make_upsampler  # noqa: E402
from srfkit.models.fpn import PerStepUpsampler, SRFFeaturePyramidNetwork, build_fpn_upsampler  # noqa: E402
from srfkit.models.peers import CARAFE, DySample  # noqa: E402

# detectron2's output name of each pyramid level, against srfkit's torchvision keys
TV_TO_D2 = {"0": "p2", "1": "p3", "2": "p4", "3": "p5", "pool": "p6"}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _cfg(upsampler: str = "dysample", share: str = "auto", arch: str = "mask_rcnn", **kwargs):
    """A quick-profile detectron2 config (R-18, FPN width 32) with ``MODEL.SRF.SHARE`` = ``share``."""
    kwargs.setdefault("variant", "paper")
    cfg = get_config(arch, "quick", upsampler=upsampler, num_classes=3, device="cpu", **kwargs)
    cfg.MODEL.SRF.SHARE = share
    return cfg


def _backbone(upsampler: str = "dysample", share: str = "auto", arch: str = "mask_rcnn", seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return build_backbone(_cfg(upsampler, share, arch, **kwargs)).eval()


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _features(backbone, x) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return backbone(x)


# ---------------------------------------------------------------------------------- the default rule


@pytest.mark.parametrize(
    ("upsampler", "kind"), [("dysample", DySample), ("dysample_dynamic", DySample), ("carafe", CARAFE)]
)
@pytest.mark.parametrize(("arch", "steps"), [("mask_rcnn", 3), ("retinanet", 2)], ids=["P2-P5", "P3-P5"])
def test_learned_peers_get_one_module_per_top_down_step(upsampler, kind, arch, steps):
    cfg = _cfg(upsampler, arch=arch)
    assert share_from_cfg(cfg) is None and cfg.MODEL.SRF.SHARE == "auto"  # the default
    bb = build_backbone(cfg)
    assert isinstance(bb, SRFFPN) and not bb.shares_upsampler
    assert isinstance(bb.srf_module, PerStepUpsampler) and len(bb.srf_module) == steps
    assert len(cfg.MODEL.FPN.IN_FEATURES) - 1 == steps
    modules = list(bb.srf_module.steps)
    assert all(type(m) is kind for m in modules) and len({id(m) for m in modules}) == steps
    one = _n_params(make_upsampler(upsampler, cfg.MODEL.FPN.OUT_CHANNELS))
    assert one > 0 and _n_params(bb.srf_module) == steps * one
    keys = {k.split(".")[2] for k in bb.state_dict() if k.startswith("srf_module.steps.")}
    assert keys and all(k.startswith("srf_module.steps.") for k in bb.state_dict() if k.startswith("srf_module."))
    assert keys == {str(i) for i in range(steps)}  # srf_module.steps.{i}.*
    # initialised separately, as the torchvision FPN builds them by name
    first = [p for p in modules[0].parameters() if p.dim() > 1][0]
    second = [p for p in modules[1].parameters() if p.dim() > 1][0]
    assert not torch.equal(first, second)
    # the same rule as srfkit's torchvision FPN
    tv = SRFFeaturePyramidNetwork([8] * (steps + 1), cfg.MODEL.FPN.OUT_CHANNELS, upsampler=upsampler)
    assert tv.shares_upsampler is bb.shares_upsampler and len(tv.upsampler) == len(bb.srf_module)


@pytest.mark.parametrize("upsampler", ["srf", "srf_light", "nearest", "bilinear"])
def test_srf_and_fixed_interpolations_stay_shared(upsampler):
    bb = build_backbone(_cfg(upsampler))
    assert bb.shares_upsampler and not isinstance(bb.srf_module, PerStepUpsampler)
    assert not any(k.startswith("srf_module.steps.") for k in bb.state_dict())
    if upsampler == "srf":
        assert isinstance(bb.srf_module, SRFGenerator)


# ---------------------------------------------------------------------------------- MODEL.SRF.SHARE


def test_share_overrides_both_ways():
    shared = _backbone("dysample", "shared")
    assert isinstance(shared.srf_module, DySample) and shared.shares_upsampler
    per_step = _backbone("srf", "per_step")
    assert isinstance(per_step.srf_module, PerStepUpsampler) and len(per_step.srf_module) == 3
    assert all(isinstance(m, SRFGenerator) for m in per_step.srf_module.steps)
    w = [next(p for p in m.parameters() if p.dim() > 1) for m in per_step.srf_module.steps]
    assert not torch.equal(w[0], w[1])  # each G built and initialised separately
    # from detectron2's command-line form too
    cfg = _cfg("carafe")
    cfg.merge_from_list(["MODEL.SRF.SHARE", "shared"])
    assert isinstance(build_backbone(cfg).srf_module, CARAFE)
    assert SHARE_CHOICES == {"auto": None, "shared": True, "per_step": False}


@pytest.mark.parametrize("value", ["yes", "per-step", "Shared", ""])
def test_an_unknown_share_value_is_refused_clearly(value):
    cfg = _cfg("dysample", value)
    with pytest.raises(ValueError, match=r"MODEL.SRF.SHARE must be one of auto, shared, per_step"):
        build_backbone(cfg)


def test_a_config_dumped_before_the_key_reads_as_auto(tmp_path):
    from detectron2.config import get_cfg

    from srfkit.detection.d2.backbone import add_srf_config

    cfg = _cfg("dysample")
    del cfg.MODEL.SRF["SHARE"]
    (tmp_path / "old.yaml").write_text(cfg.dump())
    fresh = add_srf_config(get_cfg())
    fresh.merge_from_file(str(tmp_path / "old.yaml"))
    assert fresh.MODEL.SRF.SHARE == "auto"
    assert share_from_cfg(cfg) is None  # read without the key, too
    again = add_srf_config(cfg)  # and added to an SRF node that lacks it
    assert again.MODEL.SRF.SHARE == "auto"


# ------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("upsampler", ["dysample", "carafe"])
@pytest.mark.parametrize("arch", ["mask_rcnn", "retinanet"])
def test_forward_shapes(upsampler, arch):
    bb = _backbone(upsampler, arch=arch)
    out = _features(bb, torch.randn(2, 3, 64, 96))
    c = bb._out_feature_channels
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    if arch == "mask_rcnn":
        sizes = {"p2": (16, 24), "p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2)}
    else:
        sizes = {"p3": (8, 12), "p4": (4, 6), "p5": (2, 3), "p6": (1, 2), "p7": (1, 1)}
    assert shapes == {k: (2, c[k], *hw) for k, hw in sizes.items()}


def test_each_step_module_runs_once_on_its_own_level():
    bb = _backbone("dysample")
    calls = []
    for i, module in enumerate(bb.srf_module.steps):
        module.register_forward_hook(lambda m, args, out, i=i: calls.append((i, tuple(out.shape[-2:]))))
    out = _features(bb, torch.randn(1, 3, 64, 96))
    # coarsest first; step i makes in_features[i] (res{i+2} -> p{i+2})
    assert calls == [(i, tuple(out[f"p{i + 2}"].shape[-2:])) for i in (2, 1, 0)]


@pytest.mark.parametrize("step", [0, 1, 2])
def test_perturbing_one_step_changes_only_its_level_and_the_finer_ones(step):
    bb = _backbone("dysample")
    x = torch.randn(1, 3, 64, 96)
    before = _features(bb, x)
    with torch.no_grad():
        for p in bb.srf_module[step].parameters():
            p.add_(0.5 * torch.randn_like(p))
    after = _features(bb, x)
    made = step + 2  # step i makes P_{i+2}
    for name in before:
        level = int(name[1:])
        changed = not torch.equal(before[name], after[name])
        assert changed is (level <= made), (name, step)


def test_swapping_two_steps_changes_the_levels_they_make_and_no_coarser_one():
    """Swapping two steps' weights changes the output: every level uses its own module, not step 0's."""
    bb = _backbone("carafe")
    with torch.no_grad():  # away from CARAFE's start (uniform kernels whatever the weights)
        for p in bb.srf_module.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.randn(1, 3, 64, 96)
    before = _features(bb, x)
    s0, s1 = ({k: v.clone() for k, v in bb.srf_module[i].state_dict().items()} for i in (0, 1))
    bb.srf_module[0].load_state_dict(s1)
    bb.srf_module[1].load_state_dict(s0)
    after = _features(bb, x)
    assert torch.equal(before["p4"], after["p4"]) and torch.equal(before["p5"], after["p5"])
    assert not torch.equal(before["p3"], after["p3"]) and not torch.equal(before["p2"], after["p2"])


# ------------------------------------------------------------------------------------- freezing


def test_freezing_keeps_every_step_frozen_and_in_eval_mode():
    cfg = _cfg("dysample")
    cfg.MODEL.SRF_FREEZE = True
    bb = build_backbone(cfg).train()
    assert isinstance(bb.srf_module, PerStepUpsampler)
    assert not any(p.requires_grad for p in bb.srf_module.parameters())
    assert not bb.srf_module.training and not any(m.training for m in bb.srf_module.steps)
    out = bb(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is None for p in bb.srf_module.parameters())
    assert bb.fpn_lateral2.weight.grad is not None and bb.training
    # unfrozen: every step learns
    bb = _backbone("dysample").train()
    out = bb(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert all(any(p.grad is not None for p in m.parameters()) for m in bb.srf_module.steps)


# ------------------------------------------------------------------------- weights and checkpoints


def test_per_step_weights_load_from_steps_keys(tmp_path):
    src = _backbone("dysample", seed=3)
    with torch.no_grad():
        for p in src.srf_module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    state = src.srf_module.state_dict()
    assert all(k.startswith("steps.") for k in state)
    # bare, and as a detectron2 checkpoint's backbone.srf_module.steps.{i}.*
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"model": {f"backbone.srf_module.{k}": v for k, v in state.items()}}, tmp_path / "d2.pth")
    for name in ("bare.pt", "d2.pth"):
        bb = build_backbone(_cfg("dysample", srf_weights=tmp_path / name))
        assert isinstance(bb.srf_module, PerStepUpsampler) and len(bb.srf_module) == 3
        loaded = bb.srf_module.state_dict()
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], v) for k, v in state.items())
    # with src's convs, the loaded steps compute src's pyramid
    bb.load_state_dict({k: v for k, v in src.state_dict().items() if not k.startswith("srf_module.")}, strict=False)
    x = torch.randn(1, 3, 64, 64)
    a, b = _features(src, x), _features(bb.eval(), x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_weights_of_the_other_layout_are_refused(tmp_path):
    one = make_upsampler("dysample", 32)
    torch.save(one.state_dict(), tmp_path / "one.pt")
    # one module into a per-step FPN (auto): refused, naming the setting that fits
    with pytest.raises(ValueError, match=r"holds one DySample.*MODEL.SRF.SHARE auto.*set MODEL.SRF.SHARE shared"):
        build_backbone(_cfg("dysample", srf_weights=tmp_path / "one.pt"))
    shared = build_backbone(_cfg("dysample", "shared", srf_weights=tmp_path / "one.pt"))
    assert all(torch.equal(v, shared.srf_module.state_dict()[k]) for k, v in one.state_dict().items())
    # per-step weights into a shared FPN
    steps = _backbone("dysample").srf_module.state_dict()
    torch.save(steps, tmp_path / "steps.pt")
    with pytest.raises(ValueError, match=r"one DySample per FPN top-down step \(3\).*set MODEL.SRF.SHARE per_step"):
        build_backbone(_cfg("dysample", "shared", srf_weights=tmp_path / "steps.pt"))
    # three steps into an FPN with two
    with pytest.raises(ValueError, match="has 3 modules; the FPN has 2 top-down steps"):
        build_backbone(_cfg("dysample", arch="retinanet", srf_weights=tmp_path / "steps.pt"))


def test_the_authors_g_stays_shared_and_is_refused_per_step(tmp_path):
    from srfkit.models import authors_state_dict

    g = make_upsampler("srf", 32, variant="released")
    authors = authors_state_dict(g, prefix="backbone.srf_module.")
    torch.save({"model": dict(authors)}, tmp_path / "authors.pth")
    shared = build_backbone(_cfg("srf", variant="released", srf_weights=tmp_path / "authors.pth"))
    assert all(torch.equal(v, shared.srf_module.state_dict()[k]) for k, v in g.state_dict().items())
    with pytest.raises(ValueError, match="set MODEL.SRF.SHARE shared"):
        build_backbone(_cfg("srf", "per_step", variant="released", srf_weights=tmp_path / "authors.pth"))
    # a whole detector checkpoint in the authors' layout: the hook translates it when shared ...
    model = build_model(_cfg("srf", variant="released"))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.srf_module.")}
    model.load_state_dict(state | dict(authors), strict=True)
    assert torch.equal(model.backbone.srf_module.state_dict()["net.0.0.weight"], g.state_dict()["net.0.0.weight"])
    # ... and refuses it per step, even when loaded non-strictly (detectron2's checkpointer)
    per_step = build_model(_cfg("srf", "per_step", variant="released"))
    with pytest.raises(RuntimeError, match=r"one shared upsampler.*MODEL.SRF.SHARE shared"):
        per_step.load_state_dict(state | dict(authors), strict=False)


def test_a_checkpoint_of_the_other_layout_is_refused():
    per_step, shared = _backbone("dysample"), _backbone("dysample", "shared")
    with pytest.raises(RuntimeError, match=r"one shared upsampler.*build it with MODEL.SRF.SHARE shared"):
        per_step.load_state_dict(shared.state_dict(), strict=False)
    with pytest.raises(RuntimeError, match=r"one upsampler per top-down step.*build it with MODEL.SRF.SHARE per_step"):
        shared.load_state_dict(per_step.state_dict(), strict=False)
    # the same layout loads strictly; a detectron2 FPN checkpoint without srf_module keys only misses them
    other = _backbone("dysample", seed=5)
    other.load_state_dict(per_step.state_dict(), strict=True)
    plain = {k: v for k, v in per_step.state_dict().items() if not k.startswith("srf_module.")}
    missing = other.load_state_dict(plain, strict=False).missing_keys
    assert missing and all(k.startswith("srf_module.steps.") for k in missing)


def test_build_fpn_upsampler_is_the_one_rule():
    assert isinstance(build_fpn_upsampler("dysample", 8, 3), PerStepUpsampler)
    assert isinstance(build_fpn_upsampler("dysample", 8, 3, share=True), DySample)
    assert isinstance(build_fpn_upsampler("srf", 8, 3, {"variant": "light"}), SRFGenerator)
    given = PerStepUpsampler([make_upsampler("carafe", 8) for _ in range(2)])
    assert build_fpn_upsampler(given, 8, 2) is given
    with pytest.raises(ValueError, match="cannot serve as one shared upsampler"):
        build_fpn_upsampler(given, 8, 2, share=True)
    with pytest.raises(ValueError, match="has 2 modules; the FPN has 3"):
        build_fpn_upsampler(given, 8, 3)


# ------------------------------------------------------------------------------ torchvision transfer


def _tv_source(upsampler: str = "dysample", seed: int = 0, **kwargs):
    """A quick-profile torchvision Mask R-CNN whose backbone tensors (G's steps included) are all perturbed."""
    return perturbed_detector("mask_rcnn", upsampler, seed, **kwargs)


def _d2_model(upsampler: str = "dysample", share: str = "auto", arch: str = "mask_rcnn"):
    torch.manual_seed(1)
    return build_model(_cfg(upsampler, share, arch)).eval()


def test_per_step_g_transfers_and_gives_the_same_pyramid():
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _tv_source(), _d2_model()
    assert isinstance(m.backbone.fpn.upsampler, PerStepUpsampler) and isinstance(
        d.backbone.srf_module, PerStepUpsampler
    )
    x = torch.randn(2, 3, 96, 64)  # already normalised: each engine's pixel normalisation is bypassed
    before_src, before = _features(m.backbone, x), _features(d.backbone, x)
    assert all((before_src[k] - before[TV_TO_D2[k]]).abs().max() > 1e-2 for k in before_src)

    report = torchvision_to_detectron2(m, d)

    after = _features(d.backbone, x)
    for key, value in before_src.items():
        torch.testing.assert_close(after[TV_TO_D2[key]], value, atol=1e-5, rtol=1e-5, msg=f"level {TV_TO_D2[key]}")
    assert report["upsampler_steps"] == {f"P{i + 2}": {"from": f"steps.{i}", "to": f"steps.{i}"} for i in range(3)}
    assert report["upsampler"] == len(m.backbone.fpn.upsampler.state_dict()) > 0
    loaded = report["loaded_keys"]
    for k in m.backbone.fpn.upsampler.state_dict():
        assert k.startswith("steps.") and loaded[f"backbone.srf_module.{k}"] == f"backbone.fpn.upsampler.{k}"


def test_per_step_g_pairs_steps_by_level():
    """M (P2-P5, steps making P2, P3, P4) into a RetinaNet (P3-P5, steps making P3, P4)."""
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _tv_source(), _d2_model(arch="retinanet")
    report = torchvision_to_detectron2(m, d)
    assert report["upsampler_steps"] == {
        "P3": {"from": "steps.1", "to": "steps.0"},
        "P4": {"from": "steps.2", "to": "steps.1"},
    }
    assert report["not_copied"]["upsampler step P2"] == "only the source has a top-down step making P2"
    for j, i in ((0, 1), (1, 2)):
        src, dst = m.backbone.fpn.upsampler[i].state_dict(), d.backbone.srf_module[j].state_dict()
        assert all(torch.equal(dst[k], v) for k, v in src.items())
    x = torch.randn(1, 3, 64, 64)
    a, b = _features(m.backbone, x), _features(d.backbone, x)
    for tv_key, d2_key in (("1", "p3"), ("2", "p4"), ("3", "p5")):
        torch.testing.assert_close(b[d2_key], a[tv_key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("src_share", "d2_share", "match"),
    [
        (None, "shared", r"source FPN has one upsampler per top-down step.*MODEL.SRF.SHARE per_step"),
        (True, "auto", r"source FPN shares one DySample.*MODEL.SRF.SHARE shared"),
    ],
    ids=["per-step into shared", "shared into per-step"],
)
def test_a_layout_mismatch_is_refused_and_leaves_the_destination_unchanged(src_share, d2_share, match):
    from srfkit.detection.d2.transfer import torchvision_to_detectron2

    m, d = _tv_source(share_upsampler=src_share), _d2_model(share=d2_share)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        torchvision_to_detectron2(m, d)
    assert all(torch.equal(v, before[k]) for k, v in d.state_dict().items())
    report = torchvision_to_detectron2(m, d, upsampler=False)  # the rest still transfers
    assert report["upsampler"] == 0 and report["upsampler_steps"] == {}


@pytest.mark.parametrize(("src_share", "expected"), [(None, None), (True, ["auto", "shared"])])
def test_init_from_fits_the_share_setting_to_the_source(src_share, expected):
    from srfkit.detection.d2.engine import _fit_config_to_source

    m = _tv_source(share_upsampler=src_share)
    cfg = _cfg("dysample")
    init = {"upsampler": True, "num_blocks": None, "config_changes": {}}
    _fit_config_to_source(cfg, m, init)
    assert init["config_changes"].get("MODEL.SRF.SHARE") == expected
    assert cfg.MODEL.SRF.SHARE == (expected[1] if expected else "auto")
