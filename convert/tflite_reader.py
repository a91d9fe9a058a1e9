"""Read a .tflite flatbuffer into plain Python objects.

    model = read_tflite(open("model.tflite", "rb").read())   # or read_tflite(path)
    model.tensors[i].shape / .dtype / .quant.scale / .data (constant buffer or None)
    model.operators[k].op ("FULLY_CONNECTED", ...) / .inputs / .outputs / .options
    model.inputs / model.outputs (tensor indices, subgraph order), model.input_names
    model.metadata["mgrade"] -> bytes

Uses the flatbuffers schema module shipped with ai-edge-litert, else the one in tflite-micro
(all the host tools have), else the one in tensorflow; the first two do not import TensorFlow. Only the first subgraph is read as the
graph (`model.num_subgraphs` tells whether there are more).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:  # fast: does not import tensorflow
    from ai_edge_litert import schema_py_generated as _fb
except ImportError:  # pragma: no cover - a host-only install (numpy, pyserial, tflite-micro)
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as _fb
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as _fb

SCHEMA = _fb    # the generated TFLite flatbuffer schema module (Model, TensorType, ...)

# TensorType enum -> numpy dtype (None = not representable here)
_DTYPES = {
    _fb.TensorType.FLOAT32: np.dtype(np.float32),
    _fb.TensorType.FLOAT16: np.dtype(np.float16),
    _fb.TensorType.INT32: np.dtype(np.int32),
    _fb.TensorType.UINT8: np.dtype(np.uint8),
    _fb.TensorType.INT64: np.dtype(np.int64),
    _fb.TensorType.BOOL: np.dtype(np.bool_),
    _fb.TensorType.INT16: np.dtype(np.int16),
    _fb.TensorType.INT8: np.dtype(np.int8),
    _fb.TensorType.FLOAT64: np.dtype(np.float64),
    _fb.TensorType.UINT32: np.dtype(np.uint32),
    _fb.TensorType.UINT16: np.dtype(np.uint16),
}


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_OP_NAMES = _enum_names(_fb.BuiltinOperator)
_ACT_NAMES = _enum_names(_fb.ActivationFunctionType)
_PAD_NAMES = _enum_names(_fb.Padding)
_TYPE_NAMES = _enum_names(_fb.TensorType)


class TFLiteReadError(ValueError):
    pass


@dataclass
class Quant:
    scale: np.ndarray          # float32 [n] (n = 1 per-tensor, n = channels per-axis)
    zero_point: np.ndarray     # int64 [n]
    axis: int = 0              # quantized dimension (meaningful when n > 1)

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | None
    type_name: str
    quant: Quant | None
    data: np.ndarray | None    # constant contents (reshaped to `shape`), None for activations
    is_variable: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * (self.dtype.itemsize if self.dtype is not None else 0)

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass
class Operator:
    index: int
    op: str                    # builtin name, e.g. "FULLY_CONNECTED" (custom: "CUSTOM:<code>")
    inputs: list[int]          # tensor indices, -1 = optional input absent
    outputs: list[int]
    options: dict = field(default_factory=dict)   # snake_case option names; enums as names


@dataclass
class Model:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    input_names: list[str]     # signature names when the model has a signature, else tensor names
    output_names: list[str]
    metadata: dict[str, bytes]
    description: str
    version: int
    num_subgraphs: int
    sha256: str                # hex digest of the whole file

    @property
    def model_id(self) -> str:
        """First 8 bytes of sha256(.tflite) as 16 hex characters (= model_id(file bytes))."""
        return self.sha256[:16]


def model_id(model_bytes: bytes) -> str:
    """The id a device reports: first 8 bytes of sha256 of the .tflite, 16 hex characters."""
    return hashlib.sha256(bytes(model_bytes)).hexdigest()[:16]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _options(obj) -> dict:
    if obj is None:
        return {}
    out = {}
    for k, v in vars(obj).items():
        key = _snake(k)
        if key == "fused_activation_function":
            v = _ACT_NAMES.get(v, str(v))
        elif key == "padding":
            v = _PAD_NAMES.get(v, str(v))
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[key] = v
    return out


def _decode(s) -> str:
    if s is None:
        return ""
    return s.decode("utf-8", "replace") if isinstance(s, (bytes, bytearray)) else str(s)


def _buffer_bytes(raw: bytes, buf) -> bytes | None:
    if buf is None:
        return None
    if buf.data is not None and len(buf.data) > 0:
        return bytes(np.asarray(buf.data, dtype=np.uint8))
    off, size = int(getattr(buf, "offset", 0) or 0), int(getattr(buf, "size", 0) or 0)
    if off > 1 and size > 0:   # buffers stored after the flatbuffer (models > 2 GB)
        return raw[off:off + size]
    return None


def read_tflite(src) -> Model:
    """Parse a .tflite given as bytes or a path."""
    raw = bytes(src) if isinstance(src, (bytes, bytearray, memoryview)) else Path(src).read_bytes()
    try:
        m = _fb.ModelT.InitFromPackedBuf(raw, 0)
    except Exception as e:  # noqa: BLE001 - flatbuffers raises assorted errors
        raise TFLiteReadError(f"not a .tflite flatbuffer: {e}") from e
    if not m.subgraphs:
        raise TFLiteReadError("model has no subgraph")
    sg = m.subgraphs[0]
    buffers = m.buffers or []

    tensors = []
    for i, t in enumerate(sg.tensors or []):
        dtype = _DTYPES.get(t.type)
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        q = None
        tq = t.quantization
        if tq is not None and tq.scale is not None and len(tq.scale) > 0:
            zp = tq.zeroPoint if tq.zeroPoint is not None else np.zeros(len(tq.scale))
            q = Quant(np.asarray(tq.scale, dtype=np.float32),
                      np.asarray(zp, dtype=np.int64), int(tq.quantizedDimension or 0))
        data = None
        if t.buffer and t.buffer < len(buffers):
            b = _buffer_bytes(raw, buffers[t.buffer])
            if b is not None:
                if dtype is None:
                    raise TFLiteReadError(f"tensor {i} has unsupported type {t.type}")
                data = np.frombuffer(b, dtype=dtype.newbyteorder("<")).astype(dtype)
                data = data.reshape(shape) if data.size == int(np.prod(shape, dtype=np.int64)) \
                    else data
        tensors.append(Tensor(i, _decode(t.name), shape, dtype, _TYPE_NAMES.get(t.type, "?"),
                              q, data, bool(t.isVariable)))

    codes = m.operatorCodes or []
    ops = []
    for k, o in enumerate(sg.operators or []):
        oc = codes[o.opcodeIndex]
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        name = _OP_NAMES.get(code, f"OP_{code}")
        if name == "CUSTOM":
            name = "CUSTOM:" + _decode(oc.customCode)
        ops.append(Operator(k, name,
                            [int(x) for x in (o.inputs if o.inputs is not None else [])],
                            [int(x) for x in (o.outputs if o.outputs is not None else [])],
                            _options(o.builtinOptions)))

    inputs = [int(x) for x in (sg.inputs if sg.inputs is not None else [])]
    outputs = [int(x) for x in (sg.outputs if sg.outputs is not None else [])]
    in_names = {i: tensors[i].name for i in inputs}
    out_names = {i: tensors[i].name for i in outputs}
    for sig in (m.signatureDefs or []):
        if (sig.subgraphIndex or 0) != 0:
            continue
        for tm in (sig.inputs or []):
            in_names[int(tm.tensorIndex)] = _decode(tm.name)
        for tm in (sig.outputs or []):
            out_names[int(tm.tensorIndex)] = _decode(tm.name)
        break

    metadata = {}
    for md in (m.metadata or []):
        b = _buffer_bytes(raw, buffers[md.buffer]) if md.buffer < len(buffers) else None
        metadata[_decode(md.name)] = b if b is not None else b""

    return Model(tensors, ops, inputs, outputs,
                 [in_names[i] for i in inputs], [out_names[i] for i in outputs],
                 metadata, _decode(m.description), int(m.version or 0), len(m.subgraphs),
                 hashlib.sha256(raw).hexdigest())
