"""The resource table of a converted model: flash, RAM, instructions and time per step.

One home for the figures that `python -m mgrade_edge.convert` (stored in report.json "resources"),
`python -m mgrade_edge.convert.codegen` and the per-run C folder (`python -m mgrade_edge.convert.cpackage`, `make
package`: its README.md; `make resources` adds the stack) print:

* flash of the model package + runtime, split into int8 weights, parameters (biases,
  requantization multipliers/shifts, lookup tables, operator structs) and code, from the
  symbols of a linked Cortex-M4 build (arm-none-eabi-gcc -O2, --gc-sections:
  convert/mcu_harness.py's build_check + memory_split), for both kernel paths: fast
  (MG_FAST=1, the default on a core with the DSP extension) and portable (MG_FAST=0, any
  C99 target: the path a Cortex-M0+ runs);
* RAM: one stream's state (delay rings, minGRU states, step counter) and the shared step
  scratch (arena + fast-path buffers); the stack high-water mark of the qemu-cm4 firmware
  (protocol app + model, painted at reset: mcu/boards/mg_stack.h) when a stack probe is
  given (host_tools/firmware_stack.probe: it runs a protocol session, so the host tools pass
  it in; `mgrade-package --stack`, make resources);
* instructions per step of the emulated Cortex-M4 (QEMU mps2-an386 -icount: the harness's
  run_check, the logits checked against TFLite-Micro on the way) for both paths, over the
  first --steps steps of the first test sequence;
* an ESTIMATE of microseconds per step at 64, 160 and 240 MHz: instructions / MHz, i.e. one
  instruction per cycle. QEMU has no pipeline or memory timing; flash wait states, loads and
  multi-cycle instructions make a real core slower.

`measure` needs arm-none-eabi-gcc (and qemu-system-arm for the instruction counts); without
them the flash/instruction rows say so and the RAM rows come from the generated package
(state, arena). It takes the package writer as an argument (convert.codegen.generate) so that
this module sits below codegen in convert/'s layers. The harness's C sources come from the
installed package (mgrade_edge.mcu), so the table is measured from a wheel as from a checkout.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
import tempfile
from pathlib import Path

import numpy as np

from mgrade_edge.convert import mcu_harness as mc

CLOCKS_MHZ = (64, 160, 240)
PATHS = {"fast": True, "portable": False}
MAX_STEPS = 256
# (model sha256, sequence shape and bytes, run, path) -> that path's measured figures: a
# process measures each (model, sequence, path) once (convert's form choice measures the
# chosen form's fast path, its resource table then reuses it and builds only the portable one)
_MEASURED: dict[tuple, dict] = {}
ESTIMATE_NOTE = ("estimate from emulated instruction counts at 1 instruction per cycle "
                 "(not a measurement: flash wait states and multi-cycle instructions add time)")


def _sequence(n_in: int, x=None, steps: int = MAX_STEPS) -> np.ndarray:
    """The int8 sequence [1, T, n_in] the measurement streams: the first test sequence (its
    first `steps` steps), or zeros (8 steps) when there is none."""
    if x is None or len(x) == 0:
        return np.zeros((1, 8, n_in), np.int8)
    return np.ascontiguousarray(np.asarray(x)[:1, :steps].astype(np.int8))


def estimate_us(instructions: float, clocks=CLOCKS_MHZ) -> dict:
    """{MHz: microseconds per step} at one instruction per cycle (an estimate)."""
    return {str(f): instructions / f for f in clocks}


def measure(model_bytes: bytes, generate, x=None, *, run: bool = True, stack=None,
            steps: int = MAX_STEPS, work=None, paths=tuple(PATHS)) -> dict:
    """The resource table of a model (.tflite bytes) as a JSON-ready dict.

    generate: convert.codegen.generate (bytes, out_dir) -> summary, the mg-prefixed package;
    x: int8 test sequences [S, T, n_in] (the first one, up to `steps` steps, is streamed);
    run: count instructions under QEMU; stack: None, or the stack probe (gen_dir, out_dir,
    seq) -> {"board", "path", "used", "reserved", "steps"} (host_tools/firmware_stack.probe:
    the qemu-cm4 firmware's stack high-water mark over a protocol session of that sequence);
    paths: which kernel paths to build and count (default both, "fast" and "portable")."""
    from mgrade_edge.convert.tflite_reader import model_id
    from mgrade_edge.convert.vectors import reference_steps, write_test_vectors

    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory(prefix="mg_resources_")
        work = tmp.name
    work = Path(work)
    try:
        gen = work / "gen"
        info = generate(model_bytes, gen)
        if info.get("kind") != "mgrade":
            raise ValueError("the resource table needs an mGRADE streaming model (mgrade "
                             "metadata, made by `python -m mgrade_edge.convert`)")
        defs = mc.header_defines(gen / "mg_model_data.h")
        seq = _sequence(defs["MG_MODEL_N_IN"], x, steps)
        res = {"model_id": model_id(model_bytes), "target": mc.TARGETS["qemu-cm4"]["label"],
               "clock_mhz": list(CLOCKS_MHZ), "estimate_note": ESTIMATE_NOTE,
               "steps_measured": int(seq.shape[1]),
               "macs_per_step": info["macs_per_step"],
               "state_bytes": info["state_bytes"], "arena_bytes": info["arena_bytes"],
               "const_bytes": info["const_bytes"], "paths": {}, "stack": None, "missing": None}
        if not mc.have("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size"):
            res["missing"] = "arm-none-eabi-gcc not found (make toolchain)"
            return res
        if (run or stack) and not mc.have("qemu-system-arm"):
            res["missing"] = "qemu-system-arm not found (make toolchain): no instruction counts"
            run, stack = False, None
        key = (hashlib.sha256(model_bytes).hexdigest(), seq.shape, seq.tobytes(), run)
        todo = [n for n in paths if (key, n) not in _MEASURED]
        if todo:
            logits, states = reference_steps(model_bytes, seq)
            write_test_vectors(gen, seq, logits, states)
        for name, fast in ((n, PATHS[n]) for n in todo):
            b = mc.build_check("qemu-cm4", gen, work / "cm4", debug=False, fast=fast)
            mem = mc.memory_split(b)
            flash, ram = mem["flash"], mem["ram"]
            weights = _weight_bytes(model_bytes, mem["symbols"])
            p = {"flash": {"weights": weights,
                           "parameters": flash["constants_weights"] + flash["constants_params"]
                           - weights, "code": flash["code"], "total": flash["total"]},
                 "ram": {"state": ram["state_total"],
                         "scratch": ram["scratch_arena"] + ram["other"],
                         "total": ram["total"]},
                 "instructions_per_step": None, "us_per_step_estimate": None}
            if run:
                r = mc.run_check(b)
                ips = r["instructions_per_step"]
                p["instructions_per_step"] = {k: round(v, 1) for k, v in ips.items()}
                p["us_per_step_estimate"] = {k: round(v, 2)
                                             for k, v in estimate_us(ips["mean"]).items()}
                p["logits_mismatched_bytes"] = r["mismatched_bytes"]
            _MEASURED[(key, name)] = p
        for name in paths:
            res["paths"][name] = copy.deepcopy(_MEASURED[(key, name)])
        if stack is not None:
            res["stack"] = stack(gen, work / "fw", seq)
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


def _weight_bytes(model_bytes: bytes, symbols: dict) -> int:
    """Flash bytes of the int8 weights among a linked build's package symbols: the int8
    constant tensors mg_t<k> (filters and int8 constants; the int32 biases count as
    parameters) and the fast path's re-laid weight arrays (mg_*f_w, mg_l<l>_filter_cm)."""
    from mgrade_edge.convert.tflite_reader import read_tflite

    T = read_tflite(model_bytes).tensors
    total = 0
    for name, size in symbols.items():
        m = re.fullmatch(r"mg_t(\d+)", name)
        if m:
            total += size if T[int(m.group(1))].type_name == "INT8" else 0
        elif re.fullmatch(r"mg_\w*f_w|mg_l\d+_filter_cm", name):
            total += size
    return total


def test_inputs(model_dir):
    """The int8 test sequences x [N, T, n_in] of a converted model folder (None without
    test_data.npz)."""
    f = Path(model_dir) / "test_data.npz"
    if not f.is_file():
        return None
    with np.load(f) as z:
        return z["x"]


def stored(model_dir, model_id: str) -> dict | None:
    """The table report.json holds for this model id (None if absent or for another model)."""
    try:
        res = json.loads((Path(model_dir) / "report.json").read_text()).get("resources")
    except (OSError, ValueError, AttributeError):
        return None
    return res if isinstance(res, dict) and res.get("model_id") == model_id else None


def store(model_dir, res: dict) -> None:
    """Write `res` into MODEL_DIR/report.json under "resources" (atomically)."""
    rep = Path(model_dir) / "report.json"
    report = json.loads(rep.read_text()) if rep.is_file() else {}
    report["resources"] = res
    tmp = rep.with_name(rep.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(rep)


HINTS = {"run": "make package RUN=...", "stack": "make resources RUN=..."}


def rows(res: dict, hints: dict = HINTS) -> list[tuple[str, str, str]]:
    """The table as rows (label, fast, portable); a row whose portable cell is "" spans both
    columns. hints: the commands that fill the rows not measured here ("run": instructions,
    "stack": the stack high-water mark)."""
    P = res["paths"]
    if not P:
        why = res.get("missing") or "not measured"
        return [("flash", why, ""), ("RAM: state (per stream)", f"{res['state_bytes']} B", ""),
                ("RAM: scratch arena", f"{res['arena_bytes']} B", "")]

    def col(f):
        return tuple(f(P[k]) for k in PATHS)

    out = [("", "fast (MG_FAST=1)", "portable (MG_FAST=0)"),
           ("flash: weights", *col(lambda p: f"{p['flash']['weights']} B")),
           ("flash: parameters", *col(lambda p: f"{p['flash']['parameters']} B")),
           ("flash: code", *col(lambda p: f"{p['flash']['code']} B")),
           ("flash: total", *col(lambda p: f"{p['flash']['total']} B")),
           ("RAM: state (per stream)", *col(lambda p: f"{p['ram']['state']} B")),
           ("RAM: scratch (shared)", *col(lambda p: f"{p['ram']['scratch']} B")),
           ("RAM: total", *col(lambda p: f"{p['ram']['total']} B"))]
    s = res.get("stack")
    out.append(("RAM: stack high-water",
                f"{s['used']} B of {s['reserved']} B reserved ({s['board']} firmware, "
                f"{s['path']} path, whole protocol app)" if s
                else f"not measured ({hints['stack']})", ""))
    if P["fast"]["instructions_per_step"] is None:
        out.append(("instructions/step (M4)", res.get("missing") or
                    f"not measured ({hints['run']})", ""))
        return out
    out.append(("instructions/step (M4)",
                *col(lambda p: f"{p['instructions_per_step']['mean']:.0f}")))
    for f in res["clock_mhz"]:
        out.append((f"est. us/step @ {f} MHz",
                    *col(lambda p: f"{p['us_per_step_estimate'][str(f)]:.1f}")))
    return out


def table(res: dict, hints: dict = HINTS) -> str:
    """Plain-text table for a terminal."""
    rs = rows(res, hints)
    w = [max(len(r[k]) for r in rs if r[2]) if any(r[2] for r in rs) else 0 for k in range(3)]
    w[0] = max(len(r[0]) for r in rs)
    lines = [f"resources ({res['target']}; model {res['model_id']}, {res['macs_per_step']} "
             f"MACs/step):"]
    for r in rs:
        cells = [f"{r[0]:<{w[0]}}", r[1]] if not r[2] else \
            [f"{c:<{w[k]}}" for k, c in enumerate(r)]
        lines.append(("  " + "  ".join(cells)).rstrip())
    if res["paths"] and res["paths"]["fast"]["instructions_per_step"] is not None:
        lines.append(f"  instructions: mean over {res['steps_measured']} steps under QEMU "
                     f"-icount; us/step: {ESTIMATE_NOTE}")
    return "\n".join(lines)


def markdown(res: dict, hints: dict = HINTS) -> str:
    """The same table in Markdown (the C folder's README.md)."""
    rs = rows(res, hints)
    if rs[0][0] == "":
        head, body = rs[0], rs[1:]
        head = ("", *head[1:])
    else:
        head, body = ("", "", ""), rs
    md = ["| " + " | ".join(head) + " |", "|---|---|---|"]
    md += ["| " + " | ".join(r) + " |" for r in body]
    md += ["", f"Target: {res['target']}; model id {res['model_id']}, "
               f"{res['macs_per_step']} MACs/step."]
    if res["paths"] and res["paths"]["fast"]["instructions_per_step"] is not None:
        md.append(f"Instructions: emulated (QEMU -icount), mean over {res['steps_measured']} "
                  f"steps. Microseconds: {ESTIMATE_NOTE}.")
    return "\n".join(md)
