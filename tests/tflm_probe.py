"""TFLite-Micro's int16 LOGISTIC probed from outside: a one-op model, its outputs over every
input at many input scales, and the sigmoid table recovered from those outputs.

The kernel (reference_integer_ops::Logistic, int16) rescales x to v in units of 1/(3 * 4096),
then for |v| < 255 * 2^9 interpolates linearly between table entries k = |v| >> 9 and k + 1 on
the 9 bits t = |v| & 511, with a rounding that differs by sign:
    r = T[k] * 2^9 + t * (T[k+1] - T[k]);   y = (r + 2^9) >> 10  (v >= 0),
                                            y = (2^25 - r + 2^9 - 1) >> 10  (v < 0).
`outputs_by_v` runs the real interpreter at enough scales that every v of both signs appears;
`recover_table` finds the table entries consistent with all of them. Used by
tests/test_logistic16.py; convert/tflm_params.SIGMOID_LUT16 holds the result.
"""
from __future__ import annotations

import numpy as np

TABLE_SPAN = 255 * 512          # |v| at and beyond which the kernel saturates


def one_op_model(op: str, inputs: list[tuple], output: tuple, n: int) -> bytes:
    """A one-op .tflite on [1, n] tensors: op (a BuiltinOperator name) of the inputs, each
    (dtype name "INT8" / "INT16", scale, zero point), into output (dtype, scale, zero point)."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.ModelT()
    m.version = 3
    oc = schema.OperatorCodeT()
    oc.builtinCode = oc.deprecatedBuiltinCode = getattr(schema.BuiltinOperator, op)
    oc.version = 1
    m.operatorCodes = [oc]
    m.buffers = [schema.BufferT()]
    tensors = []
    for k, (dtype, s, zp) in enumerate(inputs + [output]):
        t = schema.TensorT()
        t.shape, t.type, t.buffer = [1, n], getattr(schema.TensorType, dtype), 0
        t.name = f"t{k}"
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale, t.quantization.zeroPoint = [float(s)], [int(zp)]
        tensors.append(t)
    o = schema.OperatorT()
    o.opcodeIndex = 0
    o.inputs, o.outputs = list(range(len(inputs))), [len(inputs)]
    sg = schema.SubGraphT()
    sg.tensors, sg.operators = tensors, [o]
    sg.inputs, sg.outputs = list(range(len(inputs))), [len(inputs)]
    m.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def run_one_op(model: bytes, xs: list[np.ndarray], dtype) -> np.ndarray:
    """TFLite-Micro on a one_op_model: inputs xs (each [n]) -> int64 [n]."""
    from tflite_micro.python.tflite_micro import runtime

    n = len(xs[0])
    it = runtime.Interpreter.from_bytes(model, arena_size=8 * n * (len(xs) + 1) + 65536)
    for k, x in enumerate(xs):
        it.set_input(np.asarray(x, dtype)[None], k)
    it.invoke()
    return it.get_output(0)[0].astype(np.int64)


def logistic16_model(n: int, in_scale: float) -> bytes:
    """A one-op .tflite: int16 [1, n] (scale in_scale, zero point 0) -> LOGISTIC -> int16
    (scale 2^-15, zero point 0)."""
    return one_op_model("LOGISTIC", [("INT16", in_scale, 0)], ("INT16", 1.0 / 32768.0, 0), n)


def run_logistic16(in_scale: float, x: np.ndarray) -> np.ndarray:
    """TFLite-Micro's int16 LOGISTIC of int16 x [n] at input scale in_scale -> int64 [n]."""
    from tflite_micro.python.tflite_micro import runtime

    it = runtime.Interpreter.from_bytes(logistic16_model(len(x), in_scale),
                                        arena_size=4 * len(x) + 65536)
    it.set_input(np.asarray(x, np.int16)[None], 0)
    it.invoke()
    return it.get_output(0)[0].astype(np.int64)


def probe_scales() -> list[float]:
    """Input scales whose rescaled inputs v together cover every |v| < TABLE_SPAN, both signs:
    v ~ c x for c in [4, 5) (x up to 32767 reaches past the table) in steps that shift the
    residues t, plus c = 1, 1.5, 2 for the small |v| and 3 (TFLite's power-of-two case)."""
    ms = list(range(16384, 20480, 97)) + list(range(16385, 20480, 61))
    return [m / 4096.0 / 12288.0 for m in ms] + [c / 12288.0 for c in (1.0, 1.5, 2.0, 3.0)]


def outputs_by_v(rescale) -> dict[int, int]:
    """{v: TFLM output} over every int16 x at every probe scale; rescale(scale, x) -> v (the
    kernel's input rescaling, from the Prepare-time parameters under test). A v seen twice with
    two outputs raises (the rescaling would be wrong)."""
    x = np.arange(-32768, 32768)
    seen: dict[int, int] = {}
    for s in probe_scales():
        for v, y in zip(rescale(s, x).tolist(), run_logistic16(s, x).tolist()):
            if seen.setdefault(v, y) != y:
                raise AssertionError(f"v = {v} gave outputs {seen[v]} and {y}")
    return seen


def recover_table(seen: dict[int, int], guess: np.ndarray) -> np.ndarray:
    """The table T [256] reproducing every output in `seen` (which must cover every v with
    |v| < TABLE_SPAN), searched within +-3 of `guess` [256]; where several tables reproduce
    them all (entries whose parity no output reveals), the entries nearest `guess`."""
    ok = []
    for k in range(255):
        t = np.arange(512)
        yp = np.array([seen[k * 512 + u] for u in range(512)])
        vn = [-(k * 512 + u) for u in range(512) if k * 512 + u > 0]
        tn = np.array([(-v) & 511 for v in vn])
        yn = np.array([seen[v] for v in vn])
        pairs = []
        for a in range(int(guess[k]) - 3, int(guess[k]) + 4):
            for b in range(int(guess[k + 1]) - 3, min(65536, int(guess[k + 1]) + 4)):
                r = a * 512 + t * (b - a)
                rn = a * 512 + tn * (b - a)
                if (np.array_equal((r + 512) >> 10, yp)
                        and np.array_equal(((1 << 25) - rn + 511) >> 10, yn)):
                    pairs.append((a, b))
        ok.append(pairs)
    poss = [set(a for a, _ in ok[0])] + [set(b for _, b in ok[k]) for k in range(255)]
    for _ in range(8):                   # keep values that belong to a consistent pair both ways
        for k in range(255):
            pairs = [(a, b) for a, b in ok[k] if a in poss[k] and b in poss[k + 1]]
            poss[k] &= {a for a, _ in pairs}
            poss[k + 1] &= {b for _, b in pairs}
    if any(not p for p in poss):
        raise AssertionError("no table reproduces the outputs")
    table = np.array([min(p, key=lambda a: abs(a - int(guess[k]))) for k, p in enumerate(poss)])
    if not all((table[k], table[k + 1]) in ok[k] for k in range(255)):
        raise AssertionError("the nearest entries are not a consistent table")
    return table
