"""The accuracy-vs-memory sweep: expansion, parallel runs, int8 conversion, resume, report,
bad input."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgrade_edge.training.sweep import (aggregate, expand, load_results, matched_table, pareto,
                            plot_series, width_table, write_report, zoom_range)
from mgrade_edge.training.sweep_convert import convert_settings, needs_convert

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


def write_sweep(tmp_path, convert="", **extra):
    """The tiny sweep; `extra`: top-level keys; `convert`: the body of a [convert] table."""
    base = tmp_path / "base.toml"
    base.write_text(BASE)
    sweep = tmp_path / "sweep.toml"
    top = "".join(f"{k} = {v}\n" for k, v in extra.items())
    sweep.write_text(top + SWEEP.format(base=base) + (f"[convert]\n{convert}\n" if convert else ""))
    return sweep


def sweep_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "mgrade_edge.training.sweep", *map(str, args)], cwd=ROOT,
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
    (p,) = aggregate([{"name": "x-s0", "hardened_test_acc": 0.5},
                      {"name": "x-s1", "hardened_test_acc": 0.7}])
    assert p["acc_float"] == 0.6 and p["acc_int8"] is None and p["convert_failed"] == 0


def test_aggregate_int8_needs_every_seed_converted():
    ok = {"hardened_test_acc": 0.9, "int8_float_acc": 0.9, "int8_n_test": 300,
          "convert_error": None}
    (p,) = aggregate([{**ok, "name": "x-s0", "int8_acc": 0.8},
                      {**ok, "name": "x-s1", "int8_acc": 0.7}])
    assert abs(p["acc_int8"] - 0.75) < 1e-12 and (p["acc_int8_min"], p["acc_int8_max"]) == (0.7, 0.8)
    assert abs(p["int8_cost"] - 15.0) < 1e-9            # points, float - int8 on the same images
    (p,) = aggregate([{**ok, "name": "x-s0", "int8_acc": 0.8},
                      {**ok, "name": "x-s1", "int8_acc": None, "convert_error": "exit 2: error"}])
    assert p["acc_int8"] is None and p["convert_failed"] == 1 and p["acc_float"] == 0.9
    size = {"d_model": 8, "n_layers": 2, "int8_bytes": 1761}
    agg = aggregate([{**ok, **size, "family": "mgrade", "name": "m-s0", "int8_acc": 0.8},
                     {**ok, **size, "family": "rnn", "name": "r-s0", "int8_acc": None,
                      "convert_error": "exit 2: error"}])
    header, _, row = width_table(agg)
    assert header.startswith("| H | L | mGRADE: float % / int8 % (int8 B) | pure minGRU")
    assert row == "| 8 | 2 | 90.00 / 80.00 (1,761) | 90.00 / convert failed (1,761) |"


def test_report_gives_epochs_wall_time_and_a_float_matching(tmp_path):
    """The per-config table carries epochs and training wall time (read back from the run's
    metrics.jsonl for rows written before rows held it), and a second matching on float
    accuracy follows the int8 one: here the minGRU baseline collapses on int8, so the int8
    matching picks the small mGRADE and the float matching the large one."""
    def row(family, name, h, nbytes, fl, i8, **extra):
        return {"family": family, "name": name + "-s0", "seed": 0, "d_model": h, "n_layers": 3,
                "epochs": 10, "hardened_test_acc": fl, "int8_acc": i8, "int8_float_acc": fl,
                "int8_n_test": 100, "convert_error": None, "param_values": nbytes // 2,
                "state_values": 10, "int8_bytes": nbytes, "fp32_bytes": 4 * nbytes, **extra}
    rows = [row("mgrade", "mgrade-H8", 8, 1000, 0.95, 0.94, train_s=100.0),
            row("mgrade", "mgrade-H16", 16, 3000, 0.99, 0.98, train_s=300.0),
            row("rnn", "rnn-H16", 16, 2000, 0.97, 0.60)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "runs" / "rnn-H16-s0"
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "epoch_s": 60.25}) + "\n" for e in range(1, 11)))
    assert [r.get("train_s") for r in load_results(tmp_path)] == [100.0, 300.0, 602.5]
    write_report(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert config_line(md, "rnn-H16").endswith("| 8000 | 10 | 602 |")
    assert config_line(md, "mgrade-H16").endswith("| 12000 | 10 | 300 |")
    matched = json.loads((tmp_path / "matched.json").read_text())
    assert [r["mgrade_config"] for r in matched["rows"]] == ["mgrade-H8"]
    assert [r["mgrade_config"] for r in matched["float_rows"]] == ["mgrade-H16"]
    assert abs(matched["float_rows"][0]["memory_ratio"] - 1.5) < 1e-12
    assert "matching on the **float** accuracy" in md

    # benchmarks/sweep_table: the same runs, one row each, with the form and M4 instructions
    # from a run's int8/report.json ("-" where there is none)
    from benchmarks.sweep_table import table_lines
    (run / "int8").mkdir()
    run.joinpath("int8", "report.json").write_text(json.dumps(
        {"form": "state16", "resources": {"paths": {"fast": {
            "instructions_per_step": {"mean": 21863.4}}}}}))
    lines = table_lines(tmp_path)
    assert len(lines) == 2 + len(rows)
    assert lines[2].startswith("| mGRADE | 8 | 0 | 95.00 | **94.00** | - | 1,000 | 10 | 100 |")
    assert lines[-1] == ("| pure minGRU | 16 | 0 | 97.00 | **60.00** | state16 | 2,000 | 10 | 602 | "
                         "21,863 |")


def test_zoom_panel_only_when_a_baseline_squashes_the_plot():
    """A baseline 20 points below mGRADE gets the plot a second panel spanning mGRADE's
    range and the best point; figures within a few points of each other get none."""
    def series(rnn_acc):
        return {"mgrade": {"points": [(100, 98.6), (200, 99.0)], "float": [(100, 98.7)]},
                "conv": {"points": [(150, 98.8)], "float": []},
                "rnn": {"points": [(120, rnn_acc)], "float": []}}
    lo, hi = zoom_range(series(78.0))
    assert 98.4 < lo < 98.6 and 99.0 < hi < 99.2
    assert zoom_range(series(97.8)) is None
    assert zoom_range({"conv": {"points": [(1, 50.0)], "float": []}}) is None


def config_line(results_md: str, config: str) -> str:
    (line,) = [ln for ln in results_md.splitlines() if ln.startswith(f"| {config} |")]
    return line


@pytest.mark.slow
def test_sweep_trains_converts_resumes_and_reports_int8(tmp_path):
    """A tiny sweep end to end: every run trained and converted to int8 (TFLite-Micro), the
    table and the plot carry the int8 accuracy, a rerun neither retrains nor reconverts, and a
    conversion that fails is reported in the table and the exit code, not raised."""
    sweep, out = write_sweep(tmp_path, convert="n_test = 40"), tmp_path / "out"
    r = sweep_cli(sweep, "--out", out, "--jobs", "2")
    assert r.returncode == 0, r.stderr
    rows = load_results(out)
    assert sorted(x["name"] for x in rows) == sorted(n for _, n, _ in expand(
        __import__("tomllib").loads(sweep.read_text())))
    reports = {}
    for row in rows:
        assert 0.0 <= row["hardened_test_acc"] <= 1.0 and row["epochs"] == 1
        assert row["int8_bytes"] < row["fp32_bytes"]
        run = out / "runs" / row["name"]
        assert (run / "train.log").stat().st_size > 0
        report = json.loads((run / "int8" / "report.json").read_text())   # convert's own
        assert row["convert_error"] is None
        assert row["convert_args"] == ["--n-test", "40", "--state-bits", "auto"]
        assert row["int8_acc"] == report["int8_acc_tflm"] and row["int8_n_test"] == 40
        assert row["int8_float_acc"] == report["hardened_acc"]
        assert row["int8_model_id"] == report["model_id"]
        reports[row["name"]] = (run / "int8" / "report.json").stat().st_mtime_ns
    rnn = {x["d_model"]: x for x in rows if x["family"] == "rnn"}
    assert rnn[4]["state_values"] < rnn[6]["state_values"]
    # the table: float and int8 side by side, per configuration
    md = (out / "results.md").read_text()
    assert "memory ratio" in md and "use the **int8** accuracy" in md
    for row in rows:
        cells = config_line(md, row["name"].rsplit("-s", 1)[0]).split(" | ")
        assert cells[3].startswith(f"{100 * row['hardened_test_acc']:.2f} (")
        assert cells[4].startswith(f"{100 * row['int8_acc']:.2f} (")
    # the plot: its fronts and points are the int8 accuracies, float only as the faint markers
    series = plot_series(aggregate(rows), "int8")
    for row in rows:
        s = series[row["family"]]
        assert (row["int8_bytes"], 100 * row["int8_acc"]) in s["points"]
        assert (row["int8_bytes"], 100 * row["hardened_test_acc"]) in s["float"]
        assert all(pt in s["points"] for pt in s["front"])
    assert (out / "accuracy_vs_memory.png").stat().st_size > 1000

    again = sweep_cli(sweep, "--out", out)                # nothing left to do
    assert again.returncode == 0, again.stderr
    assert "4 trained, 0 to train, 0 to (re)convert or read" in again.stdout
    assert load_results(out) == rows
    for row in rows:                                    # not reconverted
        run = out / "runs" / row["name"]
        assert (run / "int8" / "report.json").stat().st_mtime_ns == reports[row["name"]]

    # a run converted again outside the sweep (another model_id): its row is read again from
    # the report on disk, and nothing is reconverted
    redone = out / "runs" / rows[1]["name"] / "int8"
    tflite_mtime = (redone / "model.tflite").stat().st_mtime_ns
    report = json.loads((redone / "report.json").read_text())
    report.update(model_id="0123456789abcdef", int8_acc_tflm=0.125)
    (redone / "report.json").write_text(json.dumps(report))
    reread = sweep_cli(sweep, "--out", out)
    assert reread.returncode == 0, reread.stderr
    assert "0 to train, 1 to (re)convert or read" in reread.stdout
    now = {x["name"]: x for x in load_results(out)}
    assert now[rows[1]["name"]]["int8_acc"] == 0.125
    assert now[rows[1]["name"]]["int8_model_id"] == "0123456789abcdef"
    assert (redone / "model.tflite").stat().st_mtime_ns == tflite_mtime
    rows[1] = now[rows[1]["name"]]

    # a conversion that fails: the run's int8 folder holds someone else's file
    bad = rows[0]["name"]
    shutil.rmtree(out / "runs" / bad / "int8")
    (out / "runs" / bad / "int8").mkdir()
    (out / "runs" / bad / "int8" / "notes.txt").write_text("mine")
    failed = sweep_cli(sweep, "--out", out)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "1 to (re)convert" in failed.stdout
    assert "1 conversion(s) failed" in failed.stderr and bad in failed.stderr
    after = {x["name"]: x for x in load_results(out)}
    assert after[bad]["int8_acc"] is None and "non-empty folder" in after[bad]["convert_error"]
    assert {k: v for k, v in after.items() if k != bad} == {x["name"]: x for x in rows[1:]}
    md = (out / "results.md").read_text()
    line = config_line(md, bad.rsplit("-s", 1)[0])
    assert "convert failed" in line and f"{100 * rows[0]['hardened_test_acc']:.2f}" in line
    assert f"- {bad}: exit 2: error:" in md
    series = plot_series(aggregate(list(after.values())), "int8")
    assert len(series[after[bad]["family"]]["points"]) == 1   # the failed one is not plotted


def test_rerun_reconverts_only_a_stale_or_differently_made_conversion(tmp_path):
    run = tmp_path / "run"
    (run / "int8").mkdir(parents=True)
    (run / "checkpoint.pt").write_bytes(b"x")
    settings = convert_settings({"convert": {"n_test": 40}})
    assert needs_convert(run, None, settings)                     # no report yet
    (run / "int8" / "report.json").write_text("{}")
    now = time.time()
    os.utime(run / "checkpoint.pt", (now - 10, now - 10))
    assert not needs_convert(run, None, settings)
    auto = ["--n-test", "40", "--state-bits", "auto"]
    assert not needs_convert(run, {"convert_args": auto}, settings)
    assert needs_convert(run, {"convert_args": ["--n-test", "50", "--state-bits", "auto"]},
                         settings)                                  # other args
    # stamped before --state-bits auto became convert's default (an 8-bit conversion)
    assert needs_convert(run, {"convert_args": ["--n-test", "40"]}, settings)
    assert not needs_convert(run, {"convert_args": ["--n-test", "40", "--state-bits", "8"]},
                             convert_settings({"convert": {"n_test": 40,
                                                           "args": ["--state-bits", "8"]}}))
    assert needs_convert(run, {"convert_args": auto},
                         convert_settings({"convert": {"n_test": 40,
                                                       "args": ["--calib", "8"]}}))
    os.utime(run / "checkpoint.pt", (now + 10, now + 10))        # retrained since
    assert needs_convert(run, {"convert_args": auto}, settings)
    assert not needs_convert(run, None, convert_settings({"convert": {"enabled": False}}))


@pytest.mark.parametrize("body, words", [
    ("n_test = 0", "n_test must be a whole number > 0"),
    ('n_test = "all"', "n_test must be a whole number > 0"),
    ("n_test = true", "n_test must be a whole number > 0"),
    ('args = "--calib 8"', "args must be a list of strings"),
    ('args = ["--out", "x"]', "must not set --out"),
    ('args = ["--n-test=5"]', "must not set --n-test"),
    ('enabled = "yes"', "enabled must be true or false"),
    ("ntest = 5", "unknown key(s) ntest"),
])
def test_bad_convert_table_is_a_clear_error(tmp_path, body, words):
    import tomllib
    from mgrade_edge.training.config import ConfigError
    sweep = write_sweep(tmp_path, convert=body)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        convert_settings(tomllib.loads(sweep.read_text()))
    if body.startswith("ntest"):                         # the whole command, once
        r = sweep_cli(sweep, "--out", tmp_path / "o", "--dry-run", timeout=120)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_converter_child_dies_with_its_parent(tmp_path):
    """mgrade_edge.training.with_parent: the module runs with its arguments and exit code, and is
    SIGTERMed when the process that started it dies."""
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.training.with_parent", str(os.getpid()),
                        "convert", "nothing", "--out", str(tmp_path / "o"), "--calib", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--calib, --n-test and --val-n must be > 0" in r.stderr
    middle = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-m', 'mgrade_edge.training.with_parent', str(os.getpid()),"
        " 'timeit', '-n', '1', 'import time; time.sleep(120)'])\n"
        "print(p.pid, flush=True)\ntime.sleep(120)\n")], cwd=ROOT, stdout=subprocess.PIPE,
        text=True)
    child = int(middle.stdout.readline())
    try:
        time.sleep(1.0)
        os.kill(child, 0)                                # running
        middle.send_signal(signal.SIGKILL)
        middle.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            with open(f"/proc/{child}/stat") as f:       # a zombie (re-parented) is gone too
                if f.read().split()[2] == "Z":
                    break
            time.sleep(0.1)
        else:
            pytest.fail("the child outlived its parent")
    finally:
        if middle.poll() is None:
            middle.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_bad_sweep_is_a_clear_error(tmp_path):
    sweep = write_sweep(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(sweep.read_text().replace("d_model = [4, 6]", "widht = [4]"))
    r = sweep_cli(bad, "--out", tmp_path / "o", "--dry-run")
    assert r.returncode == 2 and "widht" in r.stderr and "Traceback" not in r.stderr
    r = sweep_cli(tmp_path / "missing.toml", "--out", tmp_path / "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
