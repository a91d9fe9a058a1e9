"""The int16 minGRU state path (convert/widen.py, gate16=False) for the C runtime: operator
parameters as TFLite-Micro's Prepare computes them, a NumPy reference of the arithmetic, and
the graph matcher the code generator calls.

The widened tail of layer l (every int16 tensor symmetric, zero point 0):

    z16 = QUANTIZE(z8)            int8 -> int16 requantize      (quantize_common.cc)
    g16 = QUANTIZE(g8)            int8 -> int16 requantize
    d16 = SUB(g16, h16)           left_shift 15, double-computed multipliers (see addsub16_params)
    m16 = MUL(z16, d16)           QuantizeMultiplier(s_z s_d / s_m)          (mul_common.cc)
    h16' = ADD(h16, m16)          left_shift 15, double-computed multipliers (add_common.cc)
    h8 = QUANTIZE(h16')           int16 -> int8 requantize (feeds the residual ADD)

TFLM runs int16 ADD/SUB through the general rescaling path (reference_ops::Add with
pot_scale = false -> AddElementwise; reference_ops::Sub -> SubElementwise), the same
arithmetic as int8 with left_shift 15 instead of 20; int16 MUL through MulElementwise
(MultiplyByQuantizedMultiplier of the int32 product); QUANTIZE through Requantize
(MultiplyByQuantizedMultiplier of x - zp_in, plus zp_out, clamped to the output type). With
TFLM's default double rounding. mcu/runtime/mg_state16.h implements the same per element.

The int16 LOGISTIC (widen gate16=True) is not implemented in C: such a graph is refused.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from convert import metadata, names
from convert.cemit import struct_decl
from convert.graph_package import REQUANT_KEYS, add_fields, mul_fields, pick
from convert.mgrade_match import StepGraph
from convert.tflite_reader import read_tflite
from convert.tflm_params import (
    CodegenError, quantize_multiplier, quantize_multiplier_smaller_than_one_exp, scale,
    zero_point)

I16_MIN, I16_MAX = -32768, 32767


def _f32(x) -> np.float32:
    """A scale as TFLite holds it (float32)."""
    return np.float32(x)


# ---------------------------------------------------------------------------------------------
# Prepare-time parameters (plain ints), from scales (float32) and zero points

def requant_params(s_in, zp_in: int, s_out, zp_out: int, out_bits: int, size: int = 0) -> dict:
    """QUANTIZE int8 <-> int16 (PrepareQuantizeReference): effective scale in double."""
    m, s = quantize_multiplier(float(_f32(s_in)) / float(_f32(s_out)))
    lo, hi = (-128, 127) if out_bits == 8 else (I16_MIN, I16_MAX)
    return dict(size=size, input_offset=int(zp_in), output_offset=int(zp_out), multiplier=m,
                shift=s, act_min=lo, act_max=hi)


def addsub16_params(s1, s2, so, sub: bool) -> dict:
    """int16 ADD / SUB (zero points 0, no fused activation): CalculateOpDataAdd/Sub with
    left_shift 15, the real multipliers in double for both. (The sub_common.cc on GitHub
    computes SUB's in float; the tflite-micro wheel the project tests against computes them
    in double: with float ones 249 of 524,288 exhaustive tail outputs of a digits model
    differed by 1 LSB, with double ones none; tests/test_state16.py checks this.)"""
    del sub                   # same arithmetic for both (kept for the call sites' clarity)
    s1, s2, so = _f32(s1), _f32(s2), _f32(so)
    twice = 2.0 * float(max(s1, s2))
    r1, r2 = float(s1) / twice, float(s2) / twice
    ro = twice / ((1 << 15) * float(so))
    m1, sh1 = quantize_multiplier_smaller_than_one_exp(r1)
    m2, sh2 = quantize_multiplier_smaller_than_one_exp(r2)
    mo, sho = quantize_multiplier_smaller_than_one_exp(ro)
    return dict(left_shift=15, input1_offset=0, input1_multiplier=m1, input1_shift=sh1,
                input2_offset=0, input2_multiplier=m2, input2_shift=sh2, output_offset=0,
                output_multiplier=mo, output_shift=sho, act_min=I16_MIN, act_max=I16_MAX)


def mul16_params(s1, s2, so) -> dict:
    """int16 MUL (zero points 0): QuantizeMultiplier(double s1 * s2 / so)."""
    m, s = quantize_multiplier(float(_f32(s1)) * float(_f32(s2)) / float(_f32(so)))
    return dict(input1_offset=0, input2_offset=0, output_offset=0, output_multiplier=m,
                output_shift=s, act_min=I16_MIN, act_max=I16_MAX)


# ---------------------------------------------------------------------------------------------
# NumPy reference (int64 arrays; TFLM double rounding)

def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul (b >= 0 here, so no saturation case)."""
    ab = np.asarray(a, np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    q = np.abs(s) // (1 << 31)                       # division truncating toward zero
    return np.where(s >= 0, q, -q)


def rdbpot(x, e: int):
    """gemmlowp RoundingDivideByPOT: x / 2^e, ties away from zero."""
    x = np.asarray(x, np.int64)
    mask = (1 << e) - 1
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > thr)


def mbqm(x, m: int, shift: int):
    """MultiplyByQuantizedMultiplier(int32 x, m, shift), double rounding."""
    x = np.asarray(x, np.int64)
    if shift > 0:
        x = ((x << shift) + (1 << 31)) % (1 << 32) - (1 << 31)     # int32 wrap
    return rdbpot(srdhm(x, m), max(0, -shift))


def requant(p: dict, x):
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
    return _addsub(p, a, b, 1)


def sub(p: dict, a, b):
    return _addsub(p, a, b, -1)


def mul(p: dict, a, b):
    v = (np.asarray(a, np.int64) + p["input1_offset"]) * (np.asarray(b, np.int64)
                                                            + p["input2_offset"])
    out = mbqm(v, p["output_multiplier"], p["output_shift"]) + p["output_offset"]
    return np.clip(out, p["act_min"], p["act_max"])


def tail(s: dict, z8, g8, h16):
    """The widened state update on int8 z, g and int16 h -> (int16 h', int8 h')."""
    d = sub(s["sub"], requant(s["g16"], g8), h16)
    hn = add(s["add_h"], h16, mul(s["mul"], requant(s["z16"], z8), d))
    return hn.astype(np.int16), requant(s["h8"], hn).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Graph matching (codegen hook)

def is_state16(model, meta: dict, layer: int) -> bool:
    """Whether layer `layer`'s state output is int16 (a widened graph)."""
    outs = meta.get("outputs") or []
    if names.hnew(layer) not in outs:
        return False
    t = model.outputs[outs.index(names.hnew(layer))]
    return model.tensors[t].dtype == np.int16


def _q(T, t):
    return scale(T[t]), zero_point(T[t])


def match_tail(g, layer: int) -> tuple[dict, dict]:
    """The int16 tail of layer `layer` in the real graph (g: mgrade_match.StepGraph).
    Returns (params {z16, g16, sub, mul, add_h, h8}, tensors {z8, g8, h, hnew, h8, d, m,
    ops: [op indices], qz, qg, qh, sub, mul, add_h: ops})."""
    T, where = g.T, f"layer {layer} minGRU (int16 state)"
    h, hnew = g.inp[names.h(layer)], g.out[names.hnew(layer)]
    for t in (h, hnew):
        if T[t].dtype != np.int16 or zero_point(T[t]) != 0:
            raise CodegenError(f"{where}: tensor {t} ({T[t].name}) is {T[t].type_name} with "
                               f"zero point {zero_point(T[t])}; an int16 state needs h and hnew "
                               "int16 with zero point 0 (convert --state-bits 16)")
    if not g.same_quant(h, hnew):
        raise CodegenError(f"{where}: h{layer} and hnew{layer} have different quantization")
    add_h = g.prod(hnew, "ADD", names.hnew(layer), where)
    if h not in add_h.inputs:
        raise CodegenError(f"{where}: the last ADD does not read h{layer}")
    k_h = add_h.inputs.index(h)
    mul = g.prod(add_h.inputs[1 - k_h], "MUL", "z * (g - h)", where)
    kinds = [g.producer[t].op if t in g.producer else None for t in mul.inputs]
    if any(k == "LOGISTIC" and T[t].dtype == np.int16 for k, t in zip(kinds, mul.inputs)):
        raise CodegenError(f"{where}: the gate LOGISTIC is int16 (convert/widen.py "
                           "gate16=True), which the C runtime does not implement; widen with "
                           "gate16=False")
    if sorted(map(str, kinds)) != ["QUANTIZE", "SUB"]:
        raise CodegenError(f"{where}: expected MUL(QUANTIZE(z), SUB), got MUL{tuple(kinds)}")
    k_z = kinds.index("QUANTIZE")
    qz = g.producer[mul.inputs[k_z]]
    sub_op = g.producer[mul.inputs[1 - k_z]]
    if sub_op.inputs[1] != h:
        raise CodegenError(f"{where}: expected SUB(g16, h{layer})")
    qg = g.prod(sub_op.inputs[0], "QUANTIZE", "g16", where)
    g.prod(qz.inputs[0], "LOGISTIC", "the gate z", where)
    users = g.consumers.get(hnew, [])
    if len(users) != 1 or users[0].op != "QUANTIZE":
        raise CodegenError(f"{where}: hnew{layer} must feed one QUANTIZE to int8")
    qh = users[0]
    z8, g8, z16, g16, d, m, h8 = (qz.inputs[0], qg.inputs[0], qz.outputs[0], qg.outputs[0],
                                  sub_op.outputs[0], mul.outputs[0], qh.outputs[0])
    for t, want in ((z8, np.int8), (g8, np.int8), (h8, np.int8), (z16, np.int16),
                    (g16, np.int16), (d, np.int16), (m, np.int16)):
        if T[t].dtype != want:
            raise CodegenError(f"{where}: tensor {t} ({T[t].name}) is {T[t].type_name}")
    for t in (z16, g16, d, m):
        if zero_point(T[t]) != 0:
            raise CodegenError(f"{where}: int16 tensor {t} has a nonzero zero point")
    for op in (sub_op, mul, add_h):
        if op.options.get("fused_activation_function", "NONE") not in (None, "NONE"):
            raise CodegenError(f"{where}: {op.op} (op {op.index}) has a fused activation")
        if any(T[t].size != T[h].size for t in op.inputs + op.outputs):
            raise CodegenError(f"{where}: {op.op} (op {op.index}) broadcasts")
    for t, allowed in ((z16, {mul.index}), (g16, {sub_op.index}), (d, {mul.index}),
                       (m, {add_h.index}), (z8, {qz.index}), (g8, {qg.index})):
        g.only_consumers(t, allowed, where, f"tensor {t}")
    g.only_consumers(h, {sub_op.index, add_h.index}, where, f"h{layer}")
    s_z8, zp_z8 = _q(T, z8)
    s_g8, zp_g8 = _q(T, g8)
    s_h, s_h8 = scale(T[h]), scale(T[h8])
    params = dict(
        z16=requant_params(s_z8, zp_z8, scale(T[z16]), 0, 16, T[h].size),
        g16=requant_params(s_g8, zp_g8, scale(T[g16]), 0, 16, T[h].size),
        sub=addsub16_params(scale(T[g16]), s_h, scale(T[d]), sub=True),
        mul=mul16_params(scale(T[z16]), scale(T[d]), scale(T[m])),
        add_h=addsub16_params(s_h, scale(T[m]), scale(T[hnew]), sub=False),
        h8=requant_params(s_h, 0, s_h8, zero_point(T[h8]), 8, T[h].size))
    if k_h == 1:        # ADD(m, h): swap so that input1 is h
        p = dict(params["add_h"])
        for k in ("offset", "multiplier", "shift"):
            p[f"input1_{k}"], p[f"input2_{k}"] = p[f"input2_{k}"], p[f"input1_{k}"]
        params["add_h"] = p
    # MUL is symmetric in its inputs with zero points 0 and a product multiplier
    tensors = dict(z8=z8, g8=g8, z16=z16, g16=g16, h=h, hnew=hnew, h8=h8, d=d, m=m,
                   qz=qz, qg=qg, qh=qh, sub=sub_op, mul=mul, add_h=add_h,
                   ops=[qz.index, qg.index, qh.index])
    return params, tensors


def int8_view(model, meta: dict, g) -> tuple[object, dict]:
    """The model with each int16 tail collapsed to the int8 graph shape the minGRU matcher
    knows (MUL(z8, SUB(g8, h)), ADD(h, .) -> hnew): the three QUANTIZE ops removed, the
    residual users of h8 reading hnew, and h, hnew, d, m retyped int8 in the view, h and hnew
    with h8's quantization (so the residual's parameters stay right; the view's SUB, MUL and
    ADD parameters are not used). Returns (view model, {layer: (params, tensors)})."""
    tails = {}
    for i, lm in enumerate(meta.get("layers") or []):
        if lm.get("rnn") and is_state16(model, meta, i):
            tails[i] = match_tail(g, i)
    if not tails:
        return model, {}
    T = list(model.tensors)
    drop, remap_in = set(), {}
    for params, t in tails.values():
        for k in ("h", "hnew", "d", "m"):
            T[t[k]] = dataclasses.replace(T[t[k]], dtype=np.dtype(np.int8), type_name="INT8")
        for k in ("h", "hnew"):     # the residual now reads hnew: give it h8's quantization
            T[t[k]] = dataclasses.replace(T[t[k]], quant=T[t["h8"]].quant)
        drop |= set(t["ops"])
        remap_in[t["z16"]] = t["z8"]
        remap_in[t["g16"]] = t["g8"]
        remap_in[t["h8"]] = t["hnew"]
    ops = [dataclasses.replace(op, inputs=[remap_in.get(i, i) for i in op.inputs])
           for op in model.operators if op.index not in drop]
    outs = [remap_in.get(o, o) for o in model.outputs]
    return dataclasses.replace(model, tensors=T, operators=ops, outputs=outs), tails


# ---------------------------------------------------------------------------------------------
# C emission (codegen hook)

def emit_params(P: str, L: int, params: dict) -> list[str]:
    """The const parameter structs of layer L's int16 tail, ending in
    `mg_state16_params_t {P}_l{L}_s16` (mcu/runtime/mg_state16.h)."""
    n = f"{P}_l{L}_s16"
    return [f"/* layer {L}: int16 state tail (convert/state16.py) */",
            struct_decl("mg_requant_params_t", f"{n}_z16", pick(params["z16"], REQUANT_KEYS)),
            struct_decl("mg_requant_params_t", f"{n}_g16", pick(params["g16"], REQUANT_KEYS)),
            struct_decl("mg_add_params_t", f"{n}_sub", add_fields(params["sub"])),
            struct_decl("mg_mul_params_t", f"{n}_mul", mul_fields(params["mul"])),
            struct_decl("mg_add_params_t", f"{n}_add_h", add_fields(params["add_h"])),
            struct_decl("mg_requant_params_t", f"{n}_h8", pick(params["h8"], REQUANT_KEYS)),
            struct_decl("mg_state16_params_t", n, {
                k: f"&{n}_{k}" for k in ("z16", "g16", "sub", "mul", "add_h", "h8")})]


def debug16_lines(P: str, layers: list[int], s16: dict) -> list[str]:
    """<P>_model_debug_state16(m, layer): instance m's int16 state array of minGRU layer
    `layer`, NULL for an int8 state."""
    c = [f"const int16_t *{P}_model_debug_state16(const {P}_model_t *m, int layer)", "{",
         "    (void)m;", "    switch (layer) {"]
    c += [f"    case {L}: return m->h16_{L};" for L in layers if L in s16]
    c += ["    default: (void)layer; return NULL;", "    }", "}", ""]
    return c


def debug_int8(model_bytes: bytes) -> dict:
    """{hnew<l>: int16 state -> its int8 copy h8 (the tail's last QUANTIZE)} for the widened
    layers of a step model: what the package's mg_model_debug_state(k) exposes."""
    m = read_tflite(model_bytes)
    meta = metadata.from_model(m)
    if meta is None:
        return {}
    _, tails = int8_view(m, meta, StepGraph(m, meta))
    return {names.hnew(L): (lambda v, p=p["h8"]: requant(p, v).astype(np.int8))
            for L, (p, _) in tails.items()}
