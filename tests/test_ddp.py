"""Several processes: stage 1 under torchrun with 2 CPU processes (gloo)."""

import json
import os
import socket
import subprocess
import sys

from srfkit import data
from srfkit.profiles import get_profile
from srfkit.train import load_checkpoint, train_guide


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_srf_gan_under_torchrun_with_two_processes(tmp_path):
    profile = get_profile("quick")
    data.load("shapes", "train", profile)  # built once here, not raced by the two ranks
    guide = train_guide(profile, "shapes", tmp_path / "guide", progress=False)
    out = tmp_path / "srf-gan"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "srfkit",
        "srf-gan",
        "--profile",
        "quick",
        "--dataset",
        "shapes",
        "--guide",
        str(guide.out_dir),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--keep-last",
        "-1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("srf-gan: ") == 1  # rank 0 reports, rank 1 stays quiet
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, profile.srf_gan.iters + 1))
    assert sorted(p.name for p in out.glob("*.pt")) == ["final.pt", "step_000003.pt"]
    final = load_checkpoint(out / "final.pt")
    assert final["step"] == profile.srf_gan.iters and final["config"]["world_size"] == 2
    assert len(load_checkpoint(out / "step_000003.pt")["rng"]) == 2  # each rank's RNG state, for an exact resume
