"""The step program's matcher (convert.program.build_program) on graphs that ALMOST match.

Each case edits a real converted .tflite (the tiny random model of tests/tiny_model.py) with
the flatbuffer schema objects: an op swapped for another, operands in the wrong order, a
different constant, an intermediate also used outside the subgraph, a wrong tensor type or
quantization. The generator must never fuse such a graph into wrong code: it either refuses it
with a CodegenError that names the layer and what it expected, or the package it writes is
still bit-exact with TFLite-Micro on the EDITED model (commutative operands swapped, another
MINIMUM constant, RELU weights that differ from the candidate's).
"""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest

from tests.tiny_model import CONFIGS, host_diff, reference_steps

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")


# ---- editing a .tflite with the schema objects ----------------------------------------------

def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    return schema


class Edit:
    """A .tflite opened for editing: ops by kind, tensors, opcodes; .bytes() packs it."""

    def __init__(self, model_bytes: bytes):
        s = _schema()
        self.s = s
        self.m = s.ModelT.InitFromObj(s.Model.GetRootAsModel(model_bytes, 0))
        self.g = self.m.subgraphs[0]
        self.names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}

    def kind(self, op) -> str:
        c = self.m.operatorCodes[op.opcodeIndex]
        return self.names[max(c.builtinCode, c.deprecatedBuiltinCode)]

    def ops(self, kind: str) -> list:
        """The ops of one kind in graph order (layer 0's first)."""
        return [op for op in self.g.operators if self.kind(op) == kind]

    def producer(self, t: int):
        return next(op for op in self.g.operators if t in list(op.outputs))

    def opcode(self, kind: str) -> int:
        code = getattr(self.s.BuiltinOperator, kind)
        for i, c in enumerate(self.m.operatorCodes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                return i
        oc = self.s.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        self.m.operatorCodes.append(oc)
        return len(self.m.operatorCodes) - 1

    def is_const(self, t: int) -> bool:
        return self.m.buffers[self.g.tensors[t].buffer].data is not None

    def const_copy(self, t: int) -> int:
        """A new constant tensor with its own buffer, a copy of tensor t; its index."""
        src = self.g.tensors[t]
        buf = self.s.BufferT()
        buf.data = np.array(self.m.buffers[src.buffer].data, np.uint8).copy()
        self.m.buffers.append(buf)
        new = copy.deepcopy(src)
        new.buffer = len(self.m.buffers) - 1
        new.name = (src.name or b"") + b"_copy"
        self.g.tensors.append(new)
        return len(self.g.tensors) - 1

    def bytes(self) -> bytes:
        import flatbuffers
        b = flatbuffers.Builder(1024)
        b.Finish(self.m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _meta(model_bytes: bytes) -> dict:
    from mgrade_edge.convert.quantize import read_metadata
    return read_metadata(model_bytes)


def _io(e: Edit, meta: dict, name: str) -> int:
    """Tensor index of the graph input or output `name` (mgrade metadata names)."""
    if name in meta["inputs"]:
        return int(e.g.inputs[meta["inputs"].index(name)])
    return int(e.g.outputs[meta["outputs"].index(name)])


def _gru(e: Edit, meta: dict, layer: int) -> dict:
    """Layer `layer`'s minGRU ops by role, found from its hnew output backwards."""
    add_h = e.producer(_io(e, meta, f"hnew{layer}"))
    h = _io(e, meta, f"h{layer}")
    mul = e.producer(next(t for t in add_h.inputs if t != h))
    sig_z, sub = sorted((e.producer(t) for t in mul.inputs), key=lambda op: e.kind(op) != "LOGISTIC")
    add_g = e.producer(sub.inputs[0])
    a, b = (e.producer(t) for t in add_g.inputs)
    sig_p, relu_fc = (a, b) if e.kind(a) == "LOGISTIC" else (b, a)
    mn = e.producer(sig_p.inputs[0])
    cand = e.producer(next(t for t in mn.inputs if not e.is_const(t)))
    return dict(add_h=add_h, mul=mul, sig_z=sig_z, sub=sub, add_g=add_g, sig_p=sig_p,
                relu_fc=relu_fc, min=mn, cand=cand, gate=e.producer(sig_z.inputs[0]))


# ---- the edits --------------------------------------------------------------------------------

def swap_minimum_for_maximum(e, meta):
    _gru(e, meta, 0)["min"].opcodeIndex = e.opcode("MAXIMUM")


def swap_last_add_for_sub(e, meta):
    op = _gru(e, meta, 1)["add_h"]
    op.opcodeIndex = e.opcode("SUB")
    op.builtinOptionsType = e.s.BuiltinOptions.SubOptions
    op.builtinOptions = e.s.SubOptionsT()


def sub_operands_reversed(e, meta):
    op = _gru(e, meta, 0)["sub"]
    op.inputs = list(reversed(list(op.inputs)))


def concat_operands_reversed(e, meta):
    op = e.ops("CONCATENATION")[1]
    op.inputs = list(reversed(list(op.inputs)))


def gate_reads_the_candidate(e, meta):
    """z = sigmoid(FC_cand) instead of sigmoid(FC_gate): the gate FC is left dangling."""
    r = _gru(e, meta, 0)
    r["sig_z"].inputs = [r["cand"].outputs[0]]


def sigmoid_z_also_feeds_the_residual(e, meta):
    """The residual ADD after the minGRU reads sigmoid(z) instead of hnew: an intermediate
    of the fused subgraph is used outside it."""
    r = _gru(e, meta, 0)
    hnew = _io(e, meta, "hnew0")
    res = next(op for op in e.ops("ADD") if hnew in list(op.inputs) and op is not r["add_h"])
    res.inputs = [r["sig_z"].outputs[0] if t == hnew else t for t in res.inputs]


def taps_also_feed_the_readout(e, meta):
    """The gathered taps of layer 0 (a [1, N*H] tensor) also feed another op (an ADD of the
    taps to themselves, inserted right after the GATHER)."""
    gather = e.ops("GATHER")[0]
    use = copy.deepcopy(e.ops("ADD")[0])
    use.inputs = [gather.outputs[0], gather.outputs[0]]
    out = copy.deepcopy(e.g.tensors[gather.outputs[0]])
    out.name = b"taps_twice"
    e.g.tensors.append(out)
    use.outputs = [len(e.g.tensors) - 1]
    e.g.operators.insert(e.g.operators.index(gather) + 1, use)


def state_h_is_int16(e, meta):
    """h0 and hnew0 typed int16 (their bytes would be read as int8 pairs)."""
    for name in ("h0", "hnew0"):
        e.g.tensors[_io(e, meta, name)].type = e.s.TensorType.INT16


def state_h_is_int16_zp0(e, meta):
    """h0 and hnew0 int16 with zero point 0, but the int8 tail (not convert/widen.py's)."""
    for name in ("h0", "hnew0"):
        t = e.g.tensors[_io(e, meta, name)]
        t.type = e.s.TensorType.INT16
        t.quantization.zeroPoint = [0]


def ring_is_int16(e, meta):
    e.g.tensors[_io(e, meta, "ring0")].type = e.s.TensorType.INT16


def taps_requantized(e, meta):
    """The GATHER output carries another scale than the frames (no longer a plain copy)."""
    t = e.g.tensors[e.ops("GATHER")[0].outputs[0]]
    t.quantization.scale = [float(t.quantization.scale[0]) * 1.5]


REFUSED = [
    (swap_minimum_for_maximum, r"layer 0 minGRU: expected the sigmoid branch input to be "
                               r"produced by MINIMUM, got MAXIMUM"),
    (swap_last_add_for_sub, r"layer 1 minGRU: expected hnew1 to be produced by ADD, got SUB"),
    (sub_operands_reversed, r"layer 0 minGRU: expected SUB\(g, h0\)"),
    (concat_operands_reversed, r"layer 1 delay conv: expected CONCATENATION\(frame1, ring1"),
    (gate_reads_the_candidate, r"layer 0 minGRU: the subgraph reuses an operator in two roles"),
    (sigmoid_z_also_feeds_the_residual, r"layer 0 minGRU: LOGISTIC \(op \d+\) output .*also "
                                        r"used outside the fused subgraph"),
    (taps_also_feed_the_readout, r"layer 0 delay conv: expected the GATHER output to feed "
                                 r"one RESHAPE"),
    # an int16 state is matched as the int16 tail (convert/state16.py), which refuses what
    # is not convert/widen.py's
    (state_h_is_int16, r"layer 0 minGRU \(int16 state\): tensor \d+ \(h0\) is INT16 with zero "
                       r"point -?\d+; an int16 state needs"),
    (state_h_is_int16_zp0, r"layer 0 minGRU \(int16 state\): expected"),
    (ring_is_int16, r"layer 0 delay conv: tensor \d+ .*int8"),
    (taps_requantized, r"layer 0 delay conv: tensor \d+ .*does not share the frame's int8 "
                       r"quantization"),
]


@pytest.mark.parametrize("edit,message,gen_message", [r + (r[1],) if len(r) == 2 else r
                                                      for r in REFUSED],
                         ids=[r[0].__name__ for r in REFUSED])
def test_almost_matching_graph_is_refused(tiny_int8, tmp_path, edit, message, gen_message):
    from mgrade_edge.convert.codegen import CodegenError, generate
    from mgrade_edge.convert.program import build_program
    from mgrade_edge.convert.tflite_reader import read_tflite

    model = (tiny_int8 / "model.tflite").read_bytes()
    meta = _meta(model)
    build_program(read_tflite(model), meta)          # the unedited graph matches
    e = Edit(model)
    edit(e, meta)
    bad = e.bytes()
    assert bad != model
    with pytest.raises(CodegenError, match=message):
        build_program(read_tflite(bad), meta)
    with pytest.raises(CodegenError, match=gen_message):
        generate(bad, tmp_path / "pkg")
    assert not (tmp_path / "pkg" / "mg_model.c").exists()


def test_constant_gather_indices_must_match_the_delays(tiny_models, tmp_path):
    """A ring-less layer (all delays 0) gathers with constant indices; another constant is
    refused (the fused kernel would read other channels than the graph)."""
    from mgrade_edge.convert.codegen import CodegenError, generate

    cfg = next(c for c in CONFIGS if c.zero_delay_layer >= 0)
    model = (tiny_models(cfg) / "model.tflite").read_bytes()
    e = Edit(model)
    gather = e.ops("GATHER")[cfg.zero_delay_layer]
    idx = e.const_copy(gather.inputs[1])
    data = e.m.buffers[e.g.tensors[idx].buffer].data.view(np.int32)
    data[[0, 1]] = data[[1, 0]]                      # two channels swapped
    gather.inputs = [gather.inputs[0], idx]
    with pytest.raises(CodegenError, match=f"layer {cfg.zero_delay_layer} delay conv: constant "
                                           "GATHER indices do not match the delays"):
        generate(e.bytes(), tmp_path / "pkg")


# ---- almost-matching graphs the generator may fuse: then bit-exact with TFLM on them ----------

def commutative_operands_swapped(e, meta):
    """ADD(h, m) -> ADD(m, h), MUL(z, d) -> MUL(d, z), ADD(r, q) -> ADD(q, r) in both layers."""
    for layer in (0, 1):
        r = _gru(e, meta, layer)
        for role in ("add_h", "mul", "add_g"):
            r[role].inputs = list(reversed(list(r[role].inputs)))


def other_minimum_constant(e, meta):
    """min(p, c) with c another int8 value than the zero point (float 0) in layer 0."""
    mn = _gru(e, meta, 0)["min"]
    k = next(i for i, t in enumerate(mn.inputs) if e.is_const(t))
    t = e.const_copy(mn.inputs[k])
    data = e.m.buffers[e.g.tensors[t].buffer].data.view(np.int8)
    data[:] = np.int8(int(data[0]) - 60)
    mn.inputs = [t if i == k else x for i, x in enumerate(mn.inputs)]


def relu_weights_differ(e, meta):
    """The RELU branch's FC weights differ from the candidate's in one value: the fused
    kernel must not share the candidate's dot product."""
    r = _gru(e, meta, 1)
    assert r["relu_fc"].inputs[1] == r["cand"].inputs[1]   # shared in the converted model
    w = e.const_copy(r["relu_fc"].inputs[1])
    data = e.m.buffers[e.g.tensors[w].buffer].data.view(np.int8)
    data[3] = np.int8(-int(data[3]) if data[3] != -128 else 5)
    r["relu_fc"].inputs = [r["relu_fc"].inputs[0], w, r["relu_fc"].inputs[2]]


ACCEPTED = [commutative_operands_swapped, other_minimum_constant, relu_weights_differ]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
@pytest.mark.parametrize("edit", ACCEPTED, ids=[f.__name__ for f in ACCEPTED])
def test_almost_matching_graph_fused_stays_bit_exact(tiny_int8, tmp_path, edit, fast):
    from mgrade_edge.convert.codegen import generate

    model = (tiny_int8 / "model.tflite").read_bytes()
    meta = _meta(model)
    e = Edit(model)
    edit(e, meta)
    edited = e.bytes()
    x = np.load(tiny_int8 / "test_data.npz")["x"]
    logits, states = reference_steps(edited, x)
    logits0, _ = reference_steps(model, x)
    if edit is not commutative_operands_swapped:     # the edit changes what the graph computes
        assert (logits != logits0).any()
    info = generate(edited, tmp_path / "pkg")
    src = (tmp_path / "pkg" / "mg_model.c").read_text()
    assert info["kind"] == "mgrade" and "mg_mingru_step_s8" in src
    if edit is relu_weights_differ:                  # layer 1 no longer shares the dot product
        info0 = generate(model, tmp_path / "pkg0")
        H = meta["channels"]
        assert info["macs_executed"] == info0["macs_executed"] + H * H
    assert host_diff(tmp_path / "pkg", tmp_path, x, logits, states, fast) == (0, 0)

