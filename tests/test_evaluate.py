"""Evaluating a finished stage folder: the keyed cache, the command, and clear refusals."""

import json

import pytest

from srfkit import cli
from srfkit.train import train_guide
from srfkit.train.evaluate import EVAL_CACHE, evaluate_stage, evaluation_key

QUICK = ["--profile", "quick", "--dataset", "shapes", "--no-progress"]


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "guide"
    train_guide("quick", "shapes", out, iters=2, progress=False)
    return out


def _same(a, b):
    """Equal metrics, NaN included (COCO's 'no such objects')."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _entries(stage):
    return json.loads((stage / EVAL_CACHE).read_text())["entries"]


def test_cache_is_keyed_on_what_changes_the_numbers(guide, monkeypatch):
    first = evaluate_stage(guide, progress=False)
    assert set(first) == {"bbox", "segm"} and 0.0 <= first["bbox"]["AP"] <= 100.0
    (entry,) = _entries(guide)
    key = entry["key"]
    assert key["dataset"] == "shapes" and key["split"] == "val" and key["full_resolution"] is False
    assert key["dataset_build"]["name"] == "shapes" and key["dataset_build"]["version"] >= 1
    assert len(key["checkpoint_sha1"]) == 40 and key["eval_images"] == 8  # the quick profile's cap

    # Same key: read back, nothing evaluated.
    import srfkit.eval

    def boom(*args, **kwargs):
        raise AssertionError("evaluated again although the key did not change")

    monkeypatch.setattr(srfkit.eval, "coco_evaluate", boom)
    assert _same(evaluate_stage(guide, progress=False), first)
    # Another image cap or split is another key: evaluated (here: the patched evaluator is reached).
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_stage(guide, eval_images=4, progress=False)
    with pytest.raises(AssertionError, match="evaluated again"):
        evaluate_stage(guide, split="train", progress=False)
    monkeypatch.undo()
    evaluate_stage(guide, eval_images=4, progress=False)
    assert len(_entries(guide)) == 2 and _same(evaluate_stage(guide, progress=False), first)


def test_a_retrained_stage_is_evaluated_again(guide, tmp_path):
    key = evaluation_key(guide, "shapes", "val", False, 8, __import__("srfkit").get_profile("quick"))
    (tmp_path / "final.pt").write_bytes((guide / "final.pt").read_bytes() + b"x")
    other = evaluation_key(tmp_path, "shapes", "val", False, 8, __import__("srfkit").get_profile("quick"))
    assert key["checkpoint_sha1"] != other["checkpoint_sha1"]


def test_old_cache_format_is_re_evaluated(guide, tmp_path):
    import shutil

    stage = tmp_path / "copy"
    shutil.copytree(guide, stage)
    (stage / EVAL_CACHE).write_text(json.dumps({"bbox": {"AP": 99.0}}))  # the unkeyed format of before
    metrics = evaluate_stage(stage, progress=False)
    assert metrics["bbox"]["AP"] != 99.0 and len(_entries(stage)) == 1


def test_evaluate_command_prints_a_table_and_writes_json(guide, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["evaluate", "--stage", str(guide), "--json", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "bbox" in printed and "segm" in printed and "AP50" in printed
    document = json.loads(out.read_text())
    assert document["split"] == "val" and set(document["metrics"]) == {"bbox", "segm"}


def test_evaluate_refuses_missing_unfinished_and_foreign_folders(guide, tmp_path, capsys):
    assert cli.main(["evaluate", "--stage", str(tmp_path / "nope")]) == 1
    assert "nope: no such stage folder" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert cli.main(["evaluate", "--stage", str(unfinished)]) == 1
    assert "unfinished: stage not finished" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "final.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["evaluate", "--stage", str(foreign)]) == 1
    assert "foreign/final.pt: cannot be read as an srfkit checkpoint" in capsys.readouterr().err
