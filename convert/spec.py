"""A hardened network as plain NumPy arrays: what the streaming step computes.

BatchNorm before a Dense (the MLP's pre-norm) is folded into that Dense; the post-norm becomes
a per-channel scale and shift; the last post-norm is folded into the readout. Integer delays
come from the hardened DelayConv. The network's input normalisation (per-channel mean / std of
the training split, user-data tasks) stays outside the graph: StepSpec.input_mean / input_std
(float32) travel in the metadata and the device applies them to each float frame before
quantising it (convert/input_norm.py), so the graph's int8 input spans normalised values
whatever the data's units. Only a net with fold_norm (convert/raw_input.py: raw 8-bit codes)
has it folded into the encoder: W ((x - m) / s) + b = (W / s) x + (b - W (m / s)).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch.nn as nn

from mgrade_edge.convert.errors import ConvertError
from mgrade_edge.training.layers import BatchNormChannels
from mgrade_edge.training.model import MGradeNet
from mgrade_edge.training.ring_layout import graph_ring_frames


@dataclass
class LayerSpec:
    """One block. Shapes: H channels, N taps; Dense weights are [out, in]."""
    delays: np.ndarray | None        # [H, N] int, frames (None: no delay conv)
    taps: np.ndarray | None          # [H, N] float tap weights
    wz: np.ndarray | None = None     # [H, H] minGRU gate
    bz: np.ndarray | None = None
    wh: np.ndarray | None = None     # [H, H] minGRU candidate
    bh: np.ndarray | None = None
    w1: np.ndarray = None            # [rH, H] (pre-norm folded in)
    b1: np.ndarray = None
    w2: np.ndarray = None            # [H, rH]
    b2: np.ndarray = None
    post_scale: np.ndarray | None = None   # [H] post-norm (None: folded away or no norm)
    post_shift: np.ndarray | None = None

    @property
    def ring_frames(self) -> int:
        """Past frames the layer's ring holds: its largest delay (0 without a conv)."""
        return 0 if self.delays is None else graph_ring_frames(self.delays)


@dataclass
class StepSpec:
    n_in: int
    n_classes: int
    channels: int
    readout: str
    we: np.ndarray                   # [H, n_in] encoder (identity when the net has none)
    be: np.ndarray
    layers: list[LayerSpec] = field(default_factory=list)
    wr: np.ndarray = None            # [n, H] readout
    br: np.ndarray = None
    input_mean: np.ndarray | None = None   # [n_in] float32: x_graph = (x - mean) / std,
    input_std: np.ndarray | None = None    # applied before quantisation (None: x_graph = x)


def _np(t):
    return t.detach().cpu().double().numpy()


def _affine(norm) -> tuple[np.ndarray, np.ndarray] | None:
    if isinstance(norm, BatchNormChannels):
        scale, shift = norm.eval_affine()
        return _np(scale), _np(shift)
    if isinstance(norm, nn.Identity):
        return None
    raise ConvertError(f"{type(norm).__name__} cannot be converted to the int8 streaming model;"
                       f" train with model.norm = \"batch\" (folds into the int8 graph) or "
                       f"\"none\"")


def fold_normalization(we: np.ndarray, be: np.ndarray, mean: np.ndarray, std: np.ndarray):
    """Encoder (we [H, C], be [H]) applied to (x - mean) / std -> the same map on raw x."""
    inv = 1.0 / std
    return we * inv[None, :], be - we @ (mean * inv)


def extract(net: MGradeNet) -> StepSpec:
    """Hardened float weights of `net` (eval mode) with norms folded."""
    cfg = net.cfg
    if cfg.act != "relu":
        raise ConvertError(f"model.act = {cfg.act!r}: the int8 path supports \"relu\" only")
    if cfg.use_rnn and cfg.rnn_out != "linear":
        raise ConvertError(f"model.rnn_out = {cfg.rnn_out!r}: the int8 path supports "
                           f"\"linear\" only")
    if not net.hardened:
        raise ConvertError("the network is not hardened; call harden() first")
    H = cfg.d_model
    if isinstance(net.encoder, nn.Linear):
        we, be = _np(net.encoder.weight), _np(net.encoder.bias)
    else:
        we, be = np.eye(H), np.zeros(H)
    norm = {}
    if getattr(net, "normalizes", False):
        if getattr(net, "fold_norm", False):
            we, be = fold_normalization(we, be, _np(net.input_mean), _np(net.input_std))
        else:
            norm = {"input_mean": _np(net.input_mean).astype(np.float32),
                    "input_std": _np(net.input_std).astype(np.float32)}
    spec = StepSpec(n_in=net.n_in, n_classes=net.n_classes, channels=H,
                    readout=net.readout_mode, we=we, be=be, **norm)
    for block in net.blocks:
        layer = LayerSpec(delays=None, taps=None)
        if block.conv is not None:
            layer.delays = block.conv.delays().numpy().astype(np.int64)
            layer.taps = _np(block.conv.weight)
        if block.rnn is not None:
            w, b = _np(block.rnn.proj.weight), _np(block.rnn.proj.bias)
            layer.wz, layer.wh, layer.bz, layer.bh = w[:H], w[H:], b[:H], b[H:]
        w1, b1 = _np(block.fc1.weight), _np(block.fc1.bias)
        pre = _affine(block.norm_mlp)
        if pre is not None:                          # fc1(s*v + t) = (W s) v + (W t + b)
            s, t = pre
            w1, b1 = w1 * s[None, :], w1 @ t + b1
        layer.w1, layer.b1 = w1, b1
        layer.w2, layer.b2 = _np(block.fc2.weight), _np(block.fc2.bias)
        post = _affine(block.norm_post)
        if post is not None:
            layer.post_scale, layer.post_shift = post
        spec.layers.append(layer)
    wr, br = _np(net.readout.weight), _np(net.readout.bias)
    last = spec.layers[-1]
    if last.post_scale is not None:                  # fold the last post-norm into the readout
        wr, br = wr * last.post_scale[None, :], wr @ last.post_shift + br
        last.post_scale = last.post_shift = None
    spec.wr, spec.br = wr, br
    return spec
