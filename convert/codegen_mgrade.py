"""mGRADE streaming .tflite -> stateful C model package (mcu/runtime/mg_model.h).

Called by `python -m mgrade_edge.convert.codegen MODEL.tflite --out DIR` when the .tflite carries the
`mgrade` metadata written by `python -m mgrade_edge.convert`. Writes

    DIR/mg_model_data.h   sizes, ids, ring layout constants, the instance type mg_model_t
                          (one stream's rings, minGRU states, step counter), debug accessors
    DIR/mg_model_data.c   the constant tensors (weights, biases, constants)
    DIR/mg_model.c        operator parameters, the shared step scratch, mg_model_init/step/info

(`mg` is the prefix: with --prefix kws the files, types, functions and macros are kws_*, so two
models link into one firmware; every stream is its own mg_model_t.)

compiled with mcu/runtime/{mg_quant,mg_kernels,mg_delay,mg_mingru}.c (include mcu/runtime).
The .tflite is the only source: shapes, quantization, delays and ring sizes come from it.
One writer per generated file (`model_data_c`, `model_c`, `model_data_h`) over one analysed
`Package` (`analyse`: the step program of convert/program.py, one operator per step, the
memory plan, constants).

What the package does per step, compared with the interpreter graph:

* Delay convolution (CONCATENATION(frame, ring) -> GATHER(idx) -> RESHAPE ->
  DEPTHWISE_CONV_2D): one `mg_delay_step_s8` call on per-channel trimmed rings. Channel c of
  layer l keeps R_c = max_e delays[c][e] frames (sum_c R_c bytes instead of R*H); a global step
  counter t (wrapped at the lcm of all R_c) gives slot (t - d) mod R_c; the frame is written to
  slot t mod R_c inside the same call. No index input, no copy.
* minGRU (FC_z, LOGISTIC, FC_h, MINIMUM, LOGISTIC, FC_h+RELU (or RELU), ADD, SUB, MUL, ADD):
  one `mg_mingru_step_s8` call, channel by channel, updating the state in place (the state
  input and output quantization are tied by convert/, checked here).
* int16 minGRU state (`python -m mgrade_edge.convert --state-bits 16 / auto`, convert/widen.py): the
  layer's MinGRUStep carries the int16 tail (convert/state16.py match_tail), the step becomes `mg_mingru_step_s16` / `mg_mingru_fast_s16` on the instance's int16 state
  `m->h16_<l>` whose int8 copy `m->h<l>` the residual reads (convert/state16.py).
* int16 minGRU input (`python -m mgrade_edge.convert --input-bits 16`, the default with an int16 gate;
  convert/widen.py widen_input): `mg_input16_front` (fast: `mg_input16_front_fast`) computes
  u16 from the frame and the conv output right after the delay step into the shared scratch
  `<P>_u16`, and `mg_mingru_step_u16` / `mg_mingru_fast_u16` run the 16x8 FCs on it and write
  the layer's residual output v8 as well (convert/input16.py: the front, one Front16 of the step).
* int16 delay-conv output (`--form conv16`, convert/widen.py widen_conv): the delay step is
  `mg_delay_step_s16` (fast: `mg_delay_fast_s16`, mcu/runtime/mg_ops16.h / mg_fast.h: the
  taps requantized to int16, TFLite's 16x8 depthwise arithmetic with an int64 bias) into the
  static scratch `<P>_c16`, and `mg_input16_front_c16` adds it to the requantized frame.
* Everything else: the generic kernels, as convert/graph_package.py emits them, on a static
  arena planned offline (convert/arena.py).

The fused kernels keep TFLite-Micro's integer arithmetic, so the package is bit-exact with the
TFLM Streamer (convert/stream.py): tests/test_mcu_model.py checks every step's logits and
states. The steps are matched once per layer from the metadata's input/output roles
(convert/program.py build_program); a graph of another shape is refused with a CodegenError
naming the layer and what was expected.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.arena import Plan, plan_memory
from mgrade_edge.convert.errors import package_line
from mgrade_edge.convert.cemit import (
    ROM_EXTERN, cfloat, const_tensor_lines, ctype, int_array, struct_decl, tensor_pointer)
from mgrade_edge.convert.codegen_fast import emit_fast_op, logistic_table
from mgrade_edge.convert.graph_package import (
    LOGISTIC_KEYS, REQUANT_KEYS, add_fields, emit_op, fc_struct_lines, mul_fields,
    mult_shift_lines, pick)
from mgrade_edge.convert.input_norm import frame_constants
from mgrade_edge.convert.metadata import from_model as mgrade_metadata, input_norm
from mgrade_edge.convert.input16 import emit_params as input16_params
from mgrade_edge.convert.fast_steps import (
    epilogue_call, fast_delay, fast_mingru, fast_mingru_u16, fc_epilogue, residual_adds)
from mgrade_edge.convert.program import build_program
from mgrade_edge.convert.steps import DelayStep, MinGRUStep, OpStep, StepProgram
from mgrade_edge.convert import ops16
from mgrade_edge.convert.state16 import debug16_lines, emit_params as s16_params
from mgrade_edge.convert.tflite_reader import Model, Operator, read_tflite
from mgrade_edge.convert.tflm_params import (
    ALIAS_OPS, CodegenError, requant, zero_point)


# ---------------------------------------------------------------------------------------------
# The analysed package: what all three files are written from

@dataclass
class Package:
    """An mGRADE step program (convert/program.py) laid out for C: the package's operator
    list (the program's fused steps as MG_DELAY / MG_MINGRU), its memory plan, the buffer of
    every tensor, the constants it stores."""
    program: StepProgram
    prefix: str                   # C symbol prefix (mg, or --prefix)
    step_ops: list[Operator]      # one operator per step: MG_DELAY / MG_MINGRU for the fused
    step_model: Model             # the model with step_ops, x + int8 states in, logits + states out
    plan: Plan
    ptr: object                   # ptr(tensor, const) -> C expression of its buffer
    used_consts: set[int]
    const_bytes: int
    name: str                     # model name in mg_model_info_t
    fast_report: dict = field(default_factory=dict)

    model = property(lambda self: self.program.model)
    H = property(lambda self: self.program.channels)
    delays = property(lambda self: self.program.delays)
    grus = property(lambda self: self.program.grus)
    tensors = property(lambda self: self.program.model.tensors)

    @property
    def macs_saved(self) -> int:
        """MACs the shared candidate / relu dot product saves per step."""
        return sum(f.fc["relu_fc"][1]["accum_depth"] * self.H for f in self.grus
                   if f.shares_dot)

    @property
    def fused_at(self) -> dict:
        """anchor op index -> its DelayStep / MinGRUStep."""
        return {f.anchor: f for f in self.delays + self.grus}

    @property
    def ring_info(self) -> list[dict]:
        """Per delay layer: its ring's bytes and frame offsets, the graph's ring bytes, the
        plain (unpacked) ring's frames and bytes, and its kernel span."""
        return [dict(layer=f.layer, bytes=f.ring.bytes, offsets=f.ring.offsets,
                     graph_bytes=f.ring.graph_bytes, plain_frames=f.ring.plain_frames,
                     plain_bytes=f.ring.plain_bytes, kernel_span=f.ring.kernel_span)
                for f in self.delays]

    @property
    def graph_outputs(self) -> set[int]:
        return set(self.program.model.outputs)

    @property
    def readout_op(self) -> int:
        """The index of the operator writing the logits (-1: none)."""
        return next((s.op.index for s in self.program.steps
                     if isinstance(s, OpStep) and self.program.logits in s.op.outputs), -1)

    def op(self, index: int) -> Operator:
        """The graph operator of index `index` (read_tflite numbers them by position)."""
        return self.model.operators[index]

    @property
    def macro_prefix(self) -> str:
        """The prefix of the package's macros (MG_MODEL_*, KWS_MODEL_*)."""
        return self.prefix.upper()


def _state16(pk: Package) -> list[MinGRUStep]:
    """The minGRU steps with an int16 state."""
    return [f for f in pk.grus if f.tail16 is not None]


def analyse(model: Model, meta: dict, prefix: str = "mg", name: str | None = None) -> Package:
    """The step program (convert/program.py), its operator list, memory plan and constants."""
    program = build_program(model, meta)
    step_ops = _step_operators(program)
    step_model, plan, ptr = _plan_package(program, step_ops, prefix)
    used_consts = _used_consts(model.tensors, step_ops, program.delays, program.grus)
    return Package(program, prefix, step_ops, step_model, plan, ptr, used_consts,
                   sum(model.tensors[i].nbytes for i in used_consts),
                   model_name(name or meta.get("task") or "mgrade"))


def _step_operators(program: StepProgram) -> list[Operator]:
    """One operator per step: MG_DELAY (reads the frame, writes the int8 conv output; conv16
    writes the static <P>_c16), MG_MINGRU (reads u and an int8 state, writes the int8 state or
    its copy h8; an int16 input reads the static <P>_u16 and also writes v8), the others
    as in the graph."""
    ops = []
    for s in program.steps:
        if isinstance(s, DelayStep):
            ops.append(Operator(s.anchor, "MG_DELAY", [s.frame],
                                [s.out] if s.conv16 is None else []))
        elif isinstance(s, MinGRUStep):
            reads = ([] if s.front16 else [s.u]) + ([s.h] if s.tail16 is None else [])
            ops.append(Operator(s.anchor, "MG_MINGRU", reads,
                                [s.h8] + ([s.v8] if s.front16 else [])))
        else:
            ops.append(s.op)
    return ops


def _plan_package(program: StepProgram, step_ops: list[Operator], prefix: str
                  ) -> tuple[Model, Plan, object]:
    """The package model (step_ops; x and the int8 states in, logits and the int8 states or
    copies out), its memory plan, and ptr(tensor, const) -> the C expression of a tensor's
    buffer (x, logits, the instance's int8 state `m->h<layer>`, a constant or the arena)."""
    state8 = [f for f in program.grus if f.tail16 is None]
    step_model = dataclasses.replace(program.model, operators=step_ops,
                             inputs=[program.x] + [f.h for f in state8],
                             outputs=[program.logits] + [f.h8 for f in program.grus],
                             input_names=[names.X] + [names.h(f.layer) for f in state8],
                             output_names=[names.LOGITS]
                             + [names.hnew(f.layer) for f in program.grus])
    plan = plan_memory(step_model)
    for ti, _ in plan.copies:
        raise CodegenError(f"graph output tensor {ti} is not produced by an operator")

    def input_expr(slot: int, ct: str, const: bool) -> str:
        if slot == 0:
            if not const:
                raise CodegenError("the x input is written by an operator")
            return "x"
        return f"m->{names.h(state8[slot - 1].layer)}"      # the instance's state

    def output_expr(slot: int, ct: str, q) -> str:
        return "logits" if slot == 0 else f"m->{names.h(program.grus[slot - 1].layer)}"

    ptr = tensor_pointer(program.model.tensors, plan, prefix, input_expr, output_expr)
    return step_model, plan, ptr


def _used_consts(tensors: list, step_ops: list[Operator], delays: list, grus: list) -> set[int]:
    """The constant tensors the package's ops and fused calls read (an ALIAS op: its input
    only; a conv16 layer's int64 bias is left out: _delay_code writes it); CodegenError where
    one of them is not a constant."""
    used_consts: set[int] = set()
    for op in step_ops:
        if op.op in ("MG_DELAY", "MG_MINGRU"):
            continue
        if op.op in ALIAS_OPS:
            used_consts |= {i for i in op.inputs[:1] if tensors[i].is_const}
        else:
            used_consts |= {i for i in op.inputs if i >= 0 and tensors[i].is_const}
    for f in delays:
        used_consts |= {f.filt} | ({f.bias} if f.bias >= 0 and tensors[f.bias].dtype != np.int64
                                   else set())
    for f in grus:
        for op, _ in f.fc.values():
            used_consts |= {i for i in op.inputs[1:] if i >= 0}
        used_consts.add(f.min_const)
    for ti in used_consts:
        if not tensors[ti].is_const:
            raise CodegenError(f"tensor {ti} ({tensors[ti].name}) is expected to be a constant")
    return used_consts


# ---------------------------------------------------------------------------------------------
# mg_model_data.c

def model_data_c(pk: Package) -> list[str]:
    """The constant tensors (weights, biases, constants) of the package."""
    P, T = pk.prefix, pk.tensors
    dc = [f"/* Generated by convert/codegen_mgrade.py from a .tflite, model id "
          f"{pk.model.model_id}.", " * Do not edit. Constant tensors of the model. */",
          f'#include "{P}_model_data.h"', ""]
    for ti in sorted(pk.used_consts):
        dc += const_tensor_lines(P, ti, T[ti], storage=ROM_EXTERN)
    dc.append("")
    return dc


# ---------------------------------------------------------------------------------------------
# mg_model.c

def _conv16(pk: Package, f: DelayStep) -> dict | None:
    """The 16x8 conv parameters of a conv16 layer's delay (convert/input16.py), else None."""
    return f.conv16


def _delay16_code(pk: Package, f: DelayStep, dw16: dict, decls: list) -> str:
    """The declarations (appended to decls) of a conv16 layer's int16 delay conv (mg_ops16.h
    mg_delay16_params_t: the ring layout, the 16x8 multipliers and int16 range in its
    mg_delay_params_t, the taps' int8 -> int16 requantization, the int64 bias); returns the
    mg_delay_step_s16 call writing <P>_c16."""
    P, H, ptr, L = pk.prefix, pk.H, pk.ptr, f.layer
    decls.append(int_array("uint16_t", f"{P}_l{L}_delay", f.delays.T.reshape(-1)))
    decls += mult_shift_lines(P, f"l{L}_dw16", dw16)
    decls.append(struct_decl("mg_delay_params_t", f"{P}_l{L}_delay_p", dict(
        channels=H, taps=f.delays.shape[1], delay=f"{P}_l{L}_delay",
        ring_len=f"{P}_l{L}_ring_len", ring_off=f"{P}_l{L}_ring_off", filter=f"{P}_t{f.filt}",
        bias="NULL", input_offset=0, output_offset=0, act_min=dw16["act_min"],
        act_max=dw16["act_max"], multiplier=f"{P}_l{L}_dw16_mult",
        shift=f"{P}_l{L}_dw16_shift")))
    decls.append(struct_decl("mg_requant_params_t", f"{P}_l{L}_taps16",
                         pick(dw16["taps16"], REQUANT_KEYS)))
    bias = "NULL"
    if f.bias >= 0:
        bias = f"{P}_l{L}_dw16_bias"
        decls.append(f"static const MG_ROM int64_t {bias}[{H}] = "
                 f"{{{', '.join(f'{int(v)}LL' for v in pk.tensors[f.bias].data.reshape(-1))}}};")
    decls.append(struct_decl("mg_delay16_params_t", f"{P}_l{L}_delay16", dict(
        d=f"&{P}_l{L}_delay_p", taps16=f"&{P}_l{L}_taps16", bias=bias)))
    ring = f"m->ring{L}" if f.ring.bytes else "NULL"
    return (f"    mg_delay_step_s16(&{P}_l{L}_delay16, {ring}, m->step_t, "
            f"{ptr(f.frame, True)}, {P}_c16);")


def _fast_delay16(pk: Package, f: DelayStep, dw16: dict) -> tuple[list, str] | None:
    """The fast path's declarations and call of a conv16 layer's delay conv (mg_fast.h
    mg_delay_fast_s16: channel-major taps, the int16 taps from a 256-entry table, an int32
    dot product), or None where that dot product could leave int32."""
    P, L, N = pk.prefix, f.layer, f.delays.shape[1]
    filt = np.asarray(pk.tensors[f.filt].data, np.int64).reshape(N, pk.H)       # [N, H]
    if np.abs(filt).sum(axis=0).max() * 32768 >= 2 ** 31:
        return None
    lut = requant(dw16["taps16"], np.arange(-128, 128))
    decls = [int_array("uint16_t", f"{P}_l{L}_delay_cm", f.delays.reshape(-1)),
             int_array("int8_t", f"{P}_l{L}_filter_cm", filt.T.reshape(-1)),
             int_array("int16_t", f"{P}_l{L}_taps16_lut", lut),
             struct_decl("mg_delay16_fast_t", f"{P}_l{L}_delay16f", dict(
                 p=f"&{P}_l{L}_delay16", delay=f"{P}_l{L}_delay_cm",
                 filter=f"{P}_l{L}_filter_cm", taps16=f"{P}_l{L}_taps16_lut"))]
    ring = f"m->ring{L}" if f.ring.bytes else "NULL"
    return decls, (f"    mg_delay_fast_s16(&{P}_l{L}_delay16f, {ring}, m->step_t, "
                   f"{pk.ptr(f.frame, True)}, {P}_c16);")


def _input16_decls(pk: Package, layer: int) -> list[str]:
    """The declarations of layer `layer`'s int16 front (convert/input16.py), both paths."""
    prefix = pk.prefix
    front = pk.program.gru(layer).front16
    front_params, front = front.params, front.tensors

    def fc_weights_bias(role: str) -> tuple[str, str]:
        inputs = front["fcs"][role].inputs
        return (f"{prefix}_t{inputs[1]}",
                f"{prefix}_t{inputs[2]}" if len(inputs) > 2 and inputs[2] >= 0 else "NULL")
    return input16_params(prefix, layer, front_params, fc_weights_bias)


def _debug_frame_copy(pk: Package, f: DelayStep) -> list[str]:
    """The debug copy of a delay layer's frame into m->dbg_frame<layer> (none unless the
    graph outputs the frame)."""
    if not f.frame_output:
        return []
    return ["#ifdef MG_MODEL_DEBUG",
            f"    mg_copy(m->dbg_frame{f.layer}, {pk.ptr(f.frame, True)}, {pk.H}u);", "#endif"]


def _delay16_layer_code(pk: Package, f: DelayStep, dw16: dict, shared: list[str]):
    """A conv16 layer's delay step (int16 delay conv, then the int16 front), the same code's
    declarations on both paths: (shared + its declarations, no reference-only declarations,
    the reference statements, the fast path or None)."""
    prefix, layer, ptr = pk.prefix, f.layer, pk.ptr
    shared = list(shared)
    call = _delay16_code(pk, f, dw16, shared)
    shared += _input16_decls(pk, layer)
    front = (f"    mg_input16_front_c16(&{prefix}_l{layer}_in16, {pk.H}, "
             f"{ptr(pk.program.gru(layer).front16.tensors['frame'], True)}, {prefix}_c16, "
             f"{prefix}_u16);")
    ref_body = [f"    /* layer {layer}: delay conv (16x8, int16 output) on the trimmed rings "
                f"(ops {f.ops}) */", call, front] + _debug_frame_copy(pk, f)
    fast16 = _fast_delay16(pk, f, dw16)
    if fast16 is None:
        pk.fast_report[f"op{f.anchor}"] = "MG_DELAY (int16 output): reference kernel"
        return shared, [], ref_body, None
    return shared, [], ref_body, (fast16[0], [fast16[1], front.replace(
        "mg_input16_front_c16(", "mg_input16_front_c16_fast(")], (0, 0))


def _delay_code(pk: Package, f: DelayStep, residual: dict, fast):
    """A delay layer's step: (declarations both paths read, the reference path's own
    declarations, the reference statements (the debug frame copy last), the fast path
    (decls, statements, scratch words) or None)."""
    prefix, channels, ptr, layer, dw_params = pk.prefix, pk.H, pk.ptr, f.layer, f.dw
    ring_info = pk.ring_info[pk.delays.index(f)]
    shared = [f"/* layer {layer} delay conv: replaces ops {f.ops} (CONCATENATION/GATHER/"
              f"RESHAPE/DEPTHWISE_CONV_2D) */",
              int_array("uint16_t", f"{prefix}_l{layer}_ring_len", f.ring_len),
              int_array("uint32_t", f"{prefix}_l{layer}_ring_off", ring_info["offsets"])]
    dw16 = _conv16(pk, f)
    if dw16 is not None:    # conv16: the int16 delay conv and front, on both paths
        return _delay16_layer_code(pk, f, dw16, shared)
    ref_decls = [int_array("uint16_t", f"{prefix}_l{layer}_delay", f.delays.T.reshape(-1))]
    ref_decls += mult_shift_lines(prefix, f"l{layer}_dw", dw_params)
    ref_decls.append(struct_decl("mg_delay_params_t", f"{prefix}_l{layer}_delay_p", dict(
        channels=channels, taps=f.delays.shape[1], delay=f"{prefix}_l{layer}_delay",
        ring_len=f"{prefix}_l{layer}_ring_len", ring_off=f"{prefix}_l{layer}_ring_off",
        filter=f"{prefix}_t{f.filt}", bias=f"{prefix}_t{f.bias}" if f.bias >= 0 else "NULL",
        input_offset=dw_params["input_offset"], output_offset=dw_params["output_offset"],
        act_min=dw_params["act_min"], act_max=dw_params["act_max"],
        multiplier=f"{prefix}_l{layer}_dw_mult", shift=f"{prefix}_l{layer}_dw_shift")))
    ring = f"m->ring{layer}" if ring_info["bytes"] else "NULL"
    front = []
    gru = pk.program.gru(layer)
    if gru and gru.front16:    # int16 minGRU input: u16 from the frame and this conv output
        shared += _input16_decls(pk, layer)
        front_tensors = gru.front16.tensors
        front = [f"    mg_input16_front(&{prefix}_l{layer}_in16, {channels}, "
                 f"{ptr(front_tensors['frame'], True)}, {ptr(front_tensors['conv'], True)}, "
                 f"{prefix}_u16);"]
    ref_body = [f"    /* layer {layer}: delay conv on the trimmed rings (ops {f.ops}) */",
                f"    mg_delay_step_s8(&{prefix}_l{layer}_delay_p, {ring}, m->step_t, "
                f"{ptr(f.frame, True)}, {ptr(f.out, False)});"] + front
    residual_add = residual.get(f.anchor)
    add_out = ptr(pk.op(residual_add[0]).outputs[0], False) if residual_add else "NULL"
    fast = fast and (fast[0], [f"    mg_delay_fast_s8(&{prefix}_l{layer}_delay_f, {ring}, "
                               f"m->step_t, {ptr(f.frame, True)}, {ptr(f.out, False)}, "
                               f"{add_out});"]
                     + [ln.replace("mg_input16_front(", "mg_input16_front_fast(")
                        for ln in front], fast[2])
    return shared, ref_decls, ref_body + _debug_frame_copy(pk, f), fast


def _mingru_ref_decls(pk: Package, f: MinGRUStep) -> list[str]:
    """The minGRU layer's FC, logistic and relu parameters and its mg_mingru_params_t (an
    int16 input's FCs are the front's: NULL here; sig_z, sub, mul, add_h NULL where the int16
    tail computes them)."""
    prefix, layer = pk.prefix, f.layer
    fcs = {} if f.front16 else f.fc
    decls = []
    for role, (_, fc_params) in fcs.items():
        decls += fc_struct_lines(prefix, f"l{layer}_{role}", fc_params)
    for sig in ("sig_z", "sig_p"):
        if getattr(f, sig) is not None:
            decls.append(struct_decl("mg_logistic_params_t", f"{prefix}_l{layer}_{sig}",
                                     pick(getattr(f, sig), LOGISTIC_KEYS)))
    if f.relu is not None:
        decls.append(struct_decl("mg_requant_params_t", f"{prefix}_l{layer}_relu",
                                 pick(f.relu, REQUANT_KEYS)))

    def fc_ref(role):
        if role not in fcs:
            return dict(fc="NULL", weights="NULL", bias="NULL")
        fc_op = fcs[role][0]
        bias = fc_op.inputs[2] if len(fc_op.inputs) > 2 else -1
        return dict(fc=f"&{prefix}_l{layer}_{role}", weights=f"{prefix}_t{fc_op.inputs[1]}",
                    bias=f"{prefix}_t{bias}" if bias >= 0 else "NULL")

    decls.append(struct_decl("mg_mingru_params_t", f"{prefix}_l{layer}_gru", dict(
        channels=pk.H, gate=fc_ref("gate"),
        sig_z=f"&{prefix}_l{layer}_sig_z" if f.sig_z is not None else "NULL",
        cand=fc_ref("cand"), min_const=f"{prefix}_t{f.min_const}",
        min_stride=0 if pk.tensors[f.min_const].size == 1 else 1, sig_p=f"&{prefix}_l{layer}_sig_p",
        relu_fc=fc_ref("relu_fc"), relu_fc_shares_dot=int(f.shares_dot),
        relu=f"&{prefix}_l{layer}_relu" if f.relu is not None else "NULL",
        add_g=f"&{prefix}_l{layer}_add_g",
        **{k: f"&{prefix}_l{layer}_{k}" if getattr(f, k) is not None else "NULL"
           for k in ("sub", "mul", "add_h")})))
    return decls


def _mingru_code(pk: Package, f: MinGRUStep, residual: dict, fast):
    """A minGRU layer's step: (declarations both paths read, the reference path's own
    declarations, the reference statements, the fast path or None). An int16 state
    (convert/state16.py) steps with the s16 calls, an int16 input too with the u16 ones."""
    prefix, ptr, layer = pk.prefix, pk.ptr, f.layer
    shared = [f"/* layer {layer} minGRU: replaces ops {f.ops} */"]
    for nm in ("add_g", "sub", "add_h"):        # sub, add_h, mul: an int8 state's update
        if getattr(f, nm) is not None:
            shared.append(struct_decl("mg_add_params_t", f"{prefix}_l{layer}_{nm}",
                                      add_fields(getattr(f, nm))))
    if f.mul is not None:
        shared.append(struct_decl("mg_mul_params_t", f"{prefix}_l{layer}_mul",
                                  mul_fields(f.mul)))
    ref_decls = _mingru_ref_decls(pk, f)
    u_in = f"{prefix}_u16" if f.front16 else ptr(f.u, True)  # int16 u: static scratch
    comment = f"    /* layer {layer}: minGRU step, state updated in place (ops {f.ops}) */"
    residual_add = residual.get(f.anchor)
    v_out = ptr(pk.op(residual_add[0]).outputs[0], False) if residual_add else "NULL"
    gru_s16_args = f"&{prefix}_l{layer}_gru, &{prefix}_l{layer}_s16"
    if f.tail16 is None:
        fast = fast and (fast[0], [f"    mg_mingru_fast_s8(&{prefix}_l{layer}_gru_f, {u_in}, "
                                   f"m->h{layer}, {prefix}_xq, {prefix}_acc, {v_out});"],
                         fast[2])
        call = f"    mg_mingru_step_s8(&{prefix}_l{layer}_gru, {u_in}, m->h{layer});"
        return shared, ref_decls, [comment, call], fast
    # int16 state: the tail's structs (both paths) and the s16 calls
    shared += s16_params(prefix, layer, f.tail16.params,
                         logistic_table(f.sig_z) if f.sig_z is not None else None)
    if f.front16:
        v8 = ptr(f.v8, False)
        call = (f"    mg_mingru_step_u16({gru_s16_args}, &{prefix}_l{layer}_in16, {prefix}_u16, "
                f"m->h16_{layer}, m->h{layer}, {v8});")
        fast = fast and (fast[0], [f"    mg_mingru_fast_u16({gru_s16_args}, "
                                   f"&{prefix}_l{layer}_in16f, {prefix}_u16, m->h16_{layer}, "
                                   f"m->h{layer}, {v8}, {prefix}_xq, {prefix}_acc);"], fast[2])
        return shared + ref_decls, [], [comment, call], fast   # every declaration: both paths
    call = f"    mg_mingru_step_s16({gru_s16_args}, {u_in}, m->h16_{layer}, m->h{layer});"
    fast = fast and (fast[0], [f"    mg_mingru_fast_s16(&{prefix}_l{layer}_gru_f, "
                               f"&{prefix}_l{layer}_s16, {u_in}, m->h16_{layer}, m->h{layer}, "
                               f"{prefix}_xq, {prefix}_acc, {v_out});"], fast[2])
    return shared, ref_decls, [comment, call], fast


@dataclass
class _OpCode:
    """One step op's C, decided before it is emitted: declarations both paths read (a fused
    ADD's or FC epilogue's first), the reference path's own declarations and statements, and
    the fast path: None, or (its declarations or None: the reference ones serve, its
    statements, (FC input scratch words, accumulator words))."""
    shared: list[str]
    ref_decls: list[str]
    ref_body: list[str]
    fast: tuple | None


def _prof_kind(op: Operator, readout_op: int) -> str:
    """The MG_PROF bucket of a step op."""
    return ("MG_PROF_DELAY" if op.op == "MG_DELAY" else "MG_PROF_MINGRU"
            if op.op == "MG_MINGRU" else "MG_PROF_READOUT" if op.index == readout_op
            else "MG_PROF_FC" if op.op == "FULLY_CONNECTED" else "MG_PROF_ELEM")


def _op_fast(pk: Package, op: Operator, residual: dict, absorbed: dict, chain: list,
             wide: bool):
    """The fast path of `op` or None (then the reference code runs on both paths): the fused
    steps' fast kernels (a fused ADD stays an op where its step has none), a comment for an
    op fused into another's fast step, the fast kernel of a generic op (with its FC
    epilogue); records the ops left to the reference kernels in pk.fast_report."""
    prefix, model, fusion = pk.prefix, pk.model, pk.fused_at.get(op.index)
    fast = None
    if op.op == "MG_DELAY" and _conv16(pk, fusion):
        pass                        # _delay_code: both paths' int16 delay conv
    elif op.op == "MG_DELAY":
        fast = fast_delay(prefix, pk.tensors, fusion, residual.get(op.index))
    elif op.op == "MG_MINGRU" and fusion.front16:
        fast = fast_mingru_u16(prefix, model, fusion, pk.fast_report)
    elif op.op == "MG_MINGRU":
        fast = fast_mingru(prefix, model, pk.tensors, fusion, pk.fast_report,
                            residual.get(op.index), fusion.tail16 is not None)
    if fast is None and op.index in residual:      # no fast step: the ADD stays
        absorbed.pop(residual.pop(op.index)[0])
    if op.op in ("MG_DELAY", "MG_MINGRU"):
        return fast
    if op.index in absorbed:
        return (None, [f"    /* op {op.index}: {op.op} fused into the fast step of op "
                       f"{absorbed[op.index]} */"], (0, 0))
    if wide:            # int16 op (convert/ops16.py): the portable kernel on both paths
        pk.fast_report[f"op{op.index}"] = f"{op.op} (int16): reference kernel"
        return None
    if op.op in ALIAS_OPS:
        return None
    fast = emit_fast_op(model, op, pk.program.op_steps[op.index].params, pk.ptr, prefix)
    if fast is None:
        pk.fast_report[f"op{op.index}"] = f"{op.op}: reference kernel"
        for eop, _, _ in chain:
            absorbed.pop(eop.index, None)
        return None
    return epilogue_call(prefix, op, chain, fast, pk.ptr) if chain else fast


def _op_code(pk: Package, op: Operator, residual: dict, absorbed: dict, predeclared: set,
             readout_op: int) -> _OpCode:
    """The C of one step op. A fused step's residual ADD and an FC's epilogue ops are declared
    first (and their own declarations later dropped: predeclared); residual / absorbed say
    which ops the fast steps fuse (updated where a fast kernel is missing)."""
    model, ptr, plan, prefix = pk.model, pk.ptr, pk.plan, pk.prefix
    shared: list[str] = []
    if op.index in residual:        # the fused ADD's parameters, declared first
        add_op = pk.op(residual[op.index][0])
        shared += emit_op(pk.step_model, add_op, pk.program.op_steps[add_op.index].params, ptr,
                          plan, prefix)[0]
        predeclared.add(add_op.index)
    chain = []
    step = pk.program.op_steps.get(op.index) if op.op not in ("MG_DELAY", "MG_MINGRU") else None
    wide = step is not None and step.wide
    if op.op == "FULLY_CONNECTED" and op.index != readout_op and not wide:
        chain = fc_epilogue(pk.program, pk.step_ops, op, plan, pk.graph_outputs)
        for eop, _, _ in chain:
            shared += emit_op(pk.step_model, eop, pk.program.op_steps[eop.index].params, ptr,
                              plan, prefix)[0]
            predeclared.add(eop.index)
            absorbed[eop.index] = op.index
    fast = _op_fast(pk, op, residual, absorbed, chain, wide)
    if op.op == "MG_DELAY":
        own_shared, ref_decls, ref_body, fast = _delay_code(pk, pk.fused_at[op.index],
                                                            residual, fast)
    elif op.op == "MG_MINGRU":
        own_shared, ref_decls, ref_body, fast = _mingru_code(pk, pk.fused_at[op.index],
                                                             residual, fast)
    else:
        own_shared = []
        ref_decls, ref_body = (ops16.emit(model, op, step.params, ptr, prefix) if wide else
                               emit_op(pk.step_model, op, step.params, ptr, plan, prefix))
    if op.index in predeclared:
        ref_decls = []              # declared with the fused op
    return _OpCode(shared + list(own_shared), list(ref_decls), list(ref_body), fast)


def _op_code_lines(code: _OpCode, kind: str) -> tuple[list[str], list[str]]:
    """(declarations, step statements) of one op: with a fast path, `#if MG_FAST` picks its
    declarations (where it has its own) and statements, the debug lines (from the first
    `#ifdef MG_MODEL_DEBUG`) after both; then the op's MG_PROF mark."""
    if code.fast is None:
        return code.shared + code.ref_decls, code.ref_body + [f"    MG_PROF({kind});"]
    fast_decls, fast_body, _ = code.fast
    decls = code.shared + code.ref_decls
    if fast_decls is not None:
        decls = code.shared + ["#if MG_FAST"] + fast_decls + (
            ["#else"] + code.ref_decls if code.ref_decls else []) + ["#endif"]
    debug_at = next((k for k, line in enumerate(code.ref_body)
                     if line == "#ifdef MG_MODEL_DEBUG"), len(code.ref_body))
    body = (["#if MG_FAST"] + fast_body + ["#else"] + code.ref_body[:debug_at] + ["#endif"]
            + code.ref_body[debug_at:] + [f"    MG_PROF({kind});"])
    return decls, body


def _step_code(pk: Package) -> tuple[list[str], list[str], int, int]:
    """The operator parameter declarations and the statements of <P>_model_step, op by op,
    and the fast path's FC scratch sizes (input words, accumulator words; 0: none)."""
    residual = residual_adds(pk.program, pk.step_ops, pk.fused_at, pk.graph_outputs)
    front_layers = {f.layer for f in pk.grus if f.front16}
    for k in [k for k, f in pk.fused_at.items() if f.layer in front_layers and k in residual]:
        del residual[k]         # int16 input: the conv output must exist for mg_input16_front
    absorbed = {a[0]: layer for layer, a in residual.items()}
    predeclared: set[int] = set()
    readout_op = pk.readout_op
    decls: list[str] = []
    body: list[str] = []
    xq_words = acc_words = 0
    for op in pk.step_ops:
        code = _op_code(pk, op, residual, absorbed, predeclared, readout_op)
        if code.fast is not None:
            xq_words = max(xq_words, code.fast[2][0])
            acc_words = max(acc_words, code.fast[2][1])
        op_decls, op_body = _op_code_lines(code, _prof_kind(op, readout_op))
        decls += op_decls
        body += op_body
    return decls, body, xq_words, acc_words


def _model_c_head(pk: Package) -> list[str]:
    """mg_model.c's header comment, includes, mg_model_info_t and the static scratch."""
    prefix, mid = pk.prefix, pk.model.model_id
    info = struct_decl("mg_model_info_t", f"{prefix}_info", dict(
        name=f'"{pk.name}"', id=[f"0x{mid[k:k + 2]}" for k in range(0, 16, 2)], n_in=pk.program.n_in,
        n_out=pk.program.n_out, n_macs_per_step=f"{pk.program.macs}u"), storage="static const")
    head = [f"/* Generated by convert/codegen_mgrade.py from a .tflite, model id {mid}.",
            f" * Do not edit. Implements mcu/runtime/mg_model.h ({prefix}_model_*): per-stream "
            "state in",
            f" * a {prefix}_model_t instance, fused delay rings (mg_delay.h) and minGRU steps",
            " * (mg_mingru.h), generic kernels for the rest. */",
            f'#include "{prefix}_model_data.h"', "", "#include <stddef.h>", "",
            '#include "mg_delay.h"', '#include "mg_fast.h"', '#include "mg_kernels.h"',
            '#include "mg_mingru.h"',
            '#include "mg_model.h"', '#include "mg_ops16.h"', "", info, "",
            "/* ---- step scratch (RAM), shared by every instance: steps of two instances may",
            " * interleave but must not run concurrently (two threads, or an ISR stepping one",
            " * while the main loop steps another) ---- */",
            f"static int32_t {prefix}_arena_words[{max(1, (pk.plan.arena_bytes + 3) // 4)}];"
            "   /* step scratch */"]
    if any(f.front16 for f in pk.grus):
        head.append(f"static int16_t {prefix}_u16[{pk.H}];   /* the minGRU input u in int16 "
                    "(mg_input16_front) */")
    if any(f.conv16 is not None for f in pk.delays):
        head.append(f"static int16_t {prefix}_c16[{pk.H}];   /* the delay conv output in int16 "
                    "(mg_delay_step_s16) */")
    return head + ["", "/* ---- operator parameters (flash) ---- */"]


def _fast_scratch_lines(prefix: str, xq_words: int, acc_words: int) -> list[str]:
    """The fast path's FC scratch (none where no fast FC runs)."""
    if not xq_words:
        return []
    return ["#if MG_FAST",
            f"static uint32_t {prefix}_xq[{xq_words}];   /* FC input, expanded (mg_ffc_expand) */",
            f"static int32_t {prefix}_acc[{max(1, acc_words)}];   /* FC dot products */",
            "#endif"]


def _model_init_lines(pk: Package) -> list[str]:
    """<P>_model_init: rings and (debug) frames reset to their zero points, states to h0."""
    prefix, channels = pk.prefix, pk.H
    lines = [f"void {prefix}_model_init({prefix}_model_t *m)", "{", "    int32_t k;",
             "    (void)k;"]
    for f, ring in zip(pk.delays, pk.ring_info):
        if ring["bytes"]:
            lines.append(f"    mg_delay_reset(m->ring{f.layer}, sizeof m->ring{f.layer}, "
                         f"(int8_t){f.zero_point});")
    for f in pk.grus:
        lines += [f"    for (k = 0; k < {channels}; ++k) {{",
                  f"        m->h{f.layer}[k] = (int8_t){f.zero_point};"]
        lines += [f"        m->h16_{f.layer}[k] = 0;"] if f.tail16 else []
        lines += ["    }"]
    debug = [f"    mg_delay_reset(m->dbg_frame{f.layer}, {channels}u, 0);"
             for f in pk.delays if f.frame_output]
    if debug:
        lines += ["#ifdef MG_MODEL_DEBUG"] + debug + ["#endif"]
    return lines + ["    m->step_t = 0u;", "}", ""]


def _model_step_lines(pk: Package, body: list[str]) -> list[str]:
    """<P>_model_step around the op statements `body`, then the step counter's advance, and
    <P>_model_info."""
    prefix = pk.prefix
    lines = [f"void {prefix}_model_step({prefix}_model_t *m, const int8_t *x, int8_t *logits)",
             "{", f"    int8_t *const arena = (int8_t *){prefix}_arena_words;",
             "    int status = 0;   /* set by a generic GATHER on a bad index (none expected) */",
             "    (void)arena;"] + body + ["    (void)status;"]
    if pk.program.period:
        lines.append(f"    m->step_t = (m->step_t + 1u == {pk.macro_prefix}_MODEL_RING_PERIOD) ? 0u : "
                     f"m->step_t + 1u;")
    else:
        lines.append("    ++m->step_t;")
    return lines + ["}", "", f"const mg_model_info_t *{prefix}_model_info(void)", "{",
                    f"    return &{prefix}_info;", "}", ""]


def _debug_accessor_lines(pk: Package) -> list[str]:
    """The MG_MODEL_DEBUG accessors: the states in graph output order (outputs[1:]), the
    int16 states, the step counter."""
    prefix = pk.prefix
    lines = ["#ifdef MG_MODEL_DEBUG", f"const int8_t *{prefix}_model_debug_state(const "
             f"{prefix}_model_t *m, int k)", "{", "    switch (k) {"]
    for k, nm in enumerate(pk.program.state_names):
        role = names.parse(nm)
        if role and role[0] == "hnew":
            lines.append(f"    case {k}: return m->h{role[1]};   /* {nm} */")
        elif role and role[0] == "frame":
            lines.append(f"    case {k}: return m->dbg_frame{role[1]};   /* {nm} */")
        else:
            raise CodegenError(f"unknown state output {nm!r} in the metadata")
    lines += ["    default: return NULL;", "    }", "}", ""]
    lines += debug16_lines(prefix, [f.layer for f in pk.grus],
                           {f.layer for f in pk.grus if f.tail16})
    return lines + [f"uint32_t {prefix}_model_debug_step_counter(const {prefix}_model_t *m)",
                    "{", "    return m->step_t;", "}", "#endif /* MG_MODEL_DEBUG */", ""]


def model_c(pk: Package) -> list[str]:
    """Operator parameters, the shared step scratch and <P>_model_init/step/info (+ the debug
    accessors) over an instance <P>_model_t (declared in <P>_model_data.h); fills
    pk.fast_report with the ops the fast path leaves to the reference kernels. Each op's code
    is decided whole (_op_code) before it is written: nothing emitted is edited afterwards."""
    head = _model_c_head(pk)
    decls, body, xq_words, acc_words = _step_code(pk)
    return (head + decls + [""] + _fast_scratch_lines(pk.prefix, xq_words, acc_words) + [""]
            + _model_init_lines(pk) + _model_step_lines(pk, body) + _debug_accessor_lines(pk))


# ---------------------------------------------------------------------------------------------
# mg_model_data.h

def ring_totals(pk: Package) -> dict:
    """Bytes of the package's rings (trimmed, as the graph holds them, plain) and states."""
    ri = pk.ring_info
    ring = sum(r["bytes"] for r in ri)
    h = pk.H * len(pk.grus) + pk.H * len(_state16(pk))     # an int16 state: 2H bytes
    return dict(ring=ring, graph=sum(r["graph_bytes"] for r in ri),
                plain=sum(r["plain_bytes"] for r in ri), h=h, state=ring + h + 4,
                spans_known=all(r["kernel_span"] is not None for r in ri))


def model_data_h(pk: Package) -> list[str]:
    """Sizes, ids, ring layout constants, the debug accessors' declarations and the frame
    quantizer: mg_model_data.h's lines, section by section."""
    guard = f"{pk.macro_prefix}_MODEL_DATA_H"
    return (_data_h_preamble(pk, guard) + _data_h_model_defines(pk) + _data_h_ring_defines(pk)
            + _data_h_state_defines(pk) + instance_decl(pk) + _data_h_debug_decls(pk)
            + frame_quantizer(pk.prefix, pk.macro_prefix, *frame_constants(pk.program.meta, pk.tensors[pk.program.x].quant.scale[0]))
            + _data_h_const_externs(pk)
            + ["", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""])


def _data_h_preamble(pk: Package, guard: str) -> list[str]:
    """The header comment (model id, shapes, ring layout), include guard and includes."""
    return ["/* Generated by convert/codegen_mgrade.py. Do not edit.", " *",
            f" * Model {pk.model.model_id} ('{pk.name}'): x int8 [{pk.program.n_in}] -> logits int8 "
            f"[{pk.program.n_out}] per step,",
            f" * {len(pk.program.meta['layers'])} layers of H = {pk.H} channels. API: "
            "mcu/runtime/mg_model.h.",
            " * Ring layout: layer l, channel c keeps R_c = max_e delay frames at",
            f" * {pk.prefix}_ring<l>[off_c .. off_c + R_c); frame t - d sits at slot (t - d) mod R_c.",
            " */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
            '#include "mg_model.h"', '#include "mg_rom.h"', "",
            '#ifdef __cplusplus', 'extern "C" {', "#endif", ""]


def _data_h_model_defines(pk: Package) -> list[str]:
    """Id, name, shapes, the input / logits quantization and the MAC counts."""
    PU, tensors = pk.macro_prefix, pk.tensors
    xq, lq = tensors[pk.program.x].quant, tensors[pk.program.logits].quant
    return ["/* first 8 bytes of sha256(model.tflite) */",
            f'#define {PU}_MODEL_ID "{pk.model.model_id}"',
            f'#define {PU}_MODEL_NAME "{pk.name}"',
            f"#define {PU}_MODEL_N_IN {pk.program.n_in}",
            f"#define {PU}_MODEL_N_OUT {pk.program.n_out}",
            f"#define {PU}_MODEL_CHANNELS {pk.H}",
            f"#define {PU}_MODEL_NUM_LAYERS {len(pk.program.meta['layers'])}",
            f"#define {PU}_MODEL_INPUT_SCALE {cfloat(xq.scale[0])}   /* x = q * scale ... */",
            f"#define {PU}_MODEL_INPUT_ZERO_POINT {zero_point(tensors[pk.program.x])}",
            "/* 1: the frame quantizer normalises (x - mean) / std per channel first (the",
            " * training split's statistics, metadata input_norm): the int8 input is normalised */",
            f"#define {PU}_MODEL_INPUT_NORMALISED {int(input_norm(pk.program.meta) is not None)}",
            f"#define {PU}_MODEL_LOGITS_SCALE {cfloat(lq.scale[0])}",
            f"#define {PU}_MODEL_LOGITS_ZERO_POINT {zero_point(tensors[pk.program.logits])}",
            "/* MACs per step of the graph's FULLY_CONNECTED + DEPTHWISE_CONV_2D ops (what",
            " * mg_model_info() reports), and those the fused kernels execute (a candidate FC",
            " * duplicated by the converter shares one dot product). */",
            f"#define {PU}_MODEL_MACS_PER_STEP {pk.program.macs}u",
            f"#define {PU}_MODEL_MACS_EXECUTED {pk.program.macs - pk.macs_saved}u",
            ""]


def _data_h_ring_defines(pk: Package) -> list[str]:
    """Per layer: the ring's zero point and its bytes trimmed, as the graph holds it and as a
    plain buffer; then the totals."""
    PU, tot = pk.macro_prefix, ring_totals(pk)
    lines = ["/* RAM: delay rings (sum_c R_c per layer), minGRU states, step scratch */"]
    for f, ri in zip(pk.delays, pk.ring_info):
        layer = f.layer
        lines += [f"#define {PU}_MODEL_LAYER{layer}_RING_ZERO_POINT {f.zero_point}",
                  f"#define {PU}_MODEL_RING{layer}_BYTES {ri['bytes']}          /* trimmed: "
                  "sum_c R_c */",
                  f"#define {PU}_MODEL_RING{layer}_GRAPH_BYTES {ri['graph_bytes']}   /* the "
                  f"graph's ring input: R * H, R = {f.ring.graph_frames} */",
                  f"#define {PU}_MODEL_RING{layer}_PLAIN_BYTES {ri['plain_bytes']}   /* plain "
                  f"buffer: {ri['plain_frames']} frames x H"
                  + (" (kernel_span - 1 past frames) */" if ri["kernel_span"] is not None
                     else " (max delay: no kernel_span in the metadata) */")]
    return lines + [f"#define {PU}_MODEL_RING_BYTES {tot['ring']}",
                    f"#define {PU}_MODEL_RING_GRAPH_BYTES {tot['graph']}",
                    f"#define {PU}_MODEL_RING_PLAIN_BYTES {tot['plain']}",
                    f"#define {PU}_MODEL_RING_PLAIN_FROM_KERNEL_SPAN "
                    f"{int(tot['spans_known'] and bool(pk.ring_info))}"]


def _data_h_state_defines(pk: Package) -> list[str]:
    """State, arena and constant bytes, the state / input widths, the ring period and the
    debug state count."""
    PU, H, tot = pk.macro_prefix, pk.H, ring_totals(pk)
    return [f"#define {PU}_MODEL_H_BYTES {tot['h']}",
            f"#define {PU}_MODEL_STATE_BITS {16 if _state16(pk) else 8}   /* minGRU state width */",
            f"#define {PU}_MODEL_INPUT_BITS {16 if any(f.front16 for f in pk.grus) else 8}   /* minGRU input u width "
            "(convert --input-bits) */",
            f"#define {PU}_MODEL_H8_COPY_BYTES {H * len(_state16(pk))}   /* int8 copies of int16 "
            "states (written each step, read by the residual) */",
            f"#define {PU}_MODEL_STATE_BYTES {tot['state']}   /* + the step counter */",
            f"#define {PU}_MODEL_ARENA_BYTES {pk.plan.arena_bytes}",
            f"#define {PU}_MODEL_CONST_BYTES {pk.const_bytes}",
            "/* the step counter wraps here (lcm of all R_c) so (t - d) mod R_c stays continuous"
            + ("; 0: 2^32 (lcm too large) */" if pk.program.period == 0 else " */"),
            f"#define {PU}_MODEL_RING_PERIOD {pk.program.period}u",
            "", f"/* states exposed for tests (graph output order: "
            f"{', '.join(pk.program.state_names)}), {H} bytes each */",
            f"#define {PU}_MODEL_DEBUG_NUM_STATES {len(pk.program.state_names)}",
            f"#define {PU}_MODEL_DEBUG_STATE_BYTES {H}",
            ""]


def _data_h_debug_decls(pk: Package) -> list[str]:
    """The MG_MODEL_DEBUG accessors' declarations."""
    P = pk.prefix
    return ["#ifdef MG_MODEL_DEBUG",
            "/* state k of instance m after its last step: hnew<l> = the minGRU state, frame<l> =",
            " * the layer's conv input at that step (what the interpreter writes into its ring) */",
            f"const int8_t *{P}_model_debug_state(const {P}_model_t *m, int k);",
            "/* the int16 state of minGRU layer l (NULL for an int8 state), convert/state16.py */",
            f"const int16_t *{P}_model_debug_state16(const {P}_model_t *m, int layer);",
            f"uint32_t {P}_model_debug_step_counter(const {P}_model_t *m);",
            "#endif", ""]


def _data_h_const_externs(pk: Package) -> list[str]:
    """The package-internal constant tensors' extern declarations (mg_model_data.c)."""
    return (["/* constant tensors (mg_model_data.c), package-internal */"]
            + [f"extern {ROM_EXTERN} {ctype(pk.tensors[ti])} {pk.prefix}_t{ti}[{max(pk.tensors[ti].size, 1)}];"
               for ti in sorted(pk.used_consts)])


def instance_decl(pk: Package) -> list[str]:
    """The instance type <P>_model_t: every piece of one stream's state (step counter, trimmed
    delay rings, minGRU states; the debug frame copies under MG_MODEL_DEBUG), sizes fixed at
    build time. Prefix "mg" completes mcu/runtime/mg_model.h's mg_model_t; another prefix
    declares its own type and <P>_model_init/step/info, so two packages link into one program."""
    P, PU, H = pk.prefix, pk.macro_prefix, pk.H
    out = ["/* One stream's state (RAM, no malloc): declare one per stream (static or on a stack),",
           f" * {P}_model_init() it, then {P}_model_step() it. The step scratch is shared by all",
           " * instances: steps of different instances may interleave but must not run",
           " * concurrently (two threads, or an ISR and the main loop). Build every file that",
           " * sees this struct with the same MG_MODEL_DEBUG setting. */"]
    if P != "mg":
        out.append(f"typedef struct {P}_model_s {P}_model_t;")
    out += [f"struct {P}_model_s {{",
            f"    uint32_t step_t;   /* steps since init, wrapped at {PU}_MODEL_RING_PERIOD */"]
    for f in pk.grus:
        if f.tail16:
            out += [f"    int16_t h16_{f.layer}[{H}];   /* layer {f.layer} minGRU state (int16) */",
                    f"    int8_t h{f.layer}[{H}];   /* its int8 copy (written each step) */"]
        else:
            out.append(f"    int8_t h{f.layer}[{H}];   /* layer {f.layer} minGRU state */")
    for f, ri in zip(pk.delays, pk.ring_info):
        if ri["bytes"]:
            out.append(f"    int8_t ring{f.layer}[{PU}_MODEL_RING{f.layer}_BYTES];   "
                       f"/* layer {f.layer} trimmed delay ring */")
    dbg = [f"    int8_t dbg_frame{f.layer}[{H}];" for f in pk.delays if f.frame_output]
    if dbg:
        out += ["#ifdef MG_MODEL_DEBUG"] + dbg + ["#endif"]
    out += ["};", ""]
    if P != "mg":
        out += [f"void {P}_model_init({P}_model_t *m);   /* zero rings and states (the reset) */",
                f"void {P}_model_step({P}_model_t *m, const int8_t *x, int8_t *logits);",
                f"const mg_model_info_t *{P}_model_info(void);", ""]
    return out


# ---------------------------------------------------------------------------------------------
# The package

def generate_package(model: Model, meta: dict, out_dir, prefix: str = "mg",
                     name: str | None = None) -> dict:
    """Write mg_model.c and mg_model_data.{h,c} for an mGRADE step graph; return a summary.
    name: the model's name in mg_model_info_t / MODEL_NAME (default: the metadata's task)."""
    pk = analyse(model, meta, prefix, name)
    P = pk.prefix
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{P}_model_data.h", out / f"{P}_model_data.c", out / f"{P}_model.c"]
    hh, dc, c = model_data_h(pk), model_data_c(pk), model_c(pk)
    files[0].write_text("\n".join(hh))
    files[1].write_text("\n".join(dc))
    files[2].write_text("\n".join(c))
    return package_summary(pk, files)


def package_summary(pk: Package, files: list[Path]) -> dict:
    """The summary dict generate_package returns (sizes, fusions, fast-path report)."""
    model, plan, mid = pk.model, pk.plan, pk.model.model_id
    tot = ring_totals(pk)
    summary = {
        "model_id": mid, "name": pk.name, "kind": "mgrade",
        "ops": [op.op for op in model.operators],
        "fused": {"delay": [f.ops for f in pk.delays], "mingru": [f.ops for f in pk.grus]},
        "arena_bytes": plan.arena_bytes, "const_bytes": pk.const_bytes,
        "ring_bytes": tot["ring"], "ring_graph_bytes": tot["graph"],
        "ring_plain_bytes": tot["plain"], "ring_plain_from_kernel_span": tot["spans_known"],
        "h_bytes": tot["h"], "state_bytes": tot["state"],
        "macs_per_step": pk.program.macs, "macs_executed": pk.program.macs - pk.macs_saved,
        "ring_period": pk.program.period, "files": [str(f) for f in files],
        "fast_report": pk.fast_report,   # ops the fast path leaves to the reference kernels
    }
    summary["summary"] = package_line(mid, [
        f"{len(model.operators)} graph ops -> {len(pk.step_ops)} calls ({len(pk.delays)} "
        f"delay, {len(pk.grus)} minGRU fused)",
        f"state {tot['state']} B (rings {tot['ring']} B vs graph ring {tot['graph']} B",
        f"plain {tot['plain']} B)", f"arena {plan.arena_bytes} B",
        f"constants {pk.const_bytes} B", f"{pk.program.macs} MACs/step"],
        ", ".join(map(str, files)), "mgrade package")
    return summary


def frame_quantizer(P: str, PU: str, mean, step) -> list[str]:
    """C source of <P>_model_quantize_frame(): one float frame -> the int8 model input, with
    the host's arithmetic (convert/input_norm.quantize_frames: float32 subtraction and
    division by the per-channel constants mean / step of input_norm.frame_constants, round half
    to even, clamp), so a frame quantized on the device equals the host's to 0 LSB."""
    def arr(v):
        return ", ".join(cfloat(float(e)) for e in v)
    return [
        "/* Quantize one input frame x[MODEL_N_IN] (floats, in the units the training data",
        " * had: the sensor's own units) to the int8 frame that model_step() takes, per channel",
        " *   q = clamp(round_half_even((x - mean) / step) + INPUT_ZERO_POINT, -128, 127)",
        " * with step = std * INPUT_SCALE: a model trained with normalisation (mean / std of the",
        " * training split) normalises the frame here, before quantizing; without it mean = 0,",
        " * step = INPUT_SCALE. In float32, as the host does (bit-identical). NaN maps to the",
        " * zero point. No libm; the only floating point of the package. */",
        f"static inline void {P}_model_quantize_frame(const float *x, int8_t *q)",
        "{",
        f"    static const float mean[{PU}_MODEL_N_IN] = {{{arr(mean)}}};",
        f"    static const float step[{PU}_MODEL_N_IN] = {{{arr(step)}}};",
        "    int i;",
        f"    for (i = 0; i < {PU}_MODEL_N_IN; ++i) {{",
        "        float s = (x[i] - mean[i]) / step[i];",
        "        float frac;",
        "        int32_t r;",
        "        if (s != s) {",
        "            s = 0.0f;",
        "        }",
        "        s = s > 512.0f ? 512.0f : (s < -512.0f ? -512.0f : s);",
        "        r = (int32_t)s;                     /* toward zero */",
        "        frac = s - (float)r;                /* exact for |s| < 2^23 */",
        "        if (frac > 0.5f || (frac == 0.5f && (r & 1))) {",
        "            ++r;",
        "        } else if (frac < -0.5f || (frac == -0.5f && (r & 1))) {",
        "            --r;",
        "        }",
        f"        r += {PU}_MODEL_INPUT_ZERO_POINT;",
        "        q[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));",
        "    }",
        "}",
        ""]


def model_name(name: str) -> str:
    """The model name as the package stores it (mg_model_info_t.name, <P>_MODEL_NAME, C
    comments): at most 31 characters of letters, digits and ' _.+-' (others become '_')."""
    return re.sub(r"[^A-Za-z0-9 _.+-]", "_", str(name))[:31]


def load(model_src) -> tuple[Model, dict]:
    model = model_src if isinstance(model_src, Model) else read_tflite(model_src)
    meta = mgrade_metadata(model)
    if meta is None:
        raise CodegenError("this .tflite carries no mgrade metadata")
    return model, meta
