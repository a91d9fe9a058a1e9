"""The mGRADE fusion matcher's pieces: per layer of a step graph, the subgraphs the package
replaces by one fused step, found from the metadata's input/output roles on the .tflite as
written (convert/program.py assembles them into the step program).

* Delay convolution: CONCATENATION(frame<l>, ring<l>) -> GATHER(idx<l>) -> RESHAPE ->
  DEPTHWISE_CONV_2D (or GATHER(frame, constant indices) when every delay is 0; conv16: a
  QUANTIZE to int16 before a 16x8 DEPTHWISE_CONV_2D) -> `match_delay`, a DelayStep.
* minGRU, int8 parts: the update h_new = h + z * (g - h) (`match_update8`), the candidate
  g = RELU-part(p) + LOGISTIC(MINIMUM(p, c)) (`match_candidate`), the FCs (`fc_params`);
  the int16 state tail and input front are convert/state16.py's and convert/input16.py's.

A graph of another shape is refused with a CodegenError naming the layer and what was
expected. Uses the TFLM parameters (convert/tflm_params.py); knows nothing about C.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.metadata import StepMetadata
from mgrade_edge.convert.steps import DelayStep, RingLayout
from mgrade_edge.convert.tflite_reader import Model, Operator
from mgrade_edge.convert.tflm_params import CodegenError, op_params, zero_point
from mgrade_edge.training import ring_layout


def _typed_metadata(meta: dict | StepMetadata) -> StepMetadata:
    """StepMetadata.of(meta), its ConvertError as a CodegenError (the generators' error)."""
    try:
        return StepMetadata.of(meta)
    except ConvertError as e:
        raise CodegenError(str(e)) from None


class StepGraph:
    """Producers/consumers of a step graph and its named inputs/outputs (metadata roles)."""

    def __init__(self, model: Model, meta: dict | StepMetadata):
        self.model = model
        self.tensors = model.tensors
        self.producer: dict[int, Operator] = {}
        self.consumers: dict[int, list[Operator]] = {}
        for op in model.operators:
            for o in op.outputs:
                self.producer[o] = op
            for i in op.inputs:
                if i >= 0:
                    self.consumers.setdefault(i, []).append(op)
        self.meta = _typed_metadata(meta)
        names_in, names_out = self.meta.inputs, self.meta.outputs
        if len(names_in) != len(model.inputs):
            raise CodegenError(f"mgrade metadata lists inputs {names_in} but the graph has "
                               f"{len(model.inputs)} inputs")
        if len(names_out) != len(model.outputs):
            raise CodegenError(f"mgrade metadata lists outputs {names_out} but the graph has "
                               f"{len(model.outputs)} outputs")
        self.inp = dict(zip(names_in, model.inputs))
        self.out = dict(zip(names_out, model.outputs))
        self.graph_outputs = set(model.outputs)

    def prod(self, t: int, kind, what: str, where: str) -> Operator:
        op = self.producer.get(t)
        kinds = (kind,) if isinstance(kind, str) else kind
        if op is None or op.op not in kinds:
            got = "a graph input or constant" if op is None else f"{op.op} (op {op.index})"
            raise CodegenError(f"{where}: expected {what} to be produced by {'/'.join(kinds)}, "
                               f"got {got}")
        return op

    def only_consumers(self, t: int, allowed: set[int], where: str, what: str):
        users = {op.index for op in self.consumers.get(t, [])}
        extra = users - allowed
        if extra or t in self.graph_outputs:
            raise CodegenError(f"{where}: {what} (tensor {t}) is also used outside the fused "
                               f"subgraph (ops {sorted(extra)}"
                               f"{', graph output' if t in self.graph_outputs else ''})")

    def same_quant(self, a: int, b: int) -> bool:
        qa, qb = self.tensors[a].quant, self.tensors[b].quant
        return (qa is not None and qb is not None and float(qa.scale[0]) == float(qb.scale[0])
                and int(qa.zero_point[0]) == int(qb.zero_point[0]))


def _axis(op: Operator, ndims: int) -> int:
    a = op.options.get("axis", 0)
    return a + ndims if a < 0 else a


def _checked_delays(meta: StepMetadata, layer: int, where: str) -> np.ndarray:
    """The metadata's delays of `layer`, int64 [H, N] within 0..ring_frames (max = R where
    the layer has a ring), else CodegenError."""
    frames, channels = meta.layers[layer].ring_frames, meta.channels
    delays = np.asarray(meta.layers[layer].delays, dtype=np.int64)
    if delays.ndim != 2 or delays.shape[0] != channels:
        raise CodegenError(f"{where}: metadata delays must be [H={channels}, N], got "
                           f"{delays.shape}")
    if delays.min() < 0 or delays.max() > frames or (frames > 0 and delays.max() != frames):
        raise CodegenError(f"{where}: delays must lie in 0..ring_frames={frames} with max = R")
    if delays.max() > ring_layout.MAX_DELAY:
        raise CodegenError(f"{where}: delays > {ring_layout.MAX_DELAY} are not supported")
    return delays


def _match_ring_gather(graph: StepGraph, layer: int, gather: Operator, frames: int,
                       channels: int, taps: int, where: str) -> tuple[int, list[int], list[int]]:
    """GATHER(CONCATENATION(frame<l>, ring<l>), idx<l>) of a layer with a ring of `frames`
    frames: (frame tensor, [the CONCATENATION op], the tensors that must share the frame's
    quantization)."""
    tensors = graph.tensors
    ring, idx, frame_out = (graph.inp.get(names.ring(layer)), graph.inp.get(names.idx(layer)),
                            graph.out.get(names.frame(layer)))
    if ring is None or idx is None or frame_out is None:
        raise CodegenError(f"{where}: metadata has no ring{layer}/idx{layer}/frame{layer}")
    if tensors[ring].size != frames * channels or tensors[idx].size != taps * channels:
        raise CodegenError(f"{where}: ring{layer} has {tensors[ring].size} elements, "
                           f"idx{layer} {tensors[idx].size}; expected R*H={frames * channels}, "
                           f"N*H={taps * channels}")
    concat = graph.prod(gather.inputs[0], "CONCATENATION", "the GATHER params", where)
    cat_axis = _axis(concat, len(tensors[concat.outputs[0]].shape))
    if concat.inputs != [frame_out, ring] or cat_axis != 1:
        raise CodegenError(f"{where}: expected CONCATENATION(frame{layer}, ring{layer}, "
                           f"axis=1), got inputs {concat.inputs}")
    if gather.inputs[1] != idx:
        raise CodegenError(f"{where}: GATHER indices are not the idx{layer} input")
    graph.only_consumers(ring, {concat.index}, where, names.ring(layer))
    graph.only_consumers(idx, {gather.index}, where, names.idx(layer))
    graph.only_consumers(concat.outputs[0], {gather.index}, where, "the concatenated frames")
    return frame_out, [concat.index], [frame_out, ring, concat.outputs[0]]


def _match_constant_gather(graph: StepGraph, gather: Operator, channels: int, taps: int,
                           where: str) -> tuple[int, list[int], list[int]]:
    """GATHER(frame, constant indices) of a layer whose delays are all 0: (frame tensor, no
    extra op, [frame])."""
    frame = gather.inputs[0]
    indices = graph.tensors[gather.inputs[1]]
    if not indices.is_const:
        raise CodegenError(f"{where}: GATHER without a ring must have constant indices")
    if indices.data.reshape(-1).tolist() != np.tile(np.arange(channels), taps).tolist():
        raise CodegenError(f"{where}: constant GATHER indices do not match the delays")
    return frame, [], [frame]


def _only_reader(graph: StepGraph, t: int, kind: str, where: str, what: str) -> Operator:
    """The one op reading tensor t, which must be a `kind` reading it as its first input."""
    users = graph.consumers.get(t, [])
    if len(users) != 1 or users[0].op != kind or users[0].inputs[0] != t:
        raise CodegenError(f"{where}: expected {what} to feed one {kind}")
    return users[0]


def _match_tap_conv(graph: StepGraph, gather: Operator, channels: int, taps: int, where: str
                    ) -> tuple[list[Operator], Operator, dict | None]:
    """GATHER -> RESHAPE [1, 1, N, H] -> DEPTHWISE_CONV_2D, the VALID tap convolution, or
    (conv16, convert/widen.py widen_conv) RESHAPE -> QUANTIZE (int8 -> int16) ->
    DEPTHWISE_CONV_2D 16x8: ([RESHAPE op (+ the QUANTIZE)], DEPTHWISE_CONV_2D op, its int8
    op_params or None for the 16x8 conv, whose parameters convert/input16.py computes)."""
    tensors = graph.tensors
    if (_axis(gather, len(tensors[gather.inputs[0]].shape)) != 1
            or gather.options.get("batch_dims", 0)):
        raise CodegenError(f"{where}: GATHER must gather axis 1 with batch_dims 0")
    gathered = gather.outputs[0]
    users = graph.consumers.get(gathered, [])
    if len(users) != 1 or users[0].op != "RESHAPE":
        raise CodegenError(f"{where}: expected the GATHER output to feed one RESHAPE")
    reshape = users[0]
    graph.only_consumers(gathered, {reshape.index}, where, "the gathered taps")
    reshaped = reshape.outputs[0]
    if tuple(tensors[reshaped].shape) != (1, 1, taps, channels):
        raise CodegenError(f"{where}: taps reshaped to {tensors[reshaped].shape}, expected "
                           f"(1, 1, {taps}, {channels})")
    chain, taps_in = [reshape], reshaped
    users = graph.consumers.get(reshaped, [])
    if len(users) == 1 and users[0].op == "QUANTIZE" and \
            tensors[users[0].outputs[0]].dtype == np.int16:          # conv16: int16 taps
        chain.append(users[0])
        taps_in = users[0].outputs[0]
        graph.only_consumers(reshaped, {users[0].index}, where, "the reshaped taps")
    dw = _only_reader(graph, taps_in, "DEPTHWISE_CONV_2D", where, "the taps")
    graph.only_consumers(taps_in, {dw.index}, where, "the reshaped taps")
    if len(chain) == 2:
        filt, out = tensors[dw.inputs[1]], tensors[dw.outputs[0]]
        if tuple(filt.shape) != (1, 1, taps, channels) or out.size != channels or \
                dw.options.get("padding", "VALID") != "VALID":
            raise CodegenError(f"{where}: the 16x8 DEPTHWISE_CONV_2D is not the [1,1,N,H] "
                               "VALID tap convolution")
        return chain, dw, None
    params = op_params(graph.model, dw)
    expect = dict(batches=1, in_h=1, in_w=taps, in_c=channels, filt_h=1, filt_w=taps, out_h=1,
                  out_w=1, out_c=channels, depth_multiplier=1, pad_h=0, pad_w=0)
    bad = {k: params[k] for k, v in expect.items() if params[k] != v}
    if bad:
        raise CodegenError(f"{where}: DEPTHWISE_CONV_2D is not the [1,1,N,H] VALID tap "
                           f"convolution (unexpected {bad})")
    return chain, dw, params


def ring_layout_of(meta: dict, layer: int, delays: np.ndarray, frames: int,
                   channels: int) -> RingLayout:
    """Layer `layer`'s trimmed ring (training/ring_layout.py) for its delays [H, N]."""
    span = meta["layers"][layer].get("kernel_span", meta.get("kernel_span"))
    lengths = ring_layout.channel_lengths(delays)
    return RingLayout(lengths, ring_layout.offsets(lengths), frames,
                      ring_layout.plain_frames(span, delays), span, channels)


def match_delay(graph: StepGraph, meta: dict, layer: int, gather: Operator) -> DelayStep:
    """Layer `layer`'s delay convolution, from its GATHER (conv16: `conv16` is left None
    here; convert/program.py fills it from the int16 front)."""
    step_meta = graph.meta
    tensors, where = graph.tensors, f"layer {layer} delay conv"
    channels = step_meta.channels
    delays = _checked_delays(step_meta, layer, where)
    taps, frames = delays.shape[1], step_meta.layers[layer].ring_frames
    if frames > 0:
        frame, source_ops, chain = _match_ring_gather(graph, layer, gather, frames, channels, taps,
                                                      where)
    else:
        frame, source_ops, chain = _match_constant_gather(graph, gather, channels, taps, where)
    tap_ops, dw, params = _match_tap_conv(graph, gather, channels, taps, where)
    for t in chain + [gather.outputs[0], tap_ops[0].outputs[0]]:
        if not graph.same_quant(t, frame) or tensors[t].dtype != np.int8:
            raise CodegenError(f"{where}: tensor {t} ({tensors[t].name}) does not share the "
                               "frame's int8 quantization (the taps must be plain copies)")
    ops = source_ops + [gather.index] + [op.index for op in tap_ops] + [dw.index]
    return DelayStep(layer, sorted(ops), dw.index, frame, dw.outputs[0], delays, dw.inputs[1],
                     dw.inputs[2] if len(dw.inputs) > 2 else -1, params, None,
                     ring_layout_of(meta, layer, delays, frames, channels),
                     zero_point(tensors[frame]), frames > 0, channels * taps)


def swap_add(p: dict) -> dict:
    """ADD/SUB parameters with input1 and input2 exchanged (a copy)."""
    q = dict(p)
    for k in ("offset", "multiplier", "shift"):
        q[f"input1_{k}"], q[f"input2_{k}"] = p[f"input2_{k}"], p[f"input1_{k}"]
    return q


def _swap_mul(p: dict) -> dict:
    q = dict(p)
    q["input1_offset"], q["input2_offset"] = p["input2_offset"], p["input1_offset"]
    return q


def producer_kinds(graph: StepGraph, op: Operator) -> list[str | None]:
    """The op kind producing each input of `op` (None: a graph input or constant)."""
    return [graph.producer.get(t).op if t in graph.producer else None for t in op.inputs]


@dataclass
class Update8:
    """The int8 state update h_new = ADD(h, MUL(z, SUB(g, h))) and its parameters in the
    canonical operand order ADD(h, m), MUL(z, d), SUB(g, h)."""
    ops: list[Operator]
    sig_z: Operator              # z = LOGISTIC(gate pre-activation)
    g: int                       # tensor: the candidate g the SUB reads
    sub: dict
    mul: dict
    add_h: dict


def _elementwise(graph: StepGraph, op: Operator, channels: int, where: str) -> dict:
    """op_params of an elementwise [1, H] ADD / SUB / MUL (CodegenError where it broadcasts)."""
    p = op_params(graph.model, op)
    if p["bc"]["ndims"] != 0 or p["bc"]["count"] != channels:
        raise CodegenError(f"{where}: {op.op} (op {op.index}) broadcasts; expected "
                           f"[1, {channels}]")
    return p


def match_update8(graph: StepGraph, layer: int, h: int, h_new: int, channels: int,
                  where: str) -> Update8:
    """h_new = ADD(h, MUL(LOGISTIC(.), SUB(g, h))), the int8 state's update."""
    add_h = graph.prod(h_new, "ADD", names.hnew(layer), where)
    if h not in add_h.inputs:
        raise CodegenError(f"{where}: the last ADD does not read h{layer}")
    k_h = add_h.inputs.index(h)
    mul = graph.prod(add_h.inputs[1 - k_h], "MUL", "z * (g - h)", where)
    kinds = producer_kinds(graph, mul)
    if sorted(map(str, kinds)) != ["LOGISTIC", "SUB"]:
        raise CodegenError(f"{where}: expected MUL(LOGISTIC, SUB), got MUL{tuple(kinds)}")
    k_z = kinds.index("LOGISTIC")
    sub = graph.producer[mul.inputs[1 - k_z]]
    if sub.inputs[1] != h:
        raise CodegenError(f"{where}: expected SUB(g, h{layer})")
    add_p = _elementwise(graph, add_h, channels, where)
    mul_p = _elementwise(graph, mul, channels, where)
    return Update8([add_h, mul, sub], graph.producer[mul.inputs[k_z]], sub.inputs[0],
                   _elementwise(graph, sub, channels, where),
                   _swap_mul(mul_p) if k_z == 1 else mul_p,
                   swap_add(add_p) if k_h == 1 else add_p)


@dataclass
class Candidate:
    """g = ADD(RELU-part, LOGISTIC(MINIMUM(p, c))): the ops, the tensors p (the candidate's
    int8 output) and r (the RELU branch's int8 output: RELU(p), RELU(FC) or an FC with a fused
    RELU), and the parameters in the canonical order ADD(r, q)."""
    ops: list[Operator]
    p: int
    r_source: int                # the tensor the RELU branch starts from (p or an FC output)
    min_const: int
    sig_p: dict
    relu_params: dict | None
    add_g: dict


def match_candidate(graph: StepGraph, g: int, channels: int, where: str) -> Candidate:
    """The candidate g(p) from the tensor g back to p (the int8 candidate: an FC output, or
    with an int16 input the QUANTIZE of the 16x8 FC's)."""
    tensors = graph.tensors
    add_g = graph.prod(g, "ADD", "g(p)", where)
    kinds = producer_kinds(graph, add_g)
    if kinds.count("LOGISTIC") != 1:
        raise CodegenError(f"{where}: expected ADD(RELU(p), LOGISTIC(MINIMUM(p, 0))), got "
                           f"ADD{tuple(kinds)}")
    k_q = kinds.index("LOGISTIC")
    sig_p = graph.producer[add_g.inputs[k_q]]
    minimum = graph.prod(sig_p.inputs[0], "MINIMUM", "the sigmoid branch input", where)
    consts = [t for t in minimum.inputs if tensors[t].is_const]
    if len(consts) != 1 or tensors[consts[0]].size not in (1, channels):
        raise CodegenError(f"{where}: MINIMUM needs one constant operand of size 1 or "
                           f"{channels}")
    p = next(t for t in minimum.inputs if t != consts[0])
    graph.prod(p, ("FULLY_CONNECTED", "QUANTIZE"), "the MINIMUM input p", where)
    branch = graph.prod(add_g.inputs[1 - k_q], ("FULLY_CONNECTED", "RELU", "QUANTIZE"),
                        "the RELU branch", where)
    relu = branch if branch.op == "RELU" else None
    r_source = branch.inputs[0] if relu is not None else branch.outputs[0]
    if relu is not None and r_source != p:
        graph.prod(r_source, ("FULLY_CONNECTED", "QUANTIZE"), "the RELU input", where)
    for op in (sig_p,) + ((relu,) if relu is not None else ()):
        if tensors[op.inputs[0]].size != channels:
            raise CodegenError(f"{where}: {op.op} (op {op.index}) is not [1, {channels}]")
    add_p = _elementwise(graph, add_g, channels, where)
    return Candidate([add_g, sig_p, minimum] + ([relu] if relu is not None else []), p,
                     r_source, consts[0], op_params(graph.model, sig_p),
                     op_params(graph.model, relu) if relu is not None else None,
                     swap_add(add_p) if k_q == 0 else add_p)


def fc_params(graph: StepGraph, fcs: dict, channels: int, where: str) -> dict:
    """role -> (FC op, op_params) of gate, cand and relu_fc (where there is one), each
    [1, |u|] -> [1, H] on the same input u."""
    u = fcs["cand"].inputs[0]
    out = {}
    for role, fc in fcs.items():
        if fc.inputs[0] != u:
            raise CodegenError(f"{where}: the gate and candidate FULLY_CONNECTED ops read "
                               "different inputs")
        p = op_params(graph.model, fc)
        u_size = graph.tensors[u].size
        if p["batches"] != 1 or p["output_depth"] != channels or u_size != p["accum_depth"]:
            raise CodegenError(f"{where}: {role} FULLY_CONNECTED is not [1, {u_size}] -> "
                               f"[1, {channels}]")
        out[role] = (fc, p)
    return out


def shares_dot(fcs: dict) -> bool:
    """Whether the RELU branch's FC has the candidate's weights and input arithmetic (one dot
    product serves both); fcs: fc_params' result."""
    if "relu_fc" not in fcs:
        return False
    (cand_op, cand), (relu_op, relu_fc) = fcs["cand"], fcs["relu_fc"]
    return (relu_op.inputs[1] == cand_op.inputs[1]
            and all(cand[k] == relu_fc[k] for k in ("per_channel", "input_offset",
                                                    "filter_offset", "accum_depth")))


def check_enclosed(graph: StepGraph, ops: list[Operator], outputs: set[int], where: str
                   ) -> None:
    """CodegenError where an op plays two roles or a tensor the ops produce (other than
    `outputs`) is read outside them."""
    indices = {op.index for op in ops}
    if len(indices) != len(ops):
        raise CodegenError(f"{where}: the subgraph reuses an operator in two roles")
    for op in ops:
        for t in op.outputs:
            if t not in outputs:
                graph.only_consumers(t, indices, where, f"{op.op} (op {op.index}) output")


def match_delays(graph: StepGraph, meta: dict) -> list[DelayStep]:
    """Every delay-conv layer's DelayStep (CodegenError if the graph has another shape)."""
    gathers = [op for op in graph.model.operators if op.op == "GATHER"]
    conv_layers = [i for i, lm in enumerate(graph.meta.layers) if lm.conv]
    if len(gathers) != len(conv_layers):
        raise CodegenError(f"metadata has {len(conv_layers)} delay-conv layers but the graph "
                           f"has {len(gathers)} GATHER ops")
    return [match_delay(graph, meta, layer, gather)
            for layer, gather in zip(conv_layers, gathers)]
