"""Float, int8 and int16-state-path accuracy of a run on TFLite-Micro, in one pass.

    python -m benchmarks.qat_eval RUN [RUN ...] [--n-test N] [--json FILE]

The same figures as `python -m mgrade_edge.convert RUN --out RUN/int8 --n-test N` (float and int8
TFLite-Micro accuracy) and `python -m benchmarks.int8_attribution RUN --state16-tflm N
--gate8` (the minGRU state path in int16, gate z on its int8 grid), for comparing runs
(baseline, plain fine-tune, QAT fine-tune) when CPU time is short; also the float accuracy
with the int8 weights (`MGradeNet.set_qat`, float activations) and, for a `train.qat_acts`
run, with its activations fake-quantized on the ranges its training ended with ("fake-
quantized activations"): one calibration, TFLite-Micro only (convert also streams LiteRT
twice per step). The weights are rounded as convert's default (--rounding auto: GPTQ,
nearest for a QAT run); the calibration feeds are the converter's
(`convert.calibration_feeds`: same sequences, same thinning, stepped as one batch), so the
.tflite is convert's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def tflm_acc(model_bytes: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from mgrade_edge.convert.host_eval import int8_logits
    from mgrade_edge.convert.stream import Streamer, predictions

    xq = Streamer(model_bytes, "tflm").quantize_input(x)
    logits, _ = int8_logits(model_bytes, xq)    # host C, cross-checked against TFLite-Micro
    preds = np.array([predictions(lg, "mean") for lg in logits])
    return float((preds == y).mean())


def measure(run: str, n_test: int, calib: int = 64, tflm: bool = True,
            gate16: bool = False) -> dict:
    from mgrade_edge.convert.quantize import convert_int8, finalize, read_metadata
    from mgrade_edge.convert.spec import extract
    from mgrade_edge.convert.widen import widen_state
    from mgrade_edge.training.checkpoint import load_model
    from mgrade_edge.training.evaluate import evaluate
    from mgrade_edge.training.tasks import load_task

    t0 = time.monotonic()
    net, cfg, ckpt = load_model(run)
    data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None, cfg.task.seed)
    if data.readout != "mean" or data.len_test is not None:
        raise SystemExit("error: qat_eval handles fixed-length mean-readout tasks only")
    x, y = data.x_test[:n_test], data.y_test[:n_test]
    net.harden()
    float_acc = evaluate(net, x, y)["acc"]
    net.set_qat(True)                     # the deployed int8 weights, float activations
    qat_weights_acc = evaluate(net, x, y)["acc"]
    extra = {}
    if any(seen for *_, seen in ckpt.get("act_ranges", {}).values()):
        from mgrade_edge.training.qat import load_act_ranges
        load_act_ranges(net, ckpt["act_ranges"])     # the ranges the QAT epochs ended with
        net.set_qat(True, acts=True)                # what a train.qat_acts run trained
        extra["int8_weights_fake_act_acc"] = evaluate(net, x, y)["acc"]
    net.set_qat(False)
    if not tflm:
        return {"run": run, "epoch": int(ckpt.get("epoch", 0)), "n_test": len(y),
                "float_acc": float_acc, "int8_weights_float_act_acc": qat_weights_acc,
                **extra}
    from mgrade_edge.convert.raw_input import to_raw_units
    if to_raw_units(net, data):           # as python -m mgrade_edge.convert: the device reads raw codes
        x = data.x_test[:n_test]
    spec = extract(net)
    from mgrade_edge.convert.__main__ import calibration_feeds, choose_rounding, round_weights
    rounding = round_weights(net, spec, data, calib, cfg.train.seed,
                             choose_rounding("auto", cfg))["weight_rounding"]
    feeds = calibration_feeds(net, spec, data.x_train, calib, cfg.train.seed)
    model = finalize(convert_int8(spec, feeds), spec,
                     {"task": data.name, "seq_len": data.seq_len,
                      "kernel_span": cfg.model.span,
                      "checkpoint_epoch": int(ckpt.get("epoch", 0))})
    xs, ys = x.numpy(), y.numpy()
    int8 = tflm_acc(model, xs, ys)
    wide = widen_state(model, read_metadata(model)["layers"], gate16=False)
    int16 = tflm_acc(wide, xs, ys)
    if gate16:                            # z's LOGISTIC in int16 too
        extra["state16_gate16_tflm_acc"] = tflm_acc(
            widen_state(model, read_metadata(model)["layers"], gate16=True), xs, ys)
    from mgrade_edge.convert.__main__ import model_id
    return {"run": run, "epoch": int(ckpt.get("epoch", 0)), "n_test": len(ys),
            "model_id": model_id(model), "weight_rounding": rounding,
            "float_acc": float_acc, "int8_weights_float_act_acc": qat_weights_acc, **extra,
            "int8_tflm_acc": int8, "state16_gate8_tflm_acc": int16,
            "seconds": round(time.monotonic() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.qat_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (checkpoint.pt)")
    p.add_argument("--n-test", type=int, default=1000, help="test sequences (default 1000)")
    p.add_argument("--json", help="append one JSON line per run here")
    p.add_argument("--gate16", action="store_true",
                   help="also the int16 state path with the gate z in int16")
    p.add_argument("--float-only", action="store_true",
                   help="only the float accuracy with float and with int8 weights (seconds)")
    args = p.parse_args(argv)
    for run in args.runs:
        r = measure(run, args.n_test, tflm=not args.float_only, gate16=args.gate16)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")
        if args.float_only:
            print(f"{run}: float {100 * r['float_acc']:.2f}%  int8 weights, float "
                  f"activations {100 * r['int8_weights_float_act_acc']:.2f}%", flush=True)
            continue
        fake = r.get("int8_weights_fake_act_acc")
        fake = "" if fake is None else f"  fake-quantized activations {100 * fake:.2f}%"
        print(f"{run}: float {100 * r['float_acc']:.2f}%  int8 weights, float activations "
              f"{100 * r['int8_weights_float_act_acc']:.2f}%{fake}  int8 TFLM "
              f"{100 * r['int8_tflm_acc']:.2f}%  int16 state (z int8) TFLM "
              f"{100 * r['state16_gate8_tflm_acc']:.2f}%"
              + (f"  int16 state (z int16) TFLM {100 * r['state16_gate16_tflm_acc']:.2f}%"
                 if "state16_gate16_tflm_acc" in r else "")
              + f"  on {r['n_test']}  "
              f"({r['seconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
