"""The single-step streaming graph in TensorFlow, built from a StepSpec.

Inputs (batch 1):  x [1, n_in]; per layer l with a delay ring: ring{l} [1, R*H] (frames t-1 ..
t-R at slots (t-d) mod R, frame-major) and idx{l} int32 [N*H] (gather indices, see
`convert.rings.gather_indices`); per layer with a minGRU: h{l} [1, H].
Outputs: logits [1, n]; per layer with a ring: frame{l} [1, H] (the layer's input at t, for the
caller to write into slot t mod R); per layer with a minGRU: hnew{l} [1, H].

The delay convolution is CONCATENATION(frame, ring) -> GATHER(idx) -> DEPTHWISE_CONV_2D over
the N gathered taps; the minGRU is FC, LOGISTIC, RELU, MINIMUM, ADD, SUB, MUL.
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert import names
from mgrade_edge.convert.rings import gather_indices
from mgrade_edge.convert.spec import StepSpec


def _flags(spec: StepSpec) -> list[tuple[bool, bool]]:
    return [(layer.ring_frames > 0, layer.wz is not None) for layer in spec.layers]


def io_names(spec: StepSpec) -> tuple[list[str], list[str]]:
    """Input and output names in signature order."""
    return names.step_io(_flags(spec))


def state_pairs(spec: StepSpec) -> list[tuple[str, str]]:
    """(input name, output name) of every state the caller feeds back."""
    return names.state_pairs(_flags(spec))


def input_signature(spec: StepSpec) -> dict:
    """name -> (shape, numpy dtype) of every graph input."""
    H, sig = spec.channels, {names.X: ((1, spec.n_in), np.float32)}
    for i, layer in enumerate(spec.layers):
        if layer.ring_frames > 0:
            sig[names.ring(i)] = ((1, layer.ring_frames * H), np.float32)
            sig[names.idx(i)] = ((layer.delays.size,), np.int32)
        if layer.wz is not None:
            sig[names.h(i)] = ((1, H), np.float32)
    return sig


def build_step_function(spec: StepSpec):
    """A tf.function(*inputs in io_names order) -> list of outputs in io_names order, with the
    spec's weights as constants."""
    import tensorflow as tf

    def dense(a, w, b, relu=False):
        y = tf.matmul(a, tf.constant(w.T, tf.float32)) + tf.constant(b, tf.float32)
        return tf.nn.relu(y) if relu else y

    H = spec.channels
    sig = input_signature(spec)
    input_names = list(sig)
    output_names = io_names(spec)[1]
    specs = [tf.TensorSpec(shape, tf.as_dtype(dtype), name=n) for n, (shape, dtype) in sig.items()]

    @tf.function(input_signature=specs)
    def step(*args):
        inp = dict(zip(input_names, args))
        out = {}
        a = dense(inp[names.X], spec.we, spec.be)
        for i, layer in enumerate(spec.layers):
            u = a
            if layer.delays is not None:
                n_taps = layer.delays.shape[1]
                if layer.ring_frames > 0:
                    out[names.frame(i)] = a
                    frames = tf.concat([a, inp[names.ring(i)]], axis=1)
                    idx = inp[names.idx(i)]
                else:
                    frames, idx = a, tf.constant(gather_indices(layer.delays, 0, 0))
                taps = tf.reshape(tf.gather(frames, idx, axis=1), [1, 1, n_taps, H])
                kernel = tf.constant(layer.taps.T.reshape(1, n_taps, H, 1), tf.float32)
                y = tf.nn.depthwise_conv2d(taps, kernel, [1, 1, 1, 1], "VALID")
                u = a + tf.reshape(y, [1, H])
            v = u
            if layer.wz is not None:
                z = tf.sigmoid(dense(u, layer.wz, layer.bz))
                hp = dense(u, layer.wh, layer.bh)
                cand = tf.nn.relu(hp) + tf.sigmoid(tf.minimum(hp, 0.0))
                h = inp[names.h(i)]
                h_new = h + z * (cand - h)
                out[names.hnew(i)] = h_new
                v = u + h_new
            w = v + dense(dense(v, layer.w1, layer.b1, relu=True), layer.w2, layer.b2)
            if layer.post_scale is not None:    # a 1x1 depthwise conv: per-channel int8 scale
                kernel = tf.constant(layer.post_scale.reshape(1, 1, H, 1), tf.float32)
                y = tf.nn.depthwise_conv2d(tf.reshape(w, [1, 1, 1, H]), kernel, [1, 1, 1, 1],
                                           "VALID")
                w = tf.reshape(y, [1, H]) + tf.constant(layer.post_shift, tf.float32)
            a = w
        out[names.LOGITS] = dense(a, spec.wr, spec.br)
        return [out[name] for name in output_names]   # a list keeps this order in the .tflite

    return step
