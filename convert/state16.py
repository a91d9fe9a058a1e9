"""The int16 minGRU state path (convert/widen.py) for the C runtime: the graph matcher the
step program calls, the tail's parameters (TFLite-Micro's Prepare-time math for each op, from
convert/tflm_params.py: requant_params, addsub16_params, mul16_params, logistic16_params), a
NumPy reference of the whole tail composed of tflm_params' per-element functions, and the C.

The widened tail of layer l (every int16 tensor symmetric, zero point 0), with the gate z
either int8 (widen gate16=False: z8 = LOGISTIC(z_pre8) on its 1/256 grid, then requantized)

    z16 = QUANTIZE(z8)            int8 -> int16 requantize      (quantize_common.cc)

or int16 (widen gate16=True: z on a 1/32768 grid, so slow gates keep their small values)

    zp16 = QUANTIZE(z_pre8)       int8 -> int16 requantize
    z16 = LOGISTIC(zp16)          TFLM's int16 LOGISTIC: the input rescaled to units of
                                  1/(3 * 4096), a 256-entry sigmoid(i / 24) table in unsigned
                                  0.16, linear interpolation on the 9 fraction bits
                                  (logistic_common.cc, reference_integer_ops::Logistic)

then, both variants:

    g16 = QUANTIZE(g8)            int8 -> int16 requantize
    d16 = SUB(g16, h16)           left_shift 15, double-computed multipliers (addsub16_params)
    m16 = MUL(z16, d16)           QuantizeMultiplier(s_z s_d / s_m)          (mul_common.cc)
    h16' = ADD(h16, m16)          left_shift 15, double-computed multipliers (add_common.cc)
    h8 = QUANTIZE(h16')           int16 -> int8 requantize (feeds the residual ADD)

TFLM runs int16 ADD/SUB through the general rescaling path (reference_ops::Add with
pot_scale = false -> AddElementwise; reference_ops::Sub -> SubElementwise), the same
arithmetic as int8 with left_shift 15 instead of 20; int16 MUL through MulElementwise
(MultiplyByQuantizedMultiplier of the int32 product); QUANTIZE through Requantize
(MultiplyByQuantizedMultiplier of x - zp_in, plus zp_out, clamped to the output type). With
TFLM's default double rounding. mcu/runtime/mg_state16.h implements the same per element;
the fast path reads z16 from a 256-entry table of z_in computed here (`z16_table`).
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.cemit import int_array, struct_decl
from mgrade_edge.convert.graph_package import REQUANT_KEYS, add_fields, mul_fields, pick
from mgrade_edge.convert.mgrade_match import swap_add
from mgrade_edge.convert.tflm_params import (
    CodegenError, add, addsub16_params, checked_log2, logistic16, logistic16_params, mul,
    mul16_params, requant, requant_params, scale, sub, zero_point)


# ---------------------------------------------------------------------------------------------
# NumPy reference of the tail (int64 arrays; TFLM double rounding), composed of tflm_params'
# per-element functions (requant, add, sub, mul, logistic16: one home for TFLite's fixed-point
# arithmetic)

def gate16(s: dict, z_in):
    """The tail's int16 gate z of its int8 input z_in: QUANTIZE(z8) when the graph's gate is
    int8, LOGISTIC16(QUANTIZE(z_pre8)) when it is int16 (s has "sig16")."""
    if "sig16" in s:
        return logistic16(s["sig16"], requant(s["zq16"], z_in))
    return requant(s["z16"], z_in)


def z16_table(s: dict, z8_of_pre=None) -> np.ndarray:
    """int16 [256]: the tail's z16 for z_pre = -128..127 (index z_pre + 128), the fast path's
    table. With an int8 gate the int8 LOGISTIC comes first: z8_of_pre [256] is its table
    (codegen_fast.logistic_table of the gate's LOGISTIC)."""
    if "sig16" in s:
        return gate16(s, np.arange(-128, 128)).astype(np.int16)
    if z8_of_pre is None:
        raise ValueError("an int8 gate needs the LOGISTIC table z8_of_pre")
    return gate16(s, np.asarray(z8_of_pre, np.int64)).astype(np.int16)


def tail(s: dict, z_in, g8, h16):
    """The widened state update on int8 z_in (z8, or z_pre8 with an int16 gate), int8 g and
    int16 h -> (int16 h', int8 h')."""
    d = sub(s["sub"], requant(s["g16"], g8), h16)
    hn = add(s["add_h"], h16, mul(s["mul"], gate16(s, z_in), d))
    return hn.astype(np.int16), requant(s["h8"], hn).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# Graph matching (codegen hook)

def _q(T, t):
    return scale(T[t]), zero_point(T[t])


def _state_tensors(graph, layer: int, where: str) -> tuple[int, int]:
    """(h, hnew): layer `layer`'s int16 state input and output, checked to be int16 with zero
    point 0 and to share one quantization (the state stays tied)."""
    tensors = graph.tensors
    state, new_state = graph.inp[names.h(layer)], graph.out[names.hnew(layer)]
    for tensor in (state, new_state):
        if tensors[tensor].dtype != np.int16 or zero_point(tensors[tensor]) != 0:
            raise CodegenError(f"{where}: tensor {tensor} ({tensors[tensor].name}) is "
                               f"{tensors[tensor].type_name} with zero point "
                               f"{zero_point(tensors[tensor])}; an int16 state needs h and "
                               "hnew int16 with zero point 0 (convert --state-bits 16)")
    if not graph.same_quant(state, new_state):
        raise CodegenError(f"{where}: h{layer} and hnew{layer} have different quantization")
    return state, new_state


def _update_ops(graph, layer: int, state: int, new_state: int, where: str) -> dict:
    """The update hnew = ADD(h, MUL(z16, SUB(QUANTIZE(g8), h))) read back from hnew:
    {add_h, h_input (0 or 1: which ADD input is h), mul, sub, qg (the g8 -> g16 QUANTIZE),
    z16 (the MUL's gate input), gate_int16 (z16 is an int16 LOGISTIC's output, not a
    QUANTIZE of the int8 one)}; state, new_state: the tensors h and hnew."""
    add_h = graph.prod(new_state, "ADD", names.hnew(layer), where)
    if state not in add_h.inputs:
        raise CodegenError(f"{where}: the last ADD does not read h{layer}")
    h_input = add_h.inputs.index(state)
    mul_op = graph.prod(add_h.inputs[1 - h_input], "MUL", "z * (g - h)", where)
    kinds = [graph.producer[tensor].op if tensor in graph.producer else None
             for tensor in mul_op.inputs]
    if sorted(map(str, kinds)) == ["QUANTIZE", "SUB"]:
        gate_int16 = False                  # z16 = QUANTIZE(LOGISTIC(z_pre8))
    elif sorted(map(str, kinds)) == ["LOGISTIC", "SUB"]:
        gate_int16 = True                   # z16 = LOGISTIC(QUANTIZE(z_pre8)), int16 LOGISTIC
    else:
        raise CodegenError(f"{where}: expected MUL(QUANTIZE(z) or int16 LOGISTIC, SUB), got "
                           f"MUL{tuple(kinds)}")
    z_input = kinds.index("LOGISTIC" if gate_int16 else "QUANTIZE")
    z16 = mul_op.inputs[z_input]
    sub_op = graph.producer[mul_op.inputs[1 - z_input]]
    if sub_op.inputs[1] != state:
        raise CodegenError(f"{where}: expected SUB(g16, h{layer})")
    qg = graph.prod(sub_op.inputs[0], "QUANTIZE", "g16", where)
    return dict(add_h=add_h, h_input=h_input, mul=mul_op, sub=sub_op, qg=qg, z16=z16,
                gate_int16=gate_int16)


def _gate_ops(graph, z16: int, gate_int16: bool, where: str) -> dict:
    """The ops that make the tail's gate z16: {z_ops (the ops z_in -> z16, in order), z_in
    (the gate's input tensor: z8, z_pre8, or z_pre16 of a 16x8 gate FC), z_reader (the op
    reading z_in), zp16 (the int16 LOGISTIC's input; None with an int8 gate), mid ({zp16:
    {the LOGISTIC's index}}: the inner tensor and its only reader), gate_fc16 (the gate FC is
    16x8 itself, convert/input16.py)}."""
    tensors = graph.tensors
    if not gate_int16:
        qz = graph.producer[z16]
        graph.prod(qz.inputs[0], "LOGISTIC", "the gate z", where)
        return dict(z_ops=[qz], z_in=qz.inputs[0], z_reader=qz, zp16=None, mid={},
                    gate_fc16=False)
    logistic = graph.producer[z16]
    zp16 = logistic.inputs[0]
    qz = graph.prod(zp16, ("QUANTIZE", "FULLY_CONNECTED"), "z_pre16", where)
    gate_fc16 = qz.op == "FULLY_CONNECTED"      # a 16x8 gate FC (convert/input16.py)
    if not gate_fc16:
        graph.prod(qz.inputs[0], "FULLY_CONNECTED", "the gate pre-activation", where)
    if tensors[zp16].dtype != np.int16 or zero_point(tensors[zp16]) != 0:
        raise CodegenError(f"{where}: the int16 LOGISTIC's input must be int16 with zero "
                           "point 0")
    pot, log2_scale = checked_log2(scale(tensors[z16]))
    if not (pot and log2_scale == -15):
        raise CodegenError(f"{where}: the int16 LOGISTIC's output scale is "
                           f"{float(scale(tensors[z16])):g}; TFLite needs 2^-15")
    return dict(z_ops=[qz, logistic], z_in=zp16 if gate_fc16 else qz.inputs[0],
                z_reader=logistic if gate_fc16 else qz, zp16=zp16,
                mid={zp16: {logistic.index}}, gate_fc16=gate_fc16)


def _state_to_int8(graph, layer: int, new_state: int, gate_fc16: bool, where: str):
    """The one QUANTIZE hnew16 -> h8 (new_state: hnew; with a 16x8 gate FC hnew also feeds
    the int16 residual ADD(u16, .), nothing else)."""
    readers = graph.consumers.get(new_state, [])
    quantizes = [op for op in readers if op.op == "QUANTIZE"]
    if len(quantizes) != 1 or len(readers) != 1 + int(gate_fc16):
        raise CodegenError(f"{where}: hnew{layer} must feed one QUANTIZE to int8")
    return quantizes[0]


def _check_tail(graph, layer: int, tail: dict, where: str):
    """Every tensor of a matched tail (match_tail's tensors dict, plus z_reader and mid from
    _gate_ops) has the type the C kernel assumes, the int16 ones zero point 0; SUB, MUL and
    ADD are elementwise without a fused activation; each inner tensor has only its reader."""
    tensors, state = graph.tensors, tail["h"]
    z_in_type = np.int16 if tail["gate_fc16"] else np.int8
    for tensor, want in ((tail["z_in"], z_in_type), (tail["g8"], np.int8), (tail["h8"], np.int8),
                    (tail["z16"], np.int16), (tail["g16"], np.int16), (tail["d"], np.int16),
                    (tail["m"], np.int16)):
        if tensors[tensor].dtype != want:
            raise CodegenError(f"{where}: tensor {tensor} ({tensors[tensor].name}) is "
                               f"{tensors[tensor].type_name}")
    for tensor in (tail["z16"], tail["g16"], tail["d"], tail["m"]):
        if zero_point(tensors[tensor]) != 0:
            raise CodegenError(f"{where}: int16 tensor {tensor} has a nonzero zero point")
    for op in (tail["sub"], tail["mul"], tail["add_h"]):
        if op.options.get("fused_activation_function", "NONE") not in (None, "NONE"):
            raise CodegenError(f"{where}: {op.op} (op {op.index}) has a fused activation")
        if any(tensors[tensor].size != tensors[state].size
               for tensor in op.inputs + op.outputs):
            raise CodegenError(f"{where}: {op.op} (op {op.index}) broadcasts")
    for tensor, allowed in ((tail["z16"], {tail["mul"].index}),
                            (tail["g16"], {tail["sub"].index}),
                            (tail["d"], {tail["mul"].index}), (tail["m"], {tail["add_h"].index}),
                            (tail["z_in"], {tail["z_reader"].index}),
                            (tail["g8"], {tail["qg"].index}), *tail["mid"].items()):
        graph.only_consumers(tensor, allowed, where, f"tensor {tensor}")
    graph.only_consumers(state, {tail["sub"].index, tail["add_h"].index}, where, f"h{layer}")


def _tail_params(tensors, tail: dict) -> dict:
    """The tail's Prepare-time parameters from its tensors' scales and zero points (match_tail
    lists the keys); add_h with input1 = h whichever ADD input h is."""
    size = tensors[tail["h"]].size
    s_z, zp_z = _q(tensors, tail["z_in"])
    s_g8, zp_g8 = _q(tensors, tail["g8"])
    s_h, s_h8 = scale(tensors[tail["h"]]), scale(tensors[tail["h8"]])
    s_z16, s_g16, s_d, s_m = (scale(tensors[tail[k]]) for k in ("z16", "g16", "d", "m"))
    if tail["gate_fc16"]:
        gate = dict(zq16=None, sig16=logistic16_params(scale(tensors[tail["zp16"]])))
    elif tail["gate_int16"]:
        s_zp16 = scale(tensors[tail["zp16"]])
        gate = dict(zq16=requant_params(s_z, zp_z, s_zp16, 0, 16, size),
                    sig16=logistic16_params(s_zp16))
    else:
        gate = dict(z16=requant_params(s_z, zp_z, s_z16, 0, 16, size))
    params = dict(
        **gate,
        g16=requant_params(s_g8, zp_g8, s_g16, 0, 16, size),
        sub=addsub16_params(s_g16, s_h, s_d, sub=True),
        mul=mul16_params(s_z16, s_d, s_m),
        add_h=addsub16_params(s_h, s_m, scale(tensors[tail["hnew"]]), sub=False),
        h8=requant_params(s_h, 0, s_h8, zero_point(tensors[tail["h8"]]), 8, size))
    if tail["h_input"] == 1:        # ADD(m, h): swap so that input1 is h
        params["add_h"] = swap_add(params["add_h"])
    # MUL is symmetric in its inputs with zero points 0 and a product multiplier
    return params


def match_tail(graph, layer: int) -> tuple[dict, dict]:
    """The int16 tail of layer `layer` in the real graph (graph: mgrade_match.StepGraph).
    Returns (params {z16 (int8 gate) or zq16 + sig16 (int16 gate), g16, sub, mul, add_h, h8},
    tensors {z_in (z8 or z_pre8), g8, z16, g16, h, hnew, h8, d, m; z_ops: the ops z_in -> z16;
    qg, qh, sub, mul, add_h: ops; gate_int16, gate_fc16: the gate's form})."""
    where = f"layer {layer} minGRU (int16 state)"
    state, new_state = _state_tensors(graph, layer, where)
    update = _update_ops(graph, layer, state, new_state, where)
    gate = _gate_ops(graph, update["z16"], update["gate_int16"], where)
    qh = _state_to_int8(graph, layer, new_state, gate["gate_fc16"], where)
    qg, sub_op, mul_op = update["qg"], update["sub"], update["mul"]
    tensors = dict(z_in=gate["z_in"], g8=qg.inputs[0], z16=update["z16"], g16=qg.outputs[0],
                   h=state, hnew=new_state, h8=qh.outputs[0], d=sub_op.outputs[0],
                   m=mul_op.outputs[0], z_ops=gate["z_ops"], qg=qg, qh=qh, sub=sub_op,
                   mul=mul_op, add_h=update["add_h"], gate_int16=update["gate_int16"],
                   gate_fc16=gate["gate_fc16"])
    matched = {**tensors, "z_reader": gate["z_reader"], "mid": gate["mid"],
               "zp16": gate["zp16"], "h_input": update["h_input"]}
    _check_tail(graph, layer, matched, where)
    return _tail_params(graph.tensors, matched), tensors


# ---------------------------------------------------------------------------------------------
# C emission (codegen hook)

def emit_params(P: str, L: int, params: dict, z8_of_pre=None) -> list[str]:
    """The const parameter structs of layer L's int16 tail, ending in
    `mg_state16_params_t {P}_l{L}_s16` (mcu/runtime/mg_state16.h), and its z16 table for the
    fast path (z16_table; z8_of_pre: the int8 gate's LOGISTIC table, unused with an int16
    gate), compiled only with MG_FAST."""
    n = f"{P}_l{L}_s16"
    int16_gate = "sig16" in params
    fc16 = int16_gate and params["zq16"] is None      # the gate FC is 16x8: no int8 z_pre
    lut = None if fc16 else z16_table(params, z8_of_pre)
    lines = [f"/* layer {L}: int16 state tail, {'int16' if int16_gate else 'int8'} gate "
             "(convert/state16.py) */"]
    if fc16:
        lines.append(struct_decl("mg_logistic16_params_t", f"{n}_sig16", params["sig16"]))
        gate = dict(z16="NULL", zq16="NULL", sig16=f"&{n}_sig16")
    elif int16_gate:
        lines += [struct_decl("mg_requant_params_t", f"{n}_zq16", pick(params["zq16"],
                                                                      REQUANT_KEYS)),
                  struct_decl("mg_logistic16_params_t", f"{n}_sig16", params["sig16"])]
        gate = dict(z16="NULL", zq16=f"&{n}_zq16", sig16=f"&{n}_sig16")
    else:
        lines.append(struct_decl("mg_requant_params_t", f"{n}_z16", pick(params["z16"],
                                                                        REQUANT_KEYS)))
        gate = dict(z16=f"&{n}_z16", zq16="NULL", sig16="NULL")
    lines += (["#if MG_FAST", int_array("int16_t", f"{n}_z16_lut", lut), "#else",
               f"#define {n}_z16_lut NULL", "#endif"] if lut is not None
              else [f"#define {n}_z16_lut NULL"])
    lines += [struct_decl("mg_requant_params_t", f"{n}_g16", pick(params["g16"], REQUANT_KEYS)),
              struct_decl("mg_add_params_t", f"{n}_sub", add_fields(params["sub"])),
              struct_decl("mg_mul_params_t", f"{n}_mul", mul_fields(params["mul"])),
              struct_decl("mg_add_params_t", f"{n}_add_h", add_fields(params["add_h"])),
              struct_decl("mg_requant_params_t", f"{n}_h8", pick(params["h8"], REQUANT_KEYS)),
              struct_decl("mg_state16_params_t", n, {
                  **gate, "z16_lut": f"{n}_z16_lut",
                  **{k: f"&{n}_{k}" for k in ("g16", "sub", "mul", "add_h", "h8")}})]
    return lines


def debug16_lines(P: str, layers: list[int], state16_layers: set[int]) -> list[str]:
    """<P>_model_debug_state16(m, layer): instance m's int16 state array of minGRU layer
    `layer` (those in state16_layers), NULL for an int8 state."""
    c = [f"const int16_t *{P}_model_debug_state16(const {P}_model_t *m, int layer)", "{",
         "    (void)m;", "    switch (layer) {"]
    c += [f"    case {L}: return m->h16_{L};" for L in layers if L in state16_layers]
    c += ["    default: (void)layer; return NULL;", "    }", "}", ""]
    return c
