"""Standard time-series classifiers on the same .ts train/test split, for comparison.

    python -m benchmarks.ts_reference NAME [NAME ...] [--json OUT]

NAME is a data set shipped inside aeon (aeon/datasets/data/NAME/NAME_{TRAIN,TEST}.ts). Each
classifier is fit on the full training file and scored on the test file, as the UEA/UCR
archive's published results are: 1-NN with Euclidean distance (equal length only) and 1-NN
with full-window dependent DTW (aeon's KNeighborsTimeSeriesClassifier), each on the raw files
and with every series z-normalised per channel ("_z"), and aeon's MiniRocket (seeded, equal
length only).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np


def _znorm(X):
    out = []
    for x in X:                                   # x [C, T]
        m, s = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
        out.append((x - m) / np.where(s > 0, s, 1.0))
    return out if isinstance(X, list) else np.stack(out)


def scores(name: str) -> dict:
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    from aeon.datasets import load_from_ts_file

    from mgrade_edge.training.tasks._seq import aeon_data_dir

    base = aeon_data_dir() / name
    Xtr, ytr = load_from_ts_file(str(base / f"{name}_TRAIN.ts"))
    Xte, yte = load_from_ts_file(str(base / f"{name}_TEST.ts"))
    equal = isinstance(Xtr, np.ndarray) and isinstance(Xte, np.ndarray)
    res = {"name": name, "n_train": len(ytr), "n_test": len(yte)}
    runs = []
    for suffix, (a, b) in (("", (Xtr, Xte)), ("_z", (_znorm(Xtr), _znorm(Xte)))):
        runs.append((f"1nn_dtw{suffix}", a, b,
                     lambda: KNeighborsTimeSeriesClassifier(n_neighbors=1, distance="dtw")))
        if equal:
            runs.append((f"1nn_ed{suffix}", a, b, lambda: KNeighborsTimeSeriesClassifier(
                n_neighbors=1, distance="euclidean")))
    if equal:
        from aeon.classification.convolution_based import MiniRocketClassifier
        runs.append(("minirocket", Xtr, Xte,
                     lambda: MiniRocketClassifier(random_state=0, n_jobs=1)))
    for key, a, b, make in runs:
        t0 = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = make().fit(a, ytr)
            res[key] = float((model.predict(b) == yte).mean())
        res[f"{key}_s"] = round(time.monotonic() - t0, 1)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ts_reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    for name in args.names:
        row = scores(name)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
