"""The mGRADE fusion matcher: finds, per layer of an mGRADE step graph, the subgraphs the
package replaces by one fused kernel call, from the metadata's input/output roles.

* Delay convolution: CONCATENATION(frame<l>, ring<l>) -> GATHER(idx<l>) -> RESHAPE ->
  DEPTHWISE_CONV_2D (or GATHER(frame, constant indices) when every delay is 0) -> DelayFusion.
* minGRU: FC_z, LOGISTIC, FC_h, MINIMUM, LOGISTIC, FC_h+RELU (or RELU), ADD, SUB, MUL, ADD
  (h_new = h + z * (g(p) - h)) -> GruFusion.

A graph of another shape is refused with a CodegenError naming the layer and what was
expected. Uses the TFLM parameters (convert/tflm_params.py); knows nothing about C.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.metadata import StepMetadata
from mgrade_edge.convert.tflite_reader import Model, Operator
from mgrade_edge.convert.tflm_params import CodegenError, op_params, zero_point
from mgrade_edge.training import ring_layout


@dataclass
class DelayFusion:
    layer: int
    ops: list[int]           # matched operator indices (replaced)
    anchor: int              # position of the fused call (the DEPTHWISE_CONV_2D)
    frame: int               # tensor: the layer input at t (conv input, written to the ring)
    out: int                 # tensor: the DEPTHWISE_CONV_2D output
    dw: dict                 # DEPTHWISE_CONV_2D parameters (op_params)
    filt: int                # filter tensor [1, 1, N, H]
    bias: int                # bias tensor or -1
    delays: np.ndarray       # [H, N]
    ring_len: np.ndarray     # [H] R_c
    graph_ring_frames: int   # R of the graph's ring input
    zero_point: int          # of the frames (ring reset value)
    frame_output: bool       # the graph has a frame{l} output (ring_frames > 0)


@dataclass
class GruFusion:
    layer: int
    ops: list[int]
    anchor: int              # the final ADD (h + z * (g - h))
    u: int                   # input tensor
    h: int                   # state input tensor
    hnew: int                # state output tensor
    zero_point: int
    fc: dict                 # role -> (op, params): gate, cand, relu_fc (optional)
    sig_z: dict
    sig_p: dict
    min_const: int           # const tensor of the MINIMUM
    relu: dict | None        # RELU op params (None: fused into relu_fc)
    shares_dot: bool
    add_g: dict
    sub: dict
    mul: dict
    add_h: dict


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
        self.m, self.T = model, model.tensors      # the short names state16/input16 read
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


def _match_tap_conv(graph: StepGraph, gather: Operator, channels: int, taps: int, where: str
                    ) -> tuple[Operator, Operator, dict]:
    """GATHER -> RESHAPE [1, 1, N, H] -> DEPTHWISE_CONV_2D, the VALID tap convolution:
    (RESHAPE op, DEPTHWISE_CONV_2D op, its op_params)."""
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
    users = graph.consumers.get(reshaped, [])
    if len(users) != 1 or users[0].op != "DEPTHWISE_CONV_2D" or users[0].inputs[0] != reshaped:
        raise CodegenError(f"{where}: expected the taps to feed one DEPTHWISE_CONV_2D")
    dw = users[0]
    graph.only_consumers(reshaped, {dw.index}, where, "the reshaped taps")
    params = op_params(graph.model, dw)
    expect = dict(batches=1, in_h=1, in_w=taps, in_c=channels, filt_h=1, filt_w=taps, out_h=1,
                  out_w=1, out_c=channels, depth_multiplier=1, pad_h=0, pad_w=0)
    bad = {k: params[k] for k, v in expect.items() if params[k] != v}
    if bad:
        raise CodegenError(f"{where}: DEPTHWISE_CONV_2D is not the [1,1,N,H] VALID tap "
                           f"convolution (unexpected {bad})")
    return reshape, dw, params


def _match_delay(graph: StepGraph, meta: StepMetadata, layer: int, gather: Operator) -> DelayFusion:
    """Layer `layer`'s delay convolution, from its GATHER."""
    tensors, where = graph.tensors, f"layer {layer} delay conv"
    channels = meta.channels
    delays = _checked_delays(meta, layer, where)
    taps, frames = delays.shape[1], meta.layers[layer].ring_frames
    if frames > 0:
        frame, source_ops, chain = _match_ring_gather(graph, layer, gather, frames, channels, taps,
                                                      where)
    else:
        frame, source_ops, chain = _match_constant_gather(graph, gather, channels, taps, where)
    reshape, dw, params = _match_tap_conv(graph, gather, channels, taps, where)
    for t in chain + [gather.outputs[0], reshape.outputs[0]]:
        if not graph.same_quant(t, frame) or tensors[t].dtype != np.int8:
            raise CodegenError(f"{where}: tensor {t} ({tensors[t].name}) does not share the "
                               "frame's int8 quantization (the taps must be plain copies)")
    ops = source_ops + [gather.index, reshape.index, dw.index]
    return DelayFusion(layer, sorted(ops), dw.index, frame, dw.outputs[0], params, dw.inputs[1],
                       dw.inputs[2] if len(dw.inputs) > 2 else -1, delays,
                       ring_layout.channel_lengths(delays), frames, zero_point(tensors[frame]),
                       frames > 0)


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


@dataclass
class _GruOps:
    """The operators of one matched minGRU h_new = h + z * (g(p) - h), and which operand of
    each commutative op holds what (to bring its parameters to the canonical order)."""
    add_h: Operator          # ADD(h, m); h_first: h is its input1
    h_first: bool
    mul: Operator            # MUL(z, d); z_first: z is its input1
    z_first: bool
    sig_z: Operator          # z = LOGISTIC(gate FC)
    sub: Operator            # d = SUB(g, h)
    add_g: Operator          # g = ADD(r, q); relu_first: the RELU branch r is its input1
    relu_first: bool
    sig_p: Operator          # q = LOGISTIC(MINIMUM(p, c))
    minimum: Operator
    min_const: int           # the MINIMUM's constant operand
    gate: Operator           # FULLY_CONNECTED of the gate pre-activation
    cand: Operator           # FULLY_CONNECTED of the candidate p
    relu: Operator | None    # RELU(p or a second FC), None where the FC fuses it
    relu_fc: Operator | None  # the FC of the RELU branch, None where it is RELU(p)

    @property
    def ops(self) -> list[Operator]:
        return [self.gate, self.sig_z, self.cand, self.minimum, self.sig_p, self.add_g,
                self.sub, self.mul, self.add_h] + [o for o in (self.relu, self.relu_fc)
                                                   if o is not None]


def _producer_kinds(graph: StepGraph, op: Operator) -> list[str | None]:
    """The op kind producing each input of `op` (None: a graph input or constant)."""
    return [graph.producer.get(t).op if t in graph.producer else None for t in op.inputs]


def _match_update(graph: StepGraph, layer: int, h: int, h_new: int, where: str):
    """h_new = ADD(h, MUL(LOGISTIC(.), SUB(g, h))): (add_h, h_first, mul, z_first, sig_z,
    sub)."""
    add_h = graph.prod(h_new, "ADD", names.hnew(layer), where)
    if h not in add_h.inputs:
        raise CodegenError(f"{where}: the last ADD does not read h{layer}")
    k_h = add_h.inputs.index(h)
    mul = graph.prod(add_h.inputs[1 - k_h], "MUL", "z * (g - h)", where)
    kinds = _producer_kinds(graph, mul)
    if sorted(map(str, kinds)) != ["LOGISTIC", "SUB"]:
        raise CodegenError(f"{where}: expected MUL(LOGISTIC, SUB), got MUL{tuple(kinds)}")
    k_z = kinds.index("LOGISTIC")
    sub = graph.producer[mul.inputs[1 - k_z]]
    if sub.inputs[1] != h:
        raise CodegenError(f"{where}: expected SUB(g, h{layer})")
    return add_h, k_h == 0, mul, k_z == 0, graph.producer[mul.inputs[k_z]], sub


def _match_gru_ops(graph: StepGraph, layer: int, channels: int, h: int, h_new: int,
                   where: str) -> _GruOps:
    """The operators of layer `layer`'s minGRU, from its state output back to the FCs."""
    tensors = graph.tensors
    add_h, h_first, mul, z_first, sig_z, sub = _match_update(graph, layer, h, h_new, where)
    add_g = graph.prod(sub.inputs[0], "ADD", "g(p)", where)
    kinds = _producer_kinds(graph, add_g)
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
    p_t = next(t for t in minimum.inputs if t != consts[0])
    cand = graph.prod(p_t, "FULLY_CONNECTED", "the MINIMUM input p", where)
    gate = graph.prod(sig_z.inputs[0], "FULLY_CONNECTED", "the gate pre-activation", where)
    relu, relu_fc = None, None
    relu_op = graph.prod(add_g.inputs[1 - k_q], ("FULLY_CONNECTED", "RELU"), "the RELU branch",
                     where)
    if relu_op.op == "RELU":
        relu = relu_op
        if relu_op.inputs[0] != p_t:
            relu_fc = graph.prod(relu_op.inputs[0], "FULLY_CONNECTED", "the RELU input", where)
    else:
        relu_fc = relu_op
    return _GruOps(add_h, h_first, mul, z_first, sig_z, sub, add_g, k_q == 1, sig_p, minimum,
                   consts[0], gate, cand, relu, relu_fc)


def _fc_params(graph: StepGraph, ops: _GruOps, channels: int, where: str) -> dict:
    """role -> (FC op, op_params) of gate, cand and relu_fc (where there is one), each
    [1, |u|] -> [1, H] on the same input u."""
    u = ops.cand.inputs[0]
    for fc in [ops.gate, ops.cand] + ([ops.relu_fc] if ops.relu_fc is not None else []):
        if fc.inputs[0] != u:
            raise CodegenError(f"{where}: the gate and candidate FULLY_CONNECTED ops read "
                               "different inputs")
    fcs = {"gate": (ops.gate, op_params(graph.model, ops.gate)),
           "cand": (ops.cand, op_params(graph.model, ops.cand))}
    if ops.relu_fc is not None:
        fcs["relu_fc"] = (ops.relu_fc, op_params(graph.model, ops.relu_fc))
    for role, (_, p) in fcs.items():
        u_size = graph.tensors[u].size
        if p["batches"] != 1 or p["output_depth"] != channels or u_size != p["accum_depth"]:
            raise CodegenError(f"{where}: {role} FULLY_CONNECTED is not [1, {u_size}] -> "
                               f"[1, {channels}]")
    return fcs


def _check_enclosed(graph: StepGraph, layer: int, h: int, ops: _GruOps, where: str) -> set[int]:
    """The matched op indices; CodegenError where an op plays two roles or an intermediate
    (or the state input h) is read outside the fused subgraph."""
    op_list = ops.ops
    indices = {op.index for op in op_list}
    if len(indices) != len(op_list):
        raise CodegenError(f"{where}: the subgraph reuses an operator in two roles")
    for op in op_list:
        if op is not ops.add_h:
            graph.only_consumers(op.outputs[0], indices, where, f"{op.op} (op {op.index}) output")
    graph.only_consumers(h, {ops.sub.index, ops.add_h.index}, where, names.h(layer))
    return indices


def _elementwise_params(graph: StepGraph, ops: _GruOps, channels: int, where: str) -> dict:
    """name -> op_params of add_g, sub, mul, add_h (elementwise [1, H]), operands in the
    canonical order ADD(r, q), MUL(z, d), ADD(h, m)."""
    params = {}
    for name, op in (("add_g", ops.add_g), ("sub", ops.sub), ("mul", ops.mul),
                     ("add_h", ops.add_h)):
        p = op_params(graph.model, op)
        if p["bc"]["ndims"] != 0 or p["bc"]["count"] != channels:
            raise CodegenError(f"{where}: {op.op} (op {op.index}) broadcasts; expected "
                               f"[1, {channels}]")
        params[name] = p
    if not ops.relu_first:
        params["add_g"] = swap_add(params["add_g"])
    if not ops.h_first:
        params["add_h"] = swap_add(params["add_h"])
    if not ops.z_first:
        params["mul"] = _swap_mul(params["mul"])
    return params


def _shares_dot(ops: _GruOps, fcs: dict) -> bool:
    """Whether the RELU branch's FC has the candidate's weights and input arithmetic (one dot
    product serves both)."""
    if ops.relu_fc is None:
        return False
    cand, relu_fc = fcs["cand"][1], fcs["relu_fc"][1]
    return (ops.relu_fc.inputs[1] == ops.cand.inputs[1]
            and all(cand[k] == relu_fc[k] for k in ("per_channel", "input_offset",
                                                    "filter_offset", "accum_depth")))


def _match_mingru(graph: StepGraph, layer: int, channels: int) -> GruFusion:
    """Layer `layer`'s minGRU of H = `channels` channels (the metadata's; the graph's state
    must agree)."""
    tensors, where = graph.tensors, f"layer {layer} minGRU"
    h, h_new = graph.inp.get(names.h(layer)), graph.out.get(names.hnew(layer))
    if h is None or h_new is None:
        raise CodegenError(f"{where}: metadata has no h{layer}/hnew{layer}")
    if not graph.same_quant(h, h_new):
        raise CodegenError(f"{where}: h{layer} and hnew{layer} have different quantization; "
                           "the state must be tied (convert/quantize.py finalize)")
    if tensors[h].size != channels:
        raise CodegenError(f"{where}: h{layer} has {tensors[h].size} elements, the metadata "
                           f"{channels} channels")
    ops = _match_gru_ops(graph, layer, channels, h, h_new, where)
    fcs = _fc_params(graph, ops, channels, where)
    indices = _check_enclosed(graph, layer, h, ops, where)
    elem = _elementwise_params(graph, ops, channels, where)
    for op in (ops.sig_z, ops.sig_p) + ((ops.relu,) if ops.relu is not None else ()):
        if tensors[op.inputs[0]].size != channels:
            raise CodegenError(f"{where}: {op.op} (op {op.index}) is not [1, {channels}]")
    return GruFusion(layer, sorted(indices), ops.add_h.index, ops.cand.inputs[0], h, h_new,
                     zero_point(tensors[h]), fcs, op_params(graph.model, ops.sig_z),
                     op_params(graph.model, ops.sig_p), ops.min_const,
                     op_params(graph.model, ops.relu) if ops.relu is not None else None,
                     _shares_dot(ops, fcs), elem["add_g"], elem["sub"], elem["mul"],
                     elem["add_h"])


def match(model: Model, meta: dict) -> tuple[list[DelayFusion], list[GruFusion]]:
    """The per-layer fused subgraphs of an mGRADE step graph (CodegenError if it has another
    shape)."""
    graph = StepGraph(model, meta)
    step_meta = graph.meta
    layers = step_meta.layers
    gathers = [op for op in model.operators if op.op == "GATHER"]
    conv_layers = [i for i, lm in enumerate(layers) if lm.conv]
    if len(gathers) != len(conv_layers):
        raise CodegenError(f"metadata has {len(conv_layers)} delay-conv layers but the graph "
                           f"has {len(gathers)} GATHER ops")
    delays = [_match_delay(graph, step_meta, layer, gather)
              for layer, gather in zip(conv_layers, gathers)]
    grus = [_match_mingru(graph, i, step_meta.channels) for i, lm in enumerate(layers) if lm.rnn]
    seen: set[int] = set()
    for f in delays + grus:
        if seen & set(f.ops):
            raise CodegenError(f"layer {f.layer}: fused subgraphs overlap")
        seen |= set(f.ops)
    # the ring/idx inputs and the frame outputs must be fully handled by the fused ops
    for name, t in graph.inp.items():
        if (names.parse(name) or ("",))[0] in ("ring", "idx"):
            graph.only_consumers(t, seen, "graph", f"input {name}")
    return delays, grus
