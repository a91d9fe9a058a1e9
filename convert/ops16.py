"""Generic int16 operators of the widened step graphs (convert/widen.py widen_mlp) for the C
package: which ops they are, their parameters as TFLite-Micro's Prepare computes them, and the
C declarations and calls (mcu/runtime/mg_ops16.h).

An op is "wide" when one of its tensors is int16 and no fused kernel of the package (the int16
minGRU tail and input front: convert/state16.py, convert/input16.py) has taken it:

    QUANTIZE int8 <-> int16            mg_requantize_s8_s16 / mg_requantize_s16_s8
    FULLY_CONNECTED 16x8, int32 bias   mg_fully_connected_s16
    ADD int16, elementwise             mg_add_s16

Both C paths run these portable kernels (the fast path has no int16 kernel for them and falls
back, reported in the package's fast_report), bit-exact with TFLite-Micro
(tests/test_ladder.py).
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert.cemit import struct_decl
from mgrade_edge.convert.graph_package import REQUANT_KEYS, add_fields, fc_struct_lines, pick
from mgrade_edge.convert.tflm_params import (
    CodegenError, addsub16_params, op_macs, op_params, requant_params, scale, zero_point)

WIDE_OPS = ("QUANTIZE", "FULLY_CONNECTED", "ADD")


def is_wide(model, op) -> bool:
    """Whether op reads or writes an int16 tensor."""
    T = model.tensors
    return any(t >= 0 and T[t].dtype == np.int16 for t in list(op.inputs) + list(op.outputs))


def params(model, op) -> dict:
    """TFLM's Prepare-time parameters of a wide op (CodegenError for one this package lacks)."""
    T = model.tensors
    where = f"{op.op} (op {op.index}) on int16 tensors"
    if op.op not in WIDE_OPS:
        raise CodegenError(f"{where} is not supported (int16: {', '.join(WIDE_OPS)})")
    if op.op == "FULLY_CONNECTED":
        return op_params(model, op)             # 16x8 mode
    i, o = op.inputs[0], op.outputs[0]
    if op.op == "QUANTIZE":
        if {T[i].dtype, T[o].dtype} != {np.dtype(np.int8), np.dtype(np.int16)}:
            raise CodegenError(f"{where}: only int8 <-> int16 is supported")
        z16 = T[o] if T[o].dtype == np.int16 else T[i]
        if zero_point(z16):
            raise CodegenError(f"{where}: the int16 side needs zero point 0")
        return requant_params(scale(T[i]), zero_point(T[i]), scale(T[o]), zero_point(T[o]),
                              16 if T[o].dtype == np.int16 else 8, T[i].size)
    a, b = op.inputs
    act = op.options.get("fused_activation_function", "NONE")
    if any(T[t].dtype != np.int16 or zero_point(T[t]) or T[t].size != T[o].size
           for t in (a, b, o)) or act not in (None, "NONE"):
        raise CodegenError(f"{where}: only an elementwise int16 ADD with zero points 0 and no "
                           "fused activation is supported")
    return addsub16_params(scale(T[a]), scale(T[b]), scale(T[o]), sub=False)


def macs(model, op) -> int:
    """Multiply-accumulates of a wide op (the FC's; 0 for the elementwise ones)."""
    return op_macs(op, op_params(model, op)) if op.op == "FULLY_CONNECTED" else 0


def emit(model, op, p: dict, ptr, P: str) -> tuple[list[str], list[str]]:
    """(file-scope declarations, step-body statements) of a wide op with its parameters p
    (`params`, as the step program holds them); ptr(tensor, const) is the C expression of a
    tensor's buffer."""
    T, n = model.tensors, f"{P}_op{op.index}"
    o = op.outputs[0]
    body = [f"    /* op {op.index}: {op.op} (int16) -> tensor {o} '{T[o].name}' "
            f"{list(T[o].shape)} */"]
    if op.op == "FULLY_CONNECTED":
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        decls = fc_struct_lines(P, f"op{op.index}", p)
        body.append(f"    mg_fully_connected_s16(&{n}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(bias, True)}, {ptr(o, False)});")
    elif op.op == "QUANTIZE":
        decls = [struct_decl("mg_requant_params_t", n, pick(p, REQUANT_KEYS))]
        fn = "mg_requantize_s8_s16" if T[o].dtype == np.int16 else "mg_requantize_s16_s8"
        body.append(f"    {fn}(&{n}, {ptr(op.inputs[0], True)}, {ptr(o, False)});")
    else:
        decls = [struct_decl("mg_add_params_t", n, add_fields(p))]
        body.append(f"    mg_add_s16(&{n}, {T[o].size}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    return decls, body
