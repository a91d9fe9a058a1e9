"""Generic graph package: an int8 .tflite (one subgraph) -> <prefix>_model_data.{h,c}.

The package, compiled with mcu/runtime/mg_quant.c and mcu/runtime/mg_kernels.c (include path
mcu/runtime), holds the constant tensors (int8 weights, int32 biases/indices), one const
parameter struct per operator with the quantized multipliers/shifts computed as TFLite-Micro
computes them in its Prepare step (convert/tflm_params.py), a static tensor arena planned
offline (convert/arena.py), and

    int <prefix>_graph_invoke(const void *const *inputs, void *const *outputs);

which runs the operators in order. inputs[k] / outputs[k] point to caller-owned buffers of the
graph's k-th input / output tensor (subgraph order, described by <prefix>_graph_inputs[] /
<prefix>_graph_outputs[]); output buffers must not overlap input buffers. Returns 0, or -1 if a
GATHER index was out of range. The caller owns all graph inputs/outputs, so a streaming layer
on top can keep its ring buffers and recurrent states in its own storage and ping-pong state
pointers between steps without copies.

`emit_op` (one generic operator's parameter struct and call) and the struct field builders
below are also used by the mGRADE package writer (convert/codegen_mgrade.py) for the operators
it does not fuse.
"""
from __future__ import annotations

from pathlib import Path

from mgrade_edge.convert.arena import Plan, plan_memory
from mgrade_edge.convert.cemit import (
    check_prefix, clist, const_tensor_lines, ctype, designated, ident, struct_decl,
    tensor_pointer)
from mgrade_edge.convert.tflite_reader import Model
from mgrade_edge.convert.tflm_params import (
    ALIAS_OPS, MAX_DIMS, CodegenError, check_supported, op_params, zero_point)


# ---------------------------------------------------------------------------------------------
# Parameter structs of mcu/runtime/mg_kernels.h (field names as in the header)

def bcast_fields(bc: dict | None) -> dict:
    """mg_bcast_t of a broadcast descriptor (tflm_params.broadcast_params); None: all zero."""
    if bc is None:
        return dict(count=0, ndims=0, shape=[0], stride1=[0], stride2=[0])
    pad = lambda v: list(v) + [0] * (MAX_DIMS - len(v))  # noqa: E731
    return dict(count=bc["count"], ndims=bc["ndims"], shape=pad(bc["shape"]),
                stride1=pad(bc["stride1"]), stride2=pad(bc["stride2"]))


def pick(p: dict, keys) -> dict:
    """The entries `keys` of a parameter dict, in that order."""
    return {k: p[k] for k in keys}


ADD_KEYS = ("left_shift", "input1_offset", "input1_multiplier", "input1_shift", "input2_offset",
            "input2_multiplier", "input2_shift", "output_offset", "output_multiplier",
            "output_shift", "act_min", "act_max")
MUL_KEYS = ("input1_offset", "input2_offset", "output_offset", "output_multiplier",
            "output_shift", "act_min", "act_max")
LOGISTIC_KEYS = ("size", "input_zero_point", "input_range_radius", "input_multiplier",
                 "input_left_shift")
REQUANT_KEYS = ("size", "input_offset", "output_offset", "multiplier", "shift", "act_min",
                "act_max")
DWCONV_KEYS = ("batches", "in_h", "in_w", "in_c", "filt_h", "filt_w", "out_h", "out_w", "out_c",
               "depth_multiplier", "stride_h", "stride_w", "dilation_h", "dilation_w", "pad_h",
               "pad_w", "input_offset", "output_offset", "act_min", "act_max")
GATHER_KEYS = ("batch_size", "outer_size", "axis_size", "inner_size", "coord_size", "elem_bytes")


def add_fields(p: dict, bc: dict | None = None) -> dict:
    """mg_add_params_t (ADD and SUB); bc: the broadcast descriptor (None: elementwise)."""
    return {**pick(p, ADD_KEYS), "bc": bcast_fields(bc)}


def mul_fields(p: dict, bc: dict | None = None) -> dict:
    """mg_mul_params_t."""
    return {**pick(p, MUL_KEYS), "bc": bcast_fields(bc)}


def mult_shift_lines(P: str, name: str, p: dict) -> list[str]:
    """The per-channel `{P}_{name}_mult` / `_shift` arrays of an FC or depthwise op."""
    return [f"static const int32_t {P}_{name}_mult[{len(p['multiplier'])}] = "
            f"{clist(p['multiplier'])};",
            f"static const int32_t {P}_{name}_shift[{len(p['shift'])}] = {clist(p['shift'])};"]


def fc_struct_lines(P: str, name: str, p: dict) -> list[str]:
    """The mg_fc_params_t `{P}_{name}` and its multiplier/shift arrays."""
    fields = dict(batches=p["batches"], accum_depth=p["accum_depth"],
                  output_depth=p["output_depth"], input_offset=p["input_offset"],
                  filter_offset=p["filter_offset"], output_offset=p["output_offset"],
                  act_min=p["act_min"], act_max=p["act_max"], per_channel=p["per_channel"],
                  multiplier=f"{P}_{name}_mult", shift=f"{P}_{name}_shift")
    return mult_shift_lines(P, name, p) + [struct_decl("mg_fc_params_t", f"{P}_{name}", fields)]


# ---------------------------------------------------------------------------------------------
# One operator

def emit_op(model: Model, op, p: dict, ptr, plan: Plan, P: str) -> tuple[list[str], list[str]]:
    """C for one generic operator: (declarations at file scope, statements for the invoke
    body). `ptr(tensor, const)` gives the C expression of a tensor's buffer; `plan.loc` is
    used to decide whether an aliasing op (RESHAPE) needs a copy."""
    T = model.tensors
    c: list[str] = []
    body: list[str] = []
    n = op.index
    o = op.outputs[0]
    name = f"{P}_op{n}"
    body.append(f"    /* op {n}: {op.op} -> tensor {o} '{T[o].name}' {list(T[o].shape)} */")
    if op.op == "FULLY_CONNECTED":
        c += fc_struct_lines(P, f"op{n}", p)
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        body.append(f"    mg_fully_connected_s8(&{name}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(bias, True)}, {ptr(o, False)});")
    elif op.op == "DEPTHWISE_CONV_2D":
        c += mult_shift_lines(P, f"op{n}", p)
        c.append(struct_decl("mg_dwconv_params_t", name,
                             {**pick(p, DWCONV_KEYS), "multiplier": f"{name}_mult",
                              "shift": f"{name}_shift"}))
        bias = op.inputs[2] if len(op.inputs) > 2 else -1
        body.append(f"    mg_depthwise_conv_s8(&{name}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(bias, True)}, {ptr(o, False)});")
    elif op.op in ("ADD", "SUB"):
        c.append(struct_decl("mg_add_params_t", name, add_fields(p, p["bc"])))
        fn = "mg_add_s8" if op.op == "ADD" else "mg_sub_s8"
        body.append(f"    {fn}(&{name}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    elif op.op == "MUL":
        c.append(struct_decl("mg_mul_params_t", name, mul_fields(p, p["bc"])))
        body.append(f"    mg_mul_s8(&{name}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    elif op.op in ("MINIMUM", "MAXIMUM"):
        c.append(struct_decl("mg_bcast_t", name, bcast_fields(p["bc"])))
        fn = "mg_minimum_s8" if op.op == "MINIMUM" else "mg_maximum_s8"
        body.append(f"    {fn}(&{name}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(op.inputs[1], True)}, {ptr(o, False)});")
    elif op.op == "LOGISTIC":
        c.append(struct_decl("mg_logistic_params_t", name, pick(p, LOGISTIC_KEYS)))
        body.append(f"    mg_logistic_s8(&{name}, {ptr(op.inputs[0], True)}, "
                    f"{ptr(o, False)});")
    elif op.op in ("RELU", "QUANTIZE"):
        c.append(struct_decl("mg_requant_params_t", name, pick(p, REQUANT_KEYS)))
        fn = "mg_relu_s8" if op.op == "RELU" else "mg_requantize_s8"
        body.append(f"    {fn}(&{name}, {ptr(op.inputs[0], True)}, {ptr(o, False)});")
    elif op.op == "CONCATENATION":
        c.append(f"static const int32_t {name}_bytes[{p['num_inputs']}] = "
                 f"{clist(p['copy_bytes'])};")
        c.append(struct_decl("mg_concat_params_t", name,
                             dict(num_inputs=p["num_inputs"], outer=p["outer"],
                                  copy_bytes=f"{name}_bytes")))
        body.append("    {")
        body.append(f"        const void *in_[{p['num_inputs']}];")
        for k, i in enumerate(op.inputs):
            body.append(f"        in_[{k}] = (const void *){ptr(i, True)};")
        body.append(f"        mg_concatenation(&{name}, in_, {ptr(o, False)});")
        body.append("    }")
    elif op.op == "GATHER":
        c.append(struct_decl("mg_gather_params_t", name, pick(p, GATHER_KEYS)))
        body.append(f"    if (mg_gather(&{name}, {ptr(op.inputs[0], True)}, "
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


# ---------------------------------------------------------------------------------------------
# The package

def generate_graph_package(model: Model, out_dir, prefix: str = "mg") -> dict:
    """Write <prefix>_model_data.{h,c} (the stateless graph); return a summary dict."""
    check_supported(model)
    check_prefix(prefix)
    T = model.tensors
    params = [op_params(model, op) for op in model.operators]
    plan = plan_memory(model)
    P, PU = prefix, prefix.upper()

    def input_expr(slot: int, ct: str, const: bool) -> str:
        if not const:
            raise CodegenError(f"graph input {slot} is written by an operator")
        return f"(const {ct} *)inputs[{slot}]"

    ptr = tensor_pointer(T, plan, P, input_expr,
                         lambda slot, ct, q: f"({q}{ct} *)outputs[{slot}]")

    used_consts = sorted({i for op in model.operators for i in op.inputs
                          if i >= 0 and T[i].is_const and op.op not in ALIAS_OPS}
                         | {i for op in model.operators if op.op in ALIAS_OPS
                            for i in op.inputs[:1] if T[i].is_const}
                         | {ti for ti, _ in plan.copies if T[ti].is_const})
    const_bytes = 0
    c = [f"/* Generated by convert/graph_package.py from a .tflite (model id {model.model_id}).",
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
            dims = list(t.shape) + [0] * (MAX_DIMS - len(t.shape))
            rows.append("    " + designated(dict(
                name=f'"{nm}"', type="MG_TYPE_INT8" if ctype(t) == "int8_t" else "MG_TYPE_INT32",
                ndims=len(t.shape), dims=dims, elems=t.size, bytes=t.nbytes,
                zero_point=zero_point(t))))
        return ",\n".join(rows) if rows else "    " + designated(dict(
            name='""', type="MG_TYPE_INT8", ndims=0, dims=[0], elems=0, bytes=0, zero_point=0))

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
            e = f"{PU}_{kind}_{ident(nm)}"
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
                q = f" scale {float(t.quant.scale[0]):.9g} zero_point {zero_point(t)}"
            out.append(f" *   [{k}] {nm}: {t.type_name.lower()} {list(t.shape)}{q}")
        return out

    guard = f"{PU}_MODEL_DATA_H"
    h = [f"/* Generated by convert/graph_package.py. Do not edit.", " *",
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
