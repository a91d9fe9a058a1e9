"""The accuracy-vs-memory sweep: expansion, parallel runs, resume, report, bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.sweep import aggregate, expand, matched_table, pareto

ROOT = Path(__file__).resolve().parents[1]

BASE = """
[task]
name = "digits"
seed = 0

[model]
d_model = 4
n_layers = 1
kernel_span = 8
n_taps = 2
norm = "batch"

[train]
epochs = 5
batch_size = 64
lr = 0.004
"""

SWEEP = """
base = "{base}"
seeds = [0]
epochs = 1
[train]
threads = 1
[grid]
d_model = [4, 6]
[families.mgrade]
[families.rnn]
use_conv = false
"""


def write_sweep(tmp_path, **extra):
    base = tmp_path / "base.toml"
    base.write_text(BASE)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP.format(base=base) + "".join(f"{k} = {v}\n" for k, v in extra.items()))
    return sweep


def sweep_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "training.sweep", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_expand_applies_overrides_and_collapses_moot_conv_sizes(tmp_path):
    import tomllib
    runs = expand(tomllib.loads(write_sweep(tmp_path).read_text()))
    names = [name for _, name, _ in runs]
    assert names == ["mgrade-H4-L1-K8-N2-s0", "mgrade-H6-L1-K8-N2-s0", "rnn-H4-L1-s0",
                     "rnn-H6-L1-s0"]
    for family, _, cfg in runs:
        assert cfg["train"]["epochs"] == 1 and cfg["train"]["threads"] == 1
        assert cfg["model"].get("use_conv", True) == (family == "mgrade")


def test_pareto_and_matched_table():
    pts = [{"family": "mgrade", "name": f"m{b}", "int8_bytes": b, "acc": a}
           for b, a in [(100, 0.80), (200, 0.90), (300, 0.85), (400, 0.95)]]
    pts += [{"family": "rnn", "name": f"r{b}", "int8_bytes": b, "acc": a}
            for b, a in [(150, 0.70), (250, 0.88), (500, 0.88)]]
    assert [p["name"] for p in pareto(pts[:4])] == ["m100", "m200", "m400"]
    (row,) = matched_table(pts)
    assert row["baseline_config"] == "r250"          # smallest at the baseline's best
    assert row["mgrade_config"] == "m200"            # smallest mGRADE reaching 0.88
    assert abs(row["memory_ratio"] - 200 / 250) < 1e-12
    assert aggregate([{"name": "x-s0", "hardened_test_acc": 0.5},
                      {"name": "x-s1", "hardened_test_acc": 0.7}])[0]["acc"] == 0.6


@pytest.mark.slow
def test_sweep_runs_in_parallel_resumes_and_reports(tmp_path):
    sweep, out = write_sweep(tmp_path), tmp_path / "out"
    r = sweep_cli(sweep, "--out", out, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(x["name"] for x in rows) == sorted(n for _, n, _ in expand(
        __import__("tomllib").loads(sweep.read_text())))
    for row in rows:
        assert 0.0 <= row["hardened_test_acc"] <= 1.0 and row["epochs"] == 1
        assert row["int8_bytes"] < row["fp32_bytes"]
        assert (out / "runs" / row["name"] / "train.log").stat().st_size > 0
    rnn = {x["d_model"]: x for x in rows if x["family"] == "rnn"}
    assert rnn[4]["state_values"] < rnn[6]["state_values"]
    assert (out / "accuracy_vs_memory.png").stat().st_size > 1000
    assert "memory ratio" in (out / "results.md").read_text()
    again = sweep_cli(sweep, "--out", out)                # nothing left to do
    assert again.returncode == 0 and "4 done, 0 to go" in again.stdout
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_bad_sweep_is_a_clear_error(tmp_path):
    sweep = write_sweep(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(sweep.read_text().replace("d_model = [4, 6]", "widht = [4]"))
    r = sweep_cli(bad, "--out", tmp_path / "o", "--dry-run")
    assert r.returncode == 2 and "widht" in r.stderr and "Traceback" not in r.stderr
    r = sweep_cli(tmp_path / "missing.toml", "--out", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
