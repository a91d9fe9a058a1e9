"""C code generation from an int8 .tflite: the dispatcher.

    python -m mgrade_edge.convert.codegen MODEL.tflite --out DIR [--prefix mg] [--generic]

A .tflite carrying the `mgrade` streaming metadata (made by `python -m mgrade_edge.convert`) gets the
stateful model package (<prefix>_model.c + <prefix>_model_data.{h,c}, implementing
mcu/runtime/mg_model.h over a per-stream instance <prefix>_model_t, with fused delay-ring and
minGRU kernels; prefixes other than mg name everything <prefix>_*, so two models link into one
program); any other int8 .tflite, or --generic, gets the
stateless graph package (<prefix>_model_data.{h,c}, <prefix>_graph_invoke).

Layers of convert/ code generation (each imports only from the layers above it):

  tflite_reader    .tflite -> tensors, operators, metadata entries (no C, no TFLM)
  names, rings     step-graph tensor names; delay ring layout (lengths, offsets, period)
  metadata         the mgrade JSON schema: one writer, one reader
  tflm_params      TFLite-Micro Prepare-time parameters of each operator (op_params)
  arena            static tensor arena planned offline (Loc, Plan, plan_memory)
  cemit            C text: ctype, arrays, tensor pointers, C99 designated initialisers
  codegen_fast     fast-path reference arithmetic, tables and weight layouts (mg_fast.h)
  graph_package    generic graph package writer (emit_op per operator)
  mgrade_match     mGRADE fusion matcher (DelayFusion, GruFusion, match)
  codegen_mgrade   mGRADE package writer, one function per generated file
  codegen          this dispatcher (generate, main); codegen_micropython sits beside it
  arduino          the package + runtime + protocol app as an Arduino library (+ .zip)

Supported operators: FULLY_CONNECTED, DEPTHWISE_CONV_2D, ADD, SUB, MUL, LOGISTIC, MINIMUM,
MAXIMUM, RELU, CONCATENATION, GATHER, RESHAPE (+ SQUEEZE, EXPAND_DIMS), QUANTIZE (int8->int8).
"""
from __future__ import annotations

import argparse
import re
import sys

from mgrade_edge.convert.codegen_mgrade import generate_package
from mgrade_edge.convert.graph_package import generate_graph_package
from mgrade_edge.convert.metadata import from_model
from mgrade_edge.convert.tflite_reader import Model, TFLiteReadError, read_tflite
from mgrade_edge.convert.tflm_params import CodegenError


def generate(model_src, out_dir, prefix: str = "mg", generic: bool = False) -> dict:
    """Write the C package for a .tflite (bytes, path or parsed Model); return a summary dict.

    A .tflite with mGRADE streaming metadata gets the stateful model package (mg_model.h
    API, fused delay/minGRU kernels: convert/codegen_mgrade.py) unless `generic` is set."""
    model = model_src if isinstance(model_src, Model) else read_tflite(model_src)
    if not generic:
        meta = from_model(model)
        if meta is not None:
            return generate_package(model, meta, out_dir, prefix)
    return generate_graph_package(model, out_dir, prefix)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mgrade_edge.convert.codegen",
                                 description=__doc__.split("\n\n", 1)[0].split("\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="int8 .tflite file")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--prefix", default="mg", help="C symbol/file prefix (default mg)")
    ap.add_argument("--generic", action="store_true",
                    help="emit the stateless graph (mg_graph_invoke) even for an mGRADE model")
    a = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a.prefix):
        print(f"codegen: error: --prefix {a.prefix!r} is not a C identifier (letters, digits, "
              f"_; not starting with a digit)", file=sys.stderr)
        return 2
    try:
        s = generate(a.model, a.out, a.prefix, generic=a.generic)
    except TFLiteReadError as e:
        print(f"codegen: error: {a.model}: {e}; give an int8 .tflite made by `python -m mgrade_edge.convert`"
              f" (or TFLite's converter)", file=sys.stderr)
        return 2
    except (CodegenError, OSError) as e:
        print(f"codegen: error: {e}", file=sys.stderr)
        return 2
    if "summary" in s:
        print(s["summary"])
        return 0
    print(f"model {s['model_id']}: {len(s['ops'])} ops, arena {s['arena_bytes']} B "
          f"(unshared {s['unplanned_bytes']} B), constants {s['const_bytes']} B, "
          f"graph I/O {s['io_bytes']} B -> {', '.join(s['files'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
