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
    ALIAS_OPS, MAX_DIMS, CodegenError, DepthwiseConvParams, GatherParams, LogisticParams,
    RequantParams, check_supported, op_params, zero_point)


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
# the struct fields in C order are those of the op's record (convert/tflm_params.py)
LOGISTIC_KEYS = tuple(LogisticParams.__annotations__)
REQUANT_KEYS = tuple(RequantParams.__annotations__)
DWCONV_KEYS = tuple(k for k in DepthwiseConvParams.__annotations__
                    if k not in ("multiplier", "shift"))     # the arrays go in by name
GATHER_KEYS = tuple(GatherParams.__annotations__)


def add_fields(p: dict, bc: dict | None = None) -> dict:
    """mg_add_params_t (ADD and SUB); bc: the broadcast descriptor (None: elementwise)."""
    return {**pick(p, ADD_KEYS), "bc": bcast_fields(bc)}


def mul_fields(p: dict, bc: dict | None = None) -> dict:
    """mg_mul_params_t."""
    return {**pick(p, MUL_KEYS), "bc": bcast_fields(bc)}


def mult_shift_lines(prefix: str, name: str, p: dict) -> list[str]:
    """The per-channel `{prefix}_{name}_mult` / `_shift` arrays of an FC or depthwise op."""
    return [f"static const MG_ROM int32_t {prefix}_{name}_mult[{len(p['multiplier'])}] = "
            f"{clist(p['multiplier'])};",
            f"static const MG_ROM int32_t {prefix}_{name}_shift[{len(p['shift'])}] = "
            f"{clist(p['shift'])};"]


def fc_struct_lines(prefix: str, name: str, p: dict) -> list[str]:
    """The mg_fc_params_t `{prefix}_{name}` and its multiplier/shift arrays."""
    fields = dict(batches=p["batches"], accum_depth=p["accum_depth"],
                  output_depth=p["output_depth"], input_offset=p["input_offset"],
                  filter_offset=p["filter_offset"], output_offset=p["output_offset"],
                  act_min=p["act_min"], act_max=p["act_max"], per_channel=p["per_channel"],
                  multiplier=f"{prefix}_{name}_mult", shift=f"{prefix}_{name}_shift")
    return mult_shift_lines(prefix, name, p) + [
        struct_decl("mg_fc_params_t", f"{prefix}_{name}", fields)]


# ---------------------------------------------------------------------------------------------
# One operator: per family, (declarations at file scope, statements of the invoke body) from
# the op, its op_params record, ptr(tensor, const) (the C expression of a tensor's buffer)
# and the prefix; the struct is `{prefix}_op<index>`.

def _bias(op) -> int:
    """The op's bias tensor, or -1 where it has none."""
    return op.inputs[2] if len(op.inputs) > 2 else -1


def _fully_connected_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    return fc_struct_lines(prefix, f"op{op.index}", p), [
        f"    mg_fully_connected_s8(&{struct}, {ptr(op.inputs[0], True)}, "
        f"{ptr(op.inputs[1], True)}, {ptr(_bias(op), True)}, {ptr(op.outputs[0], False)});"]


def _depthwise_conv_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    decls = mult_shift_lines(prefix, f"op{op.index}", p) + [
        struct_decl("mg_dwconv_params_t", struct,
                    {**pick(p, DWCONV_KEYS), "multiplier": f"{struct}_mult",
                     "shift": f"{struct}_shift"})]
    return decls, [
        f"    mg_depthwise_conv_s8(&{struct}, {ptr(op.inputs[0], True)}, "
        f"{ptr(op.inputs[1], True)}, {ptr(_bias(op), True)}, {ptr(op.outputs[0], False)});"]


def _binary_call(function: str, struct: str, op, ptr) -> str:
    """`function(&struct, input 0, input 1, output);` of a two-input elementwise op."""
    return (f"    {function}(&{struct}, {ptr(op.inputs[0], True)}, "
            f"{ptr(op.inputs[1], True)}, {ptr(op.outputs[0], False)});")


def _add_sub_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    function = "mg_add_s8" if op.op == "ADD" else "mg_sub_s8"
    return ([struct_decl("mg_add_params_t", struct, add_fields(p, p["bc"]))],
            [_binary_call(function, struct, op, ptr)])


def _mul_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    return ([struct_decl("mg_mul_params_t", struct, mul_fields(p, p["bc"]))],
            [_binary_call("mg_mul_s8", struct, op, ptr)])


def _min_max_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    function = "mg_minimum_s8" if op.op == "MINIMUM" else "mg_maximum_s8"
    return ([struct_decl("mg_bcast_t", struct, bcast_fields(p["bc"]))],
            [_binary_call(function, struct, op, ptr)])


def _logistic_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    return ([struct_decl("mg_logistic_params_t", struct, pick(p, LOGISTIC_KEYS))],
            [f"    mg_logistic_s8(&{struct}, {ptr(op.inputs[0], True)}, "
             f"{ptr(op.outputs[0], False)});"])


def _requant_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    """RELU and QUANTIZE (int8 -> int8)."""
    struct = f"{prefix}_op{op.index}"
    function = "mg_relu_s8" if op.op == "RELU" else "mg_requantize_s8"
    return ([struct_decl("mg_requant_params_t", struct, pick(p, REQUANT_KEYS))],
            [f"    {function}(&{struct}, {ptr(op.inputs[0], True)}, "
             f"{ptr(op.outputs[0], False)});"])


def _concatenation_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    decls = [f"static const MG_ROM int32_t {struct}_bytes[{p['num_inputs']}] = "
             f"{clist(p['copy_bytes'])};",
             struct_decl("mg_concat_params_t", struct,
                         dict(num_inputs=p["num_inputs"], outer=p["outer"],
                              copy_bytes=f"{struct}_bytes"))]
    body = ["    {", f"        const void *in_[{p['num_inputs']}];"]
    body += [f"        in_[{k}] = (const void *){ptr(i, True)};" for k, i in enumerate(op.inputs)]
    body += [f"        mg_concatenation(&{struct}, in_, {ptr(op.outputs[0], False)});", "    }"]
    return decls, body


def _gather_code(op, p: dict, ptr, prefix: str) -> tuple[list[str], list[str]]:
    struct = f"{prefix}_op{op.index}"
    return ([struct_decl("mg_gather_params_t", struct, pick(p, GATHER_KEYS))],
            [f"    if (mg_gather(&{struct}, {ptr(op.inputs[0], True)}, "
             f"{ptr(op.inputs[1], True)}, {ptr(op.outputs[0], False)}) != 0) {{",
             "        status = -1;",
             "    }"])


_OP_CODE = {"FULLY_CONNECTED": _fully_connected_code, "DEPTHWISE_CONV_2D": _depthwise_conv_code,
            "ADD": _add_sub_code, "SUB": _add_sub_code, "MUL": _mul_code,
            "MINIMUM": _min_max_code, "MAXIMUM": _min_max_code, "LOGISTIC": _logistic_code,
            "RELU": _requant_code, "QUANTIZE": _requant_code,
            "CONCATENATION": _concatenation_code, "GATHER": _gather_code}


def _alias_body(op, p: dict, ptr, plan: Plan) -> list[str]:
    """RESHAPE / SQUEEZE / EXPAND_DIMS: nothing where input and output share a buffer (the
    memory plan's locations), else a copy of p["bytes"] bytes."""
    src, out = op.inputs[0], op.outputs[0]
    src_loc, out_loc = plan.loc[src], plan.loc[out]
    same = (src_loc.kind == out_loc.kind and src_loc.index == out_loc.index
            and src_loc.offset == out_loc.offset and src_loc.kind != "const")
    if src_loc.kind == "const" and out_loc.kind == "const" and src_loc.index == out_loc.index:
        same = True
    if same:
        return ["    /* alias: no data movement */"]
    return [f"    mg_copy({ptr(out, False)}, {ptr(src, True)}, {p['bytes']}u);"]


def emit_op(model: Model, op, p: dict, ptr, plan: Plan, prefix: str
            ) -> tuple[list[str], list[str]]:
    """C for one generic operator: (declarations at file scope, statements for the invoke
    body, the first a comment naming the op). `ptr(tensor, const)` gives the C expression of a
    tensor's buffer; `plan.loc` decides whether an aliasing op (RESHAPE) needs a copy."""
    out = model.tensors[op.outputs[0]]
    comment = (f"    /* op {op.index}: {op.op} -> tensor {op.outputs[0]} '{out.name}' "
               f"{list(out.shape)} */")
    if op.op in ALIAS_OPS:
        return [], [comment] + _alias_body(op, p, ptr, plan)
    family = _OP_CODE.get(op.op)
    decls, body = family(op, p, ptr, prefix) if family is not None else ([], [])
    return decls, [comment] + body


# ---------------------------------------------------------------------------------------------
# The package

def _used_constants(model: Model, plan: Plan) -> list[int]:
    """The constant tensors the invoke reads (an alias op's shape operand is not read)."""
    tensors = model.tensors
    return sorted({i for op in model.operators for i in op.inputs
                   if i >= 0 and tensors[i].is_const and op.op not in ALIAS_OPS}
                  | {i for op in model.operators if op.op in ALIAS_OPS
                     for i in op.inputs[:1] if tensors[i].is_const}
                  | {ti for ti, _ in plan.copies if tensors[ti].is_const})


def _graph_pointer(model: Model, plan: Plan, prefix: str):
    """ptr(tensor, const) of the invoke: graph inputs/outputs through inputs[k] / outputs[k]
    (CodegenError where an operator would write a graph input)."""
    def input_expr(slot: int, ct: str, const: bool) -> str:
        if not const:
            raise CodegenError(f"graph input {slot} is written by an operator")
        return f"(const {ct} *)inputs[{slot}]"

    return tensor_pointer(model.tensors, plan, prefix, input_expr,
                          lambda slot, ct, q: f"({q}{ct} *)outputs[{slot}]")


def _io_desc_rows(tensors, idx: list[int], io_names: list[str]) -> str:
    """The mg_io_desc_t initialisers of graph tensors idx (one all-zero row for none)."""
    rows = []
    for ti, nm in zip(idx, io_names):
        t = tensors[ti]
        dims = list(t.shape) + [0] * (MAX_DIMS - len(t.shape))
        rows.append("    " + designated(dict(
            name=f'"{nm}"', type="MG_TYPE_INT8" if ctype(t) == "int8_t" else "MG_TYPE_INT32",
            ndims=len(t.shape), dims=dims, elems=t.size, bytes=t.nbytes,
            zero_point=zero_point(t))))
    return ",\n".join(rows) if rows else "    " + designated(dict(
        name='""', type="MG_TYPE_INT8", ndims=0, dims=[0], elems=0, bytes=0, zero_point=0))


def _invoke_body(model: Model, plan: Plan, params: list[dict], prefix: str, ptr
                 ) -> tuple[list[str], list[str]]:
    """(parameter declarations, invoke statements) of every operator in order (params: their
    op_params records), then the copies of graph outputs no operator produces."""
    decls, body = [], []
    for op, p in zip(model.operators, params):
        op_decls, op_body = emit_op(model, op, p, ptr, plan, prefix)
        decls += op_decls
        body += op_body
    for ti, slot in plan.copies:
        body += [f"    /* graph output {slot} is not produced by an operator */",
                 f"    mg_copy(outputs[{slot}], {ptr(ti, True)}, {model.tensors[ti].nbytes}u);"]
    return decls, body


def _source_lines(model: Model, plan: Plan, params: list[dict], prefix: str,
                  const_tensors: list[int]) -> list[str]:
    """<prefix>_model_data.c: model id, constant tensors, the arena (int32 words), operator
    parameters (params: each operator's op_params), I/O descriptors and
    <prefix>_graph_invoke."""
    tensors = model.tensors
    ptr = _graph_pointer(model, plan, prefix)
    const_lines = [line for ti in const_tensors
                   for line in const_tensor_lines(prefix, ti, tensors[ti])]
    decls, body = _invoke_body(model, plan, params, prefix, ptr)
    id_bytes = ", ".join(f"0x{model.model_id[k:k + 2]}" for k in range(0, 16, 2))
    return [
        f"/* Generated by convert/graph_package.py from a .tflite (model id {model.model_id}).",
        " * Do not edit. Kernels: mcu/runtime/mg_kernels.h. */",
        f'#include "{prefix}_model_data.h"', "", "#include <stddef.h>", "",
        f"const uint8_t {prefix}_model_id[8] = {{{id_bytes}}};", "",
        *const_lines,
        "",
        f"static int32_t {prefix}_arena_words[{max(1, (plan.arena_bytes + 3) // 4)}];",
        "",
        *decls,
        "",
        f"const mg_io_desc_t {prefix}_graph_inputs[{max(1, len(model.inputs))}] = {{\n"
        f"{_io_desc_rows(tensors, model.inputs, model.input_names)}\n}};",
        f"const mg_io_desc_t {prefix}_graph_outputs[{max(1, len(model.outputs))}] = {{\n"
        f"{_io_desc_rows(tensors, model.outputs, model.output_names)}\n}};",
        "",
        f"int {prefix}_graph_invoke(const void *const *inputs, void *const *outputs)",
        "{",
        f"    int8_t *const arena = (int8_t *){prefix}_arena_words;",
        "    int status = 0;",
        "    (void)arena;",
        "    (void)inputs;",
        "    (void)outputs;",
        *body,
        "    return status;",
        "}",
        "",
    ]


def _enum_lines(io_names: list[str], macro_prefix: str, kind: str) -> list[str]:
    """`{MACRO_PREFIX}_{kind}_<name> = k,` per graph input/output (a repeated name gets _k)."""
    seen, out = set(), []
    for k, nm in enumerate(io_names):
        entry = f"{macro_prefix}_{kind}_{ident(nm)}"
        if entry in seen:
            entry = f"{entry}_{k}"
        seen.add(entry)
        out.append(f"    {entry} = {k},")
    return out


def _io_comment_lines(tensors, idx: list[int], io_names: list[str]) -> list[str]:
    """One comment line per graph tensor: slot, name, type, shape, quantization."""
    out = []
    for k, (ti, nm) in enumerate(zip(idx, io_names)):
        t = tensors[ti]
        quant = ""
        if t.quant is not None:
            quant = f" scale {float(t.quant.scale[0]):.9g} zero_point {zero_point(t)}"
        out.append(f" *   [{k}] {nm}: {t.type_name.lower()} {list(t.shape)}{quant}")
    return out


def _round4(n: int) -> int:
    """n bytes rounded up to a multiple of 4."""
    return (n + 3) // 4 * 4


def _header_lines(model: Model, plan: Plan, prefix: str, const_bytes: int) -> list[str]:
    """<prefix>_model_data.h: the I/O in comments, sizes as macros, I/O enums and the invoke
    prototype."""
    tensors, macro_prefix = model.tensors, prefix.upper()
    guard = f"{macro_prefix}_MODEL_DATA_H"
    return [
        "/* Generated by convert/graph_package.py. Do not edit.", " *",
        f" * Graph inputs (caller-owned buffers, passed to {prefix}_graph_invoke in this order):",
        *_io_comment_lines(tensors, model.inputs, model.input_names),
        " * Graph outputs:",
        *_io_comment_lines(tensors, model.outputs, model.output_names),
        " */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
        '#include "mg_kernels.h"', "", '#ifdef __cplusplus', 'extern "C" {', "#endif", "",
        "/* first 8 bytes of sha256(model.tflite) */",
        f'#define {macro_prefix}_MODEL_ID "{model.model_id}"',
        f"extern const uint8_t {prefix}_model_id[8];", "",
        f"#define {macro_prefix}_GRAPH_NUM_INPUTS {len(model.inputs)}",
        f"#define {macro_prefix}_GRAPH_NUM_OUTPUTS {len(model.outputs)}",
        f"#define {macro_prefix}_GRAPH_NUM_OPS {len(model.operators)}",
        f"#define {macro_prefix}_GRAPH_ARENA_BYTES {plan.arena_bytes}",
        f"#define {macro_prefix}_GRAPH_CONST_BYTES {const_bytes}", "",
        "/* sums of the I/O sizes, each rounded up to 4 bytes (for static buffers) */",
        f"#define {macro_prefix}_GRAPH_INPUT_BYTES_TOTAL "
        f"{sum(_round4(tensors[i].nbytes) for i in model.inputs)}",
        f"#define {macro_prefix}_GRAPH_OUTPUT_BYTES_TOTAL "
        f"{sum(_round4(tensors[i].nbytes) for i in model.outputs)}",
        *[f"#define {macro_prefix}_GRAPH_INPUT{k}_BYTES {tensors[ti].nbytes}"
          for k, ti in enumerate(model.inputs)],
        *[f"#define {macro_prefix}_GRAPH_OUTPUT{k}_BYTES {tensors[ti].nbytes}"
          for k, ti in enumerate(model.outputs)],
        "", "enum {", *_enum_lines(model.input_names, macro_prefix, "IN"), "};",
        "enum {", *_enum_lines(model.output_names, macro_prefix, "OUT"), "};", "",
        f"extern const mg_io_desc_t {prefix}_graph_inputs[];",
        f"extern const mg_io_desc_t {prefix}_graph_outputs[];", "",
        "/* Runs the graph once. inputs[k]/outputs[k]: caller buffers for graph input/output k",
        " * (outputs must not overlap inputs). Returns 0, or -1 on an out-of-range GATHER index. */",
        f"int {prefix}_graph_invoke(const void *const *inputs, void *const *outputs);", "",
        "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", "",
    ]


def generate_graph_package(model: Model, out_dir, prefix: str = "mg") -> dict:
    """Write <prefix>_model_data.{h,c} (the stateless graph); return a summary dict."""
    check_supported(model)
    check_prefix(prefix)
    tensors = model.tensors
    params = [op_params(model, op) for op in model.operators]
    plan = plan_memory(model)
    const_tensors = _used_constants(model, plan)
    const_bytes = sum(tensors[ti].nbytes for ti in const_tensors)
    source = _source_lines(model, plan, params, prefix, const_tensors)
    header = _header_lines(model, plan, prefix, const_bytes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{prefix}_model_data.h").write_text("\n".join(header))
    (out / f"{prefix}_model_data.c").write_text("\n".join(source))
    act_bytes = sum(tensors[i].nbytes for op in model.operators for i in op.outputs
                    if plan.loc[i].kind == "arena")
    return {"model_id": model.model_id, "ops": [op.op for op in model.operators],
            "arena_bytes": plan.arena_bytes, "unplanned_bytes": act_bytes,
            "const_bytes": const_bytes,
            "io_bytes": sum(tensors[i].nbytes for i in model.inputs + model.outputs),
            "files": [str(out / f"{prefix}_model_data.h"), str(out / f"{prefix}_model_data.c")]}
