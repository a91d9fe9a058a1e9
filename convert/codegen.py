"""Generic .tflite (int8, single subgraph) -> C model package generator.

    python -m convert.codegen MODEL.tflite --out DIR [--prefix mg]

writes DIR/<prefix>_model_data.h and DIR/<prefix>_model_data.c, to be compiled with
mcu/runtime/mg_quant.c and mcu/runtime/mg_kernels.c (include path mcu/runtime). The package
holds the constant tensors (int8 weights, int32 biases/indices), one const parameter struct per
operator with the quantized multipliers/shifts computed here exactly as TFLite-Micro computes
them in its Prepare step, a static tensor arena planned offline (buffers whose lifetimes do not
overlap share memory), and

    int <prefix>_graph_invoke(const void *const *inputs, void *const *outputs);

which runs the operators in order. inputs[k] / outputs[k] point to caller-owned buffers of the
graph's k-th input / output tensor (subgraph order, described by <prefix>_graph_inputs[] /
<prefix>_graph_outputs[]); output buffers must not overlap input buffers. Returns 0, or -1 if a
GATHER index was out of range. The caller owns all graph inputs/outputs, so a streaming layer
on top can keep its ring buffers and recurrent states in its own storage and ping-pong state
pointers between steps without copies.

A .tflite carrying the `mgrade` streaming metadata (made by `python -m convert`) gets the
stateful model package instead (mg_model.c + mg_model_data.{h,c}, implementing
mcu/runtime/mg_model.h with fused delay-ring and minGRU kernels; see convert/codegen_mgrade.py);
`--generic` forces the stateless graph above.

Supported operators: FULLY_CONNECTED, DEPTHWISE_CONV_2D, ADD, SUB, MUL, LOGISTIC, MINIMUM,
MAXIMUM, RELU, CONCATENATION, GATHER, RESHAPE (+ SQUEEZE, EXPAND_DIMS), QUANTIZE (int8->int8).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert.tflite_reader import Model, Tensor, TFLiteReadError, read_tflite

ALIGN = 4            # arena offset alignment in bytes
MAX_DIMS = 6
ALIAS_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
SUPPORTED_OPS = ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "LOGISTIC",
                 "MINIMUM", "MAXIMUM", "RELU", "CONCATENATION", "GATHER", "QUANTIZE") + ALIAS_OPS


class CodegenError(ValueError):
    pass


# ---------------------------------------------------------------------------------------------
# TFLite's Prepare-time arithmetic (tensorflow/lite/kernels/internal/quantization_util.cc,
# kernel_util.cc and the TFLM kernels' Calculate*OpData), re-derived in Python.

def tflite_round(x: float) -> int:
    """std::round: half away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def quantize_multiplier(d: float, single_rounding: bool = False) -> tuple[int, int]:
    """QuantizeMultiplier(double) -> (int32 multiplier in [2^30, 2^31), shift)."""
    d = float(d)
    if d == 0.0:
        return 0, 0
    q, shift = math.frexp(d)
    q_fixed = tflite_round(q * (1 << 31))
    if q_fixed > (1 << 31):
        raise CodegenError(f"multiplier {d} cannot be quantized")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    if single_rounding and shift > 30:
        shift, q_fixed = 30, (1 << 31) - 1
    return int(q_fixed), int(shift)


def quantize_multiplier_smaller_than_one_exp(d: float) -> tuple[int, int]:
    if not 0.0 < d < 1.0:
        raise CodegenError(f"multiplier {d} must be in (0, 1) (TFLite CHECK)")
    m, s = quantize_multiplier(d)
    if s > 0:
        raise CodegenError(f"multiplier {d} gives a positive shift")
    return m, s


def _f32(x) -> np.float32:
    return np.float32(x)


def activation_range(act: str, t: Tensor) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 outputs."""
    qmin, qmax = -128, 127
    scale, zp = _scale(t), _zp(t)

    def quant(f):   # zero_point + (int)TfLiteRound(f / scale), float32 division
        return zp + tflite_round(float(_f32(f) / _f32(scale)))

    if act in (None, "NONE"):
        return qmin, qmax
    if act == "RELU":
        return max(qmin, quant(0.0)), qmax
    if act == "RELU6":
        return max(qmin, quant(0.0)), min(qmax, quant(6.0))
    if act == "RELU_N1_TO_1":
        return max(qmin, quant(-1.0)), min(qmax, quant(1.0))
    raise CodegenError(f"fused activation {act} is not supported")


def _scale(t: Tensor) -> np.float32:
    if t.quant is None:
        raise CodegenError(f"tensor {t.index} ({t.name}) is not quantized")
    return _f32(t.quant.scale[0])


def _zp(t: Tensor) -> int:
    return int(t.quant.zero_point[0]) if t.quant is not None else 0


# ---------------------------------------------------------------------------------------------
# Graph planning

@dataclass
class Loc:
    kind: str            # "const" | "input" | "output" | "arena"
    index: int = 0       # input/output slot, or arena buffer id
    offset: int = 0      # arena offset (filled by the planner)


@dataclass
class Plan:
    loc: dict[int, Loc]                      # tensor index -> location
    arena_bytes: int
    buffers: list[dict] = field(default_factory=list)   # arena buffers (for the report)
    copies: list[tuple[int, int]] = field(default_factory=list)  # (src tensor, output slot)


def _ctype(t: Tensor) -> str:
    if t.dtype == np.int8:
        return "int8_t"
    if t.dtype == np.int32:
        return "int32_t"
    raise CodegenError(f"tensor {t.index} ({t.name}) has type {t.type_name}; only int8/int32 "
                       "are supported")


def plan_memory(model: Model, align: int = ALIGN) -> Plan:
    tensors, ops = model.tensors, model.operators
    out_slot = {}
    for k, ti in enumerate(model.outputs):
        if ti in out_slot:
            raise CodegenError(f"tensor {ti} is listed twice as a graph output")
        out_slot[ti] = k
    in_slot = {ti: k for k, ti in enumerate(model.inputs)}

    # union-find for aliasing ops
    parent: dict[int, int] = {}

    def find(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    producer = {}
    for op in ops:
        for o in op.outputs:
            producer[o] = op.index
    for op in ops:
        if op.op in ALIAS_OPS:
            src, dst = op.inputs[0], op.outputs[0]
            if dst not in out_slot:
                parent[dst] = find(src)

    loc: dict[int, Loc] = {}
    copies = []
    for ti in model.outputs:
        if ti in in_slot or tensors[ti].is_const:
            copies.append((ti, out_slot[ti]))

    # lifetimes of arena groups
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    for op in ops:
        for ti in op.outputs + [i for i in op.inputs if i >= 0]:
            r = find(ti)
            t = tensors[r]
            if t.is_const or r in in_slot or r in out_slot:
                continue
            first[r] = min(first.get(r, op.index), op.index)
            last[r] = max(last.get(r, op.index), op.index)
            members.setdefault(r, [])
            if ti not in members[r]:
                members[r].append(ti)

    # greedy: largest first, lowest non-conflicting offset
    def rup(n):
        return (n + align - 1) // align * align

    order = sorted(first, key=lambda r: (-tensors[r].nbytes, first[r], r))
    placed: list[tuple[int, int, int, int]] = []   # (offset, size, first, last)
    offsets = {}
    for r in order:
        size = rup(max(tensors[r].nbytes, 1))
        conflicts = sorted((o, s) for (o, s, f, l) in placed
                           if not (l < first[r] or last[r] < f))
        off = 0
        for o, s in conflicts:
            if off + size <= o:
                break
            off = max(off, rup(o + s))
        placed.append((off, size, first[r], last[r]))
        offsets[r] = off
    arena = max((o + s for o, s, _, _ in placed), default=0)

    buffers = []
    for bid, r in enumerate(sorted(offsets, key=lambda r: (offsets[r], first[r]))):
        buffers.append({"tensors": members[r], "offset": offsets[r],
                        "bytes": tensors[r].nbytes, "first_op": first[r], "last_op": last[r]})

    for t in tensors:
        r = find(t.index)
        if tensors[r].is_const:
            loc[t.index] = Loc("const", r)
        elif r in in_slot:
            loc[t.index] = Loc("input", in_slot[r])
        elif t.index in out_slot:
            loc[t.index] = Loc("output", out_slot[t.index])
        elif r in out_slot:
            loc[t.index] = Loc("output", out_slot[r])
        elif r in offsets:
            loc[t.index] = Loc("arena", 0, offsets[r])
    return Plan(loc, arena, buffers, copies)


# ---------------------------------------------------------------------------------------------
# Per-operator parameters

def _bcast(model: Model, a: int, b: int, o: int) -> dict:
    sa, sb, so = (model.tensors[i].shape for i in (a, b, o))
    count = model.tensors[o].size
    if tuple(sa) == tuple(sb) and model.tensors[a].size == count:
        return {"count": count, "ndims": 0, "shape": [], "stride1": [], "stride2": []}
    n = len(so)
    if n > MAX_DIMS or len(sa) > n or len(sb) > n:
        raise CodegenError(f"broadcast {sa} x {sb} -> {so} is not supported")

    def strides(s):
        s = [1] * (n - len(s)) + list(s)
        st, acc = [0] * n, 1
        for d in range(n - 1, -1, -1):
            st[d] = 0 if (s[d] == 1 and so[d] != 1) else acc
            if s[d] not in (1, so[d]):
                raise CodegenError(f"shapes {sa} and {sb} do not broadcast to {so}")
            acc *= s[d]
        return st

    return {"count": count, "ndims": n, "shape": list(so), "stride1": strides(sa),
            "stride2": strides(sb)}


def _check_int8(model, *idx):
    for i in idx:
        t = model.tensors[i]
        if t.dtype != np.int8:
            raise CodegenError(f"tensor {i} ({t.name}) is {t.type_name}, expected int8")


def op_params(model: Model, op) -> dict:
    """The TFLM Prepare-time parameters of one operator (plain ints and lists)."""
    T = model.tensors
    name = op.op
    act = op.options.get("fused_activation_function", "NONE")
    if name == "FULLY_CONNECTED":
        i, w = op.inputs[0], op.inputs[1]
        b = op.inputs[2] if len(op.inputs) > 2 else -1
        o = op.outputs[0]
        _check_int8(model, i, w, o)
        if b >= 0 and T[b].dtype != np.int32:
            raise CodegenError("FULLY_CONNECTED bias must be int32")
        tw, to = T[w], T[o]
        in_s, out_s = _scale(T[i]), _scale(to)
        out_depth = to.shape[-1]
        accum = tw.shape[-1]
        if T[i].size % accum:
            raise CodegenError("FULLY_CONNECTED input size is not a multiple of the depth")
        if tw.quant.per_channel:
            fs = tw.quant.scale
            mults = [quantize_multiplier(float(in_s) * float(s) / float(out_s)) for s in fs]
            per_channel = 1
        else:
            prod = float(_f32(in_s * _f32(tw.quant.scale[0])))   # float product, then double
            mults = [quantize_multiplier(prod / float(out_s))]
            per_channel = 0
        lo, hi = activation_range(act, to)
        return dict(batches=to.size // out_depth, accum_depth=accum, output_depth=out_depth,
                    input_offset=-_zp(T[i]), filter_offset=-_zp(tw), output_offset=_zp(to),
                    act_min=lo, act_max=hi, per_channel=per_channel,
                    multiplier=[m for m, _ in mults], shift=[s for _, s in mults])
    if name == "DEPTHWISE_CONV_2D":
        i, w = op.inputs[0], op.inputs[1]
        b = op.inputs[2] if len(op.inputs) > 2 else -1
        o = op.outputs[0]
        _check_int8(model, i, w, o)
        ti, tw, to = T[i], T[w], T[o]
        if len(ti.shape) != 4 or len(tw.shape) != 4 or len(to.shape) != 4:
            raise CodegenError("DEPTHWISE_CONV_2D needs 4-D input/filter/output")
        n, ih, iw, ic = ti.shape
        _, fh, fw, oc = tw.shape
        _, oh, ow, oc2 = to.shape
        if oc != oc2 or oc % ic:
            raise CodegenError("DEPTHWISE_CONV_2D channel mismatch")
        sh, sw = op.options.get("stride_h", 1), op.options.get("stride_w", 1)
        dh, dw = op.options.get("dilation_h_factor", 1), op.options.get("dilation_w_factor", 1)

        def pad(stride, dil, insz, fsz, outsz):
            eff = (fsz - 1) * dil + 1
            return max(0, (outsz - 1) * stride + eff - insz) // 2

        in_s, out_s = _scale(ti), _scale(to)
        fs = tw.quant.scale
        mults = [quantize_multiplier(float(in_s) * float(fs[c] if fs.size > 1 else fs[0])
                                     / float(out_s)) for c in range(oc)]
        lo, hi = activation_range(act, to)
        return dict(batches=n, in_h=ih, in_w=iw, in_c=ic, filt_h=fh, filt_w=fw, out_h=oh,
                    out_w=ow, out_c=oc, depth_multiplier=oc // ic, stride_h=sh, stride_w=sw,
                    dilation_h=dh, dilation_w=dw, pad_h=pad(sh, dh, ih, fh, oh),
                    pad_w=pad(sw, dw, iw, fw, ow), input_offset=-_zp(ti),
                    output_offset=_zp(to), act_min=lo, act_max=hi,
                    multiplier=[m for m, _ in mults], shift=[s for _, s in mults])
    if name in ("ADD", "SUB"):
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        s1, s2, so = _scale(T[a]), _scale(T[b2]), _scale(T[o])
        if name == "ADD":     # add_common.cc: double arithmetic
            twice = 2.0 * float(max(s1, s2))
            r1, r2 = float(s1) / twice, float(s2) / twice
            ro = twice / ((1 << 20) * float(so))
        else:                 # sub_common.cc: float arithmetic, then widened
            twice = _f32(2) * max(s1, s2)
            r1, r2 = float(s1 / twice), float(s2 / twice)
            ro = float(twice / (_f32(1 << 20) * so))
        m1, sh1 = quantize_multiplier_smaller_than_one_exp(r1)
        m2, sh2 = quantize_multiplier_smaller_than_one_exp(r2)
        mo, sho = quantize_multiplier_smaller_than_one_exp(ro)
        lo, hi = activation_range(act, T[o])
        return dict(left_shift=20, input1_offset=-_zp(T[a]), input1_multiplier=m1,
                    input1_shift=sh1, input2_offset=-_zp(T[b2]), input2_multiplier=m2,
                    input2_shift=sh2, output_offset=_zp(T[o]), output_multiplier=mo,
                    output_shift=sho, act_min=lo, act_max=hi, bc=_bcast(model, a, b2, o))
    if name == "MUL":
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        real = float(_scale(T[a])) * float(_scale(T[b2])) / float(_scale(T[o]))
        m, s = quantize_multiplier(real)
        lo, hi = activation_range(act, T[o])
        return dict(input1_offset=-_zp(T[a]), input2_offset=-_zp(T[b2]),
                    output_offset=_zp(T[o]), output_multiplier=m, output_shift=s,
                    act_min=lo, act_max=hi, bc=_bcast(model, a, b2, o))
    if name in ("MINIMUM", "MAXIMUM"):
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        return dict(bc=_bcast(model, a, b2, o))
    if name == "LOGISTIC":
        i, o = op.inputs[0], op.outputs[0]
        _check_int8(model, i, o)
        if _zp(T[o]) != -128:
            raise CodegenError("int8 LOGISTIC output zero point must be -128 (TFLM)")
        real = float(_scale(T[i])) * float(1 << (31 - 4))
        q, left_shift = math.frexp(real)
        mult = tflite_round(q * (1 << 31))
        if mult >= (1 << 31):          # static_cast<int32_t> wraps
            mult -= 1 << 32
        radius = math.floor(1.0 * ((1 << 4) - 1) * (1 << (31 - 4)) / (2.0 ** left_shift))
        return dict(size=T[i].size, input_zero_point=_zp(T[i]), input_range_radius=radius,
                    input_multiplier=mult, input_left_shift=left_shift)
    if name == "RELU":
        i, o = op.inputs[0], op.outputs[0]
        _check_int8(model, i, o)
        real = float(_scale(T[i]) / _scale(T[o]))   # float division, then double
        m, s = quantize_multiplier(real)
        return dict(size=T[i].size, input_offset=_zp(T[i]), output_offset=_zp(T[o]),
                    multiplier=m, shift=s, act_min=max(-128, _zp(T[o])), act_max=127)
    if name == "QUANTIZE":
        i, o = op.inputs[0], op.outputs[0]
        _check_int8(model, i, o)
        m, s = quantize_multiplier(float(_scale(T[i])) / float(_scale(T[o])))
        return dict(size=T[i].size, input_offset=_zp(T[i]), output_offset=_zp(T[o]),
                    multiplier=m, shift=s, act_min=-128, act_max=127)
    if name == "CONCATENATION":
        o = op.outputs[0]
        to = T[o]
        if act not in (None, "NONE"):
            raise CodegenError("CONCATENATION with a fused activation is not supported")
        axis = op.options.get("axis", 0)
        if axis < 0:
            axis += len(to.shape)
        _ctype(to)
        for i in op.inputs:
            ti = T[i]
            if ti.dtype != to.dtype:
                raise CodegenError("CONCATENATION inputs must share the output type")
            if to.dtype == np.int8 and (_scale(ti) != _scale(to) or _zp(ti) != _zp(to)):
                raise CodegenError(
                    "int8 CONCATENATION with differing input/output quantization is rejected "
                    "by TFLite-Micro (it only copies); requantize the inputs first")
        outer = int(np.prod(to.shape[:axis], dtype=np.int64))
        copy = [int(np.prod(T[i].shape[axis:], dtype=np.int64)) * to.dtype.itemsize
                for i in op.inputs]
        return dict(num_inputs=len(op.inputs), outer=outer, copy_bytes=copy)
    if name == "GATHER":
        p, idx, o = op.inputs[0], op.inputs[1], op.outputs[0]
        tp, ti = T[p], T[idx]
        if ti.dtype != np.int32:
            raise CodegenError("GATHER indices must be int32 (TFLM)")
        _ctype(tp)
        nd, ncd = len(tp.shape), len(ti.shape)
        axis = op.options.get("axis", 0)
        axis = axis + nd if axis < 0 else axis
        bd = op.options.get("batch_dims", 0)
        bd = bd + ncd if bd < 0 else bd
        prod = lambda s: int(np.prod(s, dtype=np.int64))  # noqa: E731
        return dict(batch_size=prod(tp.shape[:bd]), outer_size=prod(tp.shape[bd:axis]),
                    axis_size=tp.shape[axis], inner_size=prod(tp.shape[axis + 1:]),
                    coord_size=prod(ti.shape[bd:]), elem_bytes=tp.dtype.itemsize)
    if name in ALIAS_OPS:
        return dict(bytes=T[op.outputs[0]].nbytes)
    raise CodegenError(f"operator {name} is not supported by the mgrade C runtime "
                       f"(supported: {', '.join(SUPPORTED_OPS)})")


# ---------------------------------------------------------------------------------------------
# C emission

def _ident(s: str) -> str:
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").upper()
    return s if s and not s[0].isdigit() else "T_" + s


def const_tensor_lines(prefix: str, ti: int, t: Tensor, storage: str = "static const"
                       ) -> list[str]:
    """C lines defining constant tensor `ti` as `{storage} <ctype> {prefix}_t{ti}[n]`, after a
    comment with its name, shape and quantization."""
    qs = ""
    if t.quant is not None:
        qs = (f" scale[{t.quant.scale.size}]={t.quant.scale[0]:.9g}"
              f"{'...' if t.quant.scale.size > 1 else ''} zp={_zp(t)}")
    return [f"/* tensor {ti} '{t.name}' {list(t.shape)}{qs} */",
            f"{storage} {_ctype(t)} {prefix}_t{ti}[{max(t.size, 1)}] = {{{_carray(t.data)}}};"]


def _carray(values, per_line: int = 16) -> str:
    vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    if not vals:
        return "0"
    lines = [", ".join(vals[k:k + per_line]) for k in range(0, len(vals), per_line)]
    return "\n    " + ",\n    ".join(lines) + "\n"


def _list(v) -> str:
    return "{" + ", ".join(str(int(x)) for x in v) + "}" if len(v) else "{0}"


def _bcast_init(bc: dict) -> str:
    pad = lambda v: list(v) + [0] * (MAX_DIMS - len(v))  # noqa: E731
    return (f"{{{bc['count']}, {bc['ndims']}, {_list(pad(bc['shape']))}, "
            f"{_list(pad(bc['stride1']))}, {_list(pad(bc['stride2']))}}}")


def emit_op(model: Model, op, p: dict, ptr, plan: Plan, P: str) -> tuple[list[str], list[str]]:
    """C for one generic operator: (declarations at file scope, statements for the invoke
    body). `ptr(tensor, const)` gives the C expression of a tensor's buffer; `plan.loc` is
    used to decide whether an aliasing op (RESHAPE) needs a copy."""
    T = model.tensors
    c: list[str] = []
    body: list[str] = []
    n = op.index
    o = op.outputs[0]
    body.append(f"    /* op {n}: {op.op} -> tensor {o} '{T[o].name}' {list(T[o].shape)} */")
    if op.op == "FULLY_CONNECTED":
        c.append(f"static const int32_t {P}_op{n}_mult[{len(p['multiplier'])}] = "
                 f"{_list(p['multiplier'])};")
        c.append(f"static const int32_t {P}_op{n}_shift[{len(p['shift'])}] = "
                 f"{_list(p['shift'])};")
        c.append(f"static const mg_fc_params_t {P}_op{n} = {{{p['batches']}, "
                 f"{p['accum_depth']}, {p['output_depth']}, {p['input_offset']}, "
                 f"{p['filter_offset']}, {p['output_offset']}, {p['act_min']}, "
                 f"{p['act_max']}, {p['per_channel']}, {P}_op{n}_mult, {P}_op{n}_shift}};")
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        body.append(f"    mg_fully_connected_s8(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(bias, True)}, {ptr(o, False)});")
    elif op.op == "DEPTHWISE_CONV_2D":
        c.append(f"static const int32_t {P}_op{n}_mult[{len(p['multiplier'])}] = "
                 f"{_list(p['multiplier'])};")
        c.append(f"static const int32_t {P}_op{n}_shift[{len(p['shift'])}] = "
                 f"{_list(p['shift'])};")
        keys = ["batches", "in_h", "in_w", "in_c", "filt_h", "filt_w", "out_h", "out_w",
                "out_c", "depth_multiplier", "stride_h", "stride_w", "dilation_h",
                "dilation_w", "pad_h", "pad_w", "input_offset", "output_offset",
                "act_min", "act_max"]
        c.append(f"static const mg_dwconv_params_t {P}_op{n} = {{"
                 + ", ".join(str(p[k]) for k in keys)
                 + f", {P}_op{n}_mult, {P}_op{n}_shift}};")
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        body.append(f"    mg_depthwise_conv_s8(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(bias, True)}, {ptr(o, False)});")
    elif op.op in ("ADD", "SUB"):
        keys = ["left_shift", "input1_offset", "input1_multiplier", "input1_shift",
                "input2_offset", "input2_multiplier", "input2_shift", "output_offset",
                "output_multiplier", "output_shift", "act_min", "act_max"]
        c.append(f"static const mg_add_params_t {P}_op{n} = {{"
                 + ", ".join(str(p[k]) for k in keys) + f", {_bcast_init(p['bc'])}}};")
        fn = "mg_add_s8" if op.op == "ADD" else "mg_sub_s8"
        body.append(f"    {fn}(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    elif op.op == "MUL":
        keys = ["input1_offset", "input2_offset", "output_offset", "output_multiplier",
                "output_shift", "act_min", "act_max"]
        c.append(f"static const mg_mul_params_t {P}_op{n} = {{"
                 + ", ".join(str(p[k]) for k in keys) + f", {_bcast_init(p['bc'])}}};")
        body.append(f"    mg_mul_s8(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    elif op.op in ("MINIMUM", "MAXIMUM"):
        c.append(f"static const mg_bcast_t {P}_op{n} = {_bcast_init(p['bc'])};")
        fn = "mg_minimum_s8" if op.op == "MINIMUM" else "mg_maximum_s8"
        body.append(f"    {fn}(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    elif op.op == "LOGISTIC":
        keys = ["size", "input_zero_point", "input_range_radius", "input_multiplier",
                "input_left_shift"]
        c.append(f"static const mg_logistic_params_t {P}_op{n} = {{"
                 + ", ".join(str(p[k]) for k in keys) + "};")
        body.append(f"    mg_logistic_s8(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(o, False)});")
    elif op.op in ("RELU", "QUANTIZE"):
        keys = ["size", "input_offset", "output_offset", "multiplier", "shift", "act_min",
                "act_max"]
        c.append(f"static const mg_requant_params_t {P}_op{n} = {{"
                 + ", ".join(str(p[k]) for k in keys) + "};")
        fn = "mg_relu_s8" if op.op == "RELU" else "mg_requantize_s8"
        body.append(f"    {fn}(&{P}_op{n}, {ptr(op.inputs[0], True)}, {ptr(o, False)});")
    elif op.op == "CONCATENATION":
        c.append(f"static const int32_t {P}_op{n}_bytes[{p['num_inputs']}] = "
                 f"{_list(p['copy_bytes'])};")
        c.append(f"static const mg_concat_params_t {P}_op{n} = {{{p['num_inputs']}, "
                 f"{p['outer']}, {P}_op{n}_bytes}};")
        body.append("    {")
        body.append(f"        const void *in_[{p['num_inputs']}];")
        for k, i in enumerate(op.inputs):
            body.append(f"        in_[{k}] = (const void *){ptr(i, True)};")
        body.append(f"        mg_concatenation(&{P}_op{n}, in_, {ptr(o, False)});")
        body.append("    }")
    elif op.op == "GATHER":
        keys = ["batch_size", "outer_size", "axis_size", "inner_size", "coord_size",
                "elem_bytes"]
        c.append(f"static const mg_gather_params_t {P}_op{n} = {{"
                 + ", ".join(str(p[k]) for k in keys) + "};")
        body.append(f"    if (mg_gather(&{P}_op{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)}) != 0) {{")
        body.append("        status = -1;")
        body.append("    }")
    elif op.op in ALIAS_OPS:
        src = op.inputs[0]
        ls, lo_ = plan.loc[src], plan.loc[o]
        same = (ls.kind == lo_.kind and ls.index == lo_.index and ls.offset == lo_.offset
                and ls.kind != "const")
        if ls.kind == "const" and lo_.kind == "const" and ls.index == lo_.index:
            same = True
        if same:
            body.append("    /* alias: no data movement */")
        else:
            body.append(f"    mg_copy({ptr(o, False)}, {ptr(src, True)}, {p['bytes']}u);")
    return c, body


def generate(model_src, out_dir, prefix: str = "mg", generic: bool = False) -> dict:
    """Write the C package for a .tflite (bytes or path); return a summary dict.

    A .tflite with mGRADE streaming metadata gets the stateful model package (mg_model.h
    API, fused delay/minGRU kernels: convert/codegen_mgrade.py) unless `generic` is set."""
    model = model_src if isinstance(model_src, Model) else read_tflite(model_src)
    if not generic:
        from convert import codegen_mgrade
        meta = codegen_mgrade.mgrade_metadata(model)
        if meta is not None:
            return codegen_mgrade.generate_package(model, meta, out_dir, prefix)
    if model.num_subgraphs != 1:
        raise CodegenError(f"model has {model.num_subgraphs} subgraphs; only 1 is supported")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise CodegenError(f"bad prefix {prefix!r}")
    T = model.tensors
    for op in model.operators:
        if op.op not in SUPPORTED_OPS:
            raise CodegenError(f"operator {op.op} (op {op.index}) is not supported "
                               f"(supported: {', '.join(SUPPORTED_OPS)})")
    params = [op_params(model, op) for op in model.operators]
    plan = plan_memory(model)
    P, PU = prefix, prefix.upper()

    def ptr(ti: int, const: bool) -> str:
        if ti < 0:
            return "NULL"
        t = T[ti]
        ct = _ctype(t)
        q = "const " if const else ""
        lc = plan.loc[ti]
        if lc.kind == "const":
            return f"{P}_t{lc.index}"
        if lc.kind == "input":
            if not const:
                raise CodegenError(f"tensor {ti} is a graph input but is written")
            return f"(const {ct} *)inputs[{lc.index}]"
        if lc.kind == "output":
            return f"({q}{ct} *)outputs[{lc.index}]"
        return f"({q}{ct} *)(void *)(arena + {lc.offset})"

    used_consts = sorted({i for op in model.operators for i in op.inputs
                          if i >= 0 and T[i].is_const and op.op not in ALIAS_OPS}
                         | {i for op in model.operators if op.op in ALIAS_OPS
                            for i in op.inputs[:1] if T[i].is_const}
                         | {ti for ti, _ in plan.copies if T[ti].is_const})
    const_bytes = 0
    c = [f"/* Generated by convert/codegen.py from a .tflite (model id {model.model_id}).",
         " * Do not edit. Kernels: mcu/runtime/mg_kernels.h. */",
         f'#include "{P}_model_data.h"', "", "#include <stddef.h>", "",
         f"const uint8_t {P}_model_id[8] = {{"
         + ", ".join(f"0x{model.model_id[k:k + 2]}" for k in range(0, 16, 2)) + "};", ""]
    for ti in used_consts:
        const_bytes += T[ti].nbytes
        c += const_tensor_lines(P, ti, T[ti])
    c.append("")
    c.append(f"static int32_t {P}_arena_words[{max(1, (plan.arena_bytes + 3) // 4)}];")
    c.append("")

    body = []
    for op, p in zip(model.operators, params):
        decls, lines = emit_op(model, op, p, ptr, plan, P)
        c.extend(decls)
        body.extend(lines)
    for ti, slot in plan.copies:
        body.append(f"    /* graph output {slot} is not produced by an operator */")
        body.append(f"    mg_copy(outputs[{slot}], {ptr(ti, True)}, {T[ti].nbytes}u);")

    def io_desc(idx, names):
        rows = []
        for ti, nm in zip(idx, names):
            t = T[ti]
            ct = _ctype(t)
            dims = list(t.shape) + [0] * (MAX_DIMS - len(t.shape))
            typ = "MG_TYPE_INT8" if ct == "int8_t" else "MG_TYPE_INT32"
            rows.append(f'    {{"{nm}", {typ}, {len(t.shape)}, {_list(dims)}, {t.size}, '
                        f"{t.nbytes}, {_zp(t)}}}")
        return ",\n".join(rows) if rows else '    {"", MG_TYPE_INT8, 0, {0}, 0, 0, 0}'

    c.append("")
    c.append(f"const mg_io_desc_t {P}_graph_inputs[{max(1, len(model.inputs))}] = {{\n"
             f"{io_desc(model.inputs, model.input_names)}\n}};")
    c.append(f"const mg_io_desc_t {P}_graph_outputs[{max(1, len(model.outputs))}] = {{\n"
             f"{io_desc(model.outputs, model.output_names)}\n}};")
    c.append("")
    c.append(f"int {P}_graph_invoke(const void *const *inputs, void *const *outputs)")
    c.append("{")
    c.append(f"    int8_t *const arena = (int8_t *){P}_arena_words;")
    c.append("    int status = 0;")
    c.append("    (void)arena;")
    c.append("    (void)inputs;")
    c.append("    (void)outputs;")
    c.extend(body)
    c.append("    return status;")
    c.append("}")
    c.append("")

    # header
    def enum_names(names, kind):
        seen, out = set(), []
        for k, nm in enumerate(names):
            e = f"{PU}_{kind}_{_ident(nm)}"
            if e in seen:
                e = f"{e}_{k}"
            seen.add(e)
            out.append(f"    {e} = {k},")
        return out

    def io_comment(idx, names):
        out = []
        for k, (ti, nm) in enumerate(zip(idx, names)):
            t = T[ti]
            q = ""
            if t.quant is not None:
                q = f" scale {float(t.quant.scale[0]):.9g} zero_point {_zp(t)}"
            out.append(f" *   [{k}] {nm}: {t.type_name.lower()} {list(t.shape)}{q}")
        return out

    guard = f"{PU}_MODEL_DATA_H"
    h = [f"/* Generated by convert/codegen.py. Do not edit.", " *",
         f" * Graph inputs (caller-owned buffers, passed to {P}_graph_invoke in this order):"]
    h += io_comment(model.inputs, model.input_names)
    h += [" * Graph outputs:"]
    h += io_comment(model.outputs, model.output_names)
    h += [" */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
          '#include "mg_kernels.h"', "", '#ifdef __cplusplus', 'extern "C" {', "#endif", "",
          "/* first 8 bytes of sha256(model.tflite) */",
          f'#define {PU}_MODEL_ID "{model.model_id}"',
          f"extern const uint8_t {P}_model_id[8];", "",
          f"#define {PU}_GRAPH_NUM_INPUTS {len(model.inputs)}",
          f"#define {PU}_GRAPH_NUM_OUTPUTS {len(model.outputs)}",
          f"#define {PU}_GRAPH_NUM_OPS {len(model.operators)}",
          f"#define {PU}_GRAPH_ARENA_BYTES {plan.arena_bytes}",
          f"#define {PU}_GRAPH_CONST_BYTES {const_bytes}", ""]
    r4 = lambda n: (n + 3) // 4 * 4  # noqa: E731
    h.append(f"/* sums of the I/O sizes, each rounded up to 4 bytes (for static buffers) */")
    h.append(f"#define {PU}_GRAPH_INPUT_BYTES_TOTAL "
             f"{sum(r4(T[i].nbytes) for i in model.inputs)}")
    h.append(f"#define {PU}_GRAPH_OUTPUT_BYTES_TOTAL "
             f"{sum(r4(T[i].nbytes) for i in model.outputs)}")
    for k, ti in enumerate(model.inputs):
        h.append(f"#define {PU}_GRAPH_INPUT{k}_BYTES {T[ti].nbytes}")
    for k, ti in enumerate(model.outputs):
        h.append(f"#define {PU}_GRAPH_OUTPUT{k}_BYTES {T[ti].nbytes}")
    h += ["", "enum {"] + enum_names(model.input_names, "IN") + ["};", "enum {"] \
        + enum_names(model.output_names, "OUT") + ["};", "",
                                                    f"extern const mg_io_desc_t {P}_graph_inputs[];",
                                                    f"extern const mg_io_desc_t {P}_graph_outputs[];", "",
                                                    "/* Runs the graph once. inputs[k]/outputs[k]: caller buffers for graph input/output k",
                                                    " * (outputs must not overlap inputs). Returns 0, or -1 on an out-of-range GATHER index. */",
                                                    f"int {P}_graph_invoke(const void *const *inputs, void *const *outputs);", "",
                                                    "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{P}_model_data.h").write_text("\n".join(h))
    (out / f"{P}_model_data.c").write_text("\n".join(c))
    act_bytes = sum(T[i].nbytes for op in model.operators for i in op.outputs
                    if plan.loc[i].kind == "arena")
    return {"model_id": model.model_id, "ops": [op.op for op in model.operators],
            "arena_bytes": plan.arena_bytes, "unplanned_bytes": act_bytes,
            "const_bytes": const_bytes,
            "io_bytes": sum(T[i].nbytes for i in model.inputs + model.outputs),
            "files": [str(out / f"{P}_model_data.h"), str(out / f"{P}_model_data.c")]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convert.codegen", description=__doc__.split("\n")[0])
    ap.add_argument("model", help="int8 .tflite file")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--prefix", default="mg", help="C symbol/file prefix (default mg)")
    ap.add_argument("--generic", action="store_true",
                    help="emit the stateless graph (mg_graph_invoke) even for an mGRADE model")
    a = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a.prefix):
        print(f"codegen: error: --prefix {a.prefix!r} is not a C identifier (letters, digits, "
              f"_; not starting with a digit)", file=sys.stderr)
        return 2
    try:
        s = generate(a.model, a.out, a.prefix, generic=a.generic)
    except TFLiteReadError as e:
        print(f"codegen: error: {a.model}: {e}; give an int8 .tflite made by `python -m convert`"
              f" (or TFLite's converter)", file=sys.stderr)
        return 2
    except (CodegenError, OSError) as e:
        print(f"codegen: error: {e}", file=sys.stderr)
        return 2
    if "summary" in s:
        print(s["summary"])
        return 0
    print(f"model {s['model_id']}: {len(s['ops'])} ops, arena {s['arena_bytes']} B "
          f"(unshared {s['unplanned_bytes']} B), constants {s['const_bytes']} B, "
          f"graph I/O {s['io_bytes']} B -> {', '.join(s['files'])}")
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: convert.codegen_mgrade raises
    # convert.codegen.CodegenError, a different class from __main__.CodegenError.
    from convert.codegen import main as _main
    raise SystemExit(_main())
