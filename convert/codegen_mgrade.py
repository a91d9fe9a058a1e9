"""mGRADE streaming .tflite -> stateful C model package (mcu/runtime/mg_model.h).

Called by `python -m convert.codegen MODEL.tflite --out DIR` when the .tflite carries the
`mgrade` metadata written by `python -m convert`. Writes

    DIR/mg_model_data.h   sizes, ids, ring layout constants, debug accessors (MG_MODEL_DEBUG)
    DIR/mg_model_data.c   the constant tensors (weights, biases, constants)
    DIR/mg_model.c        operator parameters, the static model state, mg_model_reset/step/info

compiled with mcu/runtime/{mg_quant,mg_kernels,mg_delay,mg_mingru}.c (include mcu/runtime).
The .tflite is the only source: shapes, quantization, delays and ring sizes come from it.

What the package does per step, compared with the interpreter graph:

* Delay convolution (CONCATENATION(frame, ring) -> GATHER(idx) -> RESHAPE ->
  DEPTHWISE_CONV_2D): one `mg_delay_step_s8` call on per-channel trimmed rings. Channel c of
  layer l keeps R_c = max_e delays[c][e] frames (sum_c R_c bytes instead of R*H); a global step
  counter t (wrapped at the lcm of all R_c) gives slot (t - d) mod R_c; the frame is written to
  slot t mod R_c inside the same call. No index input, no copy.
* minGRU (FC_z, LOGISTIC, FC_h, MINIMUM, LOGISTIC, FC_h+RELU (or RELU), ADD, SUB, MUL, ADD):
  one `mg_mingru_step_s8` call, channel by channel, updating the state in place (the state
  input and output quantization are tied by convert/, checked here).
* Everything else: the generic kernels, as convert/codegen.py emits them, on a static arena
  planned offline.

The fused kernels keep TFLite-Micro's integer arithmetic, so the package is bit-exact with the
TFLM Streamer (convert/stream.py): tests/test_mcu_model.py checks every step's logits and
states. The subgraphs are matched per layer from the metadata's input/output roles; a graph of
another shape is refused with a CodegenError naming the layer and what was expected.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.codegen import (
    ALIAS_OPS, SUPPORTED_OPS, CodegenError, _carray, _ctype, _list, _zp, const_tensor_lines,
    emit_op, op_params, plan_memory)
from convert.codegen_fast import (
    emit_fast_op, fc_weights, ffc_decls, ffc_layout, add_ok, logistic_min_table, logistic_table,
    requant_table, right_shifts, table_decl, chan_rows, chan_table, g_split_tables)
from convert.tflite_reader import Model, Operator, read_tflite
from convert import state16

METADATA_NAME = "mgrade"
METADATA_FORMAT = "mgrade-edge/step/v1"     # convert/quantize.py writes this
U32 = 1 << 32


def mgrade_metadata(model: Model) -> dict | None:
    """The mGRADE step metadata of a parsed .tflite, or None for any other model."""
    raw = model.metadata.get(METADATA_NAME)
    if not raw:
        return None
    try:
        meta = json.loads(bytes(raw).decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != METADATA_FORMAT:
        return None
    return meta


# ---------------------------------------------------------------------------------------------
# Pattern matching

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


class _Graph:
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


def _match_delay(g: _Graph, meta: dict, layer: int, gather: Operator) -> DelayFusion:
    T, where = g.T, f"layer {layer} delay conv"
    lm = meta["layers"][layer]
    H = int(meta["channels"])
    delays = np.asarray(lm.get("delays"), dtype=np.int64)
    if delays.ndim != 2 or delays.shape[0] != H:
        raise CodegenError(f"{where}: metadata delays must be [H={H}, N], got {delays.shape}")
    N = delays.shape[1]
    R = int(lm.get("ring_frames", 0))
    if delays.min() < 0 or delays.max() > R or (R > 0 and delays.max() != R):
        raise CodegenError(f"{where}: delays must lie in 0..ring_frames={R} with max = R")
    if delays.max() >= 65536:
        raise CodegenError(f"{where}: delays >= 65536 are not supported")
    ops = [gather.index]
    if R > 0:
        ring, idx, frame_out = (g.inp.get(f"ring{layer}"), g.inp.get(f"idx{layer}"),
                                g.out.get(f"frame{layer}"))
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
        g.only_consumers(ring, {concat.index}, where, f"ring{layer}")
        g.only_consumers(idx, {gather.index}, where, f"idx{layer}")
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
    ring_len = delays.max(axis=1).astype(np.int64)
    return DelayFusion(layer, sorted(ops), dw.index, frame, dw.outputs[0], p, dw.inputs[1],
                       dw.inputs[2] if len(dw.inputs) > 2 else -1, delays, ring_len, R,
                       _zp(T[frame]), R > 0)


def _swap_add(p: dict) -> dict:
    q = dict(p)
    for k in ("offset", "multiplier", "shift"):
        q[f"input1_{k}"], q[f"input2_{k}"] = p[f"input2_{k}"], p[f"input1_{k}"]
    return q


def _swap_mul(p: dict) -> dict:
    q = dict(p)
    q["input1_offset"], q["input2_offset"] = p["input2_offset"], p["input1_offset"]
    return q


def _match_mingru(g: _Graph, layer: int) -> GruFusion:
    T, m, where = g.T, g.m, f"layer {layer} minGRU"
    h, hnew = g.inp.get(f"h{layer}"), g.out.get(f"hnew{layer}")
    if h is None or hnew is None:
        raise CodegenError(f"{where}: metadata has no h{layer}/hnew{layer}")
    if not g.same_quant(h, hnew):
        raise CodegenError(f"{where}: h{layer} and hnew{layer} have different quantization; "
                           "the state must be tied (convert/quantize.py finalize)")
    H = T[h].size
    add_h = g.prod(hnew, "ADD", f"hnew{layer}", where)
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
    g.only_consumers(h, {sub.index, add_h.index}, where, f"h{layer}")
    elem = {}
    for name, op in (("add_g", add_g), ("sub", sub), ("mul", mul), ("add_h", add_h)):
        p = op_params(m, op)
        if p["bc"]["ndims"] != 0 or p["bc"]["count"] != H:
            raise CodegenError(f"{where}: {op.op} (op {op.index}) broadcasts; expected [1, {H}]")
        elem[name] = p
    if k_q == 0:                        # canonical ADD(r, q)
        elem["add_g"] = _swap_add(elem["add_g"])
    if k_h == 1:                        # canonical ADD(h, m)
        elem["add_h"] = _swap_add(elem["add_h"])
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
    return GruFusion(layer, sorted(idx), add_h.index, u, h, hnew, _zp(T[h]), fp,
                     op_params(m, sig_z), op_params(m, sig_p), min_const,
                     op_params(m, relu) if relu is not None else None, shares,
                     elem["add_g"], elem["sub"], elem["mul"], elem["add_h"])


def match(model: Model, meta: dict) -> tuple[list[DelayFusion], list[GruFusion]]:
    """The per-layer fused subgraphs of an mGRADE step graph (CodegenError if it has another
    shape)."""
    g = _Graph(model, meta)
    layers = meta.get("layers")
    H = meta.get("channels")
    if not isinstance(layers, list) or not isinstance(H, int):
        raise CodegenError("mgrade metadata has no layers/channels")
    gathers = [op for op in model.operators if op.op == "GATHER"]
    conv_layers = [i for i, lm in enumerate(layers) if lm.get("conv")]
    if len(gathers) != len(conv_layers):
        raise CodegenError(f"metadata has {len(conv_layers)} delay-conv layers but the graph "
                           f"has {len(gathers)} GATHER ops")
    delays = [_match_delay(g, meta, layer, gop) for layer, gop in zip(conv_layers, gathers)]
    grus = [_match_mingru(g, i) for i, lm in enumerate(layers) if lm.get("rnn")]
    seen: set[int] = set()
    for f in delays + grus:
        if seen & set(f.ops):
            raise CodegenError(f"layer {f.layer}: fused subgraphs overlap")
        seen |= set(f.ops)
    # the ring/idx inputs and the frame outputs must be fully handled by the fused ops
    for name, t in g.inp.items():
        if name.startswith(("ring", "idx")):
            g.only_consumers(t, seen, "graph", f"input {name}")
    return delays, grus


# ---------------------------------------------------------------------------------------------
# Emission helpers

def _fc_struct(P: str, name: str, p: dict) -> list[str]:
    return [f"static const int32_t {P}_{name}_mult[{len(p['multiplier'])}] = "
            f"{_list(p['multiplier'])};",
            f"static const int32_t {P}_{name}_shift[{len(p['shift'])}] = {_list(p['shift'])};",
            f"static const mg_fc_params_t {P}_{name} = {{{p['batches']}, {p['accum_depth']}, "
            f"{p['output_depth']}, {p['input_offset']}, {p['filter_offset']}, "
            f"{p['output_offset']}, {p['act_min']}, {p['act_max']}, {p['per_channel']}, "
            f"{P}_{name}_mult, {P}_{name}_shift}};"]


def _struct(ctype: str, P: str, name: str, p: dict, keys: list[str], tail: str = "") -> str:
    vals = ", ".join(str(int(p[k])) for k in keys)
    return f"static const {ctype} {P}_{name} = {{{vals}{tail}}};"


_LOGISTIC_KEYS = ["size", "input_zero_point", "input_range_radius", "input_multiplier",
                  "input_left_shift"]
_ADD_KEYS = ["left_shift", "input1_offset", "input1_multiplier", "input1_shift", "input2_offset",
             "input2_multiplier", "input2_shift", "output_offset", "output_multiplier",
             "output_shift", "act_min", "act_max"]
_MUL_KEYS = ["input1_offset", "input2_offset", "output_offset", "output_multiplier",
             "output_shift", "act_min", "act_max"]
_REQ_KEYS = ["size", "input_offset", "output_offset", "multiplier", "shift", "act_min", "act_max"]
_BC_NONE = "{0, 0, {0}, {0}, {0}}"


def _int_array(ctype: str, name: str, values) -> str:
    v = np.asarray(values).reshape(-1)
    return f"static const {ctype} {name}[{max(1, v.size)}] = {{{_carray(v)}}};"


def _macs(model: Model, op: Operator, p: dict) -> int:
    if op.op == "FULLY_CONNECTED":
        return p["batches"] * p["accum_depth"] * p["output_depth"]
    if op.op == "DEPTHWISE_CONV_2D":
        return p["batches"] * p["out_h"] * p["out_w"] * p["out_c"] * p["filt_h"] * p["filt_w"]
    return 0


def _lcm_all(values) -> int:
    out = 1
    for v in values:
        out = out * int(v) // math.gcd(out, int(v))
    return out


def _fast_delay(P: str, T, f: DelayFusion, add=None):
    """Fast delay step: channel-major taps, folded bias, FC-style requantization; add =
    (ADD op index, swap) of a residual ADD(frame, conv) fused into the same pass."""
    p = f.dw
    H = p["out_c"]
    N = f.delays.shape[1]
    filt = np.asarray(T[f.filt].data, np.int64).reshape(N, H)       # [N, H]
    bias = (np.asarray(T[f.bias].data, np.int64).reshape(-1) if f.bias >= 0
            else np.zeros(H, np.int64))
    folded = bias + p["input_offset"] * filt.sum(0)
    if np.any(np.abs(folded) + 128 * np.abs(filt).sum(0) >= (1 << 30)):
        return None                     # the short requantization needs |acc| < 2^30
    rows = chan_table(folded, p["multiplier"], p["shift"], int(p["output_offset"]))
    L = f.layer
    addp = f"&{P}_op{add[0]}, {int(add[1])}" if add else "NULL, 0"
    decls = [_int_array("uint16_t", f"{P}_l{L}_delay_cm", f.delays.reshape(-1)),
             _int_array("int8_t", f"{P}_l{L}_filter_cm", filt.T.reshape(-1)),
             f"static const mg_fq_chan_t {P}_l{L}_dw_ch[{H}] = {{\n    {chan_rows(rows)}\n}};",
             f"static const mg_ffc_params_t {P}_l{L}_dw_q = {{{N}, 0, {H}, NULL, {P}_l{L}_dw_ch, "
             f"{p['output_offset']}, {p['act_min']}, {p['act_max']}, {right_shifts(rows)}}};",
             f"static const mg_delay_fast_t {P}_l{L}_delay_f = {{{H}, {N}, {P}_l{L}_ring_len, "
             f"{P}_l{L}_ring_off, {P}_l{L}_delay_cm, {P}_l{L}_filter_cm, &{P}_l{L}_dw_q, "
             f"{addp}}};"]
    return decls, None, (0, 0)


def _fast_mingru(P: str, model: Model, T, f: GruFusion, report: dict, add=None):
    """Fast minGRU step declarations (None where a condition of the fast kernel fails); add =
    (ADD op index, swap) of a residual ADD(u, h_new) fused into the same pass."""
    L = f.layer
    addv = f"&{P}_op{add[0]}, {int(add[1])}" if add else "NULL, 0"
    H = f.fc["gate"][1]["output_depth"]
    lay = {}
    for role, (fop, p) in f.fc.items():
        w, bias = fc_weights(model, fop)
        if w is None:
            report[f"l{L}_gru"] = f"{role}: weights not constant"
            return None
        lay[role], why = ffc_layout(w, bias, p)
        if lay[role] is None:
            report[f"l{L}_gru"] = f"{role}: {why}"
            return None
    if not all(add_ok(x) for x in (f.add_g, f.sub, f.add_h)):
        report[f"l{L}_gru"] = "ADD/SUB parameters outside the fast kernel's range"
        return None
    decls = []
    for role in ("gate", "cand"):
        decls += ffc_decls(P, f"l{L}_{role}_f", f.fc[role][1], lay[role])
    mc = np.asarray(T[f.min_const].data).reshape(-1)
    decls.append(table_decl(P, f"l{L}_sig_z_lut", logistic_table(f.sig_z)))
    if mc.size == 1:
        decls.append(table_decl(P, f"l{L}_sig_min_p_lut", logistic_min_table(f.sig_p,
                                                                             int(mc[0]))))
        sig = f"{P}_l{L}_sig_min_p_lut, NULL, NULL"
    else:
        decls.append(table_decl(P, f"l{L}_sig_p_lut", logistic_table(f.sig_p)))
        sig = f"NULL, {P}_t{f.min_const}, {P}_l{L}_sig_p_lut"
    relu_fc = "NULL"
    if "relu_fc" in f.fc:
        p = f.fc["relu_fc"][1]
        if f.shares_dot:       # cand's re-laid weights, relu_fc's own bias and quantization
            words, rows, blocks = lay["relu_fc"][:3]
            ch = chan_rows(rows)
            decls += [f"static const mg_fq_chan_t {P}_l{L}_relu_fc_f_ch[{len(rows)}] = "
                      f"{{\n    {ch}\n}};",
                      f"static const mg_ffc_params_t {P}_l{L}_relu_fc_f = {{"
                      f"{p['accum_depth']}, {blocks}, {p['output_depth']}, "
                      f"{P}_l{L}_cand_f_w, {P}_l{L}_relu_fc_f_ch, {p['output_offset']}, "
                      f"{p['act_min']}, {p['act_max']}, {right_shifts(rows)}}};"]
        else:
            decls += ffc_decls(P, f"l{L}_relu_fc_f", p, lay["relu_fc"])
        relu_fc = f"&{P}_l{L}_relu_fc_f"
    relu = "NULL"
    relu_tab = None
    if f.relu is not None:
        relu_tab = requant_table(f.relu)
        decls.append(table_decl(P, f"l{L}_relu_lut", relu_tab))
        relu = f"{P}_l{L}_relu_lut"
    split = "NULL, NULL, NULL"
    if "relu_fc" in f.fc and f.shares_dot and mc.size == 1:
        gs = g_split_tables(lay["cand"][1], f.fc["cand"][1], lay["relu_fc"][1],
                            f.fc["relu_fc"][1], lay["cand"][3], relu_tab, f.sig_p, int(mc[0]),
                            f.add_g)
        if gs is not None:
            decls += [f"static const int32_t {P}_l{L}_g_split[{H}] = {_list(gs[0])};",
                      table_decl(P, f"l{L}_g_neg", gs[1]), table_decl(P, f"l{L}_g_pos", gs[2])]
            split = f"{P}_l{L}_g_split, {P}_l{L}_g_neg, {P}_l{L}_g_pos"
        else:
            report[f"l{L}_g"] = "g() computed per element (no split)"
    decls.append(f"static const mg_mingru_fast_t {P}_l{L}_gru_f = {{{H}, &{P}_l{L}_gate_f, "
                 f"&{P}_l{L}_cand_f, {P}_l{L}_sig_z_lut, {sig}, {relu_fc}, {int(f.shares_dot)}, "
                 f"{relu}, &{P}_l{L}_add_g, &{P}_l{L}_sub, &{P}_l{L}_mul, &{P}_l{L}_add_h, "
                 f"{split}, {addv}}};")
    n_acc = (3 if "relu_fc" in f.fc and not f.shares_dot else 2) * 4 * ((H + 3) // 4)
    return decls, None, (2 * lay["gate"][2], n_acc)


def _residual_adds(model: Model, ops: list, T, fused_at: dict, graph_outputs, H: int) -> dict:
    """The residual ADD right after a fused delay (ADD(frame, conv), the conv output used by
    nothing else) or minGRU step (ADD(u, h_new)) that the fast step can compute in the same
    pass: {fused op index: (ADD op index, swap)}. Only where the ADD is the next non-alias op
    (so writing its output early cannot clobber a live buffer) and its parameters suit the
    fast kernel."""
    from convert.codegen_fast import elementwise_count

    out = {}
    seq = [op for op in ops if op.op not in ALIAS_OPS]
    alias = {op.outputs[0]: op.inputs[0] for op in ops if op.op in ALIAS_OPS}

    def root(t):
        while t in alias:
            t = alias[t]
        return t

    users: dict[int, list] = {}
    for op in ops:
        for i in op.inputs:
            users.setdefault(i, []).append(op)
    for k, op in enumerate(seq[:-1]):
        f = fused_at.get(op.index)
        if f is None or op.op not in ("MG_DELAY", "MG_MINGRU"):
            continue
        nxt = seq[k + 1]
        if nxt.op != "ADD" or len(nxt.inputs) != 2:
            continue
        p = op_params(model, nxt)
        if not add_ok(p) or elementwise_count(p) != H:
            continue
        ins = [root(i) for i in nxt.inputs]
        if op.op == "MG_DELAY":
            want = (f.frame, f.out)
            chain = [t for t, src in alias.items() if root(t) == f.out] + [f.out]
            private = all(u.index == nxt.index or u.op in ALIAS_OPS
                          for t in chain for u in users.get(t, [])) and \
                not any(t in graph_outputs for t in chain)
        else:
            want = (f.u, f.hnew)
            private = True
        if sorted(ins) != sorted(want) or ins[0] == ins[1] or not private:
            continue
        out[op.index] = (nxt.index, ins[0] != want[0])
    return out


def _epilogue_call(P: str, fc, chain, fast, ptr):
    """The fast FC call with its epilogue ops (mg_ffc_epi_s8) in place of mg_ffc_s8."""
    fdecls, fbody, words = fast
    kinds = [{"ADD": 1, "SUB": 2, "MUL": 3}[op.op] for op, _, _ in chain] + [0] * (3 - len(chain))
    adds = [f"&{P}_op{op.index}" if op.op != "MUL" else "NULL" for op, _, _ in chain]
    muls = [f"&{P}_op{op.index}" if op.op == "MUL" else "NULL" for op, _, _ in chain]
    pad = ["NULL"] * (3 - len(chain))
    swaps = [str(int(sw)) for _, sw, _ in chain] + ["0"] * (3 - len(chain))
    others = [ptr(o, True) for _, _, o in chain] + pad
    n = fc.index
    decl = (f"static const mg_epi_t {P}_op{n}_epi = {{{{{', '.join(map(str, kinds))}}}, "
            f"{{{', '.join(adds + pad)}}}, {{{', '.join(muls + pad)}}}, "
            f"{{{', '.join(swaps)}}}}};")
    out = ptr(chain[-1][0].outputs[0], False)
    call = (f"    mg_ffc_epi_s8(&{P}_op{n}f, {ptr(fc.inputs[0], True)}, {P}_xq, {P}_acc, {out}, "
            f"&{P}_op{n}_epi, {', '.join(others)});")
    head = fbody[0].replace("(fast)", f"(fast, + ops {[op.index for op, _, _ in chain]})")
    return fdecls + [decl], [head, call], words


def _fc_epilogue(model: Model, ops: list, fc, plan, graph_outputs) -> list:
    """Elementwise ADD/SUB/MUL ops that directly follow a FULLY_CONNECTED and read its value
    (and one other vector of the same size): [(op, swap, other tensor)], at most 3. Stops at
    an op whose input is used elsewhere, at a graph output, and where writing the final result
    early could overwrite another operand (different arena offsets that overlap)."""
    from convert.codegen_fast import elementwise_count

    seq = [op for op in ops if op.op not in ALIAS_OPS]
    alias = {op.outputs[0]: op.inputs[0] for op in ops if op.op in ALIAS_OPS}

    def root(t):
        while t in alias:
            t = alias[t]
        return t

    users: dict[int, list] = {}
    for op in ops:
        for i in op.inputs:
            users.setdefault(root(i), []).append(op)
    n = op_params(model, fc)["output_depth"]
    k = next(i for i, op in enumerate(seq) if op.index == fc.index)
    cur, chain = fc.outputs[0], []
    for nxt in seq[k + 1:k + 4]:
        if nxt.op not in ("ADD", "SUB", "MUL") or len(nxt.inputs) != 2:
            break
        ins = [root(i) for i in nxt.inputs]
        if ins.count(cur) != 1 or cur in graph_outputs:
            break
        if [u.index for u in users.get(cur, [])] != [nxt.index]:
            break
        p = op_params(model, nxt)
        if elementwise_count(p) != n or (nxt.op != "MUL" and not add_ok(p)):
            break
        swap = ins[1] == cur
        chain.append((nxt, swap, nxt.inputs[0 if swap else 1]))
        cur = root(nxt.outputs[0])
    # the final result is written while the other operands are still read
    while chain:
        fin = plan.loc.get(chain[-1][0].outputs[0])
        clash = False
        for _, _, o in chain:
            lo = plan.loc.get(root(o))
            if fin is not None and lo is not None and fin.kind == lo.kind == "arena" and \
                    fin.offset != lo.offset and fin.offset < lo.offset + n and \
                    lo.offset < fin.offset + n:
                clash = True
        if not clash:
            break
        chain.pop()
    return chain


def generate_package(model: Model, meta: dict, out_dir, prefix: str = "mg") -> dict:
    """Write mg_model.c and mg_model_data.{h,c} for an mGRADE step graph; return a summary."""
    if model.num_subgraphs != 1:
        raise CodegenError(f"model has {model.num_subgraphs} subgraphs; only 1 is supported")
    P, PU = prefix, prefix.upper()
    T = model.tensors
    for op in model.operators:
        if op.op not in SUPPORTED_OPS:
            raise CodegenError(f"operator {op.op} (op {op.index}) is not supported "
                               f"(supported: {', '.join(SUPPORTED_OPS)})")
    g = _Graph(model, meta)
    # [state16 hook] int16 state tails (convert/widen.py) collapsed to the int8 graph shape;
    # s16: {layer: (params, tensors)} (convert/state16.py)
    model, s16 = state16.int8_view(model, meta, g)
    if s16:
        T, g = model.tensors, _Graph(model, meta)
    op_at = {o.index: o for o in model.operators}   # the view drops ops: look up by index
    H = int(meta["channels"])
    layers = meta["layers"]
    n_in, n_out = int(meta["n_in"]), int(meta["n_classes"])
    x_t, logits_t = g.inp.get("x"), g.out.get("logits")
    if x_t is None or logits_t is None:
        raise CodegenError("mgrade metadata has no x input / logits output")
    if T[x_t].size != n_in or T[logits_t].size != n_out or T[x_t].dtype != np.int8 \
            or T[logits_t].dtype != np.int8:
        raise CodegenError(f"x must be int8 [1, {n_in}] and logits int8 [1, {n_out}]")
    delays, grus = match(model, meta)
    fused_at = {f.anchor: f for f in delays + grus}
    replaced = {i for f in delays + grus for i in f.ops}

    # --- operator list with the fused calls, and the memory plan ---------------------------
    new_ops: list[Operator] = []
    for op in model.operators:
        if op.index in fused_at:
            f = fused_at[op.index]
            if isinstance(f, DelayFusion):
                new_ops.append(Operator(op.index, "MG_DELAY", [f.frame], [f.out]))
            else:
                new_ops.append(Operator(op.index, "MG_MINGRU", [f.u, f.h], [f.hnew]))
        elif op.index not in replaced:
            new_ops.append(op)
    gru_of = {f.layer: f for f in grus}
    state_in = [f.h for f in grus]
    state_out = [f.hnew for f in grus]
    pm = dataclasses.replace(model, operators=new_ops, inputs=[x_t] + state_in,
                             outputs=[logits_t] + state_out,
                             input_names=["x"] + [f"h{f.layer}" for f in grus],
                             output_names=["logits"] + [f"hnew{f.layer}" for f in grus])
    plan = plan_memory(pm)
    for ti, _ in plan.copies:
        raise CodegenError(f"graph output tensor {ti} is not produced by an operator")

    def state_name(slot: int) -> str:
        return f"{P}_h{grus[slot - 1].layer}"

    def ptr(ti: int, const: bool) -> str:
        if ti < 0:
            return "NULL"
        ct = _ctype(T[ti])
        lc = plan.loc[ti]
        q = "const " if const else ""
        if lc.kind == "const":
            return f"{P}_t{lc.index}"
        if lc.kind == "input":
            if lc.index == 0:
                if not const:
                    raise CodegenError("the x input is written by an operator")
                return "x"
            return state_name(lc.index)
        if lc.kind == "output":
            return "logits" if lc.index == 0 else state_name(lc.index)
        return f"({q}{ct} *)(void *)(arena + {lc.offset})"

    # --- MACs ---------------------------------------------------------------------------------
    macs_graph = sum(_macs(model, op, op_params(model, op)) for op in model.operators)
    macs_saved = sum(f.fc["relu_fc"][1]["accum_depth"] * H for f in grus if f.shares_dot)

    # --- rings ----------------------------------------------------------------------------------
    ring_info = []
    for f in delays:
        lm = layers[f.layer]
        span = lm.get("kernel_span", meta.get("kernel_span"))
        # a plain (untrimmed) ring holds the K - 1 past frames of delays 1..K-1 per channel
        plain_frames = int(span) - 1 if span is not None else int(f.delays.max())
        offs = np.concatenate([[0], np.cumsum(f.ring_len)[:-1]]).astype(np.int64)
        ring_info.append(dict(layer=f.layer, bytes=int(f.ring_len.sum()), offsets=offs,
                              graph_bytes=f.graph_ring_frames * H, plain_frames=plain_frames,
                              plain_bytes=plain_frames * H, kernel_span=span))
    nz = sorted({int(v) for f in delays for v in f.ring_len if v > 0})
    period = _lcm_all(nz) if nz else 1
    if period > 0x7FFFFFFF:
        period = 0          # natural 2^32 wrap (documented in the header)

    # --- constants ------------------------------------------------------------------------------
    used_consts: set[int] = set()
    for op in new_ops:
        if op.op in ("MG_DELAY", "MG_MINGRU"):
            continue
        if op.op in ALIAS_OPS:
            used_consts |= {i for i in op.inputs[:1] if T[i].is_const}
        else:
            used_consts |= {i for i in op.inputs if i >= 0 and T[i].is_const}
    for f in delays:
        used_consts |= {f.filt} | ({f.bias} if f.bias >= 0 else set())
    for f in grus:
        for op, _ in f.fc.values():
            used_consts |= {i for i in op.inputs[1:] if i >= 0}
        used_consts.add(f.min_const)
    for ti in used_consts:
        if not T[ti].is_const:
            raise CodegenError(f"tensor {ti} ({T[ti].name}) is expected to be a constant")

    const_bytes = sum(T[i].nbytes for i in used_consts)

    # --- mg_model_data.c ----------------------------------------------------------------------
    dc = [f"/* Generated by convert/codegen.py (mgrade package) from a .tflite, model id "
          f"{model.model_id}.", " * Do not edit. Constant tensors of the model. */",
          f'#include "{P}_model_data.h"', ""]
    dh_ext = []
    for ti in sorted(used_consts):
        t = T[ti]
        dc += const_tensor_lines(P, ti, t, storage="const")
        dh_ext.append(f"extern const {_ctype(t)} {P}_t{ti}[{max(t.size, 1)}];")
    dc.append("")

    # --- mg_model.c -----------------------------------------------------------------------------
    name = str(meta.get("task") or "mgrade")[:31].replace('"', "")
    mid = model.model_id
    c = [f"/* Generated by convert/codegen.py (mgrade package) from a .tflite, model id {mid}.",
         " * Do not edit. Implements mcu/runtime/mg_model.h: static state, fused delay rings",
         " * (mg_delay.h) and minGRU steps (mg_mingru.h), generic kernels for the rest. */",
         f'#include "{P}_model_data.h"', "", "#include <stddef.h>", "",
         '#include "mg_delay.h"', '#include "mg_fast.h"', '#include "mg_kernels.h"',
         '#include "mg_mingru.h"',
         '#include "mg_model.h"', "",
         f"static const mg_model_info_t {P}_info = {{\"{name}\", {{"
         + ", ".join(f"0x{mid[k:k + 2]}" for k in range(0, 16, 2))
         + f"}}, {n_in}, {n_out}, {macs_graph}u}};", "",
         "/* ---- model state (RAM); initialised to the reset values ---- */",
         f"static uint32_t {P}_step_t;   /* steps since reset, wrapped at "
         f"{PU}_MODEL_RING_PERIOD */"]
    for f, ri in zip(delays, ring_info):
        if ri["bytes"]:
            c.append(f"static int8_t {P}_ring{f.layer}[{PU}_MODEL_RING{f.layer}_BYTES] = "
                     f"{{{_carray(np.full(ri['bytes'], f.zero_point))}}};")
    for f in grus:
        c.append(f"static int8_t {P}_h{f.layer}[{H}] = {{{_carray(np.full(H, f.zero_point))}}};")
        if f.layer in s16:      # [state16 hook] the state; P_h<l> holds its int8 copy
            c.append(f"static int16_t {P}_h16_{f.layer}[{H}];   /* int16 state */")
    c.append(f"static int32_t {P}_arena_words[{max(1, (plan.arena_bytes + 3) // 4)}];"
             "   /* step scratch */")
    dbg = []
    for f in delays:
        if f.frame_output:
            dbg.append(f"static int8_t {P}_dbg_frame{f.layer}[{H}];")
    if dbg:
        c += ["#ifdef MG_MODEL_DEBUG"] + dbg + ["#endif"]
    c.append("")
    c.append("/* ---- operator parameters (flash) ---- */")

    body: list[str] = []
    residual = _residual_adds(model, new_ops, T, fused_at, g.graph_outputs, H)
    absorbed = {a[0]: layer for layer, a in residual.items()}
    predeclared: set[int] = set()
    xq_words = acc_words = 0
    fast_report: dict[str, str] = {}
    readout_op = g.producer[logits_t].index if logits_t in g.producer else -1
    for op in new_ops:
        kind = ("MG_PROF_DELAY" if op.op == "MG_DELAY" else "MG_PROF_MINGRU"
                if op.op == "MG_MINGRU" else "MG_PROF_READOUT" if op.index == readout_op
                else "MG_PROF_FC" if op.op == "FULLY_CONNECTED" else "MG_PROF_ELEM")
        if op.index in residual:        # the fused ADD's parameters, declared first
            aop = op_at[residual[op.index][0]]
            c += emit_op(pm, aop, op_params(model, aop), ptr, plan, P)[0]
            predeclared.add(aop.index)
        chain = []
        if op.op == "FULLY_CONNECTED" and op.index != readout_op:
            chain = _fc_epilogue(model, new_ops, op, plan, g.graph_outputs)
            for eop, _, _ in chain:
                c += emit_op(pm, eop, op_params(model, eop), ptr, plan, P)[0]
                predeclared.add(eop.index)
                absorbed[eop.index] = op.index
        ref_c, ref_b = len(c), len(body)
        fast = None
        if op.op == "MG_DELAY":
            fast = _fast_delay(P, T, fused_at[op.index], residual.get(op.index))
        elif op.op == "MG_MINGRU":
            fast = _fast_mingru(P, model, T, fused_at[op.index], fast_report,
                                residual.get(op.index))
        if fast is None and op.index in residual:      # no fast step: the ADD stays
            absorbed.pop(residual.pop(op.index)[0])
        if op.op in ("MG_DELAY", "MG_MINGRU"):
            pass
        elif op.index in absorbed:
            fast = (None, [f"    /* op {op.index}: {op.op} fused into the fast step of op "
                           f"{absorbed[op.index]} */"], (0, 0))
        elif op.op not in ALIAS_OPS:
            fast = emit_fast_op(model, op, op_params(model, op), ptr, P)
            if fast is None:
                fast_report[f"op{op.index}"] = f"{op.op}: reference kernel"
                for eop, _, _ in chain:
                    absorbed.pop(eop.index, None)
            elif chain:
                fast = _epilogue_call(P, op, chain, fast, ptr)
        if op.op == "MG_DELAY":
            f = fused_at[op.index]
            ri = ring_info[delays.index(f)]
            L, p = f.layer, f.dw
            dl = f.delays.T.reshape(-1)       # tap-major [N*H]
            c.append(f"/* layer {L} delay conv: replaces ops {f.ops} (CONCATENATION/GATHER/"
                     f"RESHAPE/DEPTHWISE_CONV_2D) */")
            c.append(_int_array("uint16_t", f"{P}_l{L}_ring_len", f.ring_len))
            c.append(_int_array("uint32_t", f"{P}_l{L}_ring_off", ri["offsets"]))
            ref_c = len(c)          # the rest: reference path only
            c.append(_int_array("uint16_t", f"{P}_l{L}_delay", dl))
            c.append(f"static const int32_t {P}_l{L}_dw_mult[{H}] = {_list(p['multiplier'])};")
            c.append(f"static const int32_t {P}_l{L}_dw_shift[{H}] = {_list(p['shift'])};")
            c.append(f"static const mg_delay_params_t {P}_l{L}_delay_p = {{{H}, "
                     f"{f.delays.shape[1]}, {P}_l{L}_delay, {P}_l{L}_ring_len, "
                     f"{P}_l{L}_ring_off, {P}_t{f.filt}, "
                     f"{P + '_t' + str(f.bias) if f.bias >= 0 else 'NULL'}, "
                     f"{p['input_offset']}, {p['output_offset']}, {p['act_min']}, "
                     f"{p['act_max']}, {P}_l{L}_dw_mult, {P}_l{L}_dw_shift}};")
            ring = f"{P}_ring{L}" if ri["bytes"] else "NULL"
            body.append(f"    /* layer {L}: delay conv on the trimmed rings (ops {f.ops}) */")
            body.append(f"    mg_delay_step_s8(&{P}_l{L}_delay_p, {ring}, {P}_step_t, "
                        f"{ptr(f.frame, True)}, {ptr(f.out, False)});")
            radd = residual.get(op.index)
            add_out = ptr(op_at[radd[0]].outputs[0], False) if radd else "NULL"
            fast = fast and (fast[0], [f"    mg_delay_fast_s8(&{P}_l{L}_delay_f, {ring}, {P}_step_t, "
                              f"{ptr(f.frame, True)}, {ptr(f.out, False)}, {add_out});"],
                    fast[2])
            if f.frame_output:
                body += ["#ifdef MG_MODEL_DEBUG",
                         f"    mg_copy({P}_dbg_frame{L}, {ptr(f.frame, True)}, {H}u);",
                         "#endif"]
        elif op.op == "MG_MINGRU":
            f = fused_at[op.index]
            L = f.layer
            c.append(f"/* layer {L} minGRU: replaces ops {f.ops} */")
            for nm in ("add_g", "sub", "add_h"):
                c.append(_struct("mg_add_params_t", P, f"l{L}_{nm}", getattr(f, nm), _ADD_KEYS,
                                 ", " + _BC_NONE))
            c.append(_struct("mg_mul_params_t", P, f"l{L}_mul", f.mul, _MUL_KEYS,
                             ", " + _BC_NONE))
            ref_c = len(c)
            for role, (fop, p) in f.fc.items():
                c += _fc_struct(P, f"l{L}_{role}", p)
            c.append(_struct("mg_logistic_params_t", P, f"l{L}_sig_z", f.sig_z, _LOGISTIC_KEYS))
            c.append(_struct("mg_logistic_params_t", P, f"l{L}_sig_p", f.sig_p, _LOGISTIC_KEYS))
            if f.relu is not None:
                c.append(_struct("mg_requant_params_t", P, f"l{L}_relu", f.relu, _REQ_KEYS))

            def fc_ref(role):
                if role not in f.fc:
                    return "{NULL, NULL, NULL}"
                fop = f.fc[role][0]
                b = fop.inputs[2] if len(fop.inputs) > 2 else -1
                return (f"{{&{P}_l{L}_{role}, {P}_t{fop.inputs[1]}, "
                        f"{P + '_t' + str(b) if b >= 0 else 'NULL'}}}")
            stride = 0 if T[f.min_const].size == 1 else 1
            c.append(f"static const mg_mingru_params_t {P}_l{L}_gru = {{{H}, {fc_ref('gate')}, "
                     f"&{P}_l{L}_sig_z, {fc_ref('cand')}, {P}_t{f.min_const}, {stride}, "
                     f"&{P}_l{L}_sig_p, {fc_ref('relu_fc')}, {int(f.shares_dot)}, "
                     f"{'&' + P + '_l' + str(L) + '_relu' if f.relu is not None else 'NULL'}, "
                     f"&{P}_l{L}_add_g, &{P}_l{L}_sub, &{P}_l{L}_mul, &{P}_l{L}_add_h}};")
            body.append(f"    /* layer {L}: minGRU step, state updated in place (ops {f.ops}) */")
            body.append(f"    mg_mingru_step_s8(&{P}_l{L}_gru, {ptr(f.u, True)}, {P}_h{L});")
            if fast is not None:
                radd = residual.get(op.index)
                v_out = ptr(op_at[radd[0]].outputs[0], False) if radd else "NULL"
                fast = (fast[0], [f"    mg_mingru_fast_s8(&{P}_l{L}_gru_f, {ptr(f.u, True)}, "
                                  f"{P}_h{L}, {P}_xq, {P}_acc, {v_out});"], fast[2])
            if L in s16:        # [state16 hook] int16 tail: its structs (both paths), calls
                s16_decls = state16.emit_params(P, L, s16[L][0])
                c[ref_c:ref_c] = s16_decls
                ref_c += len(s16_decls)
                body[-1] = (f"    mg_mingru_step_s16(&{P}_l{L}_gru, &{P}_l{L}_s16, "
                            f"{ptr(f.u, True)}, {P}_h16_{L}, {P}_h{L});")
                if fast is not None:
                    fast = (fast[0], [f"    mg_mingru_fast_s16(&{P}_l{L}_gru_f, &{P}_l{L}_s16, "
                                      f"{ptr(f.u, True)}, {P}_h16_{L}, {P}_h{L}, {P}_xq, "
                                      f"{P}_acc, {v_out});"], fast[2])
        else:
            decls, lines = emit_op(pm, op, op_params(model, op), ptr, plan, P)
            c += decls
            body += lines
        if op.index in predeclared:
            del c[ref_c:]               # declared with the fused op
        if fast is not None:
            fdecls, fbody, (words, accw) = fast
            xq_words = max(xq_words, words)
            acc_words = max(acc_words, accw)
            if fdecls is not None:
                c[ref_c:] = ["#if MG_FAST"] + fdecls + (["#else"] + c[ref_c:] if c[ref_c:]
                                                         else []) + ["#endif"]
            dbg_at = [k for k in range(ref_b, len(body)) if body[k] == "#ifdef MG_MODEL_DEBUG"]
            keep = body[dbg_at[0]:] if dbg_at else []
            ref_lines = body[ref_b:dbg_at[0]] if dbg_at else body[ref_b:]
            body[ref_b:] = ["#if MG_FAST"] + fbody + ["#else"] + ref_lines + ["#endif"] + keep
        body.append(f"    MG_PROF({kind});")
    c.append("")
    if xq_words:
        c.append("#if MG_FAST")
        c.append(f"static uint32_t {P}_xq[{xq_words}];   /* FC input, expanded (mg_ffc_expand) */")
        c.append(f"static int32_t {P}_acc[{max(1, acc_words)}];   /* FC dot products */")
        c.append("#endif")
    c.append("")
    c.append("void mg_model_reset(void)")
    c.append("{")
    c.append("    int32_t k;")
    c.append("    (void)k;")
    for f, ri in zip(delays, ring_info):
        if ri["bytes"]:
            c.append(f"    mg_delay_reset({P}_ring{f.layer}, sizeof {P}_ring{f.layer}, "
                     f"(int8_t){f.zero_point});")
    for f in grus:
        c.append(f"    for (k = 0; k < {H}; ++k) {{")
        c.append(f"        {P}_h{f.layer}[k] = (int8_t){f.zero_point};")
        if f.layer in s16:      # [state16 hook]
            c.append(f"        {P}_h16_{f.layer}[k] = 0;")
        c.append("    }")
    c.append(f"    {P}_step_t = 0u;")
    c.append("}")
    c.append("")
    c.append("void mg_model_step(const int8_t *x, int8_t *logits)")
    c.append("{")
    c.append(f"    int8_t *const arena = (int8_t *){P}_arena_words;")
    c.append("    int status = 0;   /* set by a generic GATHER on a bad index (none expected) */")
    c.append("    (void)arena;")
    c += body
    c.append("    (void)status;")
    if period:
        c.append(f"    {P}_step_t = ({P}_step_t + 1u == {PU}_MODEL_RING_PERIOD) ? 0u : "
                 f"{P}_step_t + 1u;")
    else:
        c.append(f"    ++{P}_step_t;")
    c.append("}")
    c.append("")
    c.append("const mg_model_info_t *mg_model_info(void)")
    c.append("{")
    c.append(f"    return &{P}_info;")
    c.append("}")
    c.append("")
    # debug accessors: the states in graph output order (outputs[1:])
    state_names = [n for n in meta["outputs"] if n != "logits"]
    c.append("#ifdef MG_MODEL_DEBUG")
    c.append("const int8_t *mg_model_debug_state(int k)")
    c.append("{")
    c.append("    switch (k) {")
    for k, nm in enumerate(state_names):
        if nm.startswith("hnew"):
            c.append(f"    case {k}: return {P}_h{int(nm[4:])};   /* {nm} */")
        elif nm.startswith("frame"):
            c.append(f"    case {k}: return {P}_dbg_frame{int(nm[5:])};   /* {nm} */")
        else:
            raise CodegenError(f"unknown state output {nm!r} in the metadata")
    c.append("    default: return NULL;")
    c.append("    }")
    c.append("}")
    c.append("")
    c += state16.emit_debug16(P, [f.layer for f in grus], s16)   # [state16 hook]
    c.append("uint32_t mg_model_debug_step_counter(void)")
    c.append("{")
    c.append(f"    return {P}_step_t;")
    c.append("}")
    c.append("#endif /* MG_MODEL_DEBUG */")
    c.append("")

    # --- mg_model_data.h ------------------------------------------------------------------------
    ring_total = sum(r["bytes"] for r in ring_info)
    plain_total = sum(r["plain_bytes"] for r in ring_info)
    graph_total = sum(r["graph_bytes"] for r in ring_info)
    h_total = H * len(grus) + H * len(s16)       # [state16 hook] int16 states: 2H bytes
    spans_known = all(r["kernel_span"] is not None for r in ring_info)
    xq, lq = T[x_t].quant, T[logits_t].quant
    guard = f"{PU}_MODEL_DATA_H"
    hh = [f"/* Generated by convert/codegen.py (mgrade package). Do not edit.", " *",
          f" * Model {mid} ('{name}'): x int8 [{n_in}] -> logits int8 [{n_out}] per step,",
          f" * {len(layers)} layers of H = {H} channels. API: mcu/runtime/mg_model.h.",
          " * Ring layout: layer l, channel c keeps R_c = max_e delay frames at",
          f" * {P}_ring<l>[off_c .. off_c + R_c); frame t - d sits at slot (t - d) mod R_c.",
          " */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
          '#ifdef __cplusplus', 'extern "C" {', "#endif", "",
          "/* first 8 bytes of sha256(model.tflite) */",
          f'#define {PU}_MODEL_ID "{mid}"',
          f'#define {PU}_MODEL_NAME "{name}"',
          f"#define {PU}_MODEL_N_IN {n_in}",
          f"#define {PU}_MODEL_N_OUT {n_out}",
          f"#define {PU}_MODEL_CHANNELS {H}",
          f"#define {PU}_MODEL_NUM_LAYERS {len(layers)}",
          f"#define {PU}_MODEL_INPUT_SCALE {float(xq.scale[0]):.9g}f   /* x = q * scale ... */",
          f"#define {PU}_MODEL_INPUT_ZERO_POINT {_zp(T[x_t])}",
          f"#define {PU}_MODEL_LOGITS_SCALE {float(lq.scale[0]):.9g}f",
          f"#define {PU}_MODEL_LOGITS_ZERO_POINT {_zp(T[logits_t])}",
          "/* MACs per step of the graph's FULLY_CONNECTED + DEPTHWISE_CONV_2D ops (what",
          " * mg_model_info() reports), and those the fused kernels execute (a candidate FC",
          " * duplicated by the converter shares one dot product). */",
          f"#define {PU}_MODEL_MACS_PER_STEP {macs_graph}u",
          f"#define {PU}_MODEL_MACS_EXECUTED {macs_graph - macs_saved}u",
          "",
          "/* RAM: delay rings (sum_c R_c per layer), minGRU states, step scratch */"]
    for f, ri in zip(delays, ring_info):
        L = f.layer
        hh += [f"#define {PU}_MODEL_LAYER{L}_RING_ZERO_POINT {f.zero_point}",
               f"#define {PU}_MODEL_RING{L}_BYTES {ri['bytes']}          /* trimmed: sum_c R_c */",
               f"#define {PU}_MODEL_RING{L}_GRAPH_BYTES {ri['graph_bytes']}   /* the graph's ring "
               f"input: R * H, R = {f.graph_ring_frames} */",
               f"#define {PU}_MODEL_RING{L}_PLAIN_BYTES {ri['plain_bytes']}   /* plain buffer: "
               f"{ri['plain_frames']} frames x H"
               + (" (kernel_span - 1 past frames) */" if ri["kernel_span"] is not None
                  else " (max delay: no kernel_span in the metadata) */")]
    hh += [f"#define {PU}_MODEL_RING_BYTES {ring_total}",
           f"#define {PU}_MODEL_RING_GRAPH_BYTES {graph_total}",
           f"#define {PU}_MODEL_RING_PLAIN_BYTES {plain_total}",
           f"#define {PU}_MODEL_RING_PLAIN_FROM_KERNEL_SPAN {int(spans_known and bool(ring_info))}",
           f"#define {PU}_MODEL_H_BYTES {h_total}",
           f"#define {PU}_MODEL_STATE_BITS {16 if s16 else 8}   /* minGRU state width */",
           f"#define {PU}_MODEL_H8_COPY_BYTES {H * len(s16)}   /* int8 copies of int16 states "
           "(written each step, read by the residual) */",
           f"#define {PU}_MODEL_STATE_BYTES {ring_total + h_total + 4}   /* + the step counter */",
           f"#define {PU}_MODEL_ARENA_BYTES {plan.arena_bytes}",
           f"#define {PU}_MODEL_CONST_BYTES {const_bytes}",
           "/* the step counter wraps here (lcm of all R_c) so (t - d) mod R_c stays continuous"
           + ("; 0: 2^32 (lcm too large) */" if period == 0 else " */"),
           f"#define {PU}_MODEL_RING_PERIOD {period}u",
           "", f"/* states exposed for tests (graph output order: "
           f"{', '.join(state_names)}), {H} bytes each */",
           f"#define {PU}_MODEL_DEBUG_NUM_STATES {len(state_names)}",
           f"#define {PU}_MODEL_DEBUG_STATE_BYTES {H}",
           "#ifdef MG_MODEL_DEBUG",
           "/* state k after the last step: hnew<l> = the minGRU state, frame<l> = the layer's",
           " * conv input at that step (what the interpreter writes into its ring) */",
           "const int8_t *mg_model_debug_state(int k);",
           "/* the int16 state of minGRU layer l (NULL for an int8 state), convert/state16.py */",
           "const int16_t *mg_model_debug_state16(int layer);",
           "uint32_t mg_model_debug_step_counter(void);",
           "#endif", ""] + frame_quantizer(P, PU) + [
           "/* constant tensors (mg_model_data.c), package-internal */"] + dh_ext + [
           "", "#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */", ""]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{P}_model_data.h", out / f"{P}_model_data.c", out / f"{P}_model.c"]
    files[0].write_text("\n".join(hh))
    files[1].write_text("\n".join(dc))
    files[2].write_text("\n".join(c))
    summary = {
        "model_id": mid, "name": name, "kind": "mgrade",
        "ops": [op.op for op in model.operators],
        "fused": {"delay": [f.ops for f in delays], "mingru": [f.ops for f in grus]},
        "arena_bytes": plan.arena_bytes, "const_bytes": const_bytes,
        "ring_bytes": ring_total, "ring_graph_bytes": graph_total,
        "ring_plain_bytes": plain_total, "ring_plain_from_kernel_span": spans_known,
        "h_bytes": h_total, "state_bytes": ring_total + h_total + 4,
        "macs_per_step": macs_graph, "macs_executed": macs_graph - macs_saved,
        "ring_period": period, "files": [str(f) for f in files],
        "fast_report": fast_report,   # ops the fast path leaves to the reference kernels
    }
    summary["summary"] = (
        f"model {mid} (mgrade package): {len(model.operators)} graph ops -> "
        f"{len(new_ops)} calls ({len(delays)} delay, {len(grus)} minGRU fused), "
        f"state {summary['state_bytes']} B (rings {ring_total} B vs graph ring {graph_total} B, "
        f"plain {plain_total} B), arena {plan.arena_bytes} B, constants {const_bytes} B, "
        f"{macs_graph} MACs/step -> {', '.join(map(str, files))}")
    return summary


def frame_quantizer(P: str, PU: str) -> list[str]:
    """C source of <P>_model_quantize_frame(): one float frame -> the int8 model input, with
    the host's arithmetic (convert.stream.Streamer.quantize_input: float32 division, round
    half to even, clamp), so a frame quantized on the device equals the host's to 0 LSB."""
    return [
        "/* Quantize one input frame x[MODEL_N_IN] (floats, in the units the training data",
        " * had: a model trained with normalisation has it folded into its encoder, so these",
        " * are the sensor's own units) to the int8 frame that model_step() takes:",
        " *   q = clamp(round_half_even(x / INPUT_SCALE) + INPUT_ZERO_POINT, -128, 127)",
        " * in float32, as the host does (bit-identical). NaN maps to the zero point (x = 0).",
        " * No libm; the only floating point of the package. */",
        f"static inline void {P}_model_quantize_frame(const float *x, int8_t *q)",
        "{",
        "    int i;",
        f"    for (i = 0; i < {PU}_MODEL_N_IN; ++i) {{",
        f"        float s = x[i] / {PU}_MODEL_INPUT_SCALE;",
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


# ---------------------------------------------------------------------------------------------
# Test vectors for the embedded harness (mcu/runtime/tests/model_check.c)

def reference_steps(model_bytes: bytes, x_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLM Streamer reference for sequences x_q int8 [S, T, n_in]: per-step logits
    [S, T, n_out] and states [S, T, n_states * H] (graph output order, outputs[1:])."""
    from convert.stream import Streamer

    s = Streamer(model_bytes, "tflm")
    names = [n for n in s.meta["outputs"] if n != "logits"]
    logits, states = [], []
    to8 = state16.debug_int8(model_bytes)     # [state16 hook] int16 states as their int8 copy
    for seq in x_q:
        lg, raw = s.run(np.ascontiguousarray(seq), return_states=True)
        raw = [(f, {n: to8[n](v) if n in to8 else v for n, v in o.items()}) for f, o in raw]
        logits.append(lg)
        states.append(np.stack([np.concatenate([out[n].reshape(-1) for n in names])
                                for _, out in raw]) if names else
                      np.zeros((len(seq), 0), np.int8))
    return np.stack(logits).astype(np.int8), np.stack(states).astype(np.int8)


def write_test_vectors(out_dir, x_q: np.ndarray, logits: np.ndarray, states: np.ndarray,
                       prefix: str = "mg_tv") -> list[Path]:
    """mg_test_vectors.{h,c}: inputs [S][T][n_in] and the expected per-step logits+states."""
    S, Tn, n_in = x_q.shape
    n_out, n_st = logits.shape[2], states.shape[2]
    P, PU = prefix, prefix.upper()
    expect = np.concatenate([logits, states], axis=2)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h = [f"/* Generated by convert/codegen_mgrade.py: TFLM reference vectors. */",
         f"#ifndef {PU}_H", f"#define {PU}_H", "", "#include <stdint.h>", "",
         f"#define {PU}_NUM_SEQ {S}", f"#define {PU}_STEPS {Tn}", f"#define {PU}_N_IN {n_in}",
         f"#define {PU}_N_OUT {n_out}", f"#define {PU}_STATE_BYTES {n_st}",
         f"#define {PU}_EXPECT_BYTES {n_out + n_st}   /* per step: logits, then the states */",
         f"extern const int8_t {P}_x[{S * Tn * n_in}];",
         f"extern const int8_t {P}_expect[{S * Tn * (n_out + n_st)}];", "", "#endif", ""]
    c = [f'#include "{prefix}.h"', "",
         f"const int8_t {P}_x[{S * Tn * n_in}] = {{{_carray(x_q, 32)}}};",
         f"const int8_t {P}_expect[{S * Tn * (n_out + n_st)}] = {{{_carray(expect, 32)}}};", ""]
    (out / f"{prefix}.h").write_text("\n".join(h))
    (out / f"{prefix}.c").write_text("\n".join(c))
    return [out / f"{prefix}.h", out / f"{prefix}.c"]


def load(model_src) -> tuple[Model, dict]:
    model = model_src if isinstance(model_src, Model) else read_tflite(model_src)
    meta = mgrade_metadata(model)
    if meta is None:
        raise CodegenError("this .tflite carries no mgrade metadata")
    return model, meta



