"""TFLite-Micro's fixed-point arithmetic, re-derived in Python: the one home for it.

Lowest layer of the code generators (see `python -m mgrade_edge.convert.codegen --help`): it knows the
.tflite graph (convert/tflite_reader.py) and TFLite's arithmetic
(tensorflow/lite/kernels/internal/quantization_util.cc, kernel_util.cc and the TFLM kernels'
Calculate*OpData), nothing about C.
* Prepare time, int8 and int16: `quantize_multiplier`, `requant_multiplier`,
  `mul_multiplier`, `addsub_multipliers` (scales in float32 as TFLite holds them).
  `op_params(model, op)` gives one int8 operator's parameters as plain ints and lists (the
  fields of the matching mcu/runtime/mg_kernels.h struct); the generic graph package, the
  mGRADE package and the MicroPython package all use it.
* Per element (the reference the C kernels match bit for bit): `srdhm`, `rdbpot`, `mbqm`,
  `requant`, `add`, `sub`, `mul`, on Python ints or NumPy int64 arrays (results: int64).
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


def as_f32(x) -> np.float32:
    """A scale as TFLite holds it (float32)."""
    return np.float32(x)


def requant_multiplier(s_in, s_out) -> tuple[int, int]:
    """QUANTIZE / requantize int8 <-> int16 (PrepareQuantizeReference): (multiplier, shift) of
    the effective scale s_in / s_out, computed in double from the float32 scales."""
    return quantize_multiplier(float(as_f32(s_in)) / float(as_f32(s_out)))


def mul_multiplier(s1, s2, so) -> tuple[int, int]:
    """MUL, int8 and int16 (CalculateOpDataMul): (output multiplier, shift) of s1 * s2 / so,
    in double from the float32 scales."""
    return quantize_multiplier(float(as_f32(s1)) * float(as_f32(s2)) / float(as_f32(so)))


def addsub_multipliers(s1, s2, so, left_shift: int) -> dict:
    """ADD / SUB (CalculateOpDataAdd/Sub): left_shift 20 for int8, 15 for int16. The real
    multipliers in double for both ops. (sub_common.cc on GitHub computes SUB's in float; the
    tflite-micro wheel the project tests against behaves as double: with float ones 11 of 19.7
    million exhaustive int8 SUB outputs over 300 random scale sets, and 249 of 524,288
    exhaustive int16 tail outputs of a digits model, differed by 1 LSB; with double ones
    none. tests/test_elementwise_tflm.py and tests/test_state16.py check it.)
    Returns the fields left_shift, input{1,2}_multiplier/_shift, output_multiplier/_shift."""
    s1, s2, so = as_f32(s1), as_f32(s2), as_f32(so)
    twice = 2.0 * float(max(s1, s2))
    r1, r2 = float(s1) / twice, float(s2) / twice
    ro = twice / ((1 << left_shift) * float(so))
    m1, sh1 = quantize_multiplier_smaller_than_one_exp(r1)
    m2, sh2 = quantize_multiplier_smaller_than_one_exp(r2)
    mo, sho = quantize_multiplier_smaller_than_one_exp(ro)
    return dict(left_shift=left_shift, input1_multiplier=m1, input1_shift=sh1,
                input2_multiplier=m2, input2_shift=sh2, output_multiplier=mo, output_shift=sho)


def activation_range(act: str, t: Tensor) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 or int16 outputs."""
    qmin, qmax = (-32768, 32767) if t.dtype == np.int16 else (-128, 127)
    s, zp = scale(t), zero_point(t)

    def quant(f):   # zero_point + (int)TfLiteRound(f / scale), float32 division
        return zp + tflite_round(float(as_f32(f) / as_f32(s)))

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
    return as_f32(t.quant.scale[0])


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
            prod = float(as_f32(in_s * as_f32(tw.quant.scale[0])))   # float product, then double
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
        mult = addsub_multipliers(scale(T[a]), scale(T[b2]), scale(T[o]), left_shift=20)
        lo, hi = activation_range(act, T[o])
        return dict(left_shift=20, input1_offset=-zero_point(T[a]),
                    input1_multiplier=mult["input1_multiplier"],
                    input1_shift=mult["input1_shift"], input2_offset=-zero_point(T[b2]),
                    input2_multiplier=mult["input2_multiplier"],
                    input2_shift=mult["input2_shift"], output_offset=zero_point(T[o]),
                    output_multiplier=mult["output_multiplier"], output_shift=mult["output_shift"],
                    act_min=lo, act_max=hi, bc=broadcast_params(model, a, b2, o))
    if name == "MUL":
        a, b2, o = op.inputs[0], op.inputs[1], op.outputs[0]
        _check_int8(model, a, b2, o)
        m, s = mul_multiplier(scale(T[a]), scale(T[b2]), scale(T[o]))
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
        m, s = requant_multiplier(scale(T[i]), scale(T[o]))
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


# ---------------------------------------------------------------------------------------------
# Per-element arithmetic (gemmlowp / TFLite reference_ops, TFLM's default double rounding) on
# Python ints or NumPy int64 arrays; every result is int64. The C kernels (mg_quant.h,
# mg_elem.h, mg_state16.h) compute the same bit for bit.

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul(int32 a, int32 b): round(a * b / 2^31), ties away from
    zero; INT32_MIN * INT32_MIN saturates to INT32_MAX."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    q = np.abs(s) // (1 << 31)                       # division truncating toward zero
    return np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX),
                    np.where(s >= 0, q, -q))


def rdbpot(x, e: int):
    """RoundingDivideByPOT: x / 2^e, ties away from zero (e >= 0)."""
    x = np.asarray(x, np.int64)
    mask = (1 << e) - 1
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > thr)


def mbqm(x, m: int, shift: int):
    """MultiplyByQuantizedMultiplier(int32 x, m, shift): x << shift wrapped to int32 for a
    positive shift, then srdhm and a rounding right shift for a negative one."""
    x = np.asarray(x, np.int64)
    if shift > 0:
        x = ((x << shift) + (1 << 31)) % (1 << 32) - (1 << 31)     # int32 wrap
    return rdbpot(srdhm(x, m), max(0, -shift))


def requant(p: dict, x):
    """QUANTIZE / RELU-style requantization of x with requant fields (input_offset, multiplier,
    shift, output_offset, act_min, act_max): clamp(zp_out + mbqm(x - zp_in))."""
    v = mbqm(np.asarray(x, np.int64) - p["input_offset"], p["multiplier"], p["shift"])
    return np.clip(v + p["output_offset"], p["act_min"], p["act_max"])


def _addsub(p: dict, a, b, sign: int):
    ls = p["left_shift"]
    va = (np.asarray(a, np.int64) + p["input1_offset"]) << ls
    vb = (np.asarray(b, np.int64) + p["input2_offset"]) << ls
    raw = rdbpot(srdhm(va, p["input1_multiplier"]), -p["input1_shift"]) + sign * \
        rdbpot(srdhm(vb, p["input2_multiplier"]), -p["input2_shift"])
    out = rdbpot(srdhm(raw, p["output_multiplier"]), -p["output_shift"]) + p["output_offset"]
    return np.clip(out, p["act_min"], p["act_max"])


def add(p: dict, a, b):
    """ADD, int8 or int16, of op_params / addsub fields (input offsets as op_params gives them:
    minus the zero points)."""
    return _addsub(p, a, b, 1)


def sub(p: dict, a, b):
    """SUB, as `add`."""
    return _addsub(p, a, b, -1)


def mul(p: dict, a, b):
    """MUL, int8 or int16, of op_params fields."""
    v = (np.asarray(a, np.int64) + p["input1_offset"]) * (np.asarray(b, np.int64)
                                                            + p["input2_offset"])
    out = mbqm(v, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(out, p["act_min"], p["act_max"])
