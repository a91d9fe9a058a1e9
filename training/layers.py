"""The mGRADE layers. Each has a parallel path (whole sequence, [B, T, H]) and a step path
(one frame, [B, H], with explicit state).

- DelayConv: depthwise causal convolution made of N taps per channel at delays (positions)
  that are learned ("dcls": Gaussian interpolation, sigma annealed) or fixed ("dilated").
- MinGRU: z and h~ from the input only; parallel scan for training, one step for inference.
- MGradeBlock: DelayConv -> MinGRU -> MLP with residuals and norms; either mixer may be off.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.delay_ops import causal_depthwise_conv, gaussian_kernel
from mgrade_edge.training.qat import ActRange, fake_quant_rows
from mgrade_edge.training.scan import g, mingru_scan


class DelayConv(nn.Module):
    """Depthwise causal convolution with N taps per channel.

    kind "dcls": positions [H, N] are parameters in [0, K-1] (frames of delay); the kernel is
    a sum of normalised Gaussians of width `sigma` around them. After `harden()` the positions
    are rounded to integer delays and the kernel is exactly sparse.
    kind "dilated": taps at fixed delays 0, d, 2d, ... ((N-1)d + 1 = span).
    """

    def __init__(self, channels: int, n_taps: int, span: int, kind: str = "dcls",
                 dilation: int = 1, sigma: float = 1.0):
        super().__init__()
        self.channels, self.n_taps, self.span, self.kind = channels, n_taps, span, kind
        self.weight = nn.Parameter(torch.randn(channels, n_taps) / math.sqrt(n_taps))
        if kind == "dcls":
            init = torch.rand(channels, n_taps) * (span - 1)
            self.positions = nn.Parameter(init)
            self.register_buffer("hardened", torch.tensor(False))
        else:
            fixed = torch.arange(n_taps, dtype=torch.float32) * dilation
            self.register_buffer("positions", fixed.expand(channels, n_taps).clone())
            self.register_buffer("hardened", torch.tensor(True))
        self.register_buffer("sigma", torch.tensor(float(sigma)))
        self.qat = False               # fake-quantized taps (training.qat); not in state_dict

    # -- kernel -------------------------------------------------------------------------
    def delays(self) -> torch.Tensor:
        """Integer delays [H, N] (rounded positions, clamped to the span)."""
        return self.positions.detach().round().clamp(0, self.span - 1).long()

    def taps(self) -> torch.Tensor:
        """Tap weights [H, N]: the float ones, or the int8 ones the board uses under QAT."""
        return fake_quant_rows(self.weight) if self.qat else self.weight

    def dense_kernel(self) -> torch.Tensor:
        """[H, span] kernel; kernel[c, k] multiplies x[t - k, c]."""
        if bool(self.hardened):
            kernel = torch.zeros(self.channels, self.span, dtype=self.weight.dtype,
                                 device=self.weight.device)
            return kernel.scatter_add(1, self.delays(), self.taps())
        return gaussian_kernel(self.positions, self.taps(), float(self.sigma), self.span)

    def state_frames(self) -> int:
        """Past frames the step path keeps (delay 1 .. max delay)."""
        if bool(self.hardened):
            return int(self.delays().max()) if self.n_taps else 0
        return self.span - 1

    @torch.no_grad()
    def clamp_positions(self):
        if self.kind == "dcls":
            self.positions.clamp_(0, self.span - 1)

    @torch.no_grad()
    def harden(self):
        """Round positions to integer delays; the kernel becomes exact sparse taps."""
        if self.kind == "dcls":
            self.positions.copy_(self.delays().to(self.positions.dtype))
            self.positions.requires_grad_(False)
            self.hardened.fill_(True)

    # -- paths ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] -> y [B, T, H]."""
        kernel = self.dense_kernel()
        if bool(self.hardened):                    # trim the span to the largest delay
            kernel = kernel[:, : self.state_frames() + 1]
        return causal_depthwise_conv(x, kernel)

    def init_state(self, batch: int) -> torch.Tensor:
        """Past frames [B, S, H], newest first (S = state_frames())."""
        return self.weight.new_zeros(batch, self.state_frames(), self.channels)

    def step(self, x_t: torch.Tensor, past: torch.Tensor):
        """x_t [B, H], past [B, S, H] (frames t-1 .. t-S) -> (y_t [B, H], new past)."""
        S = past.shape[1]
        kernel = self.dense_kernel()[:, : S + 1]                  # [H, S + 1]
        frames = torch.cat([x_t.unsqueeze(1), past], dim=1)       # [B, S + 1, H], delay k at k
        y = torch.einsum("bkh,hk->bh", frames, kernel)
        return y, frames[:, :S]


class MinGRU(nn.Module):
    """minGRU: z_t = sigmoid(W_z x_t + b_z), h~_t = g(W_h x_t + b_h),
    h_t = (1 - z_t) h_{t-1} + z_t h~_t. Output = out_act(h_t). x, h: [.., H]."""

    def __init__(self, channels: int, out_act: str = "linear"):
        super().__init__()
        self.proj = nn.Linear(channels, 2 * channels)     # rows [0, H): gate z; [H, 2H): h~
        self.out_act = out_act
        self.qat = False               # fake-quantized proj weight (training.qat)
        self.aq_z, self.aq_h = ActRange(), ActRange()   # gate / candidate FC outputs (int8)

    def qat_weight(self) -> torch.Tensor:
        """proj weight [2H, H] fake-quantized per row (the gate and candidate FCs)."""
        return fake_quant_rows(self.proj.weight)

    def _proj(self, x):
        """x [.., H] -> (z_pre, h_pre) [.., H] each; under QAT on the int8 weights, and with
        the activations quantized (set_act_quant) on the two FC outputs' int8 grids."""
        if self.qat:
            z_pre, h_pre = F.linear(x, self.qat_weight(), self.proj.bias).chunk(2, dim=-1)
            return self.aq_z(z_pre), self.aq_h(h_pre)
        return self.proj(x).chunk(2, dim=-1)

    def _out(self, h):
        if self.out_act == "sigmoid":
            return torch.sigmoid((h - 0.5) * 10)
        if self.out_act == "gelu":
            return F.gelu(h - 1)
        if self.out_act == "relu":
            return F.relu(h - 2)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, H] -> out [B, T, H] (state starts at 0)."""
        z_pre, h_pre = self._proj(x)
        return self._out(mingru_scan(z_pre, h_pre))

    def step(self, x_t: torch.Tensor, h: torch.Tensor):
        """x_t [B, H], h [B, H] -> (out_t [B, H], h_t [B, H])."""
        z_pre, h_pre = self._proj(x_t)
        z = torch.sigmoid(z_pre)
        h = (1 - z) * h + z * g(h_pre)
        return self._out(h), h


def make_norm(kind: str, channels: int) -> nn.Module:
    """Channel norm over [B, T, H] or [B, H] input."""
    if kind == "batch":
        return BatchNormChannels(channels)
    if kind == "layer":
        return nn.LayerNorm(channels)
    return nn.Identity()


class BatchNormChannels(nn.BatchNorm1d):
    """BatchNorm over every axis but the last (channels); eval mode = per-channel affine."""

    def forward(self, x, mask=None):
        """x [..., H]; mask [...] (bool, optional): in training, only the True rows (real
        steps) feed the batch statistics and the running estimates; the others come out 0."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if mask is None or not self.training:
            return super().forward(flat).reshape(shape)
        keep = mask.reshape(-1)
        out = flat.new_zeros(flat.shape)
        out[keep] = super().forward(flat[keep])
        return out.reshape(shape)

    def eval_affine(self):
        """(scale [H], shift [H]) such that eval output = x * scale + shift."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


def norm_affine(norm) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale [H], shift [H]) of a batch norm's eval map (running statistics), None for no
    norm; a layer norm has no fixed affine map and is refused."""
    if isinstance(norm, BatchNormChannels):
        return norm.eval_affine()
    if isinstance(norm, nn.Identity):
        return None
    raise ValueError(f"{type(norm).__name__} does not fold into the int8 graph; "
                     f"quantization-aware training needs model.norm = \"batch\" or \"none\"")


class MGradeBlock(nn.Module):
    """u = x + conv(x); v = u + drop(minGRU(u)); w = v + drop(MLP(norm(v))); out = norm(w).

    Under QAT (`qat = True`) the MLP runs on the deployed weights: the pre-norm folded into fc1
    and both Dense weights fake-quantized, the norms at their running statistics."""

    def __init__(self, cfg: ModelConfig, sigma: float):
        super().__init__()
        H = cfg.d_model
        self.conv = (DelayConv(H, cfg.n_taps, cfg.span, cfg.conv, cfg.dilation, sigma)
                     if cfg.use_conv else None)
        self.rnn = MinGRU(H, cfg.rnn_out) if cfg.use_rnn else None
        self.norm_mlp = make_norm(cfg.norm, H)
        self.fc1 = nn.Linear(H, cfg.mlp_ratio * H)
        self.fc2 = nn.Linear(cfg.mlp_ratio * H, H)
        self.act = nn.ReLU() if cfg.act == "relu" else nn.GELU()
        self.drop = nn.Dropout(cfg.dropout)
        self.norm_post = make_norm(cfg.norm, H)
        self.qat = False
        # int8 activation tensors of the step graph (training.qat.ActRange; QAT only): conv
        # output y, u = x + y, v = u + h, fc1 (after ReLU), fc2, w = v + fc2, post-norm w s + t
        for name in ("conv", "u", "v", "fc1", "fc2", "w", "post"):
            setattr(self, f"aq_{name}", ActRange())

    def set_qat(self, on: bool):
        """Switch this block (and its conv and minGRU) to the fake-quantized weights."""
        if on:
            norm_affine(self.norm_mlp)                # refuses a layer norm
        self.qat = on
        for part in (self.conv, self.rnn):
            if part is not None:
                part.qat = on

    def _norm(self, norm, x, mask):
        return norm(x, mask) if mask is not None and isinstance(norm, BatchNormChannels) \
            else norm(x)

    def qat_fc1(self) -> tuple[torch.Tensor, torch.Tensor]:
        """fc1 o norm_mlp as the converter folds it, (W1 s, W1 t + b1), the weight
        fake-quantized: [rH, H], [rH]."""
        w, b = self.fc1.weight, self.fc1.bias
        pre = norm_affine(self.norm_mlp)
        if pre is not None:
            s, t = pre
            w, b = w * s[None, :], w @ t + b
        return fake_quant_rows(w), b

    def qat_post(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The post-norm's (scale [H], shift [H]) as deployed: a 1x1 depthwise conv, the scale
        its per-channel int8 weight (one tap per channel: exact up to float32), the shift its
        bias (float, as every bias here). None without a norm."""
        after = norm_affine(self.norm_post)
        if after is None:
            return None
        return fake_quant_rows(after[0][:, None])[:, 0], after[1]

    def _mlp_and_norm(self, v, mask=None, post: bool = True):
        """v [.., H] -> block output; post = False (QAT only, last block: the readout folds
        the post-norm) leaves the post-norm out."""
        if not self.qat:
            w = v + self.drop(self.fc2(self.act(self.fc1(self._norm(self.norm_mlp, v, mask)))))
            return self._norm(self.norm_post, w, mask)
        hidden = self.aq_fc1(self.act(F.linear(v, *self.qat_fc1())))
        f2 = self.aq_fc2(F.linear(hidden, fake_quant_rows(self.fc2.weight), self.fc2.bias))
        w = self.aq_w(v + self.drop(f2))
        after = self.qat_post() if post else None
        return w if after is None else self.aq_post(w * after[0] + after[1])

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                post: bool = True) -> torch.Tensor:
        """x [B, T, H] -> [B, T, H]; mask [B, T] (optional): real steps, for batch norm."""
        u = self.aq_u(x + self.aq_conv(self.conv(x))) if self.conv is not None else x
        v = self.aq_v(u + self.drop(self.rnn(u))) if self.rnn is not None else u
        return self._mlp_and_norm(v, mask, post)

    def init_state(self, batch: int) -> dict:
        state = {}
        if self.conv is not None:
            state["past"] = self.conv.init_state(batch)
        if self.rnn is not None:
            state["h"] = self.fc1.weight.new_zeros(batch, self.fc1.in_features)
        return state

    def step(self, x_t: torch.Tensor, state: dict, post: bool = True):
        """x_t [B, H] -> (out_t [B, H], new state)."""
        new = {}
        u = x_t
        if self.conv is not None:
            y, new["past"] = self.conv.step(x_t, state["past"])
            u = self.aq_u(x_t + self.aq_conv(y))
        v = u
        if self.rnn is not None:
            out, new["h"] = self.rnn.step(u, state["h"])
            v = self.aq_v(u + out)
        return self._mlp_and_norm(v, post=post), new
