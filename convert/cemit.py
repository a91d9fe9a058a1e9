"""C text helpers shared by the package writers: types, arrays, identifiers, constant
tensors, tensor pointers and C99 designated initialisers.

Every generated struct initialiser goes through `designated` (`{ .field = value, ... }`), so
the C headers of mcu/runtime alone fix the field order: a field moved in a header cannot
silently shift the values the generator writes.
"""
from __future__ import annotations

import re

import numpy as np

from mgrade_edge.convert.arena import Plan
from mgrade_edge.convert.tflite_reader import Tensor
from mgrade_edge.convert.tflm_params import CodegenError, storage_dtype, zero_point


def ctype(t: Tensor) -> str:
    """C element type of a stored tensor: int8_t, int16_t or int32_t (CodegenError otherwise)."""
    return {np.dtype(np.int8): "int8_t", np.dtype(np.int16): "int16_t",
            np.dtype(np.int32): "int32_t"}[storage_dtype(t)]


def carray(values, per_line: int = 16) -> str:
    """The comma-separated integers of an array initialiser, `per_line` a line ("0" if empty)."""
    vals = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    if not vals:
        return "0"
    lines = [", ".join(vals[k:k + per_line]) for k in range(0, len(vals), per_line)]
    return "\n    " + ",\n    ".join(lines) + "\n"


def clist(v) -> str:
    """A short array initialiser on one line: {1, 2, 3} ({0} if empty)."""
    return "{" + ", ".join(str(int(x)) for x in v) + "}" if len(v) else "{0}"


def cfloat(v: float) -> str:
    """A float32 C literal for v: 9 significant digits (round-trips float32), always with a
    '.' or an exponent so the 'f' suffix is legal (1 -> 1.0f, not 1f)."""
    text = f"{float(v):.9g}"
    if not any(c in text for c in ".eEn"):       # an integer-looking value ('n': inf / nan)
        text += ".0"
    return text + "f"


# Storage of the package's constants: MG_ROM (mcu/runtime/mg_rom.h) keeps them in flash on AVR
# and is empty everywhere else.
ROM_STATIC = "static const MG_ROM"
ROM_EXTERN = "const MG_ROM"


def int_array(ctype_: str, name: str, values, storage: str = ROM_STATIC) -> str:
    """`{storage} {ctype} {name}[n] = {...};` of a flat integer array (n >= 1)."""
    v = np.asarray(values).reshape(-1)
    return f"{storage} {ctype_} {name}[{max(1, v.size)}] = {{{carray(v)}}};"


def ident(s: str) -> str:
    """An upper-case C identifier made of a tensor or signature name."""
    s = re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").upper()
    return s if s and not s[0].isdigit() else "T_" + s


def const_tensor_lines(prefix: str, ti: int, t: Tensor, storage: str = ROM_STATIC
                       ) -> list[str]:
    """C lines defining constant tensor `ti` as `{storage} <ctype> {prefix}_t{ti}[n]`, after a
    comment with its name, shape and quantization."""
    qs = ""
    if t.quant is not None:
        qs = (f" scale[{t.quant.scale.size}]={t.quant.scale[0]:.9g}"
              f"{'...' if t.quant.scale.size > 1 else ''} zp={zero_point(t)}")
    return [f"/* tensor {ti} '{t.name}' {list(t.shape)}{qs} */",
            f"{storage} {ctype(t)} {prefix}_t{ti}[{max(t.size, 1)}] = {{{carray(t.data)}}};"]


def designated(fields: dict) -> str:
    """C99 designated initialiser `{ .a = 1, .b = x }` of a struct. Values: integers, C
    expressions (str), lists/tuples (array members, `{1, 2}`), dicts (nested structs)."""
    def value(v):
        if isinstance(v, str):
            return v
        if isinstance(v, dict):
            return designated(v)
        if isinstance(v, (list, tuple, np.ndarray)):
            return "{" + ", ".join(value(x) for x in v) + "}" if len(v) else "{0}"
        return str(int(v))
    return "{ " + ", ".join(f".{k} = {value(v)}" for k, v in fields.items()) + " }"


def struct_decl(ctype_: str, name: str, fields: dict, storage: str = ROM_STATIC) -> str:
    """`{storage} {ctype} {name} = { .field = value, ... };`"""
    return f"{storage} {ctype_} {name} = {designated(fields)};"


def tensor_pointer(tensors, plan: Plan, P: str, input_expr, output_expr):
    """ptr(tensor index, const) -> the C expression of the tensor's buffer: NULL for -1,
    `{P}_t<k>` for a constant, `input_expr(slot, ctype, const)` / `output_expr(slot, ctype,
    qualifier)` for a graph input / output slot, a cast of `arena + offset` otherwise."""
    def ptr(ti: int, const: bool) -> str:
        if ti < 0:
            return "NULL"
        ct = ctype(tensors[ti])
        q = "const " if const else ""
        lc = plan.loc[ti]
        if lc.kind == "const":
            return f"{P}_t{lc.index}"
        if lc.kind == "input":
            return input_expr(lc.index, ct, const)
        if lc.kind == "output":
            return output_expr(lc.index, ct, q)
        return f"({q}{ct} *)(void *)(arena + {lc.offset})"
    return ptr


def check_prefix(prefix: str) -> None:
    """CodegenError unless `prefix` is a C identifier."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise CodegenError(f"bad prefix {prefix!r}")
