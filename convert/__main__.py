"""Convert a trained checkpoint to a hardened, int8, single-step streaming model.tflite.

    python -m mgrade_edge.convert CHECKPOINT --out DIR [--calib N] [--n-test N] [--state-bits 8|16|auto]
                      [--gate-bits 8|16] [--val-n N] [--rounding auto|gptq|nearest] [--threads N]
                      [--form auto|int8|state16|input16|conv16|mlp16|conv_mlp16]

Writes DIR/model.tflite, DIR/report.json (accuracies float / hardened / int8 on LiteRT and
TFLite-Micro, LiteRT vs TFLM difference, sizes, ops, the device resource table "resources" of
convert/resources.py: flash, RAM, instructions per step on the emulated Cortex-M4; for a train.qat_epochs run also qat_acc,
the accuracy of what its QAT epochs trained: int8 weights, and the activation grids with
train.qat_acts) and DIR/test_data.npz (the int8 test
sequences and labels that the host tools stream). DIR appears only when everything succeeded.
An existing DIR must be empty or a previous convert output; only convert's own three files
in it are replaced (each atomically), anything else in it is left alone. What TensorFlow, absl
and the converter write to stderr goes to DIR/convert.log, not the terminal; progress bars are
drawn only on a terminal, and --quiet prints only the final summary.

A task with input statistics (normalize = true) keeps its normalisation outside the int8
graph: the device normalises each float frame before quantising it (convert/input_norm.py,
metadata input_norm), so any units work. One warning line per input channel whose
training-split std the int8 input grid resolves with fewer than 16 steps; report.json's
input_grid_steps gives the steps per std of every channel.

--state-bits (default auto): the minGRU state width on the device. auto (= --form auto)
converts both an 8-bit and a 16-bit state model (convert/widen.py) and keeps the 16-bit one
only where it is strictly more accurate on the validation split with TFLite-Micro (the last
--val-n training sequences where the task has no validation split; printed, and report.json's
state_bits_split says which); where that choice is not within 0.5 points of the float
network's validation accuracy it evaluates the whole widening ladder (convert/forms.py,
ladder.py: the MLP in int16 too) and keeps the cheapest form within the bound, else the most accurate;
each tried form's accuracy, instructions per step and RAM are printed and in report.json
(forms_tried). --form int8|state16|input16|mlp16 picks a form. The MicroPython target
implements only the int8 form.

--gate-bits (default 16): with a 16-bit state, the width of the gate z = sigmoid(z_pre) that
scales the update z * (g - h). 16 runs TFLite's int16 LOGISTIC (z on a 1/32768 grid); 8 keeps
the int8 LOGISTIC (z on a 1/256 grid: a slow gate below 1/512 rounds to 0 and its channel
freezes) and requantizes z to int16. Both are bit-exact on the C runtime; 16 costs a 512-byte
table per layer in flash on the fast path.

--rounding (default auto): how the weights go onto their per-channel int8 grids. gptq rounds
each layer's weights so that its output on the calibration inputs moves least (GPTQ,
convert/rounding.py; same grids, so the same model size and kernels); nearest rounds each
weight on its own; auto is gptq except for a train.qat_epochs run, whose QAT epochs trained
the weights for nearest rounding. report.json's weight_rounding_output_error gives each
tensor's output error both ways.
"""
from __future__ import annotations

if __name__ == "__main__":        # Ctrl-C while TFLite and torch load: one line, exit 130
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("nothing was written", hard=True)

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mgrade_edge.convert.forms import FORMS
from mgrade_edge.training.console import native_stderr_to, progress, require, say, set_quiet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mgrade_edge.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint file or run folder")
    p.add_argument("--out", required=True, help="output folder (replaced when done)")
    p.add_argument("--calib", type=int, default=64, help="calibration sequences (default 64)")
    p.add_argument("--n-test", type=int, default=None,
                   help="evaluate on the first N test sequences (default: all)")
    p.add_argument("--state-bits", choices=("8", "16", "auto"), default="auto",
                   help="minGRU state width on the device: 8, 16 (int16 state update, 2 B per "
                        "channel; fixes long sequences), auto (= --form auto: the more "
                        "accurate of 8 and 16 with TFLite-Micro on the validation split, or "
                        "the last --val-n training sequences for a task without one, ties -> "
                        "8; wider forms where that one is not within 0.5 points of float). "
                        "Default auto")
    p.add_argument("--form", choices=("auto",) + FORMS, default=None,
                   help="the deployed form, cheapest first (convert/forms.py): int8, state16 "
                        "(int16 minGRU state and gate), input16 (+ the minGRU input and "
                        "residual), conv16 (+ the delay-conv output), mlp16 (input16 + the "
                        "MLP), conv_mlp16 (both); auto: the cheapest within 0.5 points of "
                        "the float accuracy on the validation split, keeping the earlier "
                        "--state-bits auto choice where it is (convert/ladder.py). Overrides "
                        "--state-bits; default: --state-bits's choice (auto)")
    p.add_argument("--gate-bits", type=int, choices=(8, 16), default=16,
                   help="with a 16-bit state, the gate z's width: 16 (int16 LOGISTIC, 1/32768 "
                        "grid) or 8 (int8 LOGISTIC, 1/256 grid). Default 16")
    p.add_argument("--input-bits", type=int, choices=(8, 16), default=None,
                   help="with a 16-bit state and gate, the width of each minGRU's input u = "
                        "frame + conv(frame) and of the layer's residual sum u + h: 16 "
                        "(the gate and candidate FULLY_CONNECTED in 16x8 mode; more "
                        "accurate on long sequences, more instructions per step) or 8. "
                        "Default 16 (8 with --gate-bits 8)")
    p.add_argument("--rounding", choices=("auto", "gptq", "nearest"), default="auto",
                   help="how weights go onto their int8 grids: gptq (each layer's output error "
                        "on the calibration inputs minimised, convert/rounding.py), nearest, "
                        "or auto (gptq, but nearest for a train.qat_epochs run). Default auto")
    p.add_argument("--val-n", type=int, default=300,
                   help="validation sequences --state-bits auto evaluates (default 300)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the float reference, calibration and weight "
                        "rounding (default 1: that work is many small steps, where more "
                        "threads mostly wait on each other, and far slower when other "
                        "processes share the cores; 0 = torch's default)")
    p.add_argument("--quiet", action="store_true",
                   help="print only the final summary (and errors); TensorFlow's own log "
                        "lines always go to DIR/convert.log")
    return p


if __name__ == "__main__":
    build_parser().parse_args()   # --help and usage errors answer before torch loads
    require("torch", "numpy", "tqdm", "tensorflow", "ai_edge_litert", "tflite_micro",
            command="-m mgrade_edge.convert")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mgrade_edge.convert.calibrate import step_feeds  # noqa: E402
from mgrade_edge.convert.input_norm import frame_constants, grid_steps, resolution_warnings  # noqa: E402
from mgrade_edge.convert.metadata import input_norm  # noqa: E402
from mgrade_edge.convert import forms, host_eval, ladder, names, rounding  # noqa: E402
from mgrade_edge.convert.ladder import val_accuracy  # noqa: E402,F401  (tests, benchmarks)
from mgrade_edge.convert.graph import state_pairs  # noqa: E402
from mgrade_edge.convert.quantize import convert_int8, op_names  # noqa: E402
from mgrade_edge.convert.raw_input import INPUT_UNITS as RAW_INPUT_UNITS, to_raw_units  # noqa: E402
from mgrade_edge.convert.errors import ConvertError  # noqa: E402
from mgrade_edge.convert.spec import extract  # noqa: E402
from mgrade_edge.convert.stream import (STEP_LSB_BOUND, STEP_LSB_BOUND_INPUT16,  # noqa: E402
                            Streamer, predictions, tflm_arena_bytes)
from mgrade_edge.convert.tflite_reader import model_id  # noqa: E402
from mgrade_edge.training.checkpoint import (CheckpointError, NonFiniteError,  # noqa: E402
                                 check_finite, check_task_data, load_model)
from mgrade_edge.training.evaluate import IGNORE, accuracy, evaluate, percent  # noqa: E402
from mgrade_edge.training.qat import load_act_ranges  # noqa: E402
from mgrade_edge.training.tasks import TaskError, load_task  # noqa: E402

MAX_CALIB_FEEDS = 3000
INPUT_UNITS_NORMALISED = ("raw (the device normalises each frame per channel, (x - mean) / std "
                          "of the training split, before quantising it: metadata input_norm)")
OUT_FILES = ("model.tflite", "report.json", "test_data.npz")   # written together, atomically
LOG_FILE = "convert.log"   # what TensorFlow, absl and the converter write on fd 2


def calibration_pick(n_train: int, n_seq: int, seed: int) -> torch.Tensor:
    """Indices of the n_seq training sequences calibration reads (a seeded permutation)."""
    if n_train == 0:
        raise ConvertError("the task has no training split to calibrate on")
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=gen)[:n_seq]


def calibration_feeds(net, spec, x_train, n_seq: int, seed: int, lengths=None) -> list[dict]:
    """Graph inputs from n_seq training sequences (each over its own steps when `lengths` is
    given), thinned to at most MAX_CALIB_FEEDS steps (every stride-th step of the sequences
    laid end to end); the sequences of one length are stepped as one batch."""
    pick = calibration_pick(len(x_train), n_seq, seed)
    seqs = x_train[pick] if lengths is None else [x_train[i, :lengths[i]] for i in pick]
    starts = np.cumsum([0] + [len(q) for q in seqs])    # each sequence's first step, in order
    stride = max(1, int(starts[-1]) // MAX_CALIB_FEEDS)
    with progress(total=int(starts[-1]), desc="calibrate", unit="step", leave=False) as bar:
        return [f for f, _ in step_feeds(net, spec, seqs, on_steps=bar.update,
                                         keep=lambda s, t: (starts[s] + t) % stride == 0)]


def int8_eval(streamers: dict, x_q: np.ndarray, y: np.ndarray, readout: str,
              float_pred: np.ndarray, lengths: np.ndarray | None = None,
              host_logits: np.ndarray | None = None, n_check: int | None = None) -> dict:
    """Stream the test sequences (over their own steps with `lengths`) through each backend;
    accuracies and LSB differences. With host_logits (int8 [N, T, n_out] from the host C
    package, convert/host_eval.py) TFLite-Micro steps only the first n_check sequences, each
    compared byte for byte with host_logits (ConvertError on any difference), and the
    LiteRT-vs-TFLM figures on identical inputs come from those sequences. LiteRT (a cross-check
    of TFLite's two interpreters; the device figure is TFLite-Micro's) streams the first
    litert_count(T, N) sequences: int8_acc_litert is on those, int8_acc_litert_sequences says
    how many."""
    preds = {name: [] for name in streamers}
    logits = {name: [] for name in streamers}
    step_diff: dict[str, tuple[int, str]] = {}    # output -> (max |diff| in its LSB, dtype)
    T = x_q.shape[1]
    if host_logits is not None and n_check is None:
        n_check = host_eval.check_count(T, len(x_q))
    n_litert = max(n_check or 0, litert_count(T, len(x_q)))
    for i in progress(range(len(x_q)), desc="int8 eval", unit="seq", leave=False):
        L = T if lengths is None else int(lengths[i])
        for name, s in streamers.items():
            if name == "litert" and i >= n_litert:
                continue
            if name == "tflm" and host_logits is not None and i >= n_check:
                out = host_logits[i] if readout == "per_step" else host_logits[i, :L]
                logits[name].append(out)
                preds[name].append(predictions(out, readout))
                continue
            out, steps = s.run(x_q[i, :L], return_states=True)
            if name == "tflm" and host_logits is not None:
                host_eval.compare(i, out, host_logits[i, :L])
            if readout == "per_step" and L < T:      # padded steps carry label -100
                out = np.concatenate([out, np.zeros((T - L, out.shape[1]), out.dtype)])
            logits[name].append(out)
            preds[name].append(predictions(out, readout))
            if name == "tflm":          # LiteRT on the very inputs TFLM saw at each step
                for feed, tflm_out in steps:
                    other = streamers["litert"].invoke(feed)
                    for k, v in tflm_out.items():
                        d = int(np.abs(other[k].astype(np.int32) - v.astype(np.int32)).max())
                        step_diff[k] = (max(d, step_diff.get(k, (0,))[0]), str(v.dtype))
    res = {}
    for name in streamers:      # None: the test split has no labelled step
        p = np.asarray(preds[name])
        n = len(p)
        mask = y[:n] != IGNORE
        res[f"int8_acc_{name}"] = accuracy(int((p[mask] == y[:n][mask]).sum()), int(mask.sum()))
        res[f"argmax_agreement_{name}_vs_hardened"] = accuracy(
            int((p[mask] == float_pred[:n][mask]).sum()), int(mask.sum()))
    res["int8_acc_litert_sequences"] = int(n_litert)
    a = np.concatenate(logits["tflm"][:n_litert]).astype(np.int32)
    b = np.concatenate(logits["litert"]).astype(np.int32)
    res.update(step_diff_fields(step_diff))
    res["streamed_max_abs_diff_litert_vs_tflm"] = int(np.abs(a - b).max())
    res["streamed_frac_logits_differing_litert_vs_tflm"] = float((a != b).mean())
    res["int8_eval_tflm"] = ("host-c" if host_logits is not None else "tflm")
    res["int8_eval_tflm_checked"] = int(len(x_q) if host_logits is None else n_check)
    return res


LITERT_STEPS = 25_000     # LiteRT streams the first test sequences up to this many steps


def litert_count(T: int, n: int) -> int:
    """How many leading test sequences of n (T steps each) LiteRT streams: all of a short-
    sequence test split, a sample of a long one (LiteRT steps from Python at ~1 ms a step)."""
    return min(n, max(1, LITERT_STEPS // max(T, 1)))


def points(before: float | None, after: float | None) -> float | None:
    """Accuracy points lost from `before` to `after`; None without labelled test steps."""
    return None if before is None or after is None else 100 * (before - after)


def step_diff_fields(step_diff: dict) -> dict:
    """report.json's LiteRT-vs-TFLM figures on identical inputs, each in its tensors' own LSB:
    max_abs_diff_litert_vs_tflm over the int8 outputs (logits and int8 states, int8 LSB),
    _logits (int8 LSB), _states {dtype: max} (an int16 minGRU state in int16 LSB; 1 int8
    LSB of the same range is about 256 of them)."""
    by_dtype: dict[str, int] = {}
    for name, (d, dt) in step_diff.items():
        if name != names.LOGITS:
            by_dtype[dt] = max(d, by_dtype.get(dt, 0))
    int8 = [d for d, dt in step_diff.values() if dt == "int8"]
    return {"max_abs_diff_litert_vs_tflm": max(int8, default=0),
            "max_abs_diff_litert_vs_tflm_logits": step_diff.get(names.LOGITS, (0,))[0],
            "max_abs_diff_litert_vs_tflm_states": by_dtype}


def litert_vs_tflm_bound(r: dict) -> dict:
    """report.json's verdict on the LiteRT-vs-TFLite-Micro step figures: the bound one step's
    outputs may differ by on identical inputs (int8 LSB; an int16 state 256 times that in its
    own LSB) and whether every figure is within it."""
    bound = (STEP_LSB_BOUND_INPUT16 if r.get("state_bits") == 16 and (
        r.get("input_bits") == 16 or r.get("mlp_bits") == 16) else STEP_LSB_BOUND)
    states = r["max_abs_diff_litert_vs_tflm_states"]
    ok = (max(r["max_abs_diff_litert_vs_tflm"], r["max_abs_diff_litert_vs_tflm_logits"],
              states.get("int8", 0)) <= bound and states.get("int16", 0) <= 256 * bound)
    return {"litert_vs_tflm_step_lsb_bound": bound, "litert_vs_tflm_within_bound": bool(ok)}


def choose_state_bits(raw: bytes, spec, info: dict, state_bits: str, data, val_n: int,
                      gate_bits: int = 16, input_bits: int = 16, form: str | None = None,
                      float_val_acc: float | None = None):
    """(model bytes, report fields) for --state-bits 8 / 16 / auto, or --form NAME. 16: every
    minGRU state update in int16 (convert/widen.py; the gate z int16 too, or int8 with
    gate_bits 8; with input_bits 16 and an int16 gate also the minGRU's input u = frame +
    conv(frame) and the layer's residual sum, where the layer has a delay conv: widen_input);
    form: one rung of convert/forms.py's ladder (int8 ... conv_mlp16: forms.FORMS); auto (either
    flag): convert/ladder.py's choice on the first val_n validation sequences (the earlier
    rule, the more accurate of 8 and 16 with ties to 8, where that one is within 0.5 points of
    float_val_acc or float_val_acc is None; else the cheapest form of the whole ladder within the bound). A
    task without a validation split is judged on the last val_n training sequences instead
    (not the test split; recorded as state_bits_split = "train" and printed)."""
    if form is not None and form != "auto":
        if form != "int8" and not forms.has_rnn(spec):
            raise ConvertError(f"--form {form} widens the minGRU, and this model has none; "
                               "use --form int8 (or auto)")
        return forms.build(raw, spec, info, form, gate_bits, note=say, input_bits=input_bits)
    if state_bits == "8" or not forms.has_rnn(spec):
        return forms.build(raw, spec, info, "int8")
    if state_bits == "16" and form is None:
        return forms.build(raw, spec, info, "input16", gate_bits, note=say,
                           input_bits=input_bits)
    return ladder.choose(raw, spec, info, data, val_n, float_val_acc, gate_bits, input_bits)


def input_grid_report(s: Streamer, data, calib: int, seed: int) -> dict:
    """Warn (one line per channel) where the int8 input grid resolves a channel's spread on
    the calibration sequences of the training split with fewer than MIN_GRID_STEPS steps;
    report.json's input_grid_steps: per channel, int8 steps per std (null: constant)."""
    pick = calibration_pick(len(data.x_train), calib, seed)
    seqs = data.x_train[pick].numpy()
    if data.len_train is not None:
        seqs = [q[:int(n)] for q, n in zip(seqs, data.len_train[pick])]
    frames = np.concatenate(list(seqs), axis=0) if len(seqs) else np.zeros((0, data.n_in))
    _, step = frame_constants(s.meta, s.input_quant[0])
    for line in resolution_warnings(frames, step, input_norm(s.meta) is not None):
        print(line, flush=True)
    return {"input_grid_steps": [None if not np.isfinite(k) else round(float(k), 1)
                                 for k in grid_steps(frames, step)]}


def qat_view_accuracy(net, cfg, ckpt: dict, x, y, lengths) -> dict:
    """For a train.qat_epochs run, {'qat_acc', 'qat_acts'}: the accuracy of the hardened net
    as its QAT epochs computed (the deployed int8 weights and, where the run fake-quantized
    activations, their grids at the ranges the run ended with); {} for other runs."""
    if cfg.train.qat_epochs <= 0:
        return {}
    ranges = ckpt.get("act_ranges", {})
    acts = any(seen for *_, seen in ranges.values())
    if acts:
        load_act_ranges(net, ranges)
    net.set_qat(True, acts=acts, form=getattr(cfg.train, "qat_form", "int8") if acts else "int8")
    try:
        acc = evaluate(net, x, y, lengths=lengths)["acc"]
    finally:
        net.set_qat(False)
    return {"qat_acc": acc, "qat_acts": acts}


def choose_rounding(method: str, cfg) -> str:
    """--rounding auto: GPTQ, except for a train.qat_epochs run (its weights were trained for
    nearest rounding: that is what its QAT epochs computed with)."""
    if method != "auto":
        return method
    return "nearest" if cfg.train.qat_epochs > 0 else "gptq"


def round_weights(net, spec, data, calib: int, seed: int, method: str) -> dict:
    """With method "gptq", put spec's weights on their int8 grids by GPTQ (convert/rounding.py)
    from the float net's layer inputs on the calibration sequences; report fields."""
    if method == "nearest":
        return {"weight_rounding": "nearest"}
    pick = calibration_pick(len(data.x_train), calib, seed)
    lengths = None if data.len_train is None else data.len_train[pick]
    moments = rounding.input_moments(net, data.x_train[pick], lengths)
    per_tensor = rounding.round_spec(spec, moments)
    say(rounding.summary(per_tensor))
    return {"weight_rounding": "gptq", "weight_rounding_output_error": per_tensor}


def load_run(checkpoint: str, out: Path):
    """(net, cfg, ckpt, task data) of a checkpoint with finite weights whose task data is the
    one it was trained on (out is checked first: check_out); ConvertError otherwise."""
    check_out(out)
    net, cfg, ckpt = load_model(checkpoint)
    try:
        check_finite(ckpt["model"], f"{checkpoint}")
    except NonFiniteError as e:
        raise ConvertError(f"{e}: the run diverged; convert a checkpoint from before the "
                           f"divergence or retrain with a lower train.lr") from None
    data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None, cfg.task.seed)
    check_task_data(ckpt["task_info"], data, checkpoint)
    if len(data.x_test) == 0:
        raise ConvertError("the task's test split is empty")
    return net, cfg, ckpt, data


class EvalSplit(NamedTuple):
    """The test sequences convert evaluates: x [N, T, n_in] float32, y [N] or [N, T] int64,
    lengths [N] (None: every sequence has T steps); torch tensors."""
    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None


def eval_split(data, n_test: int | None) -> EvalSplit:
    """The first n_test test sequences (all with None)."""
    return EvalSplit(data.x_test[:n_test], data.y_test[:n_test],
                     None if data.len_test is None else data.len_test[:n_test])


@dataclass
class FloatReference:
    """What the int8 model is measured against: test accuracies of the float and the hardened
    net, the QAT view's report fields ({} for other runs), --form auto's validation reference
    (None without auto) and the hardened net's test logits ([N, n] or [N, T, n])."""
    float_acc: float | None
    hardened_acc: float | None
    qat_report: dict
    float_val: float | None
    hard_logits: torch.Tensor


def float_reference(net, cfg, ckpt: dict, data, test: EvalSplit, auto: bool,
                    val_n: int) -> FloatReference:
    """Evaluate the float net, harden it (in place) and evaluate it again; with `auto` also
    the validation reference: the float net, or for a QAT run what its QAT epochs trained."""
    float_acc = evaluate(net, test.x, test.y, lengths=test.lengths)["acc"]
    net.harden()
    hardened_acc = evaluate(net, test.x, test.y, lengths=test.lengths)["acc"]
    qat_report = qat_view_accuracy(net, cfg, ckpt, test.x, test.y, test.lengths)
    float_val = ladder.float_val_accuracy(net, data, val_n) if auto else None
    if auto and qat_report:
        xv, yv, lv, _ = ladder.val_split(data, val_n, note=lambda s: None)
        float_val = qat_view_accuracy(net, cfg, ckpt, xv, torch.as_tensor(yv),
                                      None if lv is None else torch.as_tensor(lv))["qat_acc"]
    with torch.no_grad():
        hard_logits = net(test.x) if test.lengths is None else net(test.x, test.lengths)
    return FloatReference(float_acc, hardened_acc, qat_report, float_val, hard_logits)


def converter_info(data, cfg, ckpt: dict, codes_in: bool) -> dict:
    """The converter's extra metadata keys (task, seq_len, kernel_span, checkpoint_epoch,
    class_names, input_units)."""
    info = {"task": data.name, "seq_len": data.seq_len, "kernel_span": cfg.model.span,
            "checkpoint_epoch": int(ckpt.get("epoch", 0))}
    if data.class_names is not None:
        info["class_names"] = list(data.class_names)
    if data.input_mean is not None:       # x in the data's units, normalised before quantising
        info["input_units"] = INPUT_UNITS_NORMALISED
    if codes_in:
        info["input_units"] = RAW_INPUT_UNITS
    return info


def int8_model(net, spec, data, cfg, calib: int, weight_rounding: str) -> tuple[bytes, int, dict]:
    """(the int8 .tflite before the form is chosen, calibration steps, rounding report
    fields): spec's weights rounded onto their grids, then calibrated and converted."""
    rounding_report = round_weights(net, spec, data, calib, cfg.train.seed,
                                    choose_rounding(weight_rounding, cfg))
    feeds = calibration_feeds(net, spec, data.x_train, calib, cfg.train.seed, data.len_train)
    say(f"converting with {len(feeds)} calibration steps ...")
    return convert_int8(spec, feeds), len(feeds), rounding_report


def int8_report(model_bytes: bytes, data, cfg, calib: int, calib_steps: int, test: EvalSplit,
                ref: FloatReference, bits_report: dict, rounding_report: dict):
    """(report, TFLite-Micro streamer, x_q int8 [N, T, n_in], y, lengths) of the chosen model
    on the test split: accuracies on every backend and their agreement, after the float
    nets' accuracies, the form's fields (bits_report: choose_state_bits's) and the
    rounding's."""
    tflm = Streamer(model_bytes, "tflm")
    grid_report = input_grid_report(tflm, data, calib, cfg.train.seed)    # warns first
    streamers = {"tflm": tflm, "litert": Streamer(model_bytes, "litert")}
    x_q = tflm.quantize_input(test.x.numpy())
    y = test.y.numpy()
    report = {"model_id": model_id(model_bytes), "task": data.name, "readout": data.readout,
              "n_test": int(len(x_q)), "calib_sequences": int(min(calib, len(data.x_train))),
              "calib_steps": calib_steps,
              "float_acc": ref.float_acc, "hardened_acc": ref.hardened_acc, **ref.qat_report,
              **bits_report, **rounding_report, **grid_report}
    lengths = None if test.lengths is None else test.lengths.numpy()
    host_logits = host_test_logits(model_bytes, x_q, lengths)
    report.update(ladder.next_cheaper_accuracy(bits_report, x_q, y, data.readout, lengths))
    report.pop(ladder.NEXT_MODEL, None)
    report.update(int8_eval(streamers, x_q, y, data.readout,
                            ref.hard_logits.argmax(-1).numpy(), lengths, host_logits))
    report.update(litert_vs_tflm_bound(report))
    return report, tflm, x_q, y, lengths


def model_fields(model_bytes: bytes, tflm: Streamer, spec, ref: FloatReference,
                 report: dict) -> dict:
    """report.json's accuracy costs (points), sizes, ops, quantization, state pairs and
    delays of the chosen model."""
    return {
        "hardening_cost_points": points(ref.float_acc, ref.hardened_acc),
        "int8_cost_points_tflm": points(ref.hardened_acc, report["int8_acc_tflm"]),
        **({"int8_cost_points_tflm_vs_qat": points(ref.qat_report["qat_acc"],
                                                   report["int8_acc_tflm"])}
           if ref.qat_report else {}),
        "model_bytes": len(model_bytes), "tflm_arena_bytes": tflm_arena_bytes(model_bytes),
        "ops": op_names(model_bytes),
        "input_quant": tflm.input_quant, "logits_quant": tflm.output_quant,
        "state_pairs": state_pairs(spec),
        "delays": [None if layer.delays is None else layer.delays.tolist()
                   for layer in spec.layers]}


def convert(checkpoint: str, out: Path, calib: int, n_test: int | None,
            state_bits: str = "auto", val_n: int = 300, gate_bits: int = 16,
            weight_rounding: str = "auto", input_bits: int = 16, form: str | None = None) -> dict:
    """Checkpoint -> out/model.tflite, report.json, test_data.npz (module docstring); the
    report."""
    t0 = time.monotonic()
    net, cfg, ckpt, data = load_run(checkpoint, out)
    test = eval_split(data, n_test)
    auto = form == "auto" or (form is None and state_bits == "auto")
    ref = float_reference(net, cfg, ckpt, data, test, auto, val_n)
    codes_in = to_raw_units(net, data)     # from here on x is in the task's raw 8-bit codes
    if codes_in:
        test = test._replace(x=data.x_test[:n_test])
    spec = extract(net)
    raw, calib_steps, rounding_report = int8_model(net, spec, data, cfg, calib, weight_rounding)
    model_bytes, bits_report = choose_state_bits(raw, spec, converter_info(data, cfg, ckpt,
                                                                           codes_in),
                                                 state_bits, data, val_n, gate_bits,
                                                 input_bits, form, ref.float_val)
    report, tflm, x_q, y, lengths = int8_report(model_bytes, data, cfg, calib, calib_steps,
                                                test, ref, bits_report, rounding_report)
    report.update({**model_fields(model_bytes, tflm, spec, ref, report),
                   "convert_s": round(time.monotonic() - t0, 1)})
    report["resources"] = device_resources(model_bytes, x_q, lengths)
    write_dir(out, model_bytes, report, x_q, y, lengths)
    return report


def host_test_logits(model_bytes: bytes, x_q: np.ndarray, lengths) -> np.ndarray | None:
    """Every test step's int8 logits from the host C package (int8_eval cross-checks them
    against TFLite-Micro); None, with a note, without gcc (TFLite-Micro steps every one)."""
    try:
        return host_eval.host_model(model_bytes).run(x_q, lengths)
    except host_eval.HostEvalUnavailable as e:
        say(host_eval.no_gcc_note(e))
        return None


def device_resources(model_bytes: bytes, x_q: np.ndarray, lengths=None) -> dict | None:
    """The resource table (convert/resources.py: flash, RAM and instructions per step of
    the C package on the emulated Cortex-M4, streaming the first test sequence); None, with
    a note, if a cross build or QEMU run fails (the model itself is still written)."""
    import subprocess

    from mgrade_edge.convert.codegen import resource_table

    x = x_q[:1] if lengths is None else x_q[:1, :int(lengths[0])]
    try:
        return resource_table(model_bytes, x)
    except (RuntimeError, subprocess.SubprocessError) as e:
        print(f"note: no resource table (the Cortex-M4 build or run failed: "
              f"{str(e).splitlines()[0]})", flush=True)
        return None


def is_convert_output(folder: Path) -> bool:
    """Whether `folder` holds a previous convert output (its report.json and model.tflite)."""
    try:
        report = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and "model_id" in report and \
        (folder / "model.tflite").is_file()


def check_out(out: Path):
    """Refuse an --out that convert would have to clobber, and one it cannot write, before
    any work: a non-empty folder must be a previous convert output."""
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out {out} exists and is not a folder; choose a folder for "
                           f"model.tflite, report.json and test_data.npz")
    if out.is_dir():
        entries = sorted(e.name for e in out.iterdir())
        if entries and not is_convert_output(out):
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ConvertError(f"--out {out} is a non-empty folder that convert did not write "
                               f"(it holds {shown}); nothing was changed. Choose a new or empty "
                               f"folder, e.g. --out {out / 'int8'}")
    target = out if out.is_dir() else next(p for p in out.absolute().parents if p.exists())
    try:
        fd, probe = tempfile.mkstemp(prefix=".convert-probe.", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConvertError(f"cannot write to --out {out} ({e.strerror or e}); choose a writable "
                           f"folder") from None


def _normal_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _write_files(folder: Path, model_bytes: bytes, report: dict, x_q: np.ndarray,
                 y: np.ndarray, lengths: np.ndarray | None, suffix: str = ""):
    (folder / f"model.tflite{suffix}").write_bytes(model_bytes)
    (folder / f"report.json{suffix}").write_text(json.dumps(report, indent=1) + "\n")
    extra = {} if lengths is None else {"lengths": np.asarray(lengths, np.int64)}
    with open(folder / f"test_data.npz{suffix}", "wb") as f:
        np.savez_compressed(f, x=x_q, y=y, **extra)


def write_dir(out: Path, model_bytes: bytes, report: dict, x_q: np.ndarray, y: np.ndarray,
              lengths: np.ndarray | None = None):
    """A new DIR: written as a temporary sibling folder, then renamed into place. An existing
    DIR (empty or a previous output, see check_out): each of convert's own files is written
    to a temp name, then all are renamed over the old ones; nothing else is touched.
    test_data.npz holds x (int8 [N, T, n_in]), y, and for variable-length tasks lengths
    (int64 [N]): sequence i is x[i, :lengths[i]] (the rest is padding, labelled -100 per step)."""
    check_out(out)
    if out.is_dir():
        tmp_suffix = f".tmp{os.getpid()}"
        try:
            _write_files(out, model_bytes, report, x_q, y, lengths, tmp_suffix)
            for name in OUT_FILES:
                os.replace(out / (name + tmp_suffix), out / name)
        finally:
            for name in OUT_FILES:
                (out / (name + tmp_suffix)).unlink(missing_ok=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        os.chmod(tmp, _normal_mode())          # mkdtemp makes it 0700
        _write_files(tmp, model_bytes, report, x_q, y, lengths)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def summary(r: dict) -> str:
    pct = percent
    pts = lambda v: "n/a" if v is None else f"{v:+.2f}"  # noqa: E731
    return "\n".join([
        f"model id {r['model_id']}  ({r['task']}, {r['n_test']} test sequences)",
        f"accuracy: float {pct(r['float_acc'])}  hardened {pct(r['hardened_acc'])}  "
        f"int8 TFLM {pct(r['int8_acc_tflm'])}  int8 LiteRT {pct(r['int8_acc_litert'])}"
        + (f" (first {r['int8_acc_litert_sequences']})"
           if r.get("int8_acc_litert_sequences", r["n_test"]) < r["n_test"] else ""),
        f"cost: hardening {pts(r['hardening_cost_points'])} points, int8 "
        f"{pts(r['int8_cost_points_tflm'])} points; int8 vs hardened argmax agreement "
        f"{pct(r['argmax_agreement_tflm_vs_hardened'])}",
        *([f"QAT view (int8 weights{', fake-quantized activations' if r['qat_acts'] else ''},"
           f" as the QAT epochs trained): {pct(r['qat_acc'])}; int8 "
           f"{pts(r['int8_cost_points_tflm_vs_qat'])} points against it"]
          if "qat_acc" in r else []),
        *litert_vs_tflm_lines(r),
        f"minGRU state: {r.get('state_bits', 8)}-bit"
        + (f", gate z {r['gate_bits']}-bit" if r.get("state_bits") == 16 else "")
        + (f", input u {r['input_bits']}-bit" if r.get("state_bits") == 16
           and "input_bits" in r else "")
        + (", MLP 16-bit" if r.get("mlp_bits") == 16 else "")
        + (f"; form {r['form']}" if "form" in r else "")
        + (f" (auto: {'validation' if r['state_bits_split'] == 'val' else 'training'} accuracy "
           f"8-bit {pct(r['val_acc_tflm_state8'])}, 16-bit "
           f"{pct(r['val_acc_tflm_state16'])} on {r['val_n']} sequences)"
           if r.get("state_bits_choice") == "auto" else ""),
        f"model.tflite {r['model_bytes']} B, TFLM arena {r['tflm_arena_bytes']} B; "
        f"ops: {', '.join(r['ops'])}"])


def litert_vs_tflm_lines(r: dict) -> list[str]:
    """The summary's two lines on LiteRT vs TFLite-Micro: what the figures mean and whether
    they are within the expected bound (report.json litert_vs_tflm_*)."""
    bound = r.get("litert_vs_tflm_step_lsb_bound", STEP_LSB_BOUND)
    states = ", ".join(f"{d} {dt} LSB" for dt, d in
                       sorted(r["max_abs_diff_litert_vs_tflm_states"].items()))
    verdict = (f"within the expected {bound} LSB (their LOGISTIC rounds differently; the device "
               f"is checked bit for bit against TFLite-Micro)"
               if r.get("litert_vs_tflm_within_bound", True) else
               f"OUTSIDE the expected {bound} LSB: more than their LOGISTIC rounding explains; "
               f"the device is still checked against TFLite-Micro, but please report this model")
    return [f"LiteRT vs TFLite-Micro, one step on identical inputs: logits at most "
            f"{r['max_abs_diff_litert_vs_tflm_logits']} LSB apart, states {states}; {verdict}",
            f"  each streaming its own state, {r['streamed_max_abs_diff_litert_vs_tflm']} LSB at "
            f"most on {100 * r['streamed_frac_logits_differing_litert_vs_tflm']:.1f}% of the "
            f"logits (step differences carried on by the state; for information)"]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    if args.calib <= 0 or (args.n_test is not None and args.n_test <= 0) or args.val_n <= 0:
        print("error: --calib, --n-test and --val-n must be > 0", file=sys.stderr)
        return 2
    if args.threads < 0:
        print("error: --threads must be >= 0 (0 = torch's default)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(min(args.threads, os.cpu_count() or 1))
    if args.input_bits == 16 and (args.state_bits == "8" or args.gate_bits == 8):
        print("error: --input-bits 16 needs the int16 state and gate (--state-bits 16 or auto, "
              "--gate-bits 16); drop --input-bits or pass --input-bits 8", file=sys.stderr)
        return 2
    if args.input_bits is None:
        args.input_bits = 16 if args.gate_bits == 16 else 8
    out = Path(args.out)
    fd, log = tempfile.mkstemp(prefix="mgrade-convert.", suffix=".log")
    os.close(fd)
    try:
        with native_stderr_to(log):       # TensorFlow / absl / converter lines: the log
            report = convert(args.checkpoint, out, args.calib, args.n_test,
                             args.state_bits, args.val_n, args.gate_bits, args.rounding,
                             args.input_bits, args.form)
    except (ConvertError, CheckpointError, TaskError) as e:
        os.unlink(log)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception:
        print(f"note: TensorFlow's log of this run is in {log}", file=sys.stderr)
        raise
    except BaseException:                 # Ctrl-C: nothing to keep
        os.unlink(log)
        raise
    shutil.move(log, out / LOG_FILE)
    os.chmod(out / LOG_FILE, _normal_mode() & 0o666)     # mkstemp made it 0600
    print(summary(report))
    if report.get("resources"):
        from mgrade_edge.convert.resources import table
        run = f"RUN={out.parent}" if out.name == "int8" else f"MODEL={out}"
        print(table(report["resources"], {"run": f"make package {run}",
                                          "stack": f"make resources {run}"}))
    print(f"wrote {args.out}/model.tflite, report.json, test_data.npz ({LOG_FILE}: "
          f"TensorFlow's log)")
    return 0


if __name__ == "__main__":
    exit_on_interrupt("nothing was written (DIR appears only when convert has finished)")
    sys.exit(main())
