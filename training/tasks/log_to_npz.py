"""A sensor log (CSV, one row per step, a per-step label column) -> an `npz` task file for a
per-step streaming detector, split in time.

    python -m mgrade_edge.training.tasks.log_to_npz LOG.csv --label COLUMN --out OUT.npz
        [--drop timestamp ...] [--split 0.6,0.2] [--window 256] [--stride 128]
        [--names NAME0 NAME1 ...]

The first 60% of the rows (--split TRAIN,VAL; the rest is test) are cut into training windows
of --window steps every --stride steps; the validation and test parts stay one sequence each,
streamed step by step as the device would see them. Labels are integers (-100 = unlabelled);
every other column not dropped is a channel, in file order. 'aeon:REL' reads a file shipped
inside the aeon package. Exit code 2 with a one-line message for bad input.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from ._base import IGNORE, TaskError
from ._seq import resolve, unique_names


def read_log(path: Path, label: str, drop: list[str]) -> tuple[np.ndarray, np.ndarray, list]:
    """-> (x float64 [T, C], y int64 [T], channel names)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise TaskError(f"{path}: no data rows")
    header, body = rows[0], rows[1:]
    if label not in header:
        raise TaskError(f"{path}: no column {label!r} (columns: {', '.join(header)})")
    unknown = [d for d in drop if d not in header]
    if unknown:
        raise TaskError(f"{path}: --drop names unknown column(s) {', '.join(unknown)}")
    keep = [i for i, h in enumerate(header) if h != label and h not in drop]
    if not keep:
        raise TaskError(f"{path}: no channel columns left besides the label {label!r}"
                        + (" and --drop" if drop else "") + "; a detector needs at least one")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise TaskError(f"{path}: column name(s) {', '.join(map(repr, dup))} appear twice in "
                        f"the header")
    li = header.index(label)
    x = np.empty((len(body), len(keep)))
    y = np.empty(len(body), np.int64)
    for r, row in enumerate(body):
        if len(row) != len(header):
            raise TaskError(f"{path}: row {r + 2} has {len(row)} fields, the header {len(header)}")
        try:
            x[r] = [float(row[i]) for i in keep]
            lab = float(row[li])
        except ValueError as e:
            raise TaskError(f"{path}: row {r + 2}: {e}") from None
        if not np.isfinite(x[r]).all():
            c = keep[int(np.flatnonzero(~np.isfinite(x[r]))[0])]
            raise TaskError(f"{path}: row {r + 2}, column {header[c]!r}: a missing or "
                            f"non-finite value ({row[c]}); fill or drop it first")
        if not (np.isfinite(lab) and lab == int(lab)):
            raise TaskError(f"{path}: row {r + 2}: label {row[li]!r} is not an integer class "
                            f"({IGNORE} = unlabelled)")
        y[r] = int(lab)
    return x, y, [header[i] for i in keep]


def split_in_time(x, y, train: float, val: float, window: int, stride: int, where: str):
    T = len(x)
    a, b = int(round(train * T)), int(round((train + val) * T))
    if not (0 < a < b < T):
        raise TaskError(f"{where}: --split {train},{val} leaves an empty part of {T} steps")
    if window > a:
        raise TaskError(f"{where}: --window {window} exceeds the training part ({a} steps)")
    starts = range(0, a - window + 1, stride)
    xw = [x[s:s + window] for s in starts]
    yw = [y[s:s + window] for s in starts]
    if not (y[a:b] != IGNORE).any():
        raise TaskError(f"{where}: the validation part (steps {a}..{b}) has no labelled step "
                        f"(all {IGNORE}); choose another --split")
    for part, lab in (("train", y[:a]), ("test", y[b:])):
        values = np.unique(lab[lab != IGNORE])
        if len(values) < 2:
            raise TaskError(f"{where}: the {part} part (steps {0 if part == 'train' else b}.."
                            f"{a if part == 'train' else T}) has a single label "
                            f"({values.tolist()}): nothing to detect")
    return (xw, yw), ([x[a:b]], [y[a:b]]), ([x[b:]], [y[b:]])


def check_names(names: list[str] | None, y: np.ndarray):
    """--names: distinct, one for every integer label 0 .. max(y)."""
    if names is None:
        return
    unique_names(names, "log_to_npz", "--names")
    labelled = y[y != IGNORE]
    if labelled.min() < 0 or labelled.max() >= len(names):
        raise TaskError(f"--names gives {len(names)} names (classes 0..{len(names) - 1}) but "
                        f"the labels run from {labelled.min()} to {labelled.max()}")


def _obj(items):
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mgrade_edge.training.tasks.log_to_npz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log")
    p.add_argument("--label", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--drop", nargs="*", default=[])
    p.add_argument("--split", default="0.6,0.2", help="train,val fractions (default 0.6,0.2)")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--stride", type=int, default=128)
    p.add_argument("--names", nargs="*", default=None,
                   help="class names of the integer labels 0, 1, ... (stored as class_names)")
    args = p.parse_args(argv)
    try:
        train, val = (float(v) for v in args.split.split(","))
        if args.window < 1 or args.stride < 1:
            raise TaskError("--window and --stride must be >= 1")
        path = resolve("log_to_npz", "log", args.log, None)
        x, y, names = read_log(path, args.label, args.drop)
        tr, va, te = split_in_time(x, y, train, val, args.window, args.stride, str(path))
        check_names(args.names, y)
    except (TaskError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = {} if args.names is None else {"class_names": np.array(args.names)}
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp.npz")      # a Ctrl-C never leaves half a file
    try:
        np.savez(tmp, x_train=_obj(tr[0]), y_train=_obj(tr[1]), x_val=_obj(va[0]),
                 y_val=_obj(va[1]), x_test=_obj(te[0]), y_test=_obj(te[1]), **extra)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"wrote {args.out}: {len(tr[0])} training windows of {args.window} steps, val "
          f"{len(va[0][0])} steps, test {len(te[0][0])} steps; channels {', '.join(names)}")
    return 0


if __name__ == "__main__":
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("nothing was written")
    sys.exit(main())
