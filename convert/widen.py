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

    def new16(self, like: int, suffix: str, scale: float) -> int:
        """A new int16 tensor shaped like `like`, symmetric (zero point 0) with `scale`."""
        from tensorflow.lite.python import schema_py_generated as schema

        t = copy.deepcopy(self.T[like])
        t.name = self.tname(like) + suffix
        t.type, t.buffer = schema.TensorType.INT16, 0
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [scale], [0]
        self.T.append(t)
        return len(self.T) - 1

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
        import numpy as np
        from tensorflow.lite.python import schema_py_generated as schema

        new = self.rescaled_bias(b, s_in8, s_in16)
        buf = schema.BufferT()
        buf.data = np.frombuffer(new.astype("<i4").tobytes(), np.uint8).copy()
        self.model.buffers.append(buf)
        t = copy.deepcopy(self.T[b])
        t.name = self.tname(b) + "_u16"
        t.buffer = len(self.model.buffers) - 1
        t.quantization.scale = [float(np.float32(s * s_in16 / s_in8))
                                for s in self.T[b].quantization.scale]
        self.T.append(t)
        return len(self.T) - 1

    def bias64(self, b: int, s_in8: float, s_in16: float) -> int:
        """A copy of the int32 bias tensor b as int64 on the scale s_in16 * s_w (the bias
        type of TFLite's 16x8 DEPTHWISE_CONV_2D)."""
        import numpy as np
        from tensorflow.lite.python import schema_py_generated as schema

        new = self.rescaled_bias(b, s_in8, s_in16)
        buf = schema.BufferT()
        buf.data = np.frombuffer(new.astype("<i8").tobytes(), np.uint8).copy()
        self.model.buffers.append(buf)
        t = copy.deepcopy(self.T[b])
        t.name = self.tname(b) + "_i64"
        t.type, t.buffer = schema.TensorType.INT64, len(self.model.buffers) - 1
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


def widen_state(model_bytes: bytes, meta_layers: list[dict], gate16: bool = True) -> bytes:
    """The int8 step model with every minGRU state path in int16 (see the module doc).
    gate16=True runs the gate's LOGISTIC in int16 (z on a 1/32768 grid); gate16=False keeps
    LOGISTIC(z) int8 (z on its 1/256 grid) and requantizes z to int16 after it."""
    from tensorflow.lite.python import schema_py_generated as schema

    from mgrade_edge.convert.quantize import load_flatbuffer, pack_flatbuffer

    model = load_flatbuffer(model_bytes)
    g = model.subgraphs[0]
    T = g.tensors
    kind, opcode = _op_codes(model)

    def new_tensor(like: int, name: str, dtype, scale: float, zp: int) -> int:
        t = copy.deepcopy(T[like])
        t.name = (T[like].name.decode() if isinstance(T[like].name, bytes)
                  else T[like].name) + name
        t.type = dtype
        t.buffer = 0
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [scale], [zp]
        T.append(t)
        return len(T) - 1

    def set16(t: int, scale: float):
        T[t].type = schema.TensorType.INT16
        q = T[t].quantization
        q.scale, q.zeroPoint, q.min, q.max = [scale], [0], None, None

    def quantize_op(src: int, dst: int):
        op = schema.OperatorT()
        op.opcodeIndex = opcode("QUANTIZE")
        op.inputs, op.outputs = [src], [dst]
        return op

    producer = {o: op for op in g.operators for o in op.outputs}
    in_names, out_names = names.step_io(names.meta_layers(meta_layers))
    tensor_in = dict(zip(in_names, g.inputs))
    tensor_out = dict(zip(out_names, g.outputs))
    I16 = schema.TensorType.INT16
    for i, layer in enumerate(meta_layers):
        if not layer["rnn"]:
            continue
        h, hnew = tensor_in[names.h(i)], tensor_out[names.hnew(i)]
        add_h = producer[hnew]
        mt = [t for t in add_h.inputs if t != h]
        mul = producer.get(mt[0]) if len(mt) == 1 else None
        if mul is None or kind(add_h) != "ADD" or kind(mul) != "MUL":
            raise ConvertError(f"layer {i}: the minGRU update is not ADD(h, MUL(z, SUB(g, h)))")
        k_z = [kind(producer[t]) if t in producer else None for t in mul.inputs].index("LOGISTIC")
        sig = producer[mul.inputs[k_z]]
        sub = producer[mul.inputs[1 - k_z]]
        if kind(sub) != "SUB" or sub.inputs[1] != h:
            raise ConvertError(f"layer {i}: expected SUB(g, h{i})")
        gt, zpre, z = sub.inputs[0], sig.inputs[0], sig.outputs[0]
        users = [op for op in g.operators if hnew in op.inputs]
        # new and retyped tensors
        hnew8 = new_tensor(hnew, "_int8", T[hnew].type, float(T[hnew].quantization.scale[0]),
                           int(T[hnew].quantization.zeroPoint[0]))
        g16 = new_tensor(gt, "_int16", I16, _sym16(T[gt].quantization), 0)
        s_state = _sym16(T[hnew].quantization)
        if gate16:
            zpre16 = new_tensor(zpre, "_int16", I16, _sym16(T[zpre].quantization), 0)
            set16(z, 1.0 / 32768.0)
            sig.inputs = [zpre16]
            g.operators.insert(g.operators.index(sig), quantize_op(zpre, zpre16))
        else:
            z16 = new_tensor(z, "_int16", I16, 1.0 / 32768.0, 0)
            mul.inputs = [z16 if t == z else t for t in mul.inputs]
            g.operators.insert(g.operators.index(sig) + 1, quantize_op(z, z16))
        set16(sub.outputs[0], _sym16(T[sub.outputs[0]].quantization))
        set16(mul.outputs[0], _sym16(T[mul.outputs[0]].quantization))
        set16(h, s_state)
        set16(hnew, s_state)
        # rewire
        sub.inputs = [g16, h]
        for op in users:
            op.inputs = [hnew8 if t == hnew else t for t in op.inputs]
        ops = g.operators
        ops.insert(ops.index(sub), quantize_op(gt, g16))
        ops.insert(ops.index(add_h) + 1, quantize_op(hnew, hnew8))
    return pack_flatbuffer(model)


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
    from tensorflow.lite.python import schema_py_generated as schema

    from mgrade_edge.convert.quantize import pack_flatbuffer

    rw = _Rewriter(model_bytes)
    model, g, T, kind, new16, new_op, bias16 = rw.model, rw.g, rw.T, rw.kind, rw.new16, \
        rw.new_op, rw.bias16
    I16 = schema.TensorType.INT16

    producer = {o: op for op in g.operators for o in op.outputs}
    in_names, out_names = names.step_io(names.meta_layers(meta_layers))
    tensor_in = dict(zip(in_names, g.inputs))
    out_t = dict(zip(out_names, g.outputs))
    for i, layer in enumerate(meta_layers):
        if not layer["rnn"]:
            continue
        h = tensor_in[names.h(i)]
        if T[h].type != I16:
            raise ConvertError(f"layer {i}: --input-bits 16 needs the 16-bit state path")
        users_h = [op for op in g.operators if h in op.inputs and kind(op) == "SUB"]
        sub = users_h[0] if users_h else None
        mul = next((op for op in g.operators if sub and sub.outputs[0] in op.inputs), None)
        if mul is None or kind(mul) != "MUL":
            raise ConvertError(f"layer {i}: the minGRU update is not MUL(z, SUB(g, h))")
        sig = producer[[t for t in mul.inputs if t != sub.outputs[0]][0]]
        q_zp = producer.get(sig.inputs[0])
        if kind(sig) != "LOGISTIC" or q_zp is None or kind(q_zp) != "QUANTIZE":
            raise ConvertError(f"layer {i}: --input-bits 16 needs the int16 gate "
                               f"(--gate-bits 16)")
        gate = producer[q_zp.inputs[0]]
        u8 = gate.inputs[0]
        add_u = producer.get(u8)
        if add_u is None or kind(add_u) != "ADD":
            continue                        # no residual sum: u is a frame, nothing to gain
        fcs = [op for op in g.operators if kind(op) == "FULLY_CONNECTED" and op.inputs[0] == u8]
        frame8, conv8 = add_u.inputs
        s = {t: _sym16(T[t].quantization) for t in (frame8, conv8, u8)}
        s_u8 = float(T[u8].quantization.scale[0])
        # the 16x8 FCs' int32 accumulators must hold bias and dot product, else this layer
        # keeps its int8 input
        if not all(rw.fc16_fits(fc, s_u8, s[u8]) for fc in fcs):
            if skipped is not None:
                skipped.append(i)
            continue
        f16, c16, u16 = new16(frame8, "_int16", s[frame8]), new16(conv8, "_int16", s[conv8]), \
            new16(u8, "_int16", s[u8])
        ops = g.operators
        at = ops.index(add_u) + 1
        add_opts = (add_u.builtinOptionsType, copy.deepcopy(add_u.builtinOptions))
        ops[at:at] = [new_op("QUANTIZE", [frame8], [f16]), new_op("QUANTIZE", [conv8], [c16]),
                      new_op("ADD", [f16, c16], [u16], add_opts)]
        for fc in fcs:
            out8 = fc.outputs[0]
            fc.inputs = [u16, fc.inputs[1]] + (
                [bias16(fc.inputs[2], s_u8, s[u8])] if len(fc.inputs) > 2 and fc.inputs[2] >= 0
                else fc.inputs[2:])
            if fc is gate:                  # its int16 output is the LOGISTIC's input
                fc.outputs = [q_zp.outputs[0]]
                ops.remove(q_zp)
                continue
            out16 = new16(out8, "_int16", _sym16(T[out8].quantization))
            fc.outputs = [out16]
            ops.insert(ops.index(fc) + 1, new_op("QUANTIZE", [out16], [out8]))
        if residual:        # v = u + h_new from u16 and the int16 state, then to int8
            hnew = out_t[names.hnew(i)]
            q_h8 = [op for op in ops if hnew in op.inputs and kind(op) == "QUANTIZE"]
            h8 = q_h8[0].outputs[0] if len(q_h8) == 1 else None
            add_v = [op for op in ops if kind(op) == "ADD" and h8 in op.inputs
                     and u8 in op.inputs]
            if len(add_v) != 1:
                raise ConvertError(f"layer {i}: expected the residual ADD(u, h_new)")
            add_v = add_v[0]
            v8 = add_v.outputs[0]
            v16 = new16(v8, "_int16", _sym16(T[v8].quantization))
            k_u = list(add_v.inputs).index(u8)
            add_v.inputs = [u16, hnew] if k_u == 0 else [hnew, u16]
            add_v.outputs = [v16]
            ops.insert(ops.index(add_v) + 1, new_op("QUANTIZE", [v16], [v8]))
            if not any(u8 in op.inputs for op in ops):
                ops.remove(add_u)
    return pack_flatbuffer(model)


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

