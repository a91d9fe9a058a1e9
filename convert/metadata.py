"""The mGRADE step metadata stored in a .tflite (flatbuffer metadata entry "mgrade", JSON):
one schema, one writer (`embed`), one reader (`parse`, with `read` / `from_model` for raw
.tflite bytes and parsed models), one `model_id` (convert/tflite_reader.model_id).

The JSON keys (format "mgrade-edge/step/v1"): n_in, n_classes, channels (H), readout ("mean" |
"last" ...), inputs / outputs (signature names in graph order, convert/names.py), state_pairs
([input, output] fed back each step), layers (per layer: ring_frames R, delays [H][N] or null,
conv, rnn), input_norm (only for a model whose device normalises each float frame before
quantising it: {"mean": [n_in], "std": [n_in]}, float32 values; absent: the graph takes the
frame as it is, convert/input_norm.py), plus what the converter adds (task, seq_len,
kernel_span, class_names, ...).
`read` / `parse` / `from_model` return the JSON dict (`StepMetadata.to_dict()`, what travels
between modules); a reader turns it into the typed view once with `StepMetadata.of(meta)` and
reads its fields and properties (the one place the keys are spelt).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.errors import ConvertError

NAME = "mgrade"
FORMAT = "mgrade-edge/step/v1"


@dataclass
class LayerMeta:
    """One block of the step graph."""
    ring_frames: int                 # R: past frames of the graph's ring input (0: no ring)
    delays: list | None              # [H][N] integer delays in frames, or None (no delay conv)
    conv: bool                       # the block has a delay convolution (graph input idx{l})
    rnn: bool                        # the block has a minGRU (state h{l} in, hnew{l} out)

    @property
    def delay_array(self) -> np.ndarray | None:
        """int64 [H, N]: tap e of channel c reads frame t - delays[c, e]; None without a delay
        convolution."""
        return None if self.delays is None else np.asarray(self.delays, dtype=np.int64)


@dataclass
class StepMetadata:
    """The step graph's contract: n_in input features per frame, n_classes logits per step,
    H = `channels` channels in every block (the width of each ring frame, minGRU state and
    block output), `inputs` / `outputs` the graph's tensor names in graph order, `layers` one
    LayerMeta per block."""
    n_in: int
    n_classes: int
    channels: int
    readout: str
    inputs: list[str]
    outputs: list[str]
    state_pairs: list[tuple[str, str]]
    layers: list[LayerMeta]
    extra: dict = field(default_factory=dict)    # task, seq_len, kernel_span, class_names, ...
    input_norm: dict | None = None   # {"mean": [n_in], "std": [n_in]} (float32 values) or None

    @classmethod
    def from_spec(cls, spec, info: dict) -> StepMetadata:
        """The metadata of a StepSpec (convert/spec.py); info: the converter's extra keys."""
        flags = [(layer.ring_frames > 0, layer.wz is not None) for layer in spec.layers]
        inputs, outputs = names.step_io(flags)
        pairs = names.state_pairs(flags)
        layers = [LayerMeta(layer.ring_frames,
                            None if layer.delays is None else np.asarray(layer.delays).tolist(),
                            layer.delays is not None, layer.wz is not None)
                  for layer in spec.layers]
        norm = None
        if spec.input_mean is not None:
            norm = {"mean": [float(v) for v in np.asarray(spec.input_mean, np.float32)],
                    "std": [float(v) for v in np.asarray(spec.input_std, np.float32)]}
        return cls(spec.n_in, spec.n_classes, spec.channels, spec.readout, inputs, outputs,
                   pairs, layers, dict(info), norm)

    @classmethod
    def of(cls, meta: dict | StepMetadata) -> StepMetadata:
        """The typed view of a metadata dict (as `read` returns it; a StepMetadata is returned
        as it is). ConvertError naming the key when a field is missing or of the wrong type."""
        if isinstance(meta, StepMetadata):
            return meta
        if not isinstance(meta.get("layers"), list) or not isinstance(meta.get("channels"), int):
            raise ConvertError("mgrade metadata has no layers/channels")
        try:
            out = cls.from_dict(meta)
            if not all(isinstance(lm.ring_frames, int) for lm in out.layers):
                raise TypeError("ring_frames must be integers")
        except KeyError as e:
            raise ConvertError(f"mgrade metadata has no {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise ConvertError(f"mgrade metadata is malformed ({e})") from None
        return out

    @property
    def task(self) -> str | None:
        """The task the model was trained on (its name in the C and MicroPython packages)."""
        return self.extra.get("task")

    @property
    def kernel_span(self) -> int | None:
        """K of the delay convolutions in frames (delays 0 .. K-1); None where not recorded."""
        return self.extra.get("kernel_span")

    @property
    def input_units(self) -> str | None:
        """What one input value means (convert/raw_input.INPUT_UNITS for raw 8-bit codes;
        None: the task's own units)."""
        return self.extra.get("input_units")

    @property
    def class_names(self) -> list[str] | None:
        """Names of the n_classes classes (user-data tasks), or None."""
        return self.extra.get("class_names")

    @property
    def state_outputs(self) -> list[str]:
        """The graph outputs fed back or kept each step: every output but the logits, in
        graph order."""
        return [n for n in self.outputs if n != names.LOGITS]

    @property
    def input_mean_std(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) float32 [n_in] in the data's units that the device applies to each float
        frame before quantising it, or None (the graph takes the frame as it is)."""
        if not self.input_norm:
            return None
        return (np.asarray(self.input_norm["mean"], np.float32),
                np.asarray(self.input_norm["std"], np.float32))

    def to_dict(self) -> dict:
        """The JSON object (key order as written since v1)."""
        return {"format": FORMAT, "n_in": self.n_in, "n_classes": self.n_classes,
                "channels": self.channels, "readout": self.readout,
                "inputs": list(self.inputs), "outputs": list(self.outputs),
                "state_pairs": [tuple(p) for p in self.state_pairs],
                "layers": [dataclasses.asdict(lm) for lm in self.layers],
                **({"input_norm": self.input_norm} if self.input_norm else {}), **self.extra}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_dict(cls, d: dict) -> StepMetadata:
        known = {"format", "n_in", "n_classes", "channels", "readout", "inputs", "outputs",
                 "state_pairs", "layers", "input_norm"}
        return cls(d["n_in"], d["n_classes"], d["channels"], d["readout"], list(d["inputs"]),
                   list(d["outputs"]), [tuple(p) for p in d.get("state_pairs", [])],
                   [LayerMeta(lm["ring_frames"], lm.get("delays"), bool(lm.get("conv")),
                              bool(lm.get("rnn"))) for lm in d["layers"]],
                   {k: v for k, v in d.items() if k not in known}, d.get("input_norm"))


def input_norm(meta: dict | StepMetadata) -> tuple[np.ndarray, np.ndarray] | None:
    """StepMetadata.input_mean_std of a metadata dict: (mean, std) float32 [n_in], or None."""
    return StepMetadata.of(meta).input_mean_std


def parse(raw) -> dict | None:
    """The metadata dict of a raw "mgrade" entry, or None if it is not ours (other format,
    not JSON)."""
    try:
        meta = json.loads(bytes(raw).decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    return meta


def from_model(model) -> dict | None:
    """The metadata of a parsed .tflite (convert/tflite_reader.Model), or None."""
    raw = model.metadata.get(NAME)
    return parse(raw) if raw else None


def read(model_bytes: bytes) -> dict:
    """The metadata dict of .tflite bytes made by `python -m mgrade_edge.convert` (ConvertError if the
    bytes are no .tflite or carry no mGRADE metadata)."""
    try:
        meta = parse(entries(model_bytes).get(NAME, b""))
    except ValueError as e:
        raise ConvertError(str(e)) from None
    if meta is None:
        raise ConvertError("this .tflite carries no mGRADE metadata; convert it with "
                           "`python -m mgrade_edge.convert CHECKPOINT --out DIR`")
    return meta


def entries(model_bytes: bytes) -> dict[str, bytes]:
    """name -> raw bytes of every metadata entry of a .tflite (ValueError if unreadable)."""
    from mgrade_edge.convert.tflite_reader import SCHEMA as schema     # no TensorFlow needed

    try:
        model = schema.Model.GetRootAsModel(model_bytes, 0)
        out = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            out[entry.Name().decode()] = bytes(model.Buffers(entry.Buffer()).DataAsNumpy())
        return out
    except Exception as e:  # flatbuffers raises assorted errors on foreign bytes
        raise ValueError(f"not a valid .tflite file ({type(e).__name__})") from None


def embed(model_t, meta: StepMetadata) -> None:
    """Append the metadata to a flatbuffer ModelT (tflite schema object API), in place."""
    from tensorflow.lite.python import schema_py_generated as schema

    buf = schema.BufferT()
    buf.data = np.frombuffer(meta.to_json(), dtype=np.uint8)
    model_t.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = NAME
    entry.buffer = len(model_t.buffers) - 1
    model_t.metadata = (model_t.metadata or []) + [entry]
