"""Device (TFLite-Micro) accuracy of a converted model on a slice of its run's test split,
prepared as `python -m mgrade_edge.convert` prepares it (hardened float predictions, the task's raw input
units), so long test sets can be streamed in shards on several cores and merged.

    python -m benchmarks.tflm_accuracy RUN MODEL.tflite [--start 0] [--stop N] [--out a.npz]
    python -m benchmarks.tflm_accuracy --merge a.npz b.npz ...

Prints: test sequences, float (hardened) accuracy, int8 TFLite-Micro accuracy, argmax
agreement of the two. (`convert` itself also streams LiteRT; this runs TFLite-Micro only,
which the C runtime reproduces bit for bit: the host C package computes it, cross-checked
against TFLite-Micro stepping on the first sequences, convert/host_eval.py.)
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def shard(run: str, model_path: str, start: int, stop: int | None) -> dict:
    """{pred, y, float_pred} [n] on test sequences start..stop of the run's task."""
    import torch

    from mgrade_edge.convert.raw_input import to_raw_units
    from mgrade_edge.convert.host_eval import int8_logits
    from mgrade_edge.convert.stream import Streamer, predictions
    from mgrade_edge.training.checkpoint import load_model
    from mgrade_edge.training.evaluate import IGNORE
    from mgrade_edge.training.tasks import load_task

    net, cfg, _ = load_model(run)
    data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None, cfg.task.seed)
    if data.readout == "per_step":
        raise SystemExit("tflm_accuracy: per-step tasks are not supported; use python -m "
                         "convert (its report scores every step)")
    sl = slice(start, stop)
    lengths = None if data.len_test is None else data.len_test[sl]
    net.harden()
    with torch.no_grad():
        hard = net(data.x_test[sl]) if lengths is None else net(data.x_test[sl], lengths)
    float_pred = hard.argmax(-1).numpy()
    to_raw_units(net, data)             # as convert: x in the task's raw units from here on
    model_bytes = open(model_path, "rb").read()
    xq = Streamer(model_bytes, "tflm").quantize_input(data.x_test[sl].numpy())
    logits, _ = int8_logits(model_bytes, xq, None if lengths is None else lengths.numpy())
    pred = np.array([predictions(lg, data.readout) for lg in logits])
    y = data.y_test[sl].numpy()
    keep = y != IGNORE
    return {"pred": pred[keep], "y": y[keep], "float_pred": float_pred[keep]}


def figures(r: dict) -> str:
    p, y, f = r["pred"], r["y"], r["float_pred"]
    return (f"{len(p)} test sequences: float {100 * (f == y).mean():.2f}%  int8 TFLM "
            f"{100 * (p == y).mean():.2f}%  agreement {100 * (p == f).mean():.2f}%")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tflm_accuracy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", nargs="?", help="run folder (its checkpoint and task)")
    ap.add_argument("model", nargs="?", help="the converted model.tflite")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stop", type=int, default=None)
    ap.add_argument("--out", help="save this shard's predictions (.npz) for --merge")
    ap.add_argument("--merge", nargs="+", metavar="NPZ", help="merge saved shards and print")
    a = ap.parse_args(argv)
    if a.merge:
        try:
            parts = [np.load(f) for f in a.merge]
            r = {k: np.concatenate([p[k] for p in parts]) for k in ("pred", "y", "float_pred")}
        except (OSError, KeyError, ValueError) as e:
            print(f"error: cannot merge {a.merge}: {e}", file=sys.stderr)
            return 2
        print(figures(r))
        return 0
    if not a.run or not a.model:
        ap.error("give RUN and MODEL.tflite, or --merge NPZ ...")
    r = shard(a.run, a.model, a.start, a.stop)
    if a.out:
        np.savez(a.out, **r)
    print(figures(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
