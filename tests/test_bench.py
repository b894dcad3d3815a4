"""The upsampler benchmark's entry point runs end to end on a tiny input."""

import json

import pytest

from srfkit.bench.upsamplers import main, step_sizes
from srfkit.models import upsampler_names


def test_step_sizes_of_a_512_image():
    assert step_sizes(512) == [(16, 32), (32, 64), (64, 128)]
    assert step_sizes(100) == [(4, 7), (7, 13), (13, 25)]  # ceil, as ResNet strides give


def test_benchmark_main_prints_a_row_per_upsampler(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    rows = main(
        ["--size", "64", "--repeats", "1", "--warmup", "0", "--channels", "8", "--no-progress", "--json", str(out_json)]
    )
    names = upsampler_names()  # includes the peers: the benchmark module imports them
    assert {"dysample", "dysample_dynamic", "carafe", "nearest", "srf"} <= set(names)
    table = capsys.readouterr().out
    table_rows = [line.split() for line in table.splitlines()]
    for name in names:
        assert [r for r in table_rows if r and r[0] == name and r[1] == "8"], f"no table row for {name}"
    assert [r["upsampler"] for r in rows] == names
    by_name = {r["upsampler"]: r for r in rows}
    assert by_name["nearest"]["ratio"] == 1.0 and by_name["nearest"]["params"] == 0
    assert by_name["dysample"]["params"] == 8 * 32 + 32
    assert all(r["latency_ms"] > 0 and len(r["runs_ms"]) == 1 for r in rows)
    stored = json.loads(out_json.read_text())
    assert stored["steps_px"] == [[2, 4], [4, 8], [8, 16]]
    assert len(stored["rows"]) == len(names)


def test_benchmark_rejects_unknown_names():
    with pytest.raises(SystemExit, match="unknown upsampler"):
        main(["--only", "nearest,lanczos", "--no-progress"])
