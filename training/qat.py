"""Quantization-aware training: the weights the board computes with, in the forward pass.

The converter (convert/spec.py, convert/quantize.py) folds norms into the Dense layers and the
TFLite converter quantizes every FULLY_CONNECTED weight [out, in] and every DEPTHWISE_CONV_2D
kernel per output channel, symmetric int8 in [-127, 127]:

    scale[c] = max_k |w[c, k]| / 127,   q[c, k] = round(w[c, k] / scale[c]),   w ~ q * scale

`fake_quant_rows` returns q * scale with a straight-through gradient (the rounding counts as
the identity), so training sees the deployed weights while the float weights keep learning.
The arithmetic runs in float32, as the converter's weight constants are float32; a float64
weight (a net in double precision, as the tests use) is rounded to float32 first, as
`tf.constant(w, tf.float32)` does, so the result equals the .tflite's int8 weights times
their scales bit for bit.

Which weights are folded how (MGradeNet.set_qat switches a network to it):
- encoder: W / std (input normalisation) per row [H, n_in];
- delay conv taps [H, N]: per channel (row);
- minGRU proj [2H, H]: per row (gate and candidate are separate FCs, per-row scales agree);
- fc1: W1 * s (the pre-norm's eval scale, columns) per row; fc2 per row;
- readout: Wr * s (the last block's post-norm, folded) per row;
- the other blocks' post-norm scale and shift: MUL / ADD constants, int8 per tensor
  (`fake_quant_tensor`).
Batch norms use their running statistics while QAT is on (frozen; their affine parameters
still learn), since the deployed graph folds the running statistics.
"""
from __future__ import annotations

import math

import torch

QMAX = 127          # narrow-range symmetric int8 (the TFLite weight convention)


def quant_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [C, K] -> (q [C, K] float32 integers in [-127, 127], scale [C] float32), as the
    TFLite converter quantizes a per-channel weight (channel = row). A row of zeros gets
    scale 1 (its q are all 0 either way)."""
    w32 = w.detach().to(torch.float32)
    amax = w32.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.clamp(torch.round(w32 / scale[:, None]), -QMAX, QMAX)
    return q, scale


class _FakeQuantRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        q, scale = quant_rows(w)
        return (q * scale[:, None]).to(w.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad                       # straight-through estimator


def fake_quant_rows(w: torch.Tensor) -> torch.Tensor:
    """w [C, K] -> the deployed weight q * scale [C, K] (same dtype); gradient: identity."""
    if w.ndim != 2:
        raise ValueError(f"fake_quant_rows needs a [C, K] weight, got shape {tuple(w.shape)}")
    return _FakeQuantRows.apply(w)


def quant_tensor(v: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """v [n] -> (q [n] float32 integers in [-128, 127], scale, zero_point): how the TFLite
    converter quantizes a constant operand of MUL / ADD (the post-norm's scale and shift):
    per tensor, asymmetric, range [min(v, 0), max(v, 0)] over 255 steps."""
    v32 = v.detach().to(torch.float32)
    zero = v32.new_zeros(())
    lo, hi = torch.minimum(v32.min(), zero), torch.maximum(v32.max(), zero)
    s32 = (hi - lo) / 255.0 if hi > lo else torch.ones(())   # float32 arithmetic, as TFLite
    scale = float(s32)
    zp = -128 - float(lo) / scale
    zp = int(min(127, max(-128, math.floor(zp + 0.5))))
    q = torch.clamp(torch.round(v32 / s32) + zp, -128, 127)
    return q, scale, zp


class _FakeQuantTensor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        q, scale, zp = quant_tensor(v)
        return ((q - zp) * torch.tensor(scale, dtype=torch.float32)).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant_tensor(v: torch.Tensor) -> torch.Tensor:
    """v [n] -> the deployed per-tensor int8 constant (q - zp) * scale; gradient: identity."""
    return _FakeQuantTensor.apply(v)


def deployed_weights(net) -> dict:
    """The weights an MGradeNet computes with under QAT, by the names of convert.spec's
    StepSpec fields ("we", "be", "wr", "br", and per layer i "taps{i}", "wz{i}", "wh{i}",
    "w1{i}", "b1{i}", "w2{i}", "post_scale{i}", "post_shift{i}"), as detached tensors: the
    int8 weights the converter writes, times their scales; biases in float."""
    import torch.nn as nn

    out = {}
    with torch.no_grad():
        if isinstance(net.encoder, nn.Linear):
            out["we"], out["be"] = net.qat_encoder()
        for i, block in enumerate(net.blocks):
            if block.conv is not None:
                out[f"taps{i}"] = fake_quant_rows(block.conv.weight)
            if block.rnn is not None:
                w, H = block.rnn.qat_weight(), block.rnn.proj.out_features // 2
                out[f"wz{i}"], out[f"wh{i}"] = w[:H], w[H:]
            out[f"w1{i}"], out[f"b1{i}"] = block.qat_fc1()
            out[f"w2{i}"] = fake_quant_rows(block.fc2.weight)
            post = block.qat_post() if i < len(net.blocks) - 1 else None
            if post is not None:
                out[f"post_scale{i}"], out[f"post_shift{i}"] = post
        out["wr"], out["br"] = net.qat_readout()
    return {k: v.detach() for k, v in out.items()}
