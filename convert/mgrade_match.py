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


class StepGraph:
    """Producers/consumers of a step graph and its named inputs/outputs (metadata roles)."""

    def __init__(self, model: Model, meta: dict):
        self.m = model
        self.T = model.tensors
        self.producer: dict[int, Operator] = {}
        self.consumers: dict[int, list[Operator]] = {}
        for op in model.operators:
            for o in op.outputs:
                self.producer[o] = op
            for i in op.inputs:
                if i >= 0:
                    self.consumers.setdefault(i, []).append(op)
        names_in, names_out = meta.get("inputs"), meta.get("outputs")
        if not isinstance(names_in, list) or len(names_in) != len(model.inputs):
            raise CodegenError(f"mgrade metadata lists inputs {names_in} but the graph has "
                               f"{len(model.inputs)} inputs")
        if not isinstance(names_out, list) or len(names_out) != len(model.outputs):
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
        qa, qb = self.T[a].quant, self.T[b].quant
        return (qa is not None and qb is not None and float(qa.scale[0]) == float(qb.scale[0])
                and int(qa.zero_point[0]) == int(qb.zero_point[0]))


def _axis(op: Operator, ndims: int) -> int:
    a = op.options.get("axis", 0)
    return a + ndims if a < 0 else a


def _match_delay(g: StepGraph, meta: StepMetadata, layer: int, gather: Operator) -> DelayFusion:
    T, where = g.T, f"layer {layer} delay conv"
    lm = meta.layers[layer]
    H = meta.channels
    delays = np.asarray(lm.delays, dtype=np.int64)
    if delays.ndim != 2 or delays.shape[0] != H:
        raise CodegenError(f"{where}: metadata delays must be [H={H}, N], got {delays.shape}")
    N = delays.shape[1]
    R = lm.ring_frames
    if delays.min() < 0 or delays.max() > R or (R > 0 and delays.max() != R):
        raise CodegenError(f"{where}: delays must lie in 0..ring_frames={R} with max = R")
    if delays.max() > ring_layout.MAX_DELAY:
        raise CodegenError(f"{where}: delays > {ring_layout.MAX_DELAY} are not supported")
    ops = [gather.index]
    if R > 0:
        ring, idx, frame_out = (g.inp.get(names.ring(layer)), g.inp.get(names.idx(layer)),
                                g.out.get(names.frame(layer)))
        if ring is None or idx is None or frame_out is None:
            raise CodegenError(f"{where}: metadata has no ring{layer}/idx{layer}/frame{layer}")
        if T[ring].size != R * H or T[idx].size != N * H:
            raise CodegenError(f"{where}: ring{layer} has {T[ring].size} elements, idx{layer} "
                               f"{T[idx].size}; expected R*H={R * H}, N*H={N * H}")
        concat = g.prod(gather.inputs[0], "CONCATENATION", "the GATHER params", where)
        cat_axis = _axis(concat, len(T[concat.outputs[0]].shape))
        if concat.inputs != [frame_out, ring] or cat_axis != 1:
            raise CodegenError(f"{where}: expected CONCATENATION(frame{layer}, ring{layer}, "
                               f"axis=1), got inputs {concat.inputs}")
        if gather.inputs[1] != idx:
            raise CodegenError(f"{where}: GATHER indices are not the idx{layer} input")
        g.only_consumers(ring, {concat.index}, where, names.ring(layer))
        g.only_consumers(idx, {gather.index}, where, names.idx(layer))
        g.only_consumers(concat.outputs[0], {gather.index}, where, "the concatenated frames")
        frame = frame_out
        ops.insert(0, concat.index)
        chain = [frame, ring, concat.outputs[0]]
    else:   # all delays 0: GATHER(frame, constant indices)
        frame = gather.inputs[0]
        ci = T[gather.inputs[1]]
        if not ci.is_const:
            raise CodegenError(f"{where}: GATHER without a ring must have constant indices")
        want = np.tile(np.arange(H), N)
        if ci.data.reshape(-1).tolist() != want.tolist():
            raise CodegenError(f"{where}: constant GATHER indices do not match the delays")
        chain = [frame]
    if _axis(gather, len(T[gather.inputs[0]].shape)) != 1 or gather.options.get("batch_dims", 0):
        raise CodegenError(f"{where}: GATHER must gather axis 1 with batch_dims 0")
    gout = gather.outputs[0]
    users = g.consumers.get(gout, [])
    if len(users) != 1 or users[0].op != "RESHAPE":
        raise CodegenError(f"{where}: expected the GATHER output to feed one RESHAPE")
    reshape = users[0]
    g.only_consumers(gout, {reshape.index}, where, "the gathered taps")
    rout = reshape.outputs[0]
    if tuple(T[rout].shape) != (1, 1, N, H):
        raise CodegenError(f"{where}: taps reshaped to {T[rout].shape}, expected (1, 1, {N}, {H})")
    users = g.consumers.get(rout, [])
    if len(users) != 1 or users[0].op != "DEPTHWISE_CONV_2D" or users[0].inputs[0] != rout:
        raise CodegenError(f"{where}: expected the taps to feed one DEPTHWISE_CONV_2D")
    dw = users[0]
    g.only_consumers(rout, {dw.index}, where, "the reshaped taps")
    p = op_params(g.m, dw)
    expect = dict(batches=1, in_h=1, in_w=N, in_c=H, filt_h=1, filt_w=N, out_h=1, out_w=1,
                  out_c=H, depth_multiplier=1, pad_h=0, pad_w=0)
    bad = {k: p[k] for k, v in expect.items() if p[k] != v}
    if bad:
        raise CodegenError(f"{where}: DEPTHWISE_CONV_2D is not the [1,1,N,H] VALID tap "
                           f"convolution (unexpected {bad})")
    for t in chain + [gout, rout]:
        if not g.same_quant(t, frame) or T[t].dtype != np.int8:
            raise CodegenError(f"{where}: tensor {t} ({T[t].name}) does not share the frame's "
                               "int8 quantization (the taps must be plain copies)")
    ops += [reshape.index, dw.index]
    ring_len = ring_layout.channel_lengths(delays)
    return DelayFusion(layer, sorted(ops), dw.index, frame, dw.outputs[0], p, dw.inputs[1],
                       dw.inputs[2] if len(dw.inputs) > 2 else -1, delays, ring_len, R,
                       zero_point(T[frame]), R > 0)


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


def _match_mingru(g: StepGraph, layer: int, H: int) -> GruFusion:
    """Layer `layer`'s minGRU of H channels (the metadata's; the graph's state must agree)."""
    T, m, where = g.T, g.m, f"layer {layer} minGRU"
    h, hnew = g.inp.get(names.h(layer)), g.out.get(names.hnew(layer))
    if h is None or hnew is None:
        raise CodegenError(f"{where}: metadata has no h{layer}/hnew{layer}")
    if not g.same_quant(h, hnew):
        raise CodegenError(f"{where}: h{layer} and hnew{layer} have different quantization; "
                           "the state must be tied (convert/quantize.py finalize)")
    if T[h].size != H:
        raise CodegenError(f"{where}: h{layer} has {T[h].size} elements, the metadata "
                           f"{H} channels")
    add_h = g.prod(hnew, "ADD", names.hnew(layer), where)
    if h not in add_h.inputs:
        raise CodegenError(f"{where}: the last ADD does not read h{layer}")
    k_h = add_h.inputs.index(h)
    mt = add_h.inputs[1 - k_h]
    mul = g.prod(mt, "MUL", "z * (g - h)", where)
    kinds = [g.producer.get(t).op if t in g.producer else None for t in mul.inputs]
    if sorted(map(str, kinds)) != ["LOGISTIC", "SUB"]:
        raise CodegenError(f"{where}: expected MUL(LOGISTIC, SUB), got MUL{tuple(kinds)}")
    k_z = kinds.index("LOGISTIC")
    sig_z = g.producer[mul.inputs[k_z]]
    sub = g.producer[mul.inputs[1 - k_z]]
    if sub.inputs[1] != h:
        raise CodegenError(f"{where}: expected SUB(g, h{layer})")
    add_g = g.prod(sub.inputs[0], "ADD", "g(p)", where)
    kinds = [g.producer.get(t).op if t in g.producer else None for t in add_g.inputs]
    if kinds.count("LOGISTIC") != 1:
        raise CodegenError(f"{where}: expected ADD(RELU(p), LOGISTIC(MINIMUM(p, 0))), got "
                           f"ADD{tuple(kinds)}")
    k_q = kinds.index("LOGISTIC")
    sig_p = g.producer[add_g.inputs[k_q]]
    rt = add_g.inputs[1 - k_q]
    mn = g.prod(sig_p.inputs[0], "MINIMUM", "the sigmoid branch input", where)
    consts = [t for t in mn.inputs if T[t].is_const]
    if len(consts) != 1 or T[consts[0]].size not in (1, H):
        raise CodegenError(f"{where}: MINIMUM needs one constant operand of size 1 or {H}")
    min_const = consts[0]
    pt = next(t for t in mn.inputs if t != min_const)
    cand = g.prod(pt, "FULLY_CONNECTED", "the MINIMUM input p", where)
    gate = g.prod(sig_z.inputs[0], "FULLY_CONNECTED", "the gate pre-activation", where)
    relu, relu_fc = None, None
    r_op = g.prod(rt, ("FULLY_CONNECTED", "RELU"), "the RELU branch", where)
    if r_op.op == "RELU":
        relu = r_op
        if r_op.inputs[0] != pt:
            relu_fc = g.prod(r_op.inputs[0], "FULLY_CONNECTED", "the RELU input", where)
    else:
        relu_fc = r_op
    fcs = [gate, cand] + ([relu_fc] if relu_fc is not None else [])
    u = cand.inputs[0]
    for fc in fcs:
        if fc.inputs[0] != u:
            raise CodegenError(f"{where}: the gate and candidate FULLY_CONNECTED ops read "
                               "different inputs")
    fp = {"gate": (gate, op_params(m, gate)), "cand": (cand, op_params(m, cand))}
    if relu_fc is not None:
        fp["relu_fc"] = (relu_fc, op_params(m, relu_fc))
    for role, (op, p) in fp.items():
        if p["batches"] != 1 or p["output_depth"] != H or T[u].size != p["accum_depth"]:
            raise CodegenError(f"{where}: {role} FULLY_CONNECTED is not [1, {T[u].size}] -> "
                               f"[1, {H}]")
    ops = [gate, sig_z, cand, mn, sig_p, add_g, sub, mul, add_h] + \
        [o for o in (relu, relu_fc) if o is not None]
    idx = {op.index for op in ops}
    if len(idx) != len(ops):
        raise CodegenError(f"{where}: the subgraph reuses an operator in two roles")
    # every intermediate tensor stays inside the fused subgraph
    for op in ops:
        if op is add_h:
            continue
        g.only_consumers(op.outputs[0], idx, where, f"{op.op} (op {op.index}) output")
    g.only_consumers(h, {sub.index, add_h.index}, where, names.h(layer))
    elem = {}
    for name, op in (("add_g", add_g), ("sub", sub), ("mul", mul), ("add_h", add_h)):
        p = op_params(m, op)
        if p["bc"]["ndims"] != 0 or p["bc"]["count"] != H:
            raise CodegenError(f"{where}: {op.op} (op {op.index}) broadcasts; expected [1, {H}]")
        elem[name] = p
    if k_q == 0:                        # canonical ADD(r, q)
        elem["add_g"] = swap_add(elem["add_g"])
    if k_h == 1:                        # canonical ADD(h, m)
        elem["add_h"] = swap_add(elem["add_h"])
    if k_z == 1:                        # canonical MUL(z, d)
        elem["mul"] = _swap_mul(elem["mul"])
    shares = False
    if relu_fc is not None:
        pc, pr = fp["cand"][1], fp["relu_fc"][1]
        shares = (relu_fc.inputs[1] == cand.inputs[1]
                  and all(pc[k] == pr[k] for k in ("per_channel", "input_offset",
                                                   "filter_offset", "accum_depth")))
    for op in (sig_z, sig_p) + ((relu,) if relu is not None else ()):
        if T[op.inputs[0]].size != H:
            raise CodegenError(f"{where}: {op.op} (op {op.index}) is not [1, {H}]")
    return GruFusion(layer, sorted(idx), add_h.index, u, h, hnew, zero_point(T[h]), fp,
                     op_params(m, sig_z), op_params(m, sig_p), min_const,
                     op_params(m, relu) if relu is not None else None, shares,
                     elem["add_g"], elem["sub"], elem["mul"], elem["add_h"])


def match(model: Model, meta: dict) -> tuple[list[DelayFusion], list[GruFusion]]:
    """The per-layer fused subgraphs of an mGRADE step graph (CodegenError if it has another
    shape)."""
    g = StepGraph(model, meta)
    try:
        step_meta = StepMetadata.of(meta)
    except ConvertError as e:
        raise CodegenError(str(e)) from None
    layers = step_meta.layers
    gathers = [op for op in model.operators if op.op == "GATHER"]
    conv_layers = [i for i, lm in enumerate(layers) if lm.conv]
    if len(gathers) != len(conv_layers):
        raise CodegenError(f"metadata has {len(conv_layers)} delay-conv layers but the graph "
                           f"has {len(gathers)} GATHER ops")
    delays = [_match_delay(g, step_meta, layer, gop) for layer, gop in zip(conv_layers, gathers)]
    grus = [_match_mingru(g, i, step_meta.channels) for i, lm in enumerate(layers) if lm.rnn]
    seen: set[int] = set()
    for f in delays + grus:
        if seen & set(f.ops):
            raise CodegenError(f"layer {f.layer}: fused subgraphs overlap")
        seen |= set(f.ops)
    # the ring/idx inputs and the frame outputs must be fully handled by the fused ops
    for name, t in g.inp.items():
        if (names.parse(name) or ("",))[0] in ("ring", "idx"):
            g.only_consumers(t, seen, "graph", f"input {name}")
    return delays, grus
