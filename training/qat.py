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
- encoder: per row [H, n_in], on the normalised input (the device normalises before
  quantising; W / std only for a net with fold_norm, convert/raw_input.py);
- delay conv taps [H, N]: per channel (row);
- minGRU proj [2H, H]: per row (gate and candidate are separate FCs, per-row scales agree);
- fc1: W1 * s (the pre-norm's eval scale, columns) per row; fc2 per row;
- readout: Wr * s (the last block's post-norm, folded) per row;
- the other blocks' post-norm: a 1x1 depthwise conv, scale per channel (one tap: exact),
  shift as its bias.
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


# -- activations ------------------------------------------------------------------------------
# The converter quantizes every activation tensor of the step graph per tensor, asymmetric
# int8, from the min / max it saw over the calibration feeds (range widened to hold 0):
#     scale = (hi - lo) / 255,  zp = round(-128 - lo / scale) clamped,  q = clamp(round(x /
#     scale) + zp, -128, 127),  x ~ (q - zp) * scale.
# ActRange estimates that min / max during training (EMA of each batch's min / max) and
# fake-quantizes with it: straight-through gradient inside the representable range, 0 outside
# (the clamp).

def asym_params(lo: float, hi: float) -> tuple[float, int]:
    """A calibrated range [lo, hi] -> (scale, zero_point) of a TFLite int8 activation tensor:
    range widened to contain 0, 255 steps, zero point rounded and clamped to [-128, 127]."""
    lo32 = torch.tensor(min(float(lo), 0.0), dtype=torch.float32)
    hi32 = torch.tensor(max(float(hi), 0.0), dtype=torch.float32)
    if not hi32 > lo32:
        return 1.0, -128
    scale = float((hi32 - lo32) / 255.0)
    zp = -128 - float(lo32) / scale
    return scale, int(min(127, max(-128, math.floor(zp + 0.5))))


def _round_away(v: torch.Tensor) -> torch.Tensor:
    """Round half away from zero (TFLite's QUANTIZE rounding)."""
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


class _FakeQuantAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp):
        q = torch.clamp(_round_away(x.to(torch.float32) / scale) + zp, -128, 127)
        ctx.save_for_backward(x)
        ctx.bounds = ((-128 - zp) * scale, (127 - zp) * scale)
        return ((q - zp) * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        return grad * ((x >= lo) & (x <= hi)).to(grad.dtype), None, None


def fake_quant_act(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """x [...] -> x on the int8 grid of the calibrated range [lo, hi] (asym_params), as the
    int8 graph quantizes an activation; gradient: identity where x is inside the grid's range,
    0 where it is clamped."""
    scale, zp = asym_params(lo, hi)
    return _FakeQuantAct.apply(x, scale, zp)


def sym16_scale(lo: float, hi: float) -> float:
    """The scale of the int16 grid a widened form (convert/widen.py _sym16) gives a tensor
    whose int8 range is [lo, hi]: symmetric, zero point 0, over the int8 grid's extent."""
    scale, zp = asym_params(lo, hi)
    return max((128 + zp) * scale, (127 - zp) * scale) / 32767.0


class _FakeQuantAct16(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        q = torch.clamp(_round_away(x.to(torch.float32) / scale), -32768, 32767)
        ctx.save_for_backward(x)
        ctx.bounds = (-32768 * scale, 32767 * scale)
        return (q * scale).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        return grad * ((x >= lo) & (x <= hi)).to(grad.dtype), None


def fake_quant_act16(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """x [...] -> x on the int16 grid a widened form gives the tensor of int8 range [lo, hi]
    (sym16_scale); gradient as fake_quant_act's."""
    return _FakeQuantAct16.apply(x, sym16_scale(lo, hi))


# the ActRange attributes (training/layers.py aq_<name>) whose tensors each form of the
# converter (convert/forms.py) holds in int16: input16 widens u = x + conv and the gate's
# pre-activation (its candidate and residual v are requantized to int8 after the int16 op);
# conv16 also the delay conv's output; mlp16 input16's and the MLP's hidden layer and output
# (its input v and its sum w leave as int8); conv_mlp16 both
WIDE_ACTS = {"int8": (), "state16": (), "input16": ("aq_u", "aq_z"),
             "conv16": ("aq_u", "aq_z", "aq_conv"),
             "mlp16": ("aq_u", "aq_z", "aq_fc1", "aq_fc2"),
             "conv_mlp16": ("aq_u", "aq_z", "aq_conv", "aq_fc1", "aq_fc2")}


class ActRange(torch.nn.Module):
    """Observer + fake quantization of one activation tensor (identity while off).

    In training mode each call updates the range with the batch's min / max: the first batch
    sets it, later ones move it by EMA, lo <- m lo + (1 - m) batch_min (m = momentum; 1 freezes
    the range after the first batch of QAT). In eval mode the range is fixed (a range never
    set is set by the first batch seen). The range lives in non-persistent buffers (the
    state_dict keeps the architecture's keys; training.train stores `ranges()` in the
    checkpoint)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("lo", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("hi", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("seen", torch.tensor(False), persistent=False)
        self.active = False
        self.momentum = 0.9
        self.bits = 8               # 16: the int16 grid of a widened form (WIDE_ACTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if self.training or not bool(self.seen):
            with torch.no_grad():
                bmin, bmax = float(x.min()), float(x.max())
                if not bool(self.seen):
                    self.lo.fill_(bmin)
                    self.hi.fill_(bmax)
                    self.seen.fill_(True)
                else:
                    m = self.momentum
                    self.lo.fill_(m * float(self.lo) + (1 - m) * bmin)
                    self.hi.fill_(m * float(self.hi) + (1 - m) * bmax)
        if self.bits == 16:
            return fake_quant_act16(x, float(self.lo), float(self.hi))
        return fake_quant_act(x, float(self.lo), float(self.hi))


def act_ranges(net) -> dict:
    """name -> [lo, hi, seen] of every ActRange in `net` (for the checkpoint)."""
    return {n: [float(m.lo), float(m.hi), bool(m.seen)]
            for n, m in net.named_modules() if isinstance(m, ActRange)}


def load_act_ranges(net, ranges: dict):
    """Restore act_ranges(net) output; unknown or missing names are refused."""
    mods = {n: m for n, m in net.named_modules() if isinstance(m, ActRange)}
    # checkpoints from before the post-norm became one op carry a range for its MUL
    ranges = {n: r for n, r in ranges.items() if not n.endswith(".aq_mul")}
    if set(ranges) != set(mods):
        raise ValueError(f"activation ranges do not match the network "
                         f"({sorted(set(ranges) ^ set(mods))[:3]})")
    for n, (lo, hi, seen) in ranges.items():
        mods[n].lo.fill_(lo)
        mods[n].hi.fill_(hi)
        mods[n].seen.fill_(bool(seen))


def set_act_quant(net, on: bool, momentum: float = 0.9, form: str = "int8"):
    """Switch every ActRange of `net` on or off (the ranges are kept); those WIDE_ACTS[form]
    names use the int16 grid."""
    wide = WIDE_ACTS[form]
    for name, m in net.named_modules():
        if isinstance(m, ActRange):
            m.active, m.momentum = on, momentum
            m.bits = 16 if name.rsplit(".", 1)[-1] in wide else 8
