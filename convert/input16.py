"""The int16 minGRU input (convert/widen.py widen_input, `convert --input-bits 16`) for the C
runtime: the graph matcher, the operator parameters as TFLite-Micro's Prepare computes them,
and the C declarations.

The widened front of layer l (every int16 tensor symmetric, zero point 0):

    f16 = QUANTIZE(frame8);  c16 = QUANTIZE(conv8);  u16 = ADD(f16, c16)
    z_pre16 = FC(u16)                  16x8, int32 bias: TFLM accumulates in int32 as for int8
    p16 = FC(u16);  p8 = QUANTIZE(p16)
    r16 = FC(u16) + RELU;  r8 = QUANTIZE(r16)          (where the graph has that FC)
    v16 = ADD(u16, h16');  v8 = QUANTIZE(v16)          the layer's residual output

and in the conv16 form (widen_conv) c16 comes from the delay conv itself,

    taps16 = QUANTIZE(taps8);  c16' = DEPTHWISE_CONV_2D(taps16);  c16 = RESHAPE(c16')

(match_front's params["dw16"]; the package runs `mg_delay_step_s16` into the static scratch
`<P>_c16` and `mg_input16_front_c16`, mcu/runtime/mg_ops16.h).

The step program (convert/program.py) takes the whole front into the layer's MinGRUStep
(Front16); the package computes u16 with `mg_input16_front` right after the layer's delay step
and runs `mg_mingru_step_u16` (mcu/runtime/mg_mingru.h), which also writes v8.
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert.cemit import struct_decl
from mgrade_edge.convert.graph_package import REQUANT_KEYS, add_fields, fc_struct_lines, pick
from mgrade_edge.convert.mgrade_match import swap_add
from mgrade_edge.convert.tflm_params import (
    CodegenError, activation_range, addsub16_params, channel_multipliers, op_params,
    requant_params, scale, zero_point)


def match_front(step_graph, layer: int, gate_fc, hnew: int) -> tuple[dict, dict]:
    """The int16 front of layer `layer` (step_graph: mgrade_match.StepGraph; gate_fc: the 16x8
    gate FC the tail matcher found; hnew: the int16 state output). Returns (params {frame16,
    conv16, add_u, gate, cand, relu_fc?, p8, r8?, add_v?, v8?}, tensors {frame, conv, u16,
    add_u, fcs {role: op}, out8 {FC op index: its int8 output in the view}, add_v, v8, drop: op
    indices}). "frame" is the int16 ADD's input1 source and "conv" its input2 source (the frame
    and the conv output in the graph's order); add_v (None where the residual is int8) is
    ADD(u16, h16') with input1 = u16 in its params."""
    where = f"layer {layer} minGRU (int16 input)"
    u16 = gate_fc.inputs[0]
    add_u, frame, conv, conv16, drop = _match_front_sum(step_graph, u16, where)
    fcs, out8, add_v, quantize_ops = _match_u16_readers(step_graph, layer, gate_fc, hnew, where)
    drop += [op.index for op in quantize_ops]
    tensors = dict(frame=frame, conv=conv, u16=u16, add_u=add_u, fcs=fcs, out8=out8,
                   add_v=add_v, v8=quantize_ops[-1].outputs[0], drop=drop,
                   conv16=conv16 and conv16[1])
    _check_front_tensors(step_graph.tensors, where, tensors)
    params = _front_params(step_graph, where, hnew, tensors)
    if conv16:
        params["dw16"] = conv16[0]
        drop.append(conv16[1]["q_taps"].index)
    return params, tensors


def _match_front_sum(step_graph, u16: int, where: str) -> tuple:
    """The front's sum u16 = ADD(QUANTIZE(frame8), conv16) where conv16 is QUANTIZE(conv8)
    (input16) or the widened conv chain (_match_conv16). Returns (the ADD op, frame tensor,
    conv tensor (the ADD's input2 where the conv is widened, else conv8), _match_conv16's
    result or None, [the QUANTIZE op indices the package drops])."""
    add_u = step_graph.prod(u16, "ADD", "u16 = ADD(QUANTIZE(frame), QUANTIZE(conv))", where)
    quantize_frame = step_graph.prod(add_u.inputs[0], "QUANTIZE", "QUANTIZE(int8 -> int16)",
                                     where)
    conv16 = _match_conv16(step_graph, add_u.inputs[1], where)
    if conv16:
        return add_u, quantize_frame.inputs[0], add_u.inputs[1], conv16, [quantize_frame.index]
    quantize_conv = step_graph.prod(add_u.inputs[1], "QUANTIZE", "QUANTIZE(int8 -> int16)",
                                    where)
    return (add_u, quantize_frame.inputs[0], quantize_conv.inputs[0], None,
            [quantize_frame.index, quantize_conv.index])


def _match_u16_readers(step_graph, layer: int, gate_fc, hnew: int, where: str) -> tuple:
    """The ops reading u16 besides the gate FC: the candidate (and relu) FCs, each feeding one
    QUANTIZE to int8, and the residual ADD(u16, hnew) feeding one QUANTIZE to int8. Returns
    (fcs {role: FC op}, out8 {FC op index: its int8 output}, the residual ADD, [the QUANTIZE
    ops after the candidate FCs, then the residual's])."""
    u16 = gate_fc.inputs[0]
    fcs, out8, quantize_ops, add_v = {"gate": gate_fc}, {}, [], None
    for op in step_graph.consumers.get(u16, []):
        if op is gate_fc:
            continue
        if op.op == "ADD" and add_v is None and hnew in op.inputs:
            add_v = op
            continue
        if op.op != "FULLY_CONNECTED":
            raise CodegenError(f"{where}: u16 feeds {op.op} (op {op.index}); only the gate and "
                               "candidate FULLY_CONNECTED and the residual ADD may read it")
        act = op.options.get("fused_activation_function", "NONE")
        role = "relu_fc" if act == "RELU" else "cand"
        if role in fcs:
            raise CodegenError(f"{where}: two candidate FCs with activation {act}")
        users = step_graph.consumers.get(op.outputs[0], [])
        if len(users) != 1 or users[0].op != "QUANTIZE":
            raise CodegenError(f"{where}: the candidate FC (op {op.index}) must feed one "
                               "QUANTIZE to int8")
        fcs[role], out8[op.index] = op, users[0].outputs[0]
        quantize_ops.append(users[0])
    if "cand" not in fcs:
        raise CodegenError(f"{where}: no candidate FC reads u16")
    if add_v is None:
        raise CodegenError(f"{where}: expected the residual ADD(u16, hnew{layer})")
    users = step_graph.consumers.get(add_v.outputs[0], [])
    if len(users) != 1 or users[0].op != "QUANTIZE" or \
            add_v.outputs[0] in step_graph.graph_outputs:
        raise CodegenError(f"{where}: the residual ADD must feed one QUANTIZE to int8")
    return fcs, out8, add_v, quantize_ops + [users[0]]


def _check_front_tensors(tensors: list, where: str, front: dict) -> None:
    """CodegenError unless the front's (match_front's tensors) frame, v8 (and conv8 where the
    conv is not widened) are int8, the int16 sum, its inputs and the residual are int16 with
    zero point 0, and neither ADD has a fused activation or broadcasts."""
    add_u, add_v, conv = front["add_u"], front["add_v"], front["conv"]
    u16, v16 = front["u16"], add_v.outputs[0]
    for t in (front["frame"], front["v8"]) + (() if front["conv16"] else (conv,)):
        if tensors[t].dtype != np.int8:
            raise CodegenError(f"{where}: tensor {t} ({tensors[t].name}) is "
                               f"{tensors[t].type_name}")
    for t in (add_u.inputs[0], add_u.inputs[1], u16, v16):
        if tensors[t].dtype != np.int16 or zero_point(tensors[t]) != 0:
            raise CodegenError(f"{where}: tensor {t} ({tensors[t].name}) must be int16, zero "
                               "point 0")
    for op in (add_u, add_v):
        if op.options.get("fused_activation_function", "NONE") not in (None, "NONE") or \
                any(tensors[t].size != tensors[u16].size for t in op.inputs + op.outputs):
            raise CodegenError(f"{where}: ADD (op {op.index}) has a fused activation or "
                               "broadcasts")


def _front_params(step_graph, where: str, hnew: int, front: dict) -> dict:
    """The kernel parameters of the front (match_front's tensors): requantizations frame8 ->
    int16 (frame16), conv8 -> int16 (conv16; None where the conv is widened), v16 -> v8, the
    candidate FC outputs -> int8 (p8, r8), the int16 ADDs' (add_u; add_v with input1 = u16)
    and each FC's op_params (16x8: depth limited so the int32 accumulator cannot overflow)."""
    tensors = step_graph.tensors
    add_u, add_v, frame, conv, v8 = (front[k] for k in ("add_u", "add_v", "frame", "conv", "v8"))
    frame16, conv_in16, u16, v16 = add_u.inputs[0], add_u.inputs[1], front["u16"], \
        add_v.outputs[0]
    n = tensors[frame].size
    scale_frame, scale_conv, scale_u = (scale(tensors[t]) for t in (frame16, conv_in16, u16))
    add_v_params = addsub16_params(scale_u, scale(tensors[hnew]), scale(tensors[v16]),
                                   sub=False)
    if add_v.inputs[0] == hnew:         # ADD(h, u): swap so that input1 is u16
        add_v_params = swap_add(add_v_params)
    params = dict(
        frame16=requant_params(scale(tensors[frame]), zero_point(tensors[frame]),
                               scale_frame, 0, 16, n),
        conv16=None if front["conv16"] else requant_params(
            scale(tensors[conv]), zero_point(tensors[conv]), scale_conv, 0, 16, n),
        add_u=addsub16_params(scale_frame, scale_conv, scale_u, sub=False),
        add_v=add_v_params,
        v8=requant_params(scale(tensors[v16]), 0, scale(tensors[v8]),
                          zero_point(tensors[v8]), 8, n))
    for role, op in front["fcs"].items():
        fc_params = op_params(step_graph.model, op)
        if fc_params["accum_depth"] * 32768 * 128 >= 2 ** 31:
            raise CodegenError(f"{where}: depth {fc_params['accum_depth']} can overflow the "
                               "int32 accumulator of a 16x8 FC; convert with --input-bits 8")
        params[role] = fc_params
        if role != "gate":
            out16, out_int8 = op.outputs[0], front["out8"][op.index]
            params["p8" if role == "cand" else "r8"] = requant_params(
                scale(tensors[out16]), 0, scale(tensors[out_int8]),
                zero_point(tensors[out_int8]), 8, tensors[out_int8].size)
    return params


def _match_conv16(graph, c16: int, where: str) -> tuple[dict, dict] | None:
    """The conv16 chain c16 = RESHAPE(DEPTHWISE_CONV_2D(QUANTIZE(taps8))) (widen_conv) feeding
    the front's ADD, or None where c16 is QUANTIZE(conv8) (input16). Returns (params: taps16
    requantization, the 16x8 conv's per-channel multipliers/shifts and int16 range as
    TFLM's Prepare computes them; tensors: dw op, q_taps op, taps8, bias (-1: none))."""
    T = graph.tensors
    rs = graph.producer.get(c16)
    if rs is None or rs.op != "RESHAPE":
        return None
    dw = graph.prod(rs.inputs[0], "DEPTHWISE_CONV_2D", "the 16x8 delay conv", where)
    q_taps = graph.prod(dw.inputs[0], "QUANTIZE", "QUANTIZE(taps: int8 -> int16)", where)
    taps8, taps16, w = q_taps.inputs[0], dw.inputs[0], dw.inputs[1]
    bias = dw.inputs[2] if len(dw.inputs) > 2 else -1
    o = dw.outputs[0]
    if T[taps8].dtype != np.int8 or any(T[t].dtype != np.int16 or zero_point(T[t])
                                        for t in (taps16, o, c16)):
        raise CodegenError(f"{where}: the delay conv must read int16 taps (zero point 0) "
                           "requantized from int8 and write int16 (zero point 0)")
    if bias >= 0 and T[bias].dtype != np.int64:
        raise CodegenError(f"{where}: the 16x8 delay conv needs an int64 bias")
    if len(graph.consumers.get(c16, [])) != 1:
        raise CodegenError(f"{where}: the int16 conv output feeds more than the front's ADD")
    fs = T[w].quant.scale
    s_in, s_out = scale(T[taps16]), scale(T[o])
    H = T[o].shape[-1]
    mults, shifts = channel_multipliers(s_in, [fs[c] if fs.size > 1 else fs[0]
                                               for c in range(H)], s_out)
    lo, hi = activation_range(dw.options.get("fused_activation_function", "NONE"), T[o])
    params = dict(taps16=requant_params(scale(T[taps8]), zero_point(T[taps8]), s_in, 0, 16, 1),
                  multiplier=mults, shift=shifts, act_min=lo, act_max=hi)
    return params, dict(dw=dw, q_taps=q_taps, taps8=taps8, bias=bias)


def emit_params(P: str, L: int, params: dict, consts) -> list[str]:
    """The const structs of layer L's int16 front, ending in `mg_input16_params_t
    {P}_l{L}_in16`; consts(role) -> (weights, bias) C names of that FC's constant tensors."""
    n = f"{P}_l{L}_in16"
    conv16 = params["conv16"] is not None
    lines = [f"/* layer {L}: int16 minGRU input (convert/input16.py) */",
             struct_decl("mg_requant_params_t", f"{n}_frame16", pick(params["frame16"],
                                                                     REQUANT_KEYS)),
             struct_decl("mg_add_params_t", f"{n}_add_u", add_fields(params["add_u"]))]
    if conv16:
        lines.insert(2, struct_decl("mg_requant_params_t", f"{n}_conv16",
                                    pick(params["conv16"], REQUANT_KEYS)))
    fields = {}
    for role in ("gate", "cand", "relu_fc"):
        if role not in params:
            fields[role] = dict(fc="NULL", weights="NULL", bias="NULL")
            continue
        lines += fc_struct_lines(P, f"l{L}_in16_{role}", params[role])
        w, b = consts(role)
        fields[role] = dict(fc=f"&{P}_l{L}_in16_{role}", weights=w, bias=b)
    for k in ("p8", "r8"):
        if k in params:
            lines.append(struct_decl("mg_requant_params_t", f"{n}_{k}", pick(params[k],
                                                                             REQUANT_KEYS)))
    lines += [struct_decl("mg_add_params_t", f"{n}_add_v", add_fields(params["add_v"])),
              struct_decl("mg_requant_params_t", f"{n}_v8", pick(params["v8"], REQUANT_KEYS))]
    lines.append(struct_decl("mg_input16_params_t", n, dict(
        frame16=f"&{n}_frame16", conv16=f"&{n}_conv16" if conv16 else "NULL",
        add_u=f"&{n}_add_u", **fields,
        p8=f"&{n}_p8", r8=f"&{n}_r8" if "r8" in params else "NULL", add_v=f"&{n}_add_v",
        v8=f"&{n}_v8")))
    return lines
