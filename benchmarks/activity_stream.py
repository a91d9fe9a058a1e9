"""A per-step labelled IMU log from real recordings: BasicMotions' 80 recordings (TRAIN and
TEST files, shipped inside aeon) in one seeded random order, one after the other, each step
labelled with its recording's activity. The result is a CSV sensor log (6 channels + label)
for `python -m mgrade_edge.training.tasks.log_to_npz`, i.e. a streaming activity detector that must notice
every change of activity within a few steps.

    python -m benchmarks.activity_stream OUT.csv [--seed 0]

The recordings are real; the stream (where one ends and the next begins) is made here.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.activity_stream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from mgrade_edge.training.tasks._seq import aeon_data_dir
    from mgrade_edge.training.tasks.ts import read_ts

    base = aeon_data_dir() / "BasicMotions"
    seqs, labels = [], []
    for part in ("TRAIN", "TEST"):
        x, y, classes = read_ts(base / f"BasicMotions_{part}.ts")
        seqs += x
        labels += [classes.index(v) for v in y]
    order = np.random.default_rng(args.seed).permutation(len(seqs))
    with open(args.out, "w") as f:
        f.write("acc_x,acc_y,acc_z,gyr_x,gyr_y,gyr_z,activity\n")
        for i in order:
            for row in seqs[i]:
                f.write(",".join(f"{v:.6g}" for v in row) + f",{labels[i]}\n")
    print(f"wrote {args.out}: {len(seqs)} recordings, {sum(len(s) for s in seqs)} steps; "
          f"activities {', '.join(classes)} = 0..{len(classes) - 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
