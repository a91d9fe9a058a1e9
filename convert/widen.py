"""Opt-in 16-bit minGRU state path: rewrite a full-int8 step .tflite so that each layer's
state update runs in int16 (TFLite's 16x8 arithmetic), everything else staying int8.

Why (benchmarks/int8_attribution.py): an int8 state moves only when z * (g - h) reaches half
an LSB of the state range, and z itself is on a 1/256 grid, so channels with slow gates
freeze or jump on long sequences. In int16 both grids are 128x finer.

Per layer with a minGRU, from the int8 graph
    z = LOGISTIC(zp);  d = SUB(g, h);  m = MUL(z, d);  hnew = ADD(h, m);  v = ADD(u, hnew)
to
    zp16 = QUANTIZE(zp);  z16 = LOGISTIC(zp16)            z16: scale 1/32768 (TFLite's rule)
    g16 = QUANTIZE(g);  d16 = SUB(g16, h16);  m16 = MUL(z16, d16);  hnew16 = ADD(h16, m16)
    hnew8 = QUANTIZE(hnew16);  v = ADD(u, hnew8)
Every new int16 tensor is symmetric (zero point 0, which the int16 kernels require) over the
range its int8 tensor was calibrated to; the state input h16 and output hnew16 share one scale
(the state stays tied). The interpreters derive all multipliers from these parameters.

The graph runs on LiteRT and TFLite-Micro (convert/stream.py streams int16 states) and on the
C runtime in mcu/ with either gate width (convert/state16.py matches the tail, both C paths
run it bit-exact). `python -m mgrade_edge.convert --state-bits 16|auto [--gate-bits 8|16]` emits it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from mgrade_edge.convert import names
from mgrade_edge.convert.errors import ConvertError


def _sym16(q) -> float:
    """Scale of the int16 symmetric grid covering the int8 quantization q's range."""
    s, zp = float(q.scale[0]), int(q.zeroPoint[0])
    r = max(-(-128 - zp) * s, (127 - zp) * s)
    return r / 32767.0


def _op_codes(model):
    """(kind(op) -> builtin operator name, opcode(name) -> index in model.operatorCodes,
    appending the code when the model has none yet) for a flatbuffer ModelT."""
    from tensorflow.lite.python import schema_py_generated as schema

    codes = model.operatorCodes
    op_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def kind(op) -> str:
        c = codes[op.opcodeIndex]
        return op_name[max(c.builtinCode, c.deprecatedBuiltinCode)]

    def opcode(name: str) -> int:
        code = getattr(schema.BuiltinOperator, name)
        for i, c in enumerate(codes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code:
                return i
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        codes.append(oc)
        return len(codes) - 1

    return kind, opcode


class _Rewriter:
    """A step model's flatbuffer opened for int16 rewrites: new int16 tensors and ops, and
    int32 biases moved onto a wider input's scale (widen_input, widen_mlp)."""

    def __init__(self, model_bytes: bytes):
        from mgrade_edge.convert.quantize import load_flatbuffer

        self.model = load_flatbuffer(model_bytes)
        self.g = self.model.subgraphs[0]
        self.T = self.g.tensors
        self.kind, self.opcode = _op_codes(self.model)

    def tname(self, t: int) -> str:
        n = self.T[t].name
        return n.decode() if isinstance(n, bytes) else n

    def new_tensor(self, like: int, suffix: str, dtype: int, scale: float,
                   zero_point: int) -> int:
        """A new tensor shaped like `like` (no data), of flatbuffer type `dtype` with one
        (scale, zero point); its index."""
        from tensorflow.lite.python import schema_py_generated as schema

        tensor = copy.deepcopy(self.T[like])
        tensor.name = self.tname(like) + suffix
        tensor.type, tensor.buffer = dtype, 0
        tensor.quantization = schema.QuantizationParametersT()
        tensor.quantization.scale, tensor.quantization.zeroPoint = [scale], [zero_point]
        self.T.append(tensor)
        return len(self.T) - 1

    def new16(self, like: int, suffix: str, scale: float) -> int:
        """A new int16 tensor shaped like `like`, symmetric (zero point 0) with `scale`."""
        from tensorflow.lite.python import schema_py_generated as schema

        return self.new_tensor(like, suffix, schema.TensorType.INT16, scale, 0)

    def new_op(self, name: str, inputs: list, outputs: list, options=None):
        from tensorflow.lite.python import schema_py_generated as schema

        op = schema.OperatorT()
        op.opcodeIndex = self.opcode(name)
        op.inputs, op.outputs = list(inputs), list(outputs)
        if options is not None:
            op.builtinOptionsType, op.builtinOptions = options
        return op

    def rescaled_bias(self, b: int, s_in8: float, s_in16: float):
        """The int32 bias tensor b's values on the scale s_in16 * s_w (float64, rounded)."""
        import numpy as np

        buf = self.model.buffers[self.T[b].buffer].data
        old = np.frombuffer(bytes(bytearray(buf)), np.int32)
        return np.rint(old.astype(np.float64) * (s_in8 / s_in16))

    def bias16(self, b: int, s_in8: float, s_in16: float) -> int:
        """A copy of the int32 bias tensor b on the scale s_in16 * s_w."""
        return self._rescaled_bias_copy(b, s_in8, s_in16, wide=False)

    def bias64(self, b: int, s_in8: float, s_in16: float) -> int:
        """A copy of the int32 bias tensor b as int64 on the scale s_in16 * s_w (the bias
        type of TFLite's 16x8 DEPTHWISE_CONV_2D)."""
        return self._rescaled_bias_copy(b, s_in8, s_in16, wide=True)

    def _rescaled_bias_copy(self, b: int, s_in8: float, s_in16: float, wide: bool) -> int:
        """A new constant tensor: bias b's values on the scale s_in16 * s_w, int32 (named
        <b>_u16) or, wide, int64 (<b>_i64); its index."""
        import numpy as np
        from tensorflow.lite.python import schema_py_generated as schema

        new = self.rescaled_bias(b, s_in8, s_in16)
        buf = schema.BufferT()
        buf.data = np.frombuffer(new.astype("<i8" if wide else "<i4").tobytes(),
                                 np.uint8).copy()
        self.model.buffers.append(buf)
        t = copy.deepcopy(self.T[b])
        t.name = self.tname(b) + ("_i64" if wide else "_u16")
        t.buffer = len(self.model.buffers) - 1
        if wide:
            t.type = schema.TensorType.INT64
        t.quantization.scale = [float(np.float32(s * s_in16 / s_in8))
                                for s in self.T[b].quantization.scale]
        self.T.append(t)
        return len(self.T) - 1

    def fc16_fits(self, fc, s_in8: float, s_in16: float) -> bool:
        """Whether FC op `fc` can read an int16 input of scale s_in16 in place of its int8 one
        of scale s_in8: TFLite-Micro accumulates a 16x8 FC with an int32 bias in int32, so the
        rescaled bias plus the largest dot product must fit."""
        import numpy as np

        depth = int(self.T[fc.inputs[1]].shape[-1])
        room = 2 ** 31 - 1 - depth * 32768 * 128
        if room <= 0:
            return False
        return not (len(fc.inputs) > 2 and fc.inputs[2] >= 0 and np.abs(
            self.rescaled_bias(fc.inputs[2], s_in8, s_in16)).max(initial=0) > room)


def _retype16(tensor, scale: float):
    """Make the flatbuffer tensor int16, symmetric (zero point 0) with `scale`, no min/max."""
    from tensorflow.lite.python import schema_py_generated as schema

    tensor.type = schema.TensorType.INT16
    quant = tensor.quantization
    quant.scale, quant.zeroPoint, quant.min, quant.max = [scale], [0], None, None


@dataclass
class _StateUpdate:
    """One layer's int8 minGRU update hnew = ADD(h, MUL(LOGISTIC(z_pre), SUB(g, h))) in the
    flatbuffer: tensor indices and ops (widen_state rewrites them)."""
    state: int                  # the state input h
    new_state: int              # the state output hnew
    add_h: object               # ADD(h, m) -> hnew
    mul: object                 # MUL(z, d) -> m
    logistic: object            # LOGISTIC(z_pre) -> z
    sub: object                 # SUB(g, h) -> d
    candidate: int              # the candidate g
    gate_pre: int               # the gate's pre-activation z_pre
    gate: int                   # the gate z
    new_state_readers: list     # the ops reading hnew (the residual sum)


def _match_state_update(rw: _Rewriter, producer: dict, layer: int, state: int,
                        new_state: int) -> _StateUpdate:
    """Layer `layer`'s int8 minGRU update read back from its state output hnew (producer:
    tensor -> the op writing it); ConvertError when it is not ADD(h, MUL(z, SUB(g, h)))."""
    add_h = producer[new_state]
    other_inputs = [tensor for tensor in add_h.inputs if tensor != state]
    mul = producer.get(other_inputs[0]) if len(other_inputs) == 1 else None
    if mul is None or rw.kind(add_h) != "ADD" or rw.kind(mul) != "MUL":
        raise ConvertError(f"layer {layer}: the minGRU update is not ADD(h, MUL(z, SUB(g, h)))")
    z_input = [rw.kind(producer[tensor]) if tensor in producer else None
               for tensor in mul.inputs].index("LOGISTIC")
    logistic = producer[mul.inputs[z_input]]
    sub = producer[mul.inputs[1 - z_input]]
    if rw.kind(sub) != "SUB" or sub.inputs[1] != state:
        raise ConvertError(f"layer {layer}: expected SUB(g, h{layer})")
    return _StateUpdate(state=state, new_state=new_state, add_h=add_h, mul=mul,
                        logistic=logistic, sub=sub, candidate=sub.inputs[0],
                        gate_pre=logistic.inputs[0], gate=logistic.outputs[0],
                        new_state_readers=[op for op in rw.g.operators
                                           if new_state in op.inputs])


def _widen_state_update(rw: _Rewriter, update: _StateUpdate, gate16: bool):
    """Rewrite one matched update to int16 (the module doc's graph): QUANTIZE ops in, SUB,
    MUL, h and hnew retyped int16, hnew's readers moved to its int8 copy."""
    tensors, ops = rw.T, rw.g.operators
    hnew_quant = tensors[update.new_state].quantization
    hnew8 = rw.new_tensor(update.new_state, "_int8", tensors[update.new_state].type,
                          float(hnew_quant.scale[0]), int(hnew_quant.zeroPoint[0]))
    g16 = rw.new16(update.candidate, "_int16", _sym16(tensors[update.candidate].quantization))
    s_state = _sym16(hnew_quant)
    if gate16:              # LOGISTIC(QUANTIZE(z_pre)) in int16
        z_pre16 = rw.new16(update.gate_pre, "_int16", _sym16(tensors[update.gate_pre].quantization))
        _retype16(tensors[update.gate], 1.0 / 32768.0)
        update.logistic.inputs = [z_pre16]
        ops.insert(ops.index(update.logistic),
                   rw.new_op("QUANTIZE", [update.gate_pre], [z_pre16]))
    else:                   # QUANTIZE(LOGISTIC(z_pre)) to int16
        z16 = rw.new16(update.gate, "_int16", 1.0 / 32768.0)
        update.mul.inputs = [z16 if tensor == update.gate else tensor
                             for tensor in update.mul.inputs]
        ops.insert(ops.index(update.logistic) + 1, rw.new_op("QUANTIZE", [update.gate], [z16]))
    for inner in (update.sub.outputs[0], update.mul.outputs[0]):
        _retype16(tensors[inner], _sym16(tensors[inner].quantization))
    _retype16(tensors[update.state], s_state)
    _retype16(tensors[update.new_state], s_state)
    update.sub.inputs = [g16, update.state]
    for op in update.new_state_readers:
        op.inputs = [hnew8 if tensor == update.new_state else tensor for tensor in op.inputs]
    ops.insert(ops.index(update.sub), rw.new_op("QUANTIZE", [update.candidate], [g16]))
    ops.insert(ops.index(update.add_h) + 1, rw.new_op("QUANTIZE", [update.new_state], [hnew8]))


def _step_io_tensors(rw: _Rewriter, meta_layers: list[dict]) -> tuple[dict, dict]:
    """({input name: tensor index}, {output name: tensor index}) of the step graph."""
    in_names, out_names = names.step_io(names.meta_layers(meta_layers))
    return dict(zip(in_names, rw.g.inputs)), dict(zip(out_names, rw.g.outputs))


def widen_state(model_bytes: bytes, meta_layers: list[dict], gate16: bool = True) -> bytes:
    """The int8 step model with every minGRU state path in int16 (see the module doc).
    gate16=True runs the gate's LOGISTIC in int16 (z on a 1/32768 grid); gate16=False keeps
    LOGISTIC(z) int8 (z on its 1/256 grid) and requantizes z to int16 after it."""
    from mgrade_edge.convert.quantize import pack_flatbuffer

    rw = _Rewriter(model_bytes)
    producer = {out: op for op in rw.g.operators for out in op.outputs}
    tensor_in, tensor_out = _step_io_tensors(rw, meta_layers)
    for layer, layer_meta in enumerate(meta_layers):
        if layer_meta["rnn"]:
            update = _match_state_update(rw, producer, layer, tensor_in[names.h(layer)],
                                         tensor_out[names.hnew(layer)])
            _widen_state_update(rw, update, gate16)
    return pack_flatbuffer(rw.model)


def _input_gate(rw: _Rewriter, producer: dict, layer: int, state: int) -> tuple:
    """(gate FC, q_zp): the FC computing layer `layer`'s gate pre-activation z_pre8 and the
    QUANTIZE z_pre8 -> z_pre16 feeding the int16 LOGISTIC, found from the int16 state h
    (`state`) through SUB(g16, h) and MUL(z16, d16). ConvertError when the state or the gate
    is int8."""
    from tensorflow.lite.python import schema_py_generated as schema

    kind, ops = rw.kind, rw.g.operators
    if rw.T[state].type != schema.TensorType.INT16:
        raise ConvertError(f"layer {layer}: --input-bits 16 needs the 16-bit state path")
    subs_of_h = [op for op in ops if state in op.inputs and kind(op) == "SUB"]
    sub = subs_of_h[0] if subs_of_h else None
    mul = next((op for op in ops if sub and sub.outputs[0] in op.inputs), None)
    if mul is None or kind(mul) != "MUL":
        raise ConvertError(f"layer {layer}: the minGRU update is not MUL(z, SUB(g, h))")
    logistic = producer[[tensor for tensor in mul.inputs if tensor != sub.outputs[0]][0]]
    q_zp = producer.get(logistic.inputs[0])
    if kind(logistic) != "LOGISTIC" or q_zp is None or kind(q_zp) != "QUANTIZE":
        raise ConvertError(f"layer {layer}: --input-bits 16 needs the int16 gate "
                           f"(--gate-bits 16)")
    return producer[q_zp.inputs[0]], q_zp


def _widen_u(rw: _Rewriter, add_u, u_fcs: list, gate_fc, q_zp) -> int:
    """u16 = ADD(QUANTIZE(frame8), QUANTIZE(conv8)) after u8 = add_u, and each FC reading u8
    (u_fcs) made 16x8 on u16 with its bias on u16's scale: the gate FC writes the int16
    LOGISTIC's input in place of q_zp (removed), the others an int16 output requantized to
    their int8 one. Returns u16's tensor index."""
    tensors, ops = rw.T, rw.g.operators
    frame8, conv8 = add_u.inputs
    u8 = gate_fc.inputs[0]
    s_u8, s_u16 = float(tensors[u8].quantization.scale[0]), _sym16(tensors[u8].quantization)
    frame16 = rw.new16(frame8, "_int16", _sym16(tensors[frame8].quantization))
    conv16 = rw.new16(conv8, "_int16", _sym16(tensors[conv8].quantization))
    u16 = rw.new16(u8, "_int16", s_u16)
    after_add = ops.index(add_u) + 1
    add_opts = (add_u.builtinOptionsType, copy.deepcopy(add_u.builtinOptions))
    ops[after_add:after_add] = [rw.new_op("QUANTIZE", [frame8], [frame16]),
                                rw.new_op("QUANTIZE", [conv8], [conv16]),
                                rw.new_op("ADD", [frame16, conv16], [u16], add_opts)]
    for fc in u_fcs:
        out8 = fc.outputs[0]
        fc.inputs = [u16, fc.inputs[1]] + (
            [rw.bias16(fc.inputs[2], s_u8, s_u16)] if len(fc.inputs) > 2 and fc.inputs[2] >= 0
            else fc.inputs[2:])
        if fc is gate_fc:                   # its int16 output is the LOGISTIC's input
            fc.outputs = [q_zp.outputs[0]]
            ops.remove(q_zp)
            continue
        out16 = rw.new16(out8, "_int16", _sym16(tensors[out8].quantization))
        fc.outputs = [out16]
        ops.insert(ops.index(fc) + 1, rw.new_op("QUANTIZE", [out16], [out8]))
    return u16


def _widen_residual(rw: _Rewriter, layer: int, hnew: int, add_u, u8: int, u16: int):
    """The layer's output sum v8 = ADD(u8, QUANTIZE(hnew16)) taken as v16 = ADD(u16, hnew16),
    then QUANTIZE to v8; u8's ADD goes when nothing reads u8 any more."""
    ops, kind = rw.g.operators, rw.kind
    quantizes_of_hnew = [op for op in ops if hnew in op.inputs and kind(op) == "QUANTIZE"]
    h8 = quantizes_of_hnew[0].outputs[0] if len(quantizes_of_hnew) == 1 else None
    add_v = [op for op in ops if kind(op) == "ADD" and h8 in op.inputs and u8 in op.inputs]
    if len(add_v) != 1:
        raise ConvertError(f"layer {layer}: expected the residual ADD(u, h_new)")
    add_v = add_v[0]
    v8 = add_v.outputs[0]
    v16 = rw.new16(v8, "_int16", _sym16(rw.T[v8].quantization))
    u_input = list(add_v.inputs).index(u8)
    add_v.inputs = [u16, hnew] if u_input == 0 else [hnew, u16]
    add_v.outputs = [v16]
    ops.insert(ops.index(add_v) + 1, rw.new_op("QUANTIZE", [v16], [v8]))
    if not any(u8 in op.inputs for op in ops):
        ops.remove(add_u)


def widen_input(model_bytes: bytes, meta_layers: list[dict], residual: bool = True,
                skipped: list | None = None) -> bytes:
    """The 16-bit-state step model (widen_state, gate16=True) with each minGRU's input u in
    int16 as well, where u is the residual sum u = ADD(frame, conv) of a delay layer:

        f16 = QUANTIZE(frame8);  c16 = QUANTIZE(conv8);  u16 = ADD(f16, c16)
        zp16 = FC(u16, Wz)                     feeds the int16 LOGISTIC (no QUANTIZE(zp8))
        p16 = FC(u16, Wh);  p8 = QUANTIZE(p16)             the candidate's int8 chain as before
        r16 = FC(u16, Wh) + RELU;  r8 = QUANTIZE(r16)     (where the graph has that FC)

    Each FULLY_CONNECTED runs in TFLite's 16x8 mode (int16 input and output, the same int8
    weights) with an int32 bias on the scale s_u16 * s_w, so TFLite-Micro accumulates in int32
    and requantizes as its int8 FC does. With residual=True the layer's output sum
    v = u + h_new is taken in int16 as well, from u16 and the int16 state:

        v16 = ADD(u16, h16');  v8 = QUANTIZE(v16)         (replaces ADD(u8, h8'))

    and u8 = ADD(frame8, conv8) goes (nothing reads it); h8' = QUANTIZE(h16') stays as the
    state's int8 view (the package's debug copy). Why: on psMNIST the rounding of u to its
    int8 grid is the largest error left (benchmarks/int8_attribution.py, group `resid`).
    Layers whose u is not a residual sum (no delay conv) are left as they are, and so is a
    layer whose FC biases on u16's scale would not leave the int32 accumulator room for the
    dot product (a bias far larger than the input's range: its index goes to `skipped`)."""
    from mgrade_edge.convert.quantize import pack_flatbuffer

    rw = _Rewriter(model_bytes)
    producer = {out: op for op in rw.g.operators for out in op.outputs}
    tensor_in, tensor_out = _step_io_tensors(rw, meta_layers)
    for layer, layer_meta in enumerate(meta_layers):
        if not layer_meta["rnn"]:
            continue
        gate_fc, q_zp = _input_gate(rw, producer, layer, tensor_in[names.h(layer)])
        u8 = gate_fc.inputs[0]
        add_u = producer.get(u8)
        if add_u is None or rw.kind(add_u) != "ADD":
            continue                        # no residual sum: u is a frame, nothing to gain
        u_fcs = [op for op in rw.g.operators
                 if rw.kind(op) == "FULLY_CONNECTED" and op.inputs[0] == u8]
        s_u8, s_u16 = float(rw.T[u8].quantization.scale[0]), _sym16(rw.T[u8].quantization)
        # the 16x8 FCs' int32 accumulators must hold bias and dot product, else this layer
        # keeps its int8 input
        if not all(rw.fc16_fits(fc, s_u8, s_u16) for fc in u_fcs):
            if skipped is not None:
                skipped.append(layer)
            continue
        u16 = _widen_u(rw, add_u, u_fcs, gate_fc, q_zp)
        if residual:        # v = u + h_new from u16 and the int16 state, then to int8
            _widen_residual(rw, layer, tensor_out[names.hnew(layer)], add_u, u8, u16)
    return pack_flatbuffer(rw.model)


def widen_conv(model_bytes: bytes) -> bytes:
    """The int16-input step model (widen_input) with each delay conv's output in int16 too:
    the conv reads the gathered int8 taps requantized to int16 and runs in TFLite's 16x8 mode
    (int16 input and output, the same int8 per-channel weights, an int64 bias on the scale
    s_taps16 * s_w), so its output reaches u16 = ADD(f16, c16) without an int8 rounding:

        taps16 = QUANTIZE(taps8);  c16' = DEPTHWISE_CONV_2D(taps16);  c16 = RESHAPE(c16')
        (was:  conv8' = DEPTHWISE_CONV_2D(taps8);  conv8 = RESHAPE(conv8');  c16 = QUANTIZE(conv8))

    taps16 has the frame's int16 grid (the taps are copies of the frames), c16 keeps the grid
    widen_input gave it. The ring and the gathered taps stay int8 (TFLite-Micro has no int16
    GATHER). The int64 accumulator of the 16x8 kernel cannot overflow here (taps x 2^15 x
    2^7 plus a bias rescaled from int32). Layers whose u is not int16 are left as they are."""
    from tensorflow.lite.python import schema_py_generated as schema

    from mgrade_edge.convert.quantize import pack_flatbuffer

    rw = _Rewriter(model_bytes)
    g, T, kind = rw.g, rw.T, rw.kind
    I16 = schema.TensorType.INT16
    producer = {o: op for op in g.operators for o in op.outputs}
    ops = g.operators
    for add_u in [op for op in ops if kind(op) == "ADD" and T[op.outputs[0]].type == I16]:
        q_c = producer.get(add_u.inputs[1])
        rs = q_c and producer.get(q_c.inputs[0])
        dw = rs and producer.get(rs.inputs[0])
        if not (q_c and kind(q_c) == "QUANTIZE" and rs and kind(rs) == "RESHAPE" and dw and
                kind(dw) == "DEPTHWISE_CONV_2D"):
            continue                        # not u16 = ADD(f16, QUANTIZE(conv8))
        rs_taps = producer.get(dw.inputs[0])
        if rs_taps is None or kind(rs_taps) != "RESHAPE" or \
                kind(producer.get(rs_taps.inputs[0], rs_taps)) != "GATHER":
            continue                        # a depthwise conv that is not the delay conv
        conv8, c16 = q_c.inputs[0], q_c.outputs[0]
        if any(conv8 in op.inputs for op in ops if op is not q_c):
            raise ConvertError(f"{rw.tname(conv8)}: the int8 delay-conv output has other "
                               "readers than QUANTIZE(int16); convert with --form input16")
        taps8, dw8 = dw.inputs[0], dw.outputs[0]
        s_t8 = float(T[taps8].quantization.scale[0])
        s_t16 = _sym16(T[taps8].quantization)
        taps16 = rw.new16(taps8, "_int16", s_t16)
        dw16 = rw.new16(dw8, "_int16", float(T[c16].quantization.scale[0]))
        has_bias = len(dw.inputs) > 2 and dw.inputs[2] >= 0
        dw.inputs = [taps16, dw.inputs[1]] + ([rw.bias64(dw.inputs[2], s_t8, s_t16)]
                                              if has_bias else dw.inputs[2:])
        dw.outputs = [dw16]
        rs.inputs = [dw16] + list(rs.inputs[1:])
        rs.outputs = [c16]
        ops.remove(q_c)
        ops.insert(ops.index(dw), rw.new_op("QUANTIZE", [taps8], [taps16]))
    return pack_flatbuffer(rw.model)


def mlp_blocks(rw: "_Rewriter") -> list[tuple]:
    """Each block's MLP in graph order: (fc1, fc2, add) with fc1 = FC(x) + RELU feeding only
    fc2 = FC(.), which feeds only the residual add = ADD(x, fc2): one per layer."""
    g, kind = rw.g, rw.kind
    users: dict[int, list] = {}
    for op in g.operators:
        for t in op.inputs:
            users.setdefault(t, []).append(op)
    act = lambda op: getattr(op.builtinOptions, "fusedActivationFunction", 0)  # noqa: E731
    out = []
    for fc1 in g.operators:
        if kind(fc1) != "FULLY_CONNECTED" or act(fc1) != 1:          # 1: RELU
            continue
        u1 = users.get(fc1.outputs[0], [])
        if len(u1) != 1 or kind(u1[0]) != "FULLY_CONNECTED":
            continue
        fc2 = u1[0]
        u2 = users.get(fc2.outputs[0], [])
        if len(u2) == 1 and kind(u2[0]) == "ADD" and fc1.inputs[0] in u2[0].inputs:
            out.append((fc1, fc2, u2[0]))
    return out


def widen_mlp(model_bytes: bytes, skipped: list | None = None) -> bytes:
    """The step model with each block's MLP and its residual sum in int16 (TFLite's 16x8
    FULLY_CONNECTED: int16 activations, the same int8 weights, int32 biases rescaled):

        x16 = QUANTIZE(x8);  f16 = FC(x16, W1) + RELU;  o16 = FC(f16, W2)
        w16 = ADD(x16, o16);  w8 = QUANTIZE(w16)          w8 feeds what w = ADD(x8, o8) fed

    x8 is the MLP's int8 input (the layer's residual v = u + h'), so its rounding stays; the
    hidden layer, the MLP output and the sum w move onto grids 128x finer (each int16 tensor
    symmetric over its int8 tensor's calibrated range). A block whose 16x8 FC accumulators
    could overflow (convert/widen.py fc16_fits) keeps its int8 MLP (its index to `skipped`).
    Works on any width of the minGRU state (widen_state, widen_input before it or not)."""
    from mgrade_edge.convert.quantize import pack_flatbuffer

    rw = _Rewriter(model_bytes)
    T, ops = rw.T, rw.g.operators
    for k, (fc1, fc2, add) in enumerate(mlp_blocks(rw)):
        x8, f8, o8, w8 = fc1.inputs[0], fc1.outputs[0], fc2.outputs[0], add.outputs[0]
        s = {t: _sym16(T[t].quantization) for t in (x8, f8, o8, w8)}
        if not (rw.fc16_fits(fc1, float(T[x8].quantization.scale[0]), s[x8]) and
                rw.fc16_fits(fc2, float(T[f8].quantization.scale[0]), s[f8])):
            if skipped is not None:
                skipped.append(k)
            continue
        x16, f16, o16, w16 = (rw.new16(t, "_int16", s[t]) for t in (x8, f8, o8, w8))
        for fc, src8, src16, out16 in ((fc1, x8, x16, f16), (fc2, f8, f16, o16)):
            has_bias = len(fc.inputs) > 2 and fc.inputs[2] >= 0
            fc.inputs = [src16, fc.inputs[1]] + (
                [rw.bias16(fc.inputs[2], float(T[src8].quantization.scale[0]), s[src8])]
                if has_bias else fc.inputs[2:])
            fc.outputs = [out16]
        add.inputs = [x16 if t == x8 else o16 for t in add.inputs]
        add.outputs = [w16]
        ops.insert(ops.index(fc1), rw.new_op("QUANTIZE", [x8], [x16]))
        ops.insert(ops.index(add) + 1, rw.new_op("QUANTIZE", [w16], [w8]))
    return pack_flatbuffer(rw.model)


def state_bytes(model_bytes: bytes) -> int:
    """Bytes of the minGRU state inputs (the graph's h{l} tensors)."""
    from mgrade_edge.convert.quantize import read_metadata
    from mgrade_edge.convert.tflite_reader import read_tflite

    meta = read_metadata(model_bytes)
    m = read_tflite(model_bytes)
    return sum(m.tensors[t].nbytes for n, t in zip(meta["inputs"], m.inputs)
               if (names.parse(n) or ("",))[0] == "h")

