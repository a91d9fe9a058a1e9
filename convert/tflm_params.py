"""TFLite-Micro Prepare-time parameters of int8 operators, re-derived in Python.

Lowest layer of the code generators (see `python -m mgrade_edge.convert.codegen --help`): it knows the
.tflite graph (convert/tflite_reader.py) and TFLite's arithmetic
(tensorflow/lite/kernels/internal/quantization_util.cc, kernel_util.cc and the TFLM kernels'
Calculate*OpData), nothing about C. `op_params(model, op)` gives one operator's parameters as
plain ints and lists (the fields of the matching mcu/runtime/mg_kernels.h struct); the
generic graph package, the mGRADE package and the MicroPython package all use it.
"""
from __future__ import annotations

import math

import numpy as np

from mgrade_edge.convert.tflite_reader import Model, Tensor

MAX_DIMS = 6
ALIAS_OPS = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
SUPPORTED_OPS = ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "LOGISTIC",
                 "MINIMUM", "MAXIMUM", "RELU", "CONCATENATION", "GATHER", "QUANTIZE") + ALIAS_OPS


class CodegenError(ValueError):
    """A .tflite the code generators cannot turn into a package (message names the cause)."""


# ---------------------------------------------------------------------------------------------
# TFLite's Prepare-time arithmetic

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
    """CalculateActivationRangeQuantized for int8 or int16 outputs."""
    qmin, qmax = (-32768, 32767) if t.dtype == np.int16 else (-128, 127)
    s, zp = scale(t), zero_point(t)

    def quant(f):   # zero_point + (int)TfLiteRound(f / scale), float32 division
        return zp + tflite_round(float(_f32(f) / _f32(s)))

    if act in (None, "NONE"):
        return qmin, qmax
    if act == "RELU":
        return max(qmin, quant(0.0)), qmax
    if act == "RELU6":
        return max(qmin, quant(0.0)), min(qmax, quant(6.0))
    if act == "RELU_N1_TO_1":
        return max(qmin, quant(-1.0)), min(qmax, quant(1.0))
    raise CodegenError(f"fused activation {act} is not supported")


def scale(t: Tensor) -> np.float32:
    """The tensor's (first) quantization scale, float32 as TFLite holds it."""
    if t.quant is None:
        raise CodegenError(f"tensor {t.index} ({t.name}) is not quantized")
    return _f32(t.quant.scale[0])


def zero_point(t: Tensor) -> int:
    """The tensor's (first) zero point; 0 for a tensor without quantization."""
    return int(t.quant.zero_point[0]) if t.quant is not None else 0


def storage_dtype(t: Tensor) -> np.dtype:
    """The element type of a tensor the kernels store (int8, int16 or int32), else CodegenError."""
    if t.dtype in (np.int8, np.int16, np.int32):     # int16: the widened forms (ops16)
        return np.dtype(t.dtype)
    raise CodegenError(f"tensor {t.index} ({t.name}) has type {t.type_name}; only int8/int16/int32 "
                       "are supported")


# ---------------------------------------------------------------------------------------------
# Per-operator parameters

def broadcast_params(model: Model, a: int, b: int, o: int) -> dict:
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
        if T[i].dtype == np.int16:          # 16x8 mode (convert/widen.py widen_input)
            _check_int8(model, w)
            if T[o].dtype != np.int16 or zero_point(T[i]) or zero_point(T[o]):
                raise CodegenError(f"FULLY_CONNECTED (op {op.index}) with an int16 input needs "
                                   "an int16 output, both with zero point 0")
        else:
            _check_int8(model, i, w, o)
        if b >= 0 and T[b].dtype != np.int32:
            raise CodegenError("FULLY_CONNECTED bias must be int32")
        tw, to = T[w], T[o]
        in_s, out_s = scale(T[i]), scale(to)
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
                    input_offset=-zero_point(T[i]), filter_offset=-zero_point(tw), output_offset=zero_point(to),
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

        in_s, out_s = scale(ti), scale(to)
        fs = tw.quant.scale
        mults = [quantize_multiplier(float(in_s) * float(fs[c] if fs.size > 1 else fs[0])
                                     / float(out_s)) for c in range(oc)]
        lo, hi = activation_range(act, to)
        return dict(batches=n, in_h=ih, in_w=iw, in_c=ic, filt_h=fh, filt_w=fw, out_h=oh,
                    out_w=ow, out_c=oc, depth_multiplier=oc // ic, stride_h=sh, stride_w=sw,
                    dilation_h=dh, dilation_w=dw, pad_h=pad(sh, dh, ih, fh, oh),
                    pad_w=pad(sw, dw, iw, fw, ow), input_offset=-zero_point(ti),
                    output_offset=zero_point(to), act_min=lo, act_max=hi,
                    multiplier=[m for m, _ in mults], shift=[s for _, s in mults])
    if name in ("ADD", "SUB"):
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        s1, s2, so = scale(T[a]), scale(T[b2]), scale(T[o])
        # The real multipliers in double for both. (sub_common.cc on GitHub computes SUB's in
        # float; the tflite-micro wheel the project tests against behaves as double: with float
        # ones 11 of 19.7 million exhaustive int8 SUB outputs over 300 random scale sets
        # differed by 1 LSB, with double ones none. tests/test_elementwise_tflm.py checks it.)
        twice = 2.0 * float(max(s1, s2))
        r1, r2 = float(s1) / twice, float(s2) / twice
        ro = twice / ((1 << 20) * float(so))
        m1, sh1 = quantize_multiplier_smaller_than_one_exp(r1)
        m2, sh2 = quantize_multiplier_smaller_than_one_exp(r2)
        mo, sho = quantize_multiplier_smaller_than_one_exp(ro)
        lo, hi = activation_range(act, T[o])
        return dict(left_shift=20, input1_offset=-zero_point(T[a]), input1_multiplier=m1,
                    input1_shift=sh1, input2_offset=-zero_point(T[b2]), input2_multiplier=m2,
                    input2_shift=sh2, output_offset=zero_point(T[o]), output_multiplier=mo,
                    output_shift=sho, act_min=lo, act_max=hi, bc=broadcast_params(model, a, b2, o))
    if name == "MUL":
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        real = float(scale(T[a])) * float(scale(T[b2])) / float(scale(T[o]))
        m, s = quantize_multiplier(real)
        lo, hi = activation_range(act, T[o])
        return dict(input1_offset=-zero_point(T[a]), input2_offset=-zero_point(T[b2]),
                    output_offset=zero_point(T[o]), output_multiplier=m, output_shift=s,
                    act_min=lo, act_max=hi, bc=broadcast_params(model, a, b2, o))
    if name in ("MINIMUM", "MAXIMUM"):
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        return dict(bc=broadcast_params(model, a, b2, o))
    if name == "LOGISTIC":
        i, o = op.inputs[0], op.outputs[0]
        _check_int8(model, i, o)
        if zero_point(T[o]) != -128:
            raise CodegenError("int8 LOGISTIC output zero point must be -128 (TFLM)")
        real = float(scale(T[i])) * float(1 << (31 - 4))
        q, left_shift = math.frexp(real)
        mult = tflite_round(q * (1 << 31))
        if mult >= (1 << 31):          # static_cast<int32_t> wraps
            mult -= 1 << 32
        radius = math.floor(1.0 * ((1 << 4) - 1) * (1 << (31 - 4)) / (2.0 ** left_shift))
        return dict(size=T[i].size, input_zero_point=zero_point(T[i]), input_range_radius=radius,
                    input_multiplier=mult, input_left_shift=left_shift)
    if name == "RELU":
        i, o = op.inputs[0], op.outputs[0]
        _check_int8(model, i, o)
        real = float(scale(T[i]) / scale(T[o]))   # float division, then double
        m, s = quantize_multiplier(real)
        return dict(size=T[i].size, input_offset=zero_point(T[i]), output_offset=zero_point(T[o]),
                    multiplier=m, shift=s, act_min=max(-128, zero_point(T[o])), act_max=127)
    if name == "QUANTIZE":
        i, o = op.inputs[0], op.outputs[0]
        _check_int8(model, i, o)
        m, s = quantize_multiplier(float(scale(T[i])) / float(scale(T[o])))
        return dict(size=T[i].size, input_offset=zero_point(T[i]), output_offset=zero_point(T[o]),
                    multiplier=m, shift=s, act_min=-128, act_max=127)
    if name == "CONCATENATION":
        o = op.outputs[0]
        to = T[o]
        if act not in (None, "NONE"):
            raise CodegenError("CONCATENATION with a fused activation is not supported")
        axis = op.options.get("axis", 0)
        if axis < 0:
            axis += len(to.shape)
        storage_dtype(to)
        for i in op.inputs:
            ti = T[i]
            if ti.dtype != to.dtype:
                raise CodegenError("CONCATENATION inputs must share the output type")
            if to.dtype == np.int8 and (scale(ti) != scale(to)
                                        or zero_point(ti) != zero_point(to)):
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
        storage_dtype(tp)
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



def op_macs(op, p: dict) -> int:
    """Multiply-accumulates of one FULLY_CONNECTED / DEPTHWISE_CONV_2D (0 for other ops)."""
    if op.op == "FULLY_CONNECTED":
        return p["batches"] * p["accum_depth"] * p["output_depth"]
    if op.op == "DEPTHWISE_CONV_2D":
        return p["batches"] * p["out_h"] * p["out_w"] * p["out_c"] * p["filt_h"] * p["filt_w"]
    return 0


def check_supported(model: Model) -> None:
    """CodegenError unless the model has one subgraph of supported operators."""
    if model.num_subgraphs != 1:
        raise CodegenError(f"model has {model.num_subgraphs} subgraphs; only 1 is supported")
    for op in model.operators:
        if op.op not in SUPPORTED_OPS:
            raise CodegenError(f"operator {op.op} (op {op.index}) is not supported "
                               f"(supported: {', '.join(SUPPORTED_OPS)})")
