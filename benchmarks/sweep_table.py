"""One markdown table of a finished sweep: per run, float and device accuracy, the form the
converter chose, int8 bytes, epochs, training wall time and Cortex-M4 instructions per step.

    python -m benchmarks.sweep_table SWEEP_OUT

SWEEP_OUT is a sweep's --out folder (results.jsonl, runs/NAME/int8/report.json); the table
is what docs/results.md's "Paper model sizes" section shows. Columns:

- float %: the hardened float model on the whole test set (results.jsonl `hardened_test_acc`);
- device %: the int8 step model on TFLite-Micro (bit-exact with the C runtime) on the
  converter's test sequences (`int8_acc`);
- form: the rung the converter's `--form auto` kept (report.json `form`);
- int8 B: weights + state at int8 (training.memory, the sweep's memory axis);
- train wall: the sum of the run's epoch times (seconds; a run that shared its core with
  other work took longer than on a free one);
- M4 instr/step: the fast path's mean instructions per step under QEMU -icount
  (report.json `resources`; "-" when the conversion ran without the resource table).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def report_of(out: Path, name: str) -> dict:
    """The run's int8/report.json, {} when it has none (not converted, or a failed one)."""
    path = out / "runs" / name / "int8" / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def m4_instructions(report: dict) -> float | None:
    """The fast path's mean instructions per step on the emulated Cortex-M4, or None."""
    try:
        return report["resources"]["paths"]["fast"]["instructions_per_step"]["mean"]
    except (KeyError, TypeError):
        return None


def form_of(report: dict) -> str:
    """The deployed form; reports written before `form` existed give their bit widths."""
    if not report:
        return "-"
    if "form" in report:
        return report["form"]
    if report.get("state_bits", 8) == 8:
        return "int8"
    return "input16" if report.get("input_bits") == 16 else "state16"


def table_lines(out: Path) -> list[str]:
    """Markdown lines: header, separator, one row per run (family order, then width)."""
    from mgrade_edge.training.sweep import FAMILY_LABELS, load_results

    rows = load_results(out)
    order = {f: i for i, f in enumerate(("mgrade", "conv", "rnn"))}
    rows.sort(key=lambda r: (order.get(r["family"], 9), r["d_model"], r.get("seed", 0)))
    lines = ["| family | H | seed | float % | device % | form | int8 B | epochs | "
             "train wall (s) | M4 instr/step |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = report_of(out, r["name"])
        dev = "-" if r.get("int8_acc") is None else f"**{100 * r['int8_acc']:.2f}**"
        instr = m4_instructions(rep)
        wall = r.get("train_s")
        lines.append(
            f"| {FAMILY_LABELS.get(r['family'], r['family'])} | {r['d_model']} | {r.get('seed', 0)} | "
            f"{100 * r['hardened_test_acc']:.2f} | {dev} | {form_of(rep)} | "
            f"{r['int8_bytes']:,} | {r['epochs']} | "
            f"{'-' if wall is None else f'{wall:,.0f}'} | "
            f"{'-' if instr is None else f'{instr:,.0f}'} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sweep_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the sweep's --out folder")
    args = p.parse_args(argv)
    if not (args.out / "results.jsonl").is_file():
        print(f"error: {args.out}/results.jsonl not found: give a sweep's --out folder",
              file=sys.stderr)
        return 2
    try:
        print("\n".join(table_lines(args.out)))
        sys.stdout.flush()
    except BrokenPipeError:                 # piped into head: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
