"""Run a streaming model.tflite step by step in LiteRT or TFLite-Micro.

The caller-side state handling every runtime repeats (the firmware does the same in C):
rings start at their zero point (= float 0), at step t the gather indices come from
`gather_indices`, after the step the frame output is written to ring slot t mod R and each
minGRU state output becomes the next input. The readout mean is an int32 sum of int8 logits.

    s = Streamer(model_bytes, backend="tflm")
    logits = s.run(x_q)          # int8 [T, n_in] -> int8 [T, n_classes] per-step logits
"""
from __future__ import annotations

import os
import re
import tempfile

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.convert.metadata import StepMetadata, read as read_metadata
from mgrade_edge.convert.input_norm import frame_constants, quantize_frames
from mgrade_edge.convert.rings import gather_indices, write_slot

BACKENDS = ("tflm", "litert")
# How far LiteRT and TFLite-Micro may differ on any output of one step fed identical inputs,
# in int8 LSB: LiteRT's int8 LOGISTIC computes in float, TFLM's in fixed point, so they differ
# by 1 LSB at some inputs and z * (g - h) and the layers after it amplify that within the step
# (measured up to 13 LSB over the digits test set, 6-7 on random states).
STEP_LSB_BOUND = 16
# With the int16 minGRU input (convert --input-bits 16) the residual sum takes the int16 state
# directly, where the two already differ by up to ~1,600 int16 LSB (their int16 ADD/SUB
# multipliers differ: convert/tflm_params.addsub16_params); measured up to 20 LSB on a digits
# model.
STEP_LSB_BOUND_INPUT16 = 32


class Streamer:
    def __init__(self, model_bytes: bytes, backend: str = "tflm"):
        if backend not in BACKENDS:
            raise ConvertError(f"backend {backend!r} is not one of {BACKENDS}")
        self.meta = read_metadata(model_bytes)        # the JSON dict, as stored
        self.step_meta = StepMetadata.of(self.meta)   # its typed view
        self.backend = backend
        if backend == "tflm":
            from tflite_micro.python.tflite_micro import runtime
            self.interp = runtime.Interpreter.from_bytes(model_bytes)
            n_in, n_out = len(self.step_meta.inputs), len(self.step_meta.outputs)
            self.in_quant = [self._tflm_quant(self.interp.get_input_details(i))
                             for i in range(n_in)]
            self.in_dtype = [np.dtype(self.interp.get_input_details(i)["dtype"])
                             for i in range(n_in)]
            self.out_quant = [self._tflm_quant(self.interp.get_output_details(i))
                              for i in range(n_out)]
        else:
            from ai_edge_litert.interpreter import Interpreter
            self.interp = Interpreter(model_content=model_bytes, num_threads=1)
            try:
                self.interp.allocate_tensors()
            except RuntimeError as e:       # XNNPACK refuses out-of-range requantization scales
                scale = self.interp.get_input_details()[self.inputs_index("x")]["quantization"][0]
                raise ConvertError(
                    f"LiteRT cannot prepare this int8 model ({str(e).strip().splitlines()[0]}); "
                    f"its input scale {scale:.3g} is extreme: train on normalised inputs "
                    f"(task normalize = true) or rescale the data's units") from None
            self.in_details = self.interp.get_input_details()
            self.out_details = self.interp.get_output_details()
            self.in_quant = [d["quantization"] for d in self.in_details]
            self.in_dtype = [np.dtype(d["dtype"]) for d in self.in_details]
            self.out_quant = [d["quantization"] for d in self.out_details]
        self.inputs = {n: i for i, n in enumerate(self.step_meta.inputs)}
        self.outputs = {n: i for i, n in enumerate(self.step_meta.outputs)}

    def inputs_index(self, name: str) -> int:
        """Position of a named graph input (metadata order)."""
        return self.step_meta.inputs.index(name)

    @staticmethod
    def _tflm_quant(d):
        q = d["quantization_parameters"]
        if len(q["scales"]) == 0:
            return (0.0, 0)
        return float(q["scales"][0]), int(q["zero_points"][0])

    @property
    def input_quant(self) -> tuple[float, int]:
        """(scale, zero point) of the frame input x."""
        return self.in_quant[self.inputs["x"]]

    @property
    def output_quant(self) -> tuple[float, int]:
        return self.out_quant[self.outputs["logits"]]

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float frames x [..., n_in] in the data's units -> the int8 model input (normalised
        first where the model carries input_norm), as the device does it (convert/input_norm.py)."""
        scale, zp = self.input_quant
        return quantize_frames(x, *frame_constants(self.step_meta, scale), zp)

    def _initial_state(self) -> dict:
        H, state = self.step_meta.channels, {}
        for i, layer in enumerate(self.step_meta.layers):
            if layer.ring_frames > 0:
                k = self.inputs[names.ring(i)]
                state[names.ring(i)] = np.full((1, layer.ring_frames * H), self.in_quant[k][1],
                                            self.in_dtype[k])
            if layer.rnn:
                k = self.inputs[names.h(i)]
                state[names.h(i)] = np.full((1, H), self.in_quant[k][1], self.in_dtype[k])
        return state

    def invoke(self, feed: dict) -> dict:
        """One step on explicit inputs (name -> int8/int32 array); returns all outputs."""
        if self.backend == "tflm":
            for name, value in feed.items():
                self.interp.set_input(value, self.inputs[name])
            self.interp.invoke()
            return {n: self.interp.get_output(i) for n, i in self.outputs.items()}
        for name, value in feed.items():
            self.interp.set_tensor(self.in_details[self.inputs[name]]["index"], value)
        self.interp.invoke()
        return {n: self.interp.get_tensor(self.out_details[i]["index"])
                for n, i in self.outputs.items()}

    def run(self, x_q: np.ndarray, return_states: bool = False):
        """x_q int8 [T, n_in] -> per-step int8 logits [T, n_classes]; with return_states
        also the list of (inputs, outputs) dicts of every step."""
        if x_q.dtype != np.int8 or x_q.ndim != 2 or x_q.shape[1] != self.step_meta.n_in:
            raise ConvertError(f"expected int8 [T, {self.step_meta.n_in}], got {x_q.dtype} "
                               f"{list(x_q.shape)}")
        H, state = self.step_meta.channels, self._initial_state()
        logits, raw = [], []
        for t in range(len(x_q)):
            feed = {"x": x_q[t:t + 1]}
            feed.update({k: v.copy() for k, v in state.items()})
            for i, layer in enumerate(self.step_meta.layers):
                if layer.ring_frames > 0:
                    feed[names.idx(i)] = gather_indices(layer.delay_array, t, layer.ring_frames)
            out = self.invoke(feed)
            for i, layer in enumerate(self.step_meta.layers):
                R = layer.ring_frames
                if R > 0:
                    slot = write_slot(t, R)
                    state[names.ring(i)][0, slot * H:(slot + 1) * H] = out[names.frame(i)][0]
                if layer.rnn:
                    state[names.h(i)] = out[names.hnew(i)].copy()
            logits.append(out["logits"][0].copy())
            if return_states:
                raw.append((feed, {k: v.copy() for k, v in out.items()}))
        logits = np.stack(logits)
        return (logits, raw) if return_states else logits


def predictions(logits_q: np.ndarray, readout: str) -> np.ndarray:
    """int8 per-step logits [T, n] -> class for the sequence ([]) or per step ([T])."""
    if readout == "mean":
        return np.argmax(logits_q.astype(np.int32).sum(axis=0))
    return np.argmax(logits_q, axis=-1)


def tflm_arena_bytes(model_bytes: bytes) -> int | None:
    """The arena TFLite-Micro allocates for the model, read from its allocation recording
    (which the C++ side prints to the process's stdout or stderr)."""
    import ctypes
    import sys

    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model_bytes)
    libc = ctypes.CDLL(None)
    with tempfile.TemporaryFile(mode="w+") as tmp:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(tmp.fileno(), 1)
        os.dup2(tmp.fileno(), 2)
        try:
            interp.print_allocations()
            libc.fflush(None)
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
        tmp.seek(0)
        text = tmp.read()
    m = re.search(r"Arena allocation total (\d+) bytes", text)
    return int(m.group(1)) if m else None
