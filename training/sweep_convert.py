"""The sweep's int8 step: convert each trained run and read its device (int8) accuracy.

A sweep TOML may hold a `[convert]` table (all keys optional):
    [convert]
    enabled = true                 # false: float-only sweep (tables say so)
    n_test = 1000                  # int8 accuracy on the first N test sequences (default: all)
    args = ["--calib", "128"]      # passed on to `python -m mgrade_edge.convert` as they are

Each run RUN is converted with `python -m mgrade_edge.convert RUN --out RUN/int8 [--n-test N] ARGS...`,
logging to RUN/convert.log, one process with one thread. A conversion is done (and skipped on a
rerun) when RUN/int8/report.json is newer than RUN/checkpoint.pt and was made with the same
n_test and args (recorded in the results row). The accuracy used is TFLite-Micro's
(`int8_acc_tflm`), which the C runtime on the board reproduces bit for bit.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mgrade_edge.training.config import ConfigError

KEYS = {"enabled", "n_test", "args"}
RESERVED = ("--out", "--n-test")          # the sweep sets these itself
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                 "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
ROW_KEYS = ("int8_acc", "int8_float_acc", "int8_n_test", "int8_model_id", "convert_args",
            "convert_error")


def convert_settings(sweep: dict) -> dict:
    """The validated [convert] table: {"enabled": bool, "n_test": int | None, "args": [str]}.
    Raises ConfigError naming the bad key or value."""
    table = sweep.get("convert", {})
    if not isinstance(table, dict):
        raise ConfigError("convert must be a table ([convert] with enabled, n_test, args)")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"[convert] has unknown key(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(sorted(KEYS))}")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"[convert] enabled must be true or false, not {enabled!r}")
    n_test = table.get("n_test")
    if n_test is not None and (isinstance(n_test, bool) or not isinstance(n_test, int)
                               or n_test <= 0):
        raise ConfigError(f"[convert] n_test must be a whole number > 0 (test sequences), "
                          f"not {n_test!r}")
    args = table.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f'[convert] args must be a list of strings, e.g. ["--calib", "128"], '
                          f"not {args!r}")
    for a in args:
        if a.split("=", 1)[0] in RESERVED:
            raise ConfigError(f"[convert] args must not set {a.split('=', 1)[0]}: the sweep "
                              f"sets it (use [convert] n_test for --n-test)")
    return {"enabled": enabled, "n_test": n_test, "args": list(args)}


def command_args(settings: dict) -> list[str]:
    """What follows `python -m mgrade_edge.convert RUN --out RUN/int8` (also the row's stamp). The state
    width is always spelled out (`--state-bits auto`, convert's default, unless args set it):
    a row stamped before auto became the default (8-bit) is then reconverted."""
    n = settings["n_test"]
    args = settings["args"]
    bits = [] if any(a.split("=", 1)[0] == "--state-bits" for a in args) else \
        ["--state-bits", "auto"]
    return ([] if n is None else ["--n-test", str(n)]) + bits + args


def is_fresh(run_dir: Path) -> bool:
    """RUN/int8/report.json exists and is newer than the run's checkpoint."""
    report, ckpt = run_dir / "int8" / "report.json", run_dir / "checkpoint.pt"
    try:
        return report.stat().st_mtime > ckpt.stat().st_mtime
    except FileNotFoundError:
        return False


def report_model_id(run_dir: Path) -> str | None:
    """The model_id in RUN/int8/report.json (None if there is none or it cannot be read)."""
    try:
        return json.loads((run_dir / "int8" / "report.json").read_text()).get("model_id")
    except (OSError, ValueError, AttributeError):
        return None


def row_is_behind(run_dir: Path, row: dict, settings: dict) -> bool:
    """Whether the results row holds other int8 figures than the fresh report on disk (the run
    was converted again outside the sweep, or the row predates int8_model_id): the sweep then
    reads the report again, without converting."""
    return settings["enabled"] and is_fresh(run_dir) and \
        row.get("int8_model_id") != report_model_id(run_dir)


def needs_convert(run_dir: Path, row: dict | None, settings: dict) -> bool:
    """Whether the sweep must (re)convert this run: conversion is on, and there is no fresh
    report.json or it was made with other convert arguments than these."""
    if not settings["enabled"]:
        return False
    if not is_fresh(run_dir):
        return True
    stamp = None if row is None else row.get("convert_args")
    return stamp is not None and stamp != command_args(settings)


def run_convert(run_dir: Path, settings: dict) -> int:
    """Convert one run in its own single-thread process (dies with the sweep); output to
    RUN/convert.log. Returns the exit code."""
    cmd = [sys.executable, "-m", "mgrade_edge.training.with_parent", str(os.getpid()), "convert",
           str(run_dir), "--out", str(run_dir / "int8"), *command_args(settings)]
    env = dict(os.environ, **SINGLE_THREAD)
    with open(run_dir / "convert.log", "w") as f:
        return subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)


def failure_line(run_dir: Path, code: int) -> str:
    """One line saying why a conversion failed: convert's own `error:` line if it printed one."""
    try:
        lines = [ln.strip() for ln in (run_dir / "convert.log").read_text(
            errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines if ln.startswith("error")]
    last = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit {code}: {last[:200]}"


def int8_fields(run_dir: Path, settings: dict, code: int | None = None) -> dict:
    """The results-row fields of a run's conversion: int8 (TFLite-Micro) accuracy, the
    hardened float accuracy on the same test sequences, how many, the convert arguments, and
    the error line (None when it converted). `code`: the converter's exit code when it ran now
    (None: read a previous report)."""
    stamp = command_args(settings)
    empty = {"int8_acc": None, "int8_float_acc": None, "int8_n_test": None,
             "int8_model_id": None, "convert_args": stamp}
    if not settings["enabled"]:
        return {**empty, "convert_args": None, "convert_error": None}
    if code not in (None, 0) or not is_fresh(run_dir):
        return {**empty, "convert_error": failure_line(run_dir, code if code is not None else -1)}
    try:
        report = json.loads((run_dir / "int8" / "report.json").read_text())
        return {"int8_acc": float(report["int8_acc_tflm"]),
                "int8_float_acc": float(report["hardened_acc"]),
                "int8_n_test": int(report["n_test"]),
                "int8_model_id": report.get("model_id"), "convert_args": stamp,
                "convert_error": None}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {**empty, "convert_error": f"unreadable {run_dir / 'int8' / 'report.json'}: {e}"}
