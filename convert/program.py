"""The step program of an mGRADE .tflite: matched once, from the graph as written.

`build_program(model, meta)` walks the step graph (convert/tflite_reader.py) with the
metadata's input/output roles and returns a `StepProgram` (convert/steps.py): per layer a
DelayStep and a MinGRUStep, every other operator an OpStep, in execution order, each with its
TFLite-Micro-exact parameters and MAC count. The int16 forms are matched where they stand:
the state tail (convert/state16.py match_tail), the input front and conv16's 16x8 conv
(convert/input16.py match_front), the generic int16 ops (convert/ops16.py). A graph of another
shape is refused with a CodegenError naming the layer and what was expected.

Every writer reads the program: the C package (convert/codegen_mgrade.py), its resource
figures; nothing downstream looks at the graph's shape again.
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert import names, ops16
from mgrade_edge.convert.input16 import match_front
from mgrade_edge.convert.mgrade_match import (
    Candidate, StepGraph, check_enclosed, fc_params, match_candidate, match_delays,
    match_update8, shares_dot)
from mgrade_edge.convert.state16 import match_tail
from mgrade_edge.convert.steps import (
    DelayStep, Front16, MinGRUStep, OpStep, StepProgram, Tail16)
from mgrade_edge.convert.tflite_reader import Model
from mgrade_edge.convert.tflm_params import (
    CodegenError, check_supported, op_macs, op_params, zero_point)
from mgrade_edge.training import ring_layout


def _io_tensors(graph: StepGraph, n_in: int, n_out: int) -> tuple[int, int]:
    """The tensor indices of the x input (int8 [1, n_in]) and the logits output (int8
    [1, n_out]); CodegenError where either is missing or has another type or size."""
    tensors = graph.tensors
    x_t, logits_t = graph.inp.get(names.X), graph.out.get(names.LOGITS)
    if x_t is None or logits_t is None:
        raise CodegenError("mgrade metadata has no x input / logits output")
    if tensors[x_t].size != n_in or tensors[logits_t].size != n_out or \
            tensors[x_t].dtype != np.int8 or tensors[logits_t].dtype != np.int8:
        raise CodegenError(f"x must be int8 [1, {n_in}] and logits int8 [1, {n_out}]")
    return x_t, logits_t


def _state_tensors(graph: StepGraph, layer: int, channels: int, where: str) -> tuple[int, int]:
    """(h, hnew) of layer `layer`, checked to share one quantization and hold H values."""
    h, h_new = graph.inp.get(names.h(layer)), graph.out.get(names.hnew(layer))
    if h is None or h_new is None:
        raise CodegenError(f"{where}: metadata has no h{layer}/hnew{layer}")
    if not graph.same_quant(h, h_new):
        raise CodegenError(f"{where}: h{layer} and hnew{layer} have different quantization; "
                           "the state must be tied (convert/quantize.py finalize)")
    if graph.tensors[h].size != channels:
        raise CodegenError(f"{where}: h{layer} has {graph.tensors[h].size} elements, the "
                           f"metadata {channels} channels")
    return h, h_new


def _gate_of_tail(graph: StepGraph, tail: Tail16, where: str):
    """(gate FC op or None (a 16x8 gate: the front's), [its LOGISTIC op] where the tail
    reads the int8 z) of an int16-state tail."""
    t = tail.tensors
    if t["gate_fc16"]:
        return None, []
    if t["gate_int16"]:           # the tail requantizes z_pre8 itself
        return graph.prod(t["z_in"], "FULLY_CONNECTED", "the gate pre-activation", where), []
    sig_z = graph.prod(t["z_in"], "LOGISTIC", "the gate z", where)
    return graph.prod(sig_z.inputs[0], "FULLY_CONNECTED", "the gate pre-activation",
                      where), [sig_z]


def _candidate_fcs(graph: StepGraph, cand: Candidate, where: str) -> dict:
    """role -> FC op of the int8 candidate (cand, and relu_fc where the RELU branch has its
    own FC)."""
    fcs = {"cand": graph.prod(cand.p, "FULLY_CONNECTED", "the MINIMUM input p", where)}
    if cand.r_source != cand.p:
        fcs["relu_fc"] = graph.prod(cand.r_source, "FULLY_CONNECTED", "the RELU input", where)
    return fcs


def _tail_ops(t: dict) -> list:
    """The operators of an int16 tail (match_tail's tensors)."""
    return [t["qg"], t["qh"], t["sub"], t["mul"], t["add_h"]] + list(t["z_ops"])


def _front_ops(graph: StepGraph, t: dict) -> list:
    """The operators of an int16 front (match_front's tensors) but its conv16 chain, which
    belongs to the delay step."""
    drop = set(t["drop"]) - ({t["conv16"]["q_taps"].index} if t["conv16"] else set())
    return [graph.model.operators[i] for i in sorted(drop)] + [t["add_u"], t["add_v"]] + \
        [op for role, op in t["fcs"].items() if role != "gate"]


def match_mingru(graph: StepGraph, layer: int, channels: int) -> MinGRUStep:
    """Layer `layer`'s minGRU step: int8 or int16 state (the tail), int8 or int16 gate, int8
    or int16 input (the front), matched on the graph as written."""
    tensors = graph.tensors
    h, h_new = _state_tensors(graph, layer, channels, f"layer {layer} minGRU")
    tail = front = update = None
    if tensors[h_new].dtype == np.int16:
        tail = Tail16(*match_tail(graph, layer))
        where = f"layer {layer} minGRU (int16 state)"
        g, h8 = tail.tensors["g8"], tail.tensors["h8"]
        gate, sig_z_ops = _gate_of_tail(graph, tail, where)
        ops = _tail_ops(tail.tensors) + sig_z_ops
        if tail.tensors["gate_fc16"]:
            front = Front16(*match_front(graph, layer, tail.tensors["z_ops"][0], h_new))
            ops += _front_ops(graph, front.tensors)
    else:
        where = f"layer {layer} minGRU"
        update = match_update8(graph, layer, h, h_new, channels, where)
        sig_z_ops = [update.sig_z]
        gate = graph.prod(update.sig_z.inputs[0], "FULLY_CONNECTED",
                          "the gate pre-activation", where)
        g, h8, ops = update.g, h_new, update.ops + sig_z_ops
    cand = match_candidate(graph, g, channels, where)
    ops += cand.ops
    if front is not None:
        fcs = fc_params(graph, front.tensors["fcs"], channels, where)
    else:
        fc_ops = {"gate": gate, **_candidate_fcs(graph, cand, where)}
        ops += list(fc_ops.values())
        fcs = fc_params(graph, fc_ops, channels, where)
    outputs = {h_new, h8} | ({front.tensors["v8"]} if front else set())
    check_enclosed(graph, ops, outputs, where)
    graph.only_consumers(h, {op.index for op in ops}, where, names.h(layer))
    anchor = (tail.tensors["add_h"] if tail else ops[0]).index
    sig_z = op_params(graph.model, sig_z_ops[0]) if sig_z_ops else None
    return MinGRUStep(
        layer, sorted(op.index for op in ops), anchor,
        front.tensors["u16"] if front else fcs["cand"][0].inputs[0], h, h_new, h8,
        front.tensors["v8"] if front else None, zero_point(tensors[h8]), fcs, sig_z,
        cand.sig_p, cand.min_const, cand.relu_params, shares_dot(fcs), cand.add_g,
        *((update.sub, update.mul, update.add_h) if update else (None, None, None)), tail,
        front, sum(p["accum_depth"] * channels for _, p in fcs.values()))


def _attach_conv16(graph: StepGraph, delays: list[DelayStep], grus: list[MinGRUStep]) -> None:
    """A conv16 layer's delay step takes its front's 16x8 parameters and the RESHAPE of its
    int16 output, the tensor the front reads (the step's int16 scratch); CodegenError where
    a 16x8 tap convolution feeds no int16 front."""
    for delay in delays:
        gru = next((g for g in grus if g.layer == delay.layer), None)
        conv16 = gru.front16.tensors["conv16"] if gru and gru.front16 else None
        if not conv16:
            if delay.dw is None:
                raise CodegenError(f"layer {delay.layer} delay conv: an int16 tap convolution "
                                   "needs the int16 minGRU input (convert --form conv16)")
            continue
        if conv16["dw"].index != delay.anchor:
            raise CodegenError(f"layer {delay.layer}: the int16 front reads another conv")
        delay.conv16 = gru.front16.params["dw16"]
        delay.ops = sorted(delay.ops + [graph.producer[gru.front16.tensors["conv"]].index])
        delay.out = gru.front16.tensors["conv"]


def _op_step(model: Model, op) -> OpStep:
    """An operator the generic kernels run (int8, or int16: convert/ops16.py)."""
    if ops16.is_wide(model, op):
        return OpStep(op, ops16.params(model, op), True, ops16.macs(model, op))
    params = op_params(model, op)
    return OpStep(op, params, False, op_macs(op, params))


def _in_order(model: Model, fused: list) -> list:
    """The fused steps at their anchors and an OpStep for every operator none replaces, in
    the graph's operator order; CodegenError where two fused steps share an operator."""
    seen: set[int] = set()
    for step in fused:
        if seen & set(step.ops):
            raise CodegenError(f"layer {step.layer}: fused subgraphs overlap")
        seen |= set(step.ops)
    at = {step.anchor: step for step in fused}
    return [at[op.index] if op.index in at else _op_step(model, op)
            for op in model.operators if op.index in at or op.index not in seen]


def build_program(model: Model, meta: dict) -> StepProgram:
    """The step program of an mGRADE step graph (model: the parsed .tflite, meta: its
    metadata dict); CodegenError if the graph has another shape."""
    check_supported(model)
    graph = StepGraph(model, meta)
    step_meta = graph.meta
    channels = step_meta.channels
    x_t, logits_t = _io_tensors(graph, step_meta.n_in, step_meta.n_classes)
    delays = match_delays(graph, meta)
    grus = [match_mingru(graph, i, channels) for i, lm in enumerate(step_meta.layers)
            if lm.rnn]
    _attach_conv16(graph, delays, grus)
    steps = _in_order(model, delays + grus)
    fused_ops = {i for s in delays + grus for i in s.ops}
    for name, t in graph.inp.items():    # ring/idx inputs: read by the fused steps alone
        if (names.parse(name) or ("",))[0] in ("ring", "idx"):
            graph.only_consumers(t, fused_ops, "graph", f"input {name}")
    return StepProgram(
        model, meta, step_meta, steps, x_t, logits_t, channels, step_meta.n_in,
        step_meta.n_classes, ring_layout.wrap_period(v for d in delays for v in d.ring_len),
        [n for n in step_meta.outputs if n != names.LOGITS])
