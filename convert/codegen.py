"""C code generation from an int8 .tflite: the dispatcher.

    python -m mgrade_edge.convert.codegen MODEL.tflite --out DIR [--prefix mg] [--name NAME] [--generic]
                              [--measure] [--stack] [--no-resources]

A .tflite carrying the `mgrade` streaming metadata (made by `python -m mgrade_edge.convert`) gets the
stateful model package (<prefix>_model.c + <prefix>_model_data.{h,c}, implementing
mcu/runtime/mg_model.h over a per-stream instance <prefix>_model_t, with fused delay-ring and
minGRU kernels; prefixes other than mg name everything <prefix>_*, so two models link into one
program); any other int8 .tflite, or --generic, gets the
stateless graph package (<prefix>_model_data.{h,c}, <prefix>_graph_invoke).

--name names the model (mg_model_info_t.name, <PREFIX>_MODEL_NAME, what the device reports
and the messages); the default is the run folder's name (RUN for RUN/int8/model.tflite,
convert's layout; otherwise the model's folder). For an mGRADE model the resource table
(convert/resources.py: flash, RAM of a Cortex-M4 build) is printed at the end; --measure
adds instructions per step under QEMU (the first sequence of test_data.npz beside the model;
8 zero frames without one) and the microsecond estimates (the firmware's stack high-water
mark: `mgrade-package MODEL_DIR --stack`, a host tool runs it). For a whole self-contained
C folder (runtime, model, example main, Makefile, README) see
`python -m mgrade_edge.convert.cpackage` (make package).

Layers of convert/ code generation (each imports only from the layers above it):

  tflite_reader    .tflite -> tensors, operators, metadata entries (no C, no TFLM)
  names, rings     step-graph tensor names; delay ring layout (lengths, offsets, period)
  metadata         the mgrade JSON schema: one writer, one reader
  tflm_params      TFLite-Micro Prepare-time parameters of each operator (op_params)
  arena            static tensor arena planned offline (Loc, Plan, plan_memory)
  cemit            C text: ctype, arrays, tensor pointers, C99 designated initialisers
  codegen_fast     fast-path tables and weight layouts (mg_fast.h)
  steps            the step program's records (DelayStep, MinGRUStep, OpStep, StepProgram)
  graph_package    generic graph package writer (emit_op per operator)
  mgrade_match     the fusion matcher's pieces (delay conv, int8 minGRU parts)
  state16, input16 the int16 minGRU state tail and input front: matchers, parameters, C
  ops16            generic int16 operators: parameters, C
  program          build_program: the step program, matched once from the .tflite as written
  fast_steps       the fused steps' fast-path declarations, the ops a fast step absorbs
  codegen_mgrade   mGRADE package writer (reads the program), one function per generated file
  resources        the resource table (flash, RAM, instructions, estimated us per step)
  codegen          this dispatcher (generate, main); codegen_micropython sits beside it
  cpackage         the self-contained per-run C folder (python -m mgrade_edge.convert.cpackage)
  arduino          the package + runtime + protocol app as an Arduino library (+ .zip)

Supported operators: FULLY_CONNECTED, DEPTHWISE_CONV_2D, ADD, SUB, MUL, LOGISTIC, MINIMUM,
MAXIMUM, RELU, CONCATENATION, GATHER, RESHAPE (+ SQUEEZE, EXPAND_DIMS), QUANTIZE (int8->int8).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":    # outside the project's venv: one line, not a traceback
    from mgrade_edge.training.console import require
    require("numpy", "flatbuffers", command="-m mgrade_edge.convert.codegen")

from mgrade_edge.convert import resources
from mgrade_edge.convert.codegen_mgrade import generate_package
from mgrade_edge.convert.errors import ConvertError, package_line
from mgrade_edge.convert.graph_package import generate_graph_package
from mgrade_edge.convert.metadata import from_model
from mgrade_edge.convert.tflite_reader import Model, TFLiteReadError, read_tflite
from mgrade_edge.convert.tflm_params import CodegenError


def generate(model_src, out_dir, prefix: str = "mg", generic: bool = False,
             name: str | None = None) -> dict:
    """Write the C package for a .tflite (bytes, path or parsed Model); return a summary dict.

    A .tflite with mGRADE streaming metadata gets the stateful model package (mg_model.h
    API, fused delay/minGRU kernels: convert/codegen_mgrade.py) unless `generic` is set;
    name: its model name (default: the metadata's task)."""
    model = model_src if isinstance(model_src, Model) else read_tflite(model_src)
    if not generic:
        meta = from_model(model)
        if meta is not None:
            return generate_package(model, meta, out_dir, prefix, name)
    return generate_graph_package(model, out_dir, prefix)


def run_name(model_path) -> str:
    """The default model name: the run folder's name for convert's layout RUN/int8/model.tflite
    (a model folder named int8*), else the model's own folder name."""
    folder = Path(model_path).resolve().parent
    if folder.name.startswith("int8") and folder.parent.name:
        folder = folder.parent
    return folder.name or "model"


def resource_table(model_bytes: bytes, x=None, **kw) -> dict:
    """convert/resources.measure with this module's package writer (kw: run, stack, steps;
    measure works in a temporary folder of its own)."""
    return resources.measure(model_bytes, generate, x, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mgrade_edge.convert.codegen",
                                 description=__doc__.split("\n\n", 1)[0].split("\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="int8 .tflite file")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--prefix", default="mg", help="C symbol/file prefix (default mg)")
    ap.add_argument("--name", default=None,
                    help="model name (default: the run folder's name, see below)")
    ap.add_argument("--generic", action="store_true",
                    help="emit the stateless graph (mg_graph_invoke) even for an mGRADE model")
    ap.add_argument("--quiet", action="store_true",
                    help="accepted like every CLI's; codegen prints only its summary anyway")
    ap.add_argument("--measure", action="store_true",
                    help="resource table: also instructions/step under QEMU and the us estimates")
    ap.add_argument("--stack", action="store_true",
                    help="moved: the firmware's stack high-water mark is measured by "
                         "`mgrade-package MODEL_DIR --stack` (host tools)")
    ap.add_argument("--no-resources", action="store_true",
                    help="skip the resource table (no Cortex-M4 build)")
    a = ap.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", a.prefix):
        print(f"codegen: error: --prefix {a.prefix!r} is not a C identifier (letters, digits, "
              f"_; not starting with a digit)", file=sys.stderr)
        return 2
    if a.stack:
        print(f"codegen: error: --stack runs the firmware in QEMU through the host tools: use "
              f"`mgrade-package {Path(a.model).parent} --stack` (the C folder and its table)",
              file=sys.stderr)
        return 2
    name = a.name or run_name(a.model)
    try:
        s = generate(a.model, a.out, a.prefix, generic=a.generic, name=name)
    except TFLiteReadError as e:
        print(f"codegen: error: {a.model}: {e}; give an int8 .tflite made by `python -m mgrade_edge.convert`"
              f" (or TFLite's converter)", file=sys.stderr)
        return 2
    except (CodegenError, ConvertError, OSError) as e:
        print(f"codegen: error: {e}", file=sys.stderr)
        return 2
    if "summary" in s:
        print(f"{name}: {s['summary']}")
        if not a.no_resources:
            x = resources.test_inputs(Path(a.model).parent) if a.measure else None
            try:
                res = resource_table(Path(a.model).read_bytes(), x, run=a.measure)
            except (RuntimeError, subprocess.SubprocessError) as e:   # a failed build or run
                print(f"codegen: error: resource table: {e}", file=sys.stderr)
                return 1
            cmd = f"python -m mgrade_edge.convert.codegen {a.model} --out {a.out}"
            print(resources.table(res, {"run": f"{cmd} --measure", "stack":
                                        f"mgrade-package {Path(a.model).parent} --stack"}))
        return 0
    print(package_line(s["model_id"], [f"{len(s['ops'])} ops",
                                       f"arena {s['arena_bytes']} B (unshared "
                                       f"{s['unplanned_bytes']} B)",
                                       f"constants {s['const_bytes']} B",
                                       f"graph I/O {s['io_bytes']} B"], ", ".join(s["files"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
