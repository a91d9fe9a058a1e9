"""Data and C for the fast int8 path of the generated packages (mcu/runtime/mg_fast.h).

Everything here is computed once at code generation, from the same operator parameters the
reference kernels get (convert/tflm_params.op_params); used by the mGRADE package writer
(convert/codegen_mgrade.py), below it in the layer order:

* FULLY_CONNECTED weights re-laid in the order the DSP inner loop reads them (groups of 4
  output channels, blocks of 4 inputs, compensated byte pairs) with the input zero point and
  the odd-input offset folded into the bias (`ffc_layout`); refused (None: the package keeps
  the reference kernel) where the exactness conditions do not hold.
* 256-entry tables for every int8 -> int8 function of one input (LOGISTIC, RELU, QUANTIZE,
  LOGISTIC(MINIMUM(x, c))), computed by running TFLite's per-element integer arithmetic
  (convert/tflm_params.py: `logistic`, `requant`, ...; mcu/runtime/mg_quant.c and mg_elem.h
  in C) on all 256 inputs, so exact by construction; tests/test_fast_kernels.py also checks
  the tables against the C reference.
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert import tflm_params as tp
from mgrade_edge.convert.cemit import designated, int_array, struct_decl


# ---------------------------------------------------------------------------------------------
# Scalar (Python int) views of tflm_params' per-element arithmetic (its one home), for the
# table builders below, which loop over the 256 int8 inputs

def ref_mbqm(x: int, m: int, shift: int) -> int:
    return int(tp.mbqm(x, m, shift))


def ref_requant1(p: dict, v: int) -> int:
    return int(tp.requant(p, v))


# ---------------------------------------------------------------------------------------------
# Tables

def logistic_table(p: dict) -> np.ndarray:
    """int8 [256]: LOGISTIC of v = -128..127 (index v + 128)."""
    return np.array([tp.logistic(p, v) for v in range(-128, 128)], np.int8)


def requant_table(p: dict) -> np.ndarray:
    """int8 [256]: RELU / QUANTIZE (mg_requant1_s8) of v = -128..127."""
    return np.array([ref_requant1(p, v) for v in range(-128, 128)], np.int8)


def logistic_min_table(p: dict, c: int) -> np.ndarray:
    """int8 [256]: LOGISTIC(MINIMUM(v, c)) of v = -128..127."""
    return np.array([tp.logistic(p, min(v, c)) for v in range(-128, 128)], np.int8)


# ---------------------------------------------------------------------------------------------
# FULLY_CONNECTED layout

def ffc_layout(w: np.ndarray, bias: np.ndarray | None, p: dict):
    """Re-laid weights (uint32 words) and per-channel (bias, multiplier, shift) rows for
    mg_ffc_* (mcu/runtime/mg_fast.h), or (None, reason) when the fast kernel would not be
    exact: a filter zero point, batches != 1, a weight of -128 in a compensated pair, or a dot
    product whose 256-fold sum could leave int32 or whose requantization input could reach
    2^30. w: int8 [n_out, depth]."""
    n_out, depth = int(p["output_depth"]), int(p["accum_depth"])
    if p["batches"] != 1:
        return None, "batches != 1"
    if p["filter_offset"] != 0:
        return None, "filter zero point != 0"
    w = np.asarray(w, np.int64).reshape(n_out, depth)
    blocks = (depth + 3) // 4
    groups = (n_out + 3) // 4
    wp = np.zeros((groups * 4, blocks * 4), np.int64)
    wp[:n_out, :depth] = w
    lo, hi = wp[:, 0::2], wp[:, 1::2]
    if np.any((hi == -128) & (lo < 0)) or np.any(wp < -128) or np.any(wp > 127):
        return None, "weight -128 next to a negative weight"
    # |sum b x'| with x' in [-128, 127] (even k) and [-255, 0] (odd k), times 256 < 2^31
    dot_bound = np.abs(lo).sum(1) * 128 + np.abs(hi).sum(1) * 255
    if dot_bound.max() * 256 >= (1 << 31):
        return None, f"dot product bound {int(dot_bound.max())} too large"
    b = np.zeros(n_out, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    io = int(p["input_offset"])
    folded = b + io * w.sum(1) + 127 * w[:, 1::2].sum(1)
    if np.any(np.abs(folded) + dot_bound[:n_out] >= (1 << 30)):
        return None, "accumulator bound >= 2^30"
    if np.any(np.abs(folded) >= (1 << 31)):
        return None, "folded bias leaves int32"
    pair = lo + 256 * hi                               # exact halfwords 256 b_hi + b_lo
    half = (pair & 0xFFFF).astype(np.uint32)           # [groups*4, blocks*2]
    words = half[:, 0::2] | (half[:, 1::2] << np.uint32(16))     # [groups*4, blocks]
    words = words.reshape(groups, 4, blocks).transpose(0, 2, 1).reshape(-1)
    mult = list(p["multiplier"]) if p["per_channel"] else [p["multiplier"][0]] * n_out
    shift = list(p["shift"]) if p["per_channel"] else [p["shift"][0]] * n_out
    rows = chan_table(folded, mult, shift, int(p["output_offset"]))
    return (words.astype(np.uint32), rows, blocks, dot_bound[:n_out]), None


def fdot16_w16_layout(w: np.ndarray) -> np.ndarray:
    """int8 weights [n_out, depth] of a 16x8 FC -> the uint32 words of mg_fast.h
    mg_fdot16_w16: rows in groups of 4 (the last padded with zero rows), the first
    4 * (depth // 4) inputs in blocks of 4 (the depth % 4 tail stays with the int8 weights);
    per group, per block, per row two words of int16 halfwords (w0, w2) and (w1, w3), which pair
    with mg_fpack16's input words (u0, u2) and (u1, u3) in one SMLAD each."""
    w = np.asarray(w, np.int64)
    n_out, depth = w.shape
    groups, blocks = (n_out + 3) // 4, depth // 4
    pad = np.zeros((4 * groups, 4 * blocks), np.int64)
    pad[:n_out] = w[:, :4 * blocks]
    q = (pad & 0xFFFF).reshape(groups, 4, blocks, 2, 2)     # [g, row, block, hi/lo pair, parity]
    words = q[:, :, :, 0, :] | (q[:, :, :, 1, :] << 16)      # [g, row, block, parity]
    return words.transpose(0, 2, 1, 3).reshape(-1).astype(np.uint32)


def fdot16_w16_decl(name: str, w: np.ndarray) -> str:
    """C: the `static const uint32_t name[]` of fdot16_w16_layout(w)."""
    return f"static const uint32_t {name}[] = {{{_words(fdot16_w16_layout(w))}}};"


def _words(v) -> str:
    v = [f"0x{int(x):08x}u" for x in np.asarray(v).reshape(-1)] or ["0u"]
    return "\n    " + ",\n    ".join(", ".join(v[k:k + 8]) for k in range(0, len(v), 8)) + "\n"


def ffc_struct(P: str, name: str, p: dict, depth: int, blocks: int, n_out: int, w: str,
               ch: str, rows, linkage: str = "static const") -> str:
    """C: the mg_ffc_params_t `{P}_{name}` (w, ch: C expressions of its weights and rows;
    p: the output zero point and activation range)."""
    return struct_decl("mg_ffc_params_t", f"{P}_{name}", dict(
        depth=depth, blocks=blocks, n_out=n_out, w=w, ch=ch, output_offset=p["output_offset"], act_min=p["act_min"],
        act_max=p["act_max"], right_shifts=right_shifts(rows)), linkage)


def chan_decl(name: str, rows, linkage: str = "static const") -> str:
    """C: the mg_fq_chan_t array `name` of chan_table rows."""
    return f"{linkage} mg_fq_chan_t {name}[{len(rows)}] = {{\n    {chan_rows(rows)}\n}};"


def ffc_decls(P: str, name: str, p: dict, layout, linkage: str = "static const") -> list[str]:
    """C: `{P}_{name}_w` words, `{P}_{name}_ch` rows and the mg_ffc_params_t `{P}_{name}`."""
    words, rows, blocks = layout[:3]
    return [f"{linkage} uint32_t {P}_{name}_w[{max(1, len(words))}] = {{{_words(words)}}};",
            chan_decl(f"{P}_{name}_ch", rows, linkage),
            ffc_struct(P, name, p, p["accum_depth"], blocks, p["output_depth"], f"{P}_{name}_w",
                       f"{P}_{name}_ch", rows, linkage)]


def chan_table(bias, mult, shift, zero_point: int | None = None) -> list[tuple]:
    """mg_fq_chan_t rows (bias, multiplier, shift, rounding) + the kernel mode in a 5th field.
    When every shift is <= -1 (the usual case) the rows hold the right shift e = -shift and
    2^(e-1) for mg_ffc_out1's short rounding (mode 1); with zero_point given and
    (|zp| + 1) 2^e < 2^30 for every channel, the output zero point times 2^e is added to the
    rounding constant as well (mode 2: one add less per output, exact since a multiple of 2^e
    commutes with the floor and |y| < 2^30). Otherwise the TFLite shift and 0 (mode 0)."""
    n = len(bias)
    e = [-int(shift[c]) for c in range(n)]
    if all(v >= 1 for v in e):
        fold = zero_point is not None and all((abs(zero_point) + 1) << v < (1 << 30) for v in e)
        zp = int(zero_point) if fold else 0
        return [(int(bias[c]), int(mult[c]), e[c], (1 << (e[c] - 1)) + (zp << e[c]),
                 2 if fold else 1) for c in range(n)]
    return [(int(bias[c]), int(mult[c]), int(shift[c]), 0, 0) for c in range(n)]


def right_shifts(rows) -> int:
    """The kernel mode of chan_table's rows (mg_ffc_params_t.right_shifts)."""
    return int(rows[0][4]) if rows else 0


def chan_rows(rows) -> str:
    """The mg_fq_chan_t initialisers of chan_table rows, one a line."""
    return ",\n    ".join(designated(dict(bias=r[0], mult=r[1], shift=r[2], rnd=r[3]))
                          for r in rows)


def table_decl(P: str, name: str, table: np.ndarray) -> str:
    vals = [str(int(v)) for v in table]
    body = ",\n    ".join(", ".join(vals[k:k + 16]) for k in range(0, 256, 16))
    return f"static const int8_t {P}_{name}[256] = {{\n    {body}\n}};"


def elementwise_count(p: dict) -> int | None:
    """Element count of a binary op whose broadcast descriptor is a plain elementwise walk
    (both inputs contiguous with the output), else None."""
    bc = p["bc"]
    if bc["ndims"] == 0:
        return int(bc["count"])
    shape = list(bc["shape"])
    contig, s = [], 1
    for d in reversed(shape):
        contig.insert(0, s)
        s *= d
    for k, d in enumerate(shape):
        if d > 1 and (bc["stride1"][k] != contig[k] or bc["stride2"][k] != contig[k]):
            return None
    return int(bc["count"])


def add_ok(p: dict) -> bool:
    """mg_fadd_in's 32-bit product is exact for int8 inputs with 1 <= left_shift <= 20."""
    return 1 <= p["left_shift"] <= 20 and p["input1_shift"] <= 0 and p["input2_shift"] <= 0 \
        and p["output_shift"] <= 0


# ---------------------------------------------------------------------------------------------
# Generic operators of a package

def fc_weights(model, op) -> tuple[np.ndarray, np.ndarray | None]:
    T = model.tensors
    w = T[op.inputs[1]]
    if not w.is_const:
        return None, None
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    bias = T[b].data if b >= 0 and T[b].is_const else None
    if b >= 0 and bias is None:
        return None, None
    return np.asarray(w.data), bias


def dw_chan_rows(filt: np.ndarray, bias, p: dict):
    """chan_table rows of a depthwise conv with int8 taps filt [N, H] and int32 bias [H] (or
    None), its input zero point folded into the bias (bias + input_offset * sum of the taps):
    FC-style requantization of the tap dot; None when |acc| could reach 2^30 (the short
    requantization's bound)."""
    filt = np.asarray(filt, np.int64)
    H = filt.shape[1]
    bias = np.zeros(H, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(H)
    folded = bias + p["input_offset"] * filt.sum(0)
    if np.any(np.abs(folded) + 128 * np.abs(filt).sum(0) >= (1 << 30)):
        return None
    return chan_table(folded, p["multiplier"], p["shift"], int(p["output_offset"]))


def _fast_scale(model, op, p: dict, ptr, P: str, head: str):
    """mg_fscale_s8 for a 1x1 depthwise conv on one frame (the post-norm): one tap per
    channel, dw_chan_rows' requantization; None when the constants are not in the file or
    |acc| could reach 2^30."""
    n, H = op.index, p["out_c"]
    w, bias = fc_weights(model, op)
    if w is None:
        return None
    w = np.asarray(w, np.int64).reshape(1, H)
    rows = dw_chan_rows(w, bias, p)
    if rows is None:
        return None
    decls = [int_array("int8_t", f"{P}_op{n}_sw", w[0]),
             chan_decl(f"{P}_op{n}_sch", rows),
             ffc_struct(P, f"op{n}s", p, 1, 0, H, "NULL", f"{P}_op{n}_sch", rows)]
    body = [head, f"    mg_fscale_s8(&{P}_op{n}s, {P}_op{n}_sw, {ptr(op.inputs[0], True)}, "
                  f"{ptr(op.outputs[0], False)});"]
    return decls, body, (0, 0)


def emit_fast_op(model, op, p: dict, ptr, P: str):
    """(declarations, statements, scratch words) of the fast kernel for one generic operator,
    or None where the reference kernel stays (unsupported op or exactness condition)."""
    T = model.tensors
    n, o = op.index, op.outputs[0]
    head = f"    /* op {n}: {op.op} -> tensor {o} '{T[o].name}' {list(T[o].shape)} (fast) */"
    if op.op == "FULLY_CONNECTED":
        w, bias = fc_weights(model, op)
        if w is None:
            return None
        layout, _ = ffc_layout(w, bias, p)
        if layout is None:
            return None
        decls = ffc_decls(P, f"op{n}f", p, layout)
        body = [head, f"    mg_ffc_s8(&{P}_op{n}f, {ptr(op.inputs[0], True)}, {P}_xq, "
                      f"{P}_acc, {ptr(o, False)});"]
        return decls, body, (2 * layout[2], 4 * ((p["output_depth"] + 3) // 4))
    if op.op in ("ADD", "SUB", "MUL"):
        cnt = elementwise_count(p)
        if cnt is None or (op.op != "MUL" and not add_ok(p)):
            return None
        fn = {"ADD": "mg_fadd_s8", "SUB": "mg_fsub_s8", "MUL": "mg_fmul_s8"}[op.op]
        body = [head, f"    {fn}(&{P}_op{n}, {cnt}, {ptr(op.inputs[0], True)}, "
                      f"{ptr(op.inputs[1], True)}, {ptr(o, False)});"]
        return None, body, (0, 0)      # None: keep the reference parameter struct
    if op.op == "DEPTHWISE_CONV_2D" and (p["batches"], p["in_h"], p["in_w"], p["filt_h"],
                                         p["filt_w"], p["depth_multiplier"]) == (1,) * 6:
        return _fast_scale(model, op, p, ptr, P, head)
    if op.op in ("LOGISTIC", "RELU", "QUANTIZE"):
        tab = logistic_table(p) if op.op == "LOGISTIC" else requant_table(p)
        body = [head, f"    mg_lut_s8({P}_op{n}_lut, {p['size']}, {ptr(op.inputs[0], True)}, "
                      f"{ptr(o, False)});"]
        return [table_decl(P, f"op{n}_lut", tab)], body, (0, 0)
    return None


# ---------------------------------------------------------------------------------------------
# minGRU candidate g(p) = ADD(RELU(FC_r(u)), LOGISTIC(MINIMUM(FC_p(u), c))) as two tables

def ref_add1(p: dict, a: int, b: int) -> int:
    return int(tp.add(p, a, b))


def _fc_out(row, p: dict, d: int) -> int:
    """Reference requantization of dot d for a chan_table row (any mode)."""
    bias, mult = row[0], row[1]
    shift = -row[2] if row[4] else row[2]
    y = ref_mbqm(d + bias, mult, shift) + p["output_offset"]
    return max(p["act_min"], min(p["act_max"], y))


def g_split_tables(cand_rows, cand_p, relu_rows, relu_p, dot_bound, relu_table, sig_p: dict,
                   min_c: int, add_g: dict, p8: dict | None = None, r8: dict | None = None):
    """When the RELU branch and the sigmoid branch of g() read the same dot d (shared
    weights), g is a function of d alone: r(d) = RELU branch, pv(d) = candidate output, both
    monotone in d. Per channel c this finds split[c], the largest d at which r(d) still equals
    its value at the lowest reachable d, and checks that MINIMUM(pv(d), min_c) is constant
    above it. Then, exactly,
        g = g_neg[pv(d)]  for d <= split[c],   g = g_pos[r(d)]  for d > split[c]
    with g_neg[v] = ADD(r_lo, LOGISTIC(MINIMUM(v, min_c))), g_pos[v] = ADD(v, q_hi), where r_lo
    and q_hi must be the same for every channel. With an int16 minGRU input (16x8 FCs with
    int16 outputs), p8 / r8 are the QUANTIZEs to int8 after the candidate / RELU FC (still
    monotone). Returns (split, g_neg, g_pos) or None."""
    H = len(cand_rows)

    def r_of(c, d):
        v = _fc_out(relu_rows[c], relu_p, d)
        if r8 is not None:
            v = ref_requant1(r8, v)
        return int(relu_table[v + 128]) if relu_table is not None else v

    def p_of(c, d):
        v = _fc_out(cand_rows[c], cand_p, d)
        return ref_requant1(p8, v) if p8 is not None else v

    q_table = logistic_min_table(sig_p, min_c)      # v is an int8 FC / QUANTIZE output

    def q_of(v):
        return int(q_table[v + 128]) if -128 <= v <= 127 else tp.logistic(sig_p, min(v, min_c))

    split, r_lo, q_hi = [], set(), set()
    for c in range(H):
        lo, hi = -int(dot_bound[c]), int(dot_bound[c])
        r0 = r_of(c, lo)
        if r_of(c, hi) == r0:
            return None                           # the RELU branch never opens: keep generic
        a, b = lo, hi                             # r(a) == r0, r(b) != r0
        while b - a > 1:
            mid = (a + b) // 2
            if r_of(c, mid) == r0:
                a = mid
            else:
                b = mid
        qa, qb = q_of(p_of(c, a + 1)), q_of(p_of(c, hi))
        if qa != qb:
            return None
        split.append(a)
        r_lo.add(r0)
        q_hi.add(qa)
    if len(r_lo) != 1 or len(q_hi) != 1:
        return None
    r0, q0 = r_lo.pop(), q_hi.pop()
    g_neg = np.array([ref_add1(add_g, r0, q_of(v)) for v in range(-128, 128)], np.int8)
    g_pos = np.array([ref_add1(add_g, v, q0) for v in range(-128, 128)], np.int8)
    return split, g_neg, g_pos
