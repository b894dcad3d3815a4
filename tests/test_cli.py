"""The command line: help texts, the stage commands, the pipeline, errors, and the command registry."""

import json
import subprocess
import sys

import pytest

from srfkit import cli
from srfkit.train import STAGES

QUICK = ["--profile", "quick", "--dataset", "shapes", "--no-progress"]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """``python -m srfkit pipeline --profile quick --dataset shapes --out DIR`` run once (in-process)."""
    out = tmp_path_factory.mktemp("cli") / "quick"
    assert cli.main(["pipeline", *QUICK, "--out", str(out)]) == 0
    return out


def _parsers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


def test_help_explains_every_option():
    parsers = _parsers()
    assert {"guide", "srf-gan", "extractor", "target", "pipeline"} <= set(parsers)
    for name, parser in parsers.items():
        for action in parser._actions:
            assert action.help and action.help.strip(), (name, action.option_strings)
    run = subprocess.run([sys.executable, "-m", "srfkit", "srf-gan", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    for flag in ("--guide", "--profile", "--dataset", "--coco-root", "--resume", "--seed", "--no-adversarial-grad"):
        assert flag in run.stdout


def test_pipeline_writes_every_stage_then_skips_them(pipeline, capsys):
    for stage in STAGES:
        folder = pipeline / stage
        assert (folder / "final.pt").is_file() and (folder / "config.json").is_file()
        rows = (folder / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["step"] for r in rows] == list(range(1, len(rows) + 1)) and rows
    capsys.readouterr()
    assert cli.main(["pipeline", *QUICK, "--out", str(pipeline)]) == 0
    out = capsys.readouterr().out
    assert all(f"{stage}: already finished" in out for stage in STAGES), out


def test_stage_commands_take_earlier_stage_folders(pipeline, tmp_path, capsys):
    args = ["target", *QUICK, "--out", str(tmp_path / "t"), "--arch", "retinanet", "--reuse", "M"]
    assert cli.main([*args, "--extractor", str(pipeline / "extractor"), "--iters", "1"]) == 0
    assert "target: 1 steps" in capsys.readouterr().out
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["detector"]["arch"] == "retinanet" and config["reuse"] == "M"
    args = ["srf-gan", *QUICK, "--out", str(tmp_path / "s"), "--guide", str(pipeline / "guide")]
    assert cli.main([*args, "--iters", "2", "--no-adversarial-grad", "--variant", "light", "--seed", "3"]) == 0
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["adversarial_grad"] is False and config["generator"]["kwargs"]["variant"] == "light"
    assert config["seed"] == 3 and config["schedule"]["iters"] == 2


def test_two_processes_on_one_folder_train_it_once(tmp_path):
    out = tmp_path / "guide"
    command = [sys.executable, "-m", "srfkit", "guide", *QUICK, "--out", str(out), "--threads", "1", "--iters", "2"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdout = "".join(o for o, _ in outputs)
    assert stdout.count("guide: 2 steps in") == 1 and stdout.count("guide: already finished") == 1, stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_errors_are_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert cli.main(["srf-gan", *QUICK, "--out", str(tmp_path / "s"), "--guide", str(missing)]) == 1
    assert f"error: {missing}: no such stage folder" in capsys.readouterr().err
    assert cli.main(["guide", "--coco-root", str(tmp_path), "--out", str(tmp_path / "g")]) == 1
    assert "train2017 not found" in capsys.readouterr().err
    assert cli.main(["target", *QUICK, "--out", str(tmp_path / "t"), "--reuse", "M"]) == 1
    assert "needs extractor_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["guide", "--dataset", "shapes"])  # --out is required


def test_commands_plug_into_the_registry(monkeypatch, capsys):
    monkeypatch.setattr(cli, "SUBCOMMANDS", dict(cli.SUBCOMMANDS))

    def configure(parser):
        parser.add_argument("--name", default="world", help="who to greet")

    cli.add_subcommand("hello", configure, lambda args: print(f"hello {args.name}") or 7, help="say hello")
    assert cli.main(["hello", "--name", "srf"]) == 7
    assert capsys.readouterr().out == "hello srf\n"
    with pytest.raises(ValueError, match="already registered"):
        cli.add_subcommand("hello", configure, print)


def test_a_guide_trained_on_a_coco_folder_flips_records_it_and_evaluates_on_its_val(tmp_path, clean_coco, capsys):
    from srfkit.data import RandomHorizontalFlip, load_coco_root
    from srfkit.train.loaders import read_stage

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}2017").symlink_to(clean_coco.images_dir)
        (root / "annotations" / f"instances_{split}2017.json").write_text(clean_coco.ann_file.read_text())
    train = cli._dataset(cli.build_parser().parse_args(["guide", "--coco-root", str(root), "--out", "x"]), "quick")
    assert isinstance(train.transforms, RandomHorizontalFlip) and train.name == "coco"  # quick flips at 0.5
    assert load_coco_root(root, "val").transforms is None

    out = tmp_path / "guide"
    args = ["guide", "--profile", "quick", "--coco-root", str(root), "--out", str(out), "--iters", "2"]
    assert cli.main([*args, "--no-progress"]) == 0
    assert read_stage(out)["config"]["dataset"]["coco_root"] == str(root.resolve())
    capsys.readouterr()
    assert cli.main(["evaluate", "--stage", str(out), "--no-progress"]) == 0  # the recorded folder's val2017
    assert "bbox" in capsys.readouterr().out and json.loads((out / "eval-val.json").read_text())["metrics"]["bbox"]
    (root / "annotations" / "instances_val2017.json").unlink()
    assert cli.main(["evaluate", "--stage", str(out), "--coco-root", str(root), "--no-progress"]) == 1
    assert "instances_val2017.json not found" in capsys.readouterr().err
