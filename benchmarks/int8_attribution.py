"""Where does the int8 streaming model lose accuracy? Tensor-group attribution over time.

    python -m benchmarks.int8_attribution RUN [--tflite RUN/int8/model.tflite] [--n-test 1000]
                                          [--json OUT.json] [--md OUT.md]

A NumPy fake-quantization simulation of the converted step graph: it walks the .tflite's own
operators (its int8 weights, its tensor scales and zero points) in float32 over a batch of
test sequences, and rounds and clips every activation tensor to its int8 grid, except the
tensors of the groups kept in float. Rows:

* `all int8`: every group quantized (checked against the real TFLite-Micro accuracy, so the
  attribution is trustworthy; the int8 kernels' fixed-point arithmetic differs from exact
  rounding by at most an LSB here and there);
* `float: G`: group G kept in float, every other group int8 (how much G costs);
* `only int8: G`: group G int8, every other group float (G's cost on its own);
* `int8 weights, float activations`: the weight quantization alone;
* `int16: G+..`: the groups G at int16 (symmetric, over the int8 tensor's range), the rest int8:
  what a 16-bit state path would recover;
* `int16 path, float: G`: the state path (state, update, gate_z) at int16 as `convert
  --state-bits 16 --gate-bits 16` deploys it, and group G in float: where what is left goes;
* `int16 path + G`: group G at int16 too (what widening it would recover), and `int16 all but
  frames`: every activation at int16 except the input and the frames (the gathered ring
  stays int8: TFLite-Micro has no int16 GATHER), the most a 16x8 layer could give.
* `form F (simulated)`: the groups convert's form F holds in int16 (convert/forms.py GROUPS16:
  state16, input16, conv16, mlp16, conv_mlp16; an upper bound: the real form still rounds the
  residual v to int8 where the MLP reads it, and the gathered taps are int8 values
  requantized to int16 where the simulation keeps the frames group's int8 grid);
  convert `--form F` for the real one.

Groups (per layer, all layers together): `input` (the frame x), `frames` (each layer's input
frame = the encoder or the previous post-norm output, its delay ring and the gathered taps),
`conv` (the delay conv output), `resid` (its residual sum u = frame + conv(frame), the
minGRU's input), `gate_z` (FC_z, sigmoid z), `cand` (the
candidate g(p) and its branches), `update` (g - h and z * (g - h)), `state` (h, the minGRU
state fed back), `mix` (u + h), `mlp` (FC1, FC2, the MLP residual sum), `postnorm` (the
post-norm scale), `readout` (the per-step logits; the time mean is an exact int32 sum).

Reported per row: the accuracy of the mean readout, agreement with the float (hardened) net,
the mean |logit - float logit| per step in logit units by sequence position (does it grow
with t?), and the running-mean prediction accuracy at a few positions.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.forms import GROUPS16
from mgrade_edge.convert.metadata import from_model as mgrade_metadata
from mgrade_edge.convert.program import build_program
from mgrade_edge.convert.rings import gather_indices, write_slot
from mgrade_edge.convert.tflite_reader import Model, read_tflite

# rows with a group set simulated at int16 (symmetric, the int8 tensor's range): the fix
# candidates (the minGRU state path)
WIDE_ROWS = (("state",), ("state", "update"), ("state", "update", "gate_z"))
GROUPS = ("input", "frames", "conv", "resid", "gate_z", "cand", "cand_p", "update", "state",
          "mix", "mlp", "postnorm", "readout")


# ---------------------------------------------------------------------------------------------
# tensor roles

def tensor_groups(model: Model, meta: dict, split_cand: bool = False) -> dict[int, str]:
    """Activation tensor index -> group name (every non-constant tensor an op writes or the
    graph reads, except the int32 gather indices). split_cand: the candidate FC's output p
    is its own group `cand_p` (otherwise part of `cand`)."""
    program = build_program(model, meta)
    delays, grus = program.delays, program.grus
    T = model.tensors
    role: dict[int, str] = {}
    inp = dict(zip(meta["inputs"], model.inputs))
    out = dict(zip(meta["outputs"], model.outputs))
    role[inp["x"]] = "input"
    role[out["logits"]] = "readout"
    producer = {o: op for op in model.operators for o in op.outputs}
    for f in delays:
        role[f.frame] = "frames"
        for k in f.ops:
            op = model.operators[k]
            for t in op.outputs:
                role[t] = "conv" if op.op == "DEPTHWISE_CONV_2D" else "frames"
        if names.ring(f.layer) in inp:
            role[inp[names.ring(f.layer)]] = "frames"
    for f in grus:
        role[f.h] = role[f.hnew] = "state"
        gate_fc = f.fc["gate"][0]
        for k in f.ops:
            op = model.operators[k]
            t = op.outputs[0]
            if t in role:
                continue
            if op is gate_fc or (op.op == "LOGISTIC" and producer.get(op.inputs[0]) is gate_fc):
                role[t] = "gate_z"
            elif op.op in ("SUB", "MUL"):
                role[t] = "update"
            elif split_cand and op.op == "FULLY_CONNECTED":
                role[t] = "cand_p"
            else:
                role[t] = "cand"
    conv_out = {t for t, r in role.items() if r == "conv"}
    state_out = {f.hnew for f in grus}
    mlp_out: set[int] = set()
    for op in model.operators:
        t = op.outputs[0]
        if t in role or T[t].dtype != np.int8:
            continue
        consts = [i for i in op.inputs if i >= 0 and T[i].is_const and op.op in ("MUL", "ADD")]
        if op.op == "RESHAPE" and op.inputs[0] in role:     # an alias keeps its input's role
            role[t] = role[op.inputs[0]]
            if role[t] == "conv":
                conv_out.add(t)
            elif role[t] == "mlp":
                mlp_out.add(t)
        elif op.op == "DEPTHWISE_CONV_2D":                  # outside the delay conv: post-norm
            role[t] = "postnorm"
        elif op.op == "ADD" and set(op.inputs) & conv_out:
            role[t] = "resid"                   # u = frame + conv(frame)
        elif op.op == "ADD" and set(op.inputs) & state_out:
            role[t] = "mix"
        elif op.op == "FULLY_CONNECTED" and op.inputs[0] == inp["x"]:
            role[t] = "frames"                  # the encoder output is layer 0's frame
        elif op.op == "FULLY_CONNECTED" or (op.op == "ADD" and set(op.inputs) & mlp_out):
            role[t] = "mlp"
            mlp_out.add(t)
        elif consts:
            role[t] = "postnorm"
        else:
            raise ValueError(f"no group for tensor {t} ({T[t].name}, {op.op})")
    return role


# ---------------------------------------------------------------------------------------------
# the fake-quantized step

def _deq(t) -> np.ndarray:
    """A constant tensor as float32 (per-axis scales broadcast along its quantized axis)."""
    data = t.data.astype(np.float32)
    if t.quant is None:
        return data
    s, zp = t.quant.scale.astype(np.float64), t.quant.zero_point.astype(np.float64)
    if s.size > 1:
        shape = [1] * data.ndim
        shape[t.quant.axis] = s.size
        return ((data - zp.reshape(shape)) * s.reshape(shape)).astype(np.float32)
    return ((data - zp[0]) * s[0]).astype(np.float32)


class FakeQuantStep:
    """The .tflite step on a batch, in float32, with the int8 rounding of chosen groups.

    sim = FakeQuantStep(model_bytes); sim.quantized = {"state", ...}
    logits = sim.run(x)       # x float [B, T, n_in] -> per-step logits float [B, T, n]
    """

    def __init__(self, model_bytes: bytes, split_cand: bool = False):
        self.model = read_tflite(model_bytes)
        self.meta = mgrade_metadata(self.model)
        if self.meta is None:
            raise ValueError("not an mGRADE step model (no metadata)")
        self.role = tensor_groups(self.model, self.meta, split_cand)
        self.quantized = set(GROUPS)
        self.wide: set[str] = set()            # quantized groups simulated at int16
        self.const = {t.index: _deq(t) for t in self.model.tensors if t.is_const}
        self.inp = dict(zip(self.meta["inputs"], self.model.inputs))
        self.out = dict(zip(self.meta["outputs"], self.model.outputs))
        T = self.model.tensors
        # outputs of pure copies (CONCATENATION, GATHER, RESHAPE) with their input's grid
        self.copies = {op.outputs[0] for op in self.model.operators
                       if op.op in ("CONCATENATION", "GATHER", "RESHAPE")
                       and all(T[i].quant is not None and T[op.outputs[0]].quant is not None
                               and T[i].quant.scale[0] == T[op.outputs[0]].quant.scale[0]
                               and T[i].quant.zero_point[0] == T[op.outputs[0]].quant.zero_point[0]
                               for i in op.inputs[:1 if op.op != "CONCATENATION" else None])}
        self.record: set[int] = set()          # tensors whose values run() keeps per step
        self.trace: dict[int, list] = {}

    def q(self, t: int, v: np.ndarray) -> np.ndarray:
        """Round and clip v to tensor t's int8 grid if t's group is quantized."""
        group = self.role.get(t)
        if group not in self.quantized or t in self.copies:
            return v
        qt = self.model.tensors[t].quant
        s, zp = float(qt.scale[0]), float(qt.zero_point[0])
        lo, hi = -128 - zp, 127 - zp
        if group in self.wide:              # int16, symmetric, over the int8 tensor's range
            s = max(-lo, hi) * s / 32767
            lo, hi = -32767, 32767
        r = np.rint(v / s)
        np.clip(r, lo, hi, out=r)
        r *= s
        return r

    def _op(self, op, val: dict, B: int):
        T, C = self.model.tensors, self.const
        get = lambda i: C[i] if i in C else val[i]  # noqa: E731
        a = [get(i) if i >= 0 else None for i in op.inputs]
        kind = op.op
        if kind == "FULLY_CONNECTED":
            y = a[0].reshape(B, -1) @ a[1].T
            if len(a) > 2 and a[2] is not None:
                y = y + a[2]
        elif kind == "DEPTHWISE_CONV_2D":
            y = (a[0] * a[1]).sum(axis=2, keepdims=True)
            if len(a) > 2 and a[2] is not None:
                y = y + a[2]
        elif kind == "CONCATENATION":          # (frame, ring): gathered from lazily
            if len(a) != 2 or op.options.get("axis", 1) not in (1, -1):
                raise ValueError("only CONCATENATION(frame, ring, axis=1) is simulated")
            y = tuple(a)
        elif kind == "GATHER":
            idx = a[1].astype(np.int64)
            if isinstance(a[0], tuple):
                frame, ring = a[0]
                n0 = frame.shape[1]
                y = np.empty((B, idx.size), np.float32)
                low = idx < n0
                y[:, low] = frame[:, idx[low]]
                y[:, ~low] = ring[:, idx[~low] - n0]
            else:
                y = np.take(a[0], idx, axis=1)
        elif kind == "RESHAPE":
            y = a[0].reshape((B,) + T[op.outputs[0]].shape[1:])
        elif kind == "ADD":
            y = a[0] + a[1]
        elif kind == "SUB":
            y = a[0] - a[1]
        elif kind == "MUL":
            y = a[0] * a[1]
        elif kind == "MINIMUM":
            y = np.minimum(a[0], a[1])
        elif kind == "LOGISTIC":
            y = 1.0 / (1.0 + np.exp(-a[0]))
        elif kind == "RELU":
            y = np.maximum(a[0], 0.0)
        else:
            raise ValueError(f"op {kind} is not simulated")
        act = op.options.get("fused_activation_function", "NONE")
        if act == "RELU":
            y = np.maximum(y, 0.0)
        elif act not in ("NONE", None):
            raise ValueError(f"fused activation {act} is not simulated")
        return y

    def run(self, x: np.ndarray) -> np.ndarray:
        """x float [B, T, n_in] -> per-step logits [B, T, n_classes] (float32)."""
        B, T_len, _ = x.shape
        H, layers = self.meta["channels"], self.meta["layers"]
        state = {}
        for i, lm in enumerate(layers):
            if lm["ring_frames"] > 0:
                state[names.ring(i)] = np.zeros((B, lm["ring_frames"] * H), np.float32)
            if lm["rnn"]:
                state[names.h(i)] = np.zeros((B, H), np.float32)
        self.trace = {t: [] for t in self.record}
        logits = []
        for t in range(T_len):
            val = {self.inp["x"]: self.q(self.inp["x"], x[:, t].astype(np.float32))}
            for name, v in state.items():
                val[self.inp[name]] = v
            for i, lm in enumerate(layers):
                if lm["ring_frames"] > 0:
                    val[self.inp[names.idx(i)]] = gather_indices(np.asarray(lm["delays"]), t,
                                                              lm["ring_frames"])
            for op in self.model.operators:
                val[op.outputs[0]] = self.q(op.outputs[0], self._op(op, val, B))
            for i, lm in enumerate(layers):
                R = lm["ring_frames"]
                if R > 0:
                    slot = write_slot(t, R)
                    state[names.ring(i)][:, slot * H:(slot + 1) * H] = \
                        val[self.out[names.frame(i)]]
                if lm["rnn"]:
                    state[names.h(i)] = val[self.out[names.hnew(i)]]
            for k in self.record:
                self.trace[k].append(val[k].reshape(B, -1).copy())
            logits.append(val[self.out["logits"]].reshape(B, -1))
        return np.stack(logits, axis=1)


# ---------------------------------------------------------------------------------------------
# the table

def positions(T_len: int, n: int = 8) -> list[int]:
    """n step indices (1-based lengths) spread over the sequence, the last one = T."""
    return sorted({max(1, round(T_len * (k + 1) / n)) for k in range(n)})


def row_stats(logits: np.ndarray, ref: np.ndarray, y: np.ndarray, ref_pred: np.ndarray,
              at: list[int]) -> dict:
    """logits, ref [B, T, n] per-step logits (simulated, float); accuracy of the mean readout,
    argmax agreement with ref_pred, mean |diff| per step averaged in len(at) windows, and the
    running-mean prediction accuracy at the steps `at`."""
    pred = logits.sum(axis=1).argmax(-1)
    drift = np.abs(logits - ref).mean(axis=(0, 2))           # [T]
    edges = [0] + at
    run = np.cumsum(logits, axis=1)
    return {"acc": float((pred == y).mean()),
            "agree": float((pred == ref_pred).mean()),
            "drift": [float(drift[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])],
            "acc_at": [float((run[:, a - 1].argmax(-1) == y).mean()) for a in at]}


def attribution(model_bytes: bytes, x: np.ndarray, y: np.ndarray, ref: np.ndarray,
                batch: int = 500, progress=None, quick: bool = False,
                only: list[str] | None = None, split_cand: bool = False) -> dict:
    """Every row of the table on x [B, T, n_in] (float), labels y [B], float per-step logits
    ref [B, T, n]; split_cand: the candidate FC's output p is its own group. Returns
    {"positions": [...], "rows": {name: row_stats}}."""
    sim = FakeQuantStep(model_bytes, split_cand)
    present = sorted(set(sim.role.values()), key=GROUPS.index)
    configs = {"all int8": (set(GROUPS), set()),
               "int8 weights, float activations": (set(), set())}
    for g in present:
        configs[f"float: {g}"] = (set(GROUPS) - {g}, set())
    if not quick:
        for g in present:
            configs[f"only int8: {g}"] = ({g}, set())
    for wide in WIDE_ROWS:
        if set(wide) <= set(present):
            configs[f"int16: {'+'.join(wide)}"] = (set(GROUPS), set(wide))
    path16 = set(WIDE_ROWS[-1])
    if path16 <= set(present):            # what is left once the state path is 16-bit
        for g in present:
            if g not in path16:
                configs[f"int16 path, float: {g}"] = (set(GROUPS) - {g}, path16)
        for g in present:                 # widening one more group on top of the path
            if g not in path16 and g not in ("input", "frames"):
                configs[f"int16 path + {g}"] = (set(GROUPS), path16 | {g})
        if {"cand", "cand_p"} <= set(present):      # the whole candidate, p included
            configs["int16 path + cand + cand_p"] = (set(GROUPS), path16 | {"cand", "cand_p"})
        wide_all = set(present) - {"input", "frames"}
        configs["int16 all but frames"] = (set(GROUPS), wide_all)
        for form, groups in GROUPS16.items():     # the converter's rungs (convert/forms.py)
            if groups and set(groups) <= set(present):
                configs[f"form {form} (simulated)"] = (set(GROUPS), set(groups))
    if only:
        configs = {k: v for k, v in configs.items() if any(k.startswith(o) for o in only)}
    at = positions(x.shape[1])
    ref_pred = ref.sum(axis=1).argmax(-1)
    rows = {"float (hardened net)": row_stats(ref, ref, y, ref_pred, at)}
    for name, (groups, wide) in configs.items():
        sim.quantized, sim.wide = groups, wide
        logits = np.concatenate([sim.run(x[i:i + batch]) for i in range(0, len(x), batch)])
        rows[name] = row_stats(logits, ref, y, ref_pred, at)
        if progress:
            progress(name, rows[name])
    return {"positions": at, "groups": present, "rows": rows}


def markdown(res: dict, title: str, tflm_acc: float | None = None) -> str:
    at = res["positions"]
    head = ["row", "acc %", "vs float", "agree %"] + [f"drift {a}" for a in at] + \
        [f"acc@{a}" for a in at[len(at) // 2 - 1::len(at) // 4 or 1]]
    acc_idx = list(range(len(at)))[len(at) // 2 - 1::len(at) // 4 or 1]
    base = res["rows"]["float (hardened net)"]["acc"]
    lines = [f"### {title}", ""]
    if tflm_acc is not None:
        lines += [f"TFLite-Micro int8 accuracy on the same sequences: {100 * tflm_acc:.2f}%", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in res["rows"].items():
        cells = [name, f"{100 * r['acc']:.2f}", f"{100 * (r['acc'] - base):+.2f}",
                 f"{100 * r['agree']:.1f}"] + [f"{d:.3f}" for d in r["drift"]] + \
            [f"{100 * r['acc_at'][k]:.1f}" for k in acc_idx]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "drift W: mean |logit - float logit| over the steps up to W (since the "
              "previous column), logit units; acc@t: accuracy of the running-mean readout "
              "after t steps.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.int8_attribution", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder (checkpoint.pt) or checkpoint file")
    p.add_argument("--tflite", help="converted model (default RUN/int8/model.tflite)")
    p.add_argument("--n-test", type=int, default=1000, help="test sequences (default 1000)")
    p.add_argument("--offset", type=int, default=0, help="first test sequence (default 0)")
    p.add_argument("--tflm", action="store_true",
                   help="also stream the sequences through TFLite-Micro (slow) to check the "
                        "all-int8 row")
    p.add_argument("--state16-tflm", type=int, default=0, metavar="N",
                   help="also stream N sequences through TFLite-Micro with the minGRU state "
                        "path rewritten to int16 (convert/widen.py)")
    p.add_argument("--gate8", action="store_true",
                   help="with --state16-tflm: keep the gate z on its int8 grid "
                        "(widen_state(gate16=False))")
    p.add_argument("--rows", help="comma-separated row name prefixes to run (default: all), "
                                  "e.g. 'all int8,int16'")
    p.add_argument("--split-cand", action="store_true",
                   help="make the candidate FC's output p its own group `cand_p` (rows "
                        "`int16 path + cand` then leave p on its int8 grid)")
    p.add_argument("--quick", action="store_true",
                   help="leave out the `only int8: G` rows")
    p.add_argument("--json", help="write the rows as JSON here")
    p.add_argument("--md", help="write the table as Markdown here")
    args = p.parse_args(argv)

    import torch

    from mgrade_edge.convert.errors import ConvertError
    from mgrade_edge.training.checkpoint import CheckpointError, load_model
    from mgrade_edge.training.tasks import TaskError, load_task

    run = Path(args.run)
    tfl = Path(args.tflite) if args.tflite else (run if run.is_dir() else run.parent) / \
        "int8" / "model.tflite"
    try:
        if not tfl.is_file():
            raise ConvertError(f"{tfl} not found; convert first (python -m mgrade_edge.convert RUN --out "
                               f"RUN/int8) or pass --tflite")
        net, cfg, _ = load_model(str(run))
        data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None,
                         cfg.task.seed)
    except (ConvertError, CheckpointError, TaskError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if data.readout != "mean":
        print("error: only mean-readout tasks are attributed", file=sys.stderr)
        return 2
    sl = slice(args.offset, args.offset + args.n_test)
    x_t, y = data.x_test[sl], data.y_test[sl].numpy()
    net.harden().eval()
    with torch.no_grad():
        ref = torch.cat([net(x_t[i:i + 250], per_step=True)
                         for i in range(0, len(x_t), 250)]).double().numpy()
    model_bytes = tfl.read_bytes()
    from mgrade_edge.convert.quantize import read_metadata
    from mgrade_edge.convert.raw_input import takes_codes, to_raw_units
    try:
        meta = read_metadata(model_bytes)
    except ValueError as e:
        print(f"error: {tfl}: {e}", file=sys.stderr)
        return 2
    if meta.get("state_bits", 8) != 8:
        print(f"error: {tfl} has the {meta['state_bits']}-bit state path; the walk simulates "
              f"the int8 graph (its 'int16 ...' rows simulate the 16-bit path): convert with "
              f"--state-bits 8 for it, e.g. python -m mgrade_edge.convert RUN --out RUN/int8s8 "
              f"--state-bits 8 --n-test 10", file=sys.stderr)
        return 2
    if takes_codes(meta):                         # the model reads the task's raw codes
        to_raw_units(net, data)
        x_t = data.x_test[sl]
    x = x_t.numpy().astype(np.float64)
    from mgrade_edge.convert.metadata import input_norm
    norm = input_norm(meta)
    if norm is not None:                          # the device normalises before quantising
        x = (x - norm[0].astype(np.float64)) / norm[1].astype(np.float64)

    def show(name, r):
        print(f"{name:36s} acc {100 * r['acc']:6.2f}%  agree {100 * r['agree']:5.1f}%  drift "
              + " ".join(f"{d:.3f}" for d in r["drift"]), flush=True)

    res = attribution(model_bytes, x, y, ref, progress=show, quick=args.quick,
                      split_cand=args.split_cand,
                      only=args.rows.split(",") if args.rows else None)
    tflm_acc = None
    if args.tflm:
        from mgrade_edge.convert.host_eval import int8_logits
        from mgrade_edge.convert.stream import Streamer, predictions
        xq = Streamer(model_bytes, "tflm").quantize_input(x_t.numpy())
        logits, _ = int8_logits(model_bytes, xq)    # host C, cross-checked against TFLM
        preds = np.array([predictions(lg, "mean") for lg in logits])
        tflm_acc = float((preds == y).mean())
        print(f"TFLite-Micro int8: {100 * tflm_acc:.2f}%")
    state16_acc = None
    if args.state16_tflm:
        from mgrade_edge.convert.quantize import read_metadata
        from mgrade_edge.convert.stream import Streamer, predictions
        from mgrade_edge.convert.widen import widen_state
        wide = widen_state(model_bytes, read_metadata(model_bytes)["layers"],
                           gate16=not args.gate8)
        from mgrade_edge.convert.host_eval import int8_logits
        n = min(args.state16_tflm, len(y))
        xq = Streamer(wide, "tflm").quantize_input(x_t[:n].numpy())
        logits, _ = int8_logits(wide, xq)           # host C, cross-checked against TFLM
        preds = np.array([predictions(lg, "mean") for lg in logits])
        state16_acc = float((preds == y[:n]).mean())
        print(f"TFLite-Micro, int16 state path (z {'int8' if args.gate8 else 'int16'}): "
              f"{100 * state16_acc:.2f}% on {n} sequences")
    res.update({"state16_tflm_acc": state16_acc, "run": str(run), "tflite": str(tfl), "task": data.name, "n_test": len(y),
                "offset": args.offset, "tflm_acc": tflm_acc})
    md = markdown(res, f"{data.name}: {run} ({len(y)} test sequences)", tflm_acc)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
