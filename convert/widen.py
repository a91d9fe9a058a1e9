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
run it bit-exact). `python -m convert --state-bits 16|auto [--gate-bits 8|16]` emits it.
"""
from __future__ import annotations

import copy

from convert import names
from convert.spec import ConvertError


def _sym16(q) -> float:
    """Scale of the int16 symmetric grid covering the int8 quantization q's range."""
    s, zp = float(q.scale[0]), int(q.zeroPoint[0])
    r = max(-(-128 - zp) * s, (127 - zp) * s)
    return r / 32767.0


def widen_state(model_bytes: bytes, meta_layers: list[dict], gate16: bool = True) -> bytes:
    """The int8 step model with every minGRU state path in int16 (see the module doc).
    gate16=True runs the gate's LOGISTIC in int16 (z on a 1/32768 grid); gate16=False keeps
    LOGISTIC(z) int8 (z on its 1/256 grid) and requantizes z to int16 after it."""
    from tensorflow.lite.python import schema_py_generated as schema

    from convert.quantize import load_flatbuffer, pack_flatbuffer

    model = load_flatbuffer(model_bytes)
    g = model.subgraphs[0]
    T = g.tensors
    codes = model.operatorCodes
    op_name = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def kind(op):
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


def state_bytes(model_bytes: bytes) -> int:
    """Bytes of the minGRU state inputs (the graph's h{l} tensors)."""
    from convert.quantize import read_metadata
    from convert.tflite_reader import read_tflite

    meta = read_metadata(model_bytes)
    m = read_tflite(model_bytes)
    return sum(m.tensors[t].nbytes for n, t in zip(meta["inputs"], m.inputs)
               if (names.parse(n) or ("",))[0] == "h")

