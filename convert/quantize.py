"""Float step graph -> full-int8 .tflite with tied state quantization and mGRADE metadata.

State tensors (each layer's ring and minGRU state) must carry the same scale and zero point on
the input and the output side, so the firmware feeds outputs back without requantizing. The
converter already gives the ring and its frame output one scale (CONCATENATION shares one);
for the minGRU state we set the input tensor's parameters to the output's (the output's range
was calibrated on the same values, one step later). The interpreters derive every kernel's
multipliers from tensor parameters when they prepare the model, so the edit is exact.
"""
from __future__ import annotations

from mgrade_edge.convert import metadata
from mgrade_edge.convert.graph import build_step_function, io_names, state_pairs
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.spec import StepSpec


def convert_int8(spec: StepSpec, feeds: list[dict]) -> bytes:
    """feeds: calibration inputs (dicts name -> array), one per step. Returns .tflite bytes."""
    import tensorflow as tf

    if not feeds:
        raise ConvertError("no calibration data: the calibration split is empty")
    fn = build_step_function(spec)
    names = io_names(spec)[0]
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([f[n] for n in names] for f in feeds)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema
    return schema


def load_flatbuffer(model_bytes: bytes):
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))


def pack_flatbuffer(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def finalize(model_bytes: bytes, spec: StepSpec, info: dict) -> bytes:
    """Tie state quantization (input := output parameters) and embed the metadata JSON."""
    model = load_flatbuffer(model_bytes)
    graph = model.subgraphs[0]
    in_names, out_names = io_names(spec)
    if len(graph.inputs) != len(in_names) or len(graph.outputs) != len(out_names):
        raise ConvertError("converted graph has unexpected inputs/outputs")
    tensor_in = dict(zip(in_names, graph.inputs))
    tensor_out = dict(zip(out_names, graph.outputs))
    for a, b in state_pairs(spec):
        qa, qb = graph.tensors[tensor_in[a]].quantization, graph.tensors[tensor_out[b]].quantization
        qa.scale, qa.zeroPoint = list(qb.scale), list(qb.zeroPoint)
        qa.min = qa.max = None
    metadata.embed(model, metadata.StepMetadata.from_spec(spec, info))
    return pack_flatbuffer(model)


def read_metadata(model_bytes: bytes) -> dict:
    """The mGRADE metadata JSON of a .tflite made by this converter (metadata.read)."""
    return metadata.read(model_bytes)


def op_names(model_bytes: bytes) -> list[str]:
    """Sorted builtin op names used by the model."""
    schema = _schema()
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = load_flatbuffer(model_bytes)
    used = {model.operatorCodes[op.opcodeIndex] for op in model.subgraphs[0].operators}
    return sorted({codes[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in used})
