"""MGradeNet: encoder -> L mGRADE blocks -> readout at every step (averaged over time for
sequence classification).

The two baselines are switches of the same network: `use_rnn = false` (pure convolutional,
with learnable spacings or a plain dilated conv) and `use_conv = false` (pure recurrent).

    net = MGradeNet(cfg.model, n_in, n_classes, readout="mean")
    logits = net(x)                          # x [B, T, n_in] -> [B, n_classes]
    state = net.init_state(B)
    logits_t, state = net.step(x[:, t], state)   # == net(x[:, :t+1]) (eval mode)
    logits = net(x_padded, lengths)          # variable length: each sequence over its own steps

With input_mean / input_std (per-channel statistics of the training split, kept in the
checkpoint's task_info) the network first normalises its input, (x - mean) / std, so it takes
the data's own units. The int8 model keeps that normalisation outside its graph: the device
normalises each float frame before quantising it (convert/input_norm.py), so the graph's input
x is the normalised value (`graph_input`). Only `fold_norm` (convert/raw_input.py: raw 8-bit
codes) folds it into the encoder instead.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mgrade_edge.training.config import ConfigError, ModelConfig
from mgrade_edge.training.layers import DelayConv, MGradeBlock, norm_affine
from mgrade_edge.training.qat import ActRange, fake_quant_rows, set_act_quant

READOUTS = ("mean", "per_step")


def sigma_at(cfg: ModelConfig, progress: float) -> float:
    """Gaussian width (frames) after `progress` in [0, 1] of training: linear from
    sigma_start (0 -> K/3) to sigma_end over the first sigma_anneal_frac, then constant."""
    start = cfg.sigma_start if cfg.sigma_start > 0 else cfg.kernel_span / 3.0
    if cfg.sigma_anneal_frac <= 0:
        return cfg.sigma_end
    frac = min(1.0, max(0.0, progress) / cfg.sigma_anneal_frac)
    return start + (cfg.sigma_end - start) * frac


class MGradeNet(nn.Module):
    def __init__(self, cfg: ModelConfig, n_in: int, n_classes: int, readout: str = "mean",
                 input_mean=None, input_std=None):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"readout {readout!r} is not one of {READOUTS}")
        if not cfg.encoder and n_in != cfg.d_model:
            raise ConfigError(f"model.encoder = false needs the input width ({n_in}) to equal "
                              f"model.d_model ({cfg.d_model})")
        self.cfg, self.n_in, self.n_classes, self.readout_mode = cfg, n_in, n_classes, readout
        self.encoder = nn.Linear(n_in, cfg.d_model) if cfg.encoder else nn.Identity()
        sigma = sigma_at(cfg, 0.0)
        self.blocks = nn.ModuleList(MGradeBlock(cfg, sigma) for _ in range(cfg.n_layers))
        self.readout = nn.Linear(cfg.d_model, n_classes)
        self.normalizes = input_mean is not None
        self.fold_norm = False     # True: the graph takes x itself, the encoder folds 1 / std
        if self.normalizes:    # not in state_dict: the stats live in the checkpoint's task_info
            mean = torch.as_tensor(input_mean, dtype=torch.float32)
            std = torch.as_tensor(input_std, dtype=torch.float32)
            if mean.shape != (n_in,) or std.shape != (n_in,) or not bool((std > 0).all()):
                raise ConfigError(f"input_mean / input_std must be [{n_in}] with std > 0")
            self.register_buffer("input_mean", mean, persistent=False)
            self.register_buffer("input_std", std, persistent=False)
        self.qat = False
        self.aq_enc, self.aq_logits = ActRange(), ActRange()   # encoder output, step logits

    # -- quantization-aware training (training.qat) -----------------------------------------
    def set_qat(self, on: bool = True, acts: bool = False, momentum: float = 0.9,
                form: str = "int8"):
        """Compute with the weights the int8 model deploys (folded norms, per-channel int8
        fake quantization, straight-through gradients; batch norms at their running
        statistics) or, with on = False, with the float ones. Not stored in state_dict.
        acts (with on): also put the int8 graph's non-recurrent activations on their
        calibrated per-tensor int8 grids (training.qat.ActRange, range EMA `momentum`); form:
        the converter's form (convert/forms.py) whose int16 tensors train on int16 grids
        (training.qat.WIDE_ACTS)."""
        for block in self.blocks:
            block.set_qat(on)
        self.qat = on
        set_act_quant(self, on and acts, momentum, form)
        return self

    def qat_encoder(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder on the graph's input (`graph_input`) as the converter writes it
        ([H, n_in], [H]), the weight fake-quantized: W, b; with fold_norm
        (W / std, b - W (mean / std)). Needs an encoder."""
        w, b = self.encoder.weight, self.encoder.bias
        if self.normalizes and self.fold_norm:    # W ((x - m) / s) + b = (W / s) x + (b - W m / s)
            w, b = w / self.input_std[None, :], b - w @ (self.input_mean / self.input_std)
        return fake_quant_rows(w), b

    def qat_readout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The readout with the last block's post-norm folded, (Wr s, Wr t + br) ([n, H],
        [n]), the weight fake-quantized."""
        w, b = self.readout.weight, self.readout.bias
        post = norm_affine(self.blocks[-1].norm_post)
        if post is not None:
            s, t = post
            w, b = w * s[None, :], w @ t + b
        return fake_quant_rows(w), b

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n_in] in the data's units -> encoder output [..., H]."""
        if not (self.qat and isinstance(self.encoder, nn.Linear)):
            return self.encoder(self.normalize(x))
        return self.aq_enc(F.linear(self.graph_input(x), *self.qat_encoder()))

    def _readout(self, h: torch.Tensor) -> torch.Tensor:
        """h [..., H] -> logits. Under QAT h is the last block's output before its post-norm,
        which the readout folds in."""
        return self.aq_logits(F.linear(h, *self.qat_readout())) if self.qat else self.readout(h)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n_in] in the data's units -> (x - mean) / std (identity without stats)."""
        return (x - self.input_mean) / self.input_std if self.normalizes else x

    def graph_input(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., n_in] in the data's units -> what the int8 step graph's input x holds: the
        normalised value, or x itself with fold_norm (or without statistics)."""
        return x if self.fold_norm else self.normalize(x)

    # -- delays --------------------------------------------------------------------------
    def delay_convs(self) -> list[DelayConv]:
        return [b.conv for b in self.blocks if b.conv is not None]

    def set_sigma(self, sigma: float):
        for conv in self.delay_convs():
            conv.sigma.fill_(sigma)

    def clamp_positions(self):
        for conv in self.delay_convs():
            conv.clamp_positions()

    def harden(self):
        """Round every learned position to an integer delay (exact sparse taps)."""
        for conv in self.delay_convs():
            conv.harden()
        return self

    @property
    def hardened(self) -> bool:
        return all(bool(c.hardened) for c in self.delay_convs())

    # -- parallel path -------------------------------------------------------------------
    @staticmethod
    def step_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
        """lengths int [B] -> bool [B, T], True at each sequence's own steps t < length."""
        return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, n_in] -> last block's output [B, T, H]. With mask [B, T] (real steps
        True, padding after them) every layer's padded steps are set to 0 and excluded from
        batch-norm statistics: padding never reaches a real step (the layers are causal)."""
        h = self._encode(x)
        keep = None if mask is None else mask.unsqueeze(-1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h = block(h if keep is None else torch.where(keep, h, 0.0), mask,
                      post=not (self.qat and i == last))
        return h if keep is None else torch.where(keep, h, 0.0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                per_step: bool = False) -> torch.Tensor:
        """x [B, T, n_in] -> logits [B, n] ("mean") or [B, T, n] ("per_step" or per_step).
        lengths (int [B], optional): each sequence's own steps; the mean readout averages
        over them, and padded steps never influence any real step's output."""
        if lengths is not None and bool((lengths >= x.shape[1]).all()):
            lengths = None                    # nothing padded in this batch
        mask = None if lengths is None else self.step_mask(lengths, x.shape[1])
        h = self.features(x, mask)
        if per_step or self.readout_mode == "per_step":
            return self._readout(h)
        if self.aq_logits.active:          # the device averages the int8 step logits
            logits = self._readout(h)
            if mask is None:
                return logits.mean(dim=1)
            return (logits * mask.unsqueeze(-1)).sum(dim=1) / \
                lengths.clamp_min(1).to(h.dtype)[:, None]
        if mask is None:
            return self._readout(h.mean(dim=1))    # == mean over t of readout(h_t): linear
        mean = h.sum(dim=1) / lengths.clamp_min(1).to(h.dtype)[:, None]
        return self._readout(mean)

    # -- streaming path --------------------------------------------------------------------
    def init_state(self, batch: int) -> dict:
        """Per-layer delay frames and minGRU state, plus the readout sum and step count."""
        return {"layers": [b.init_state(batch) for b in self.blocks],
                "acc": self.readout.weight.new_zeros(batch, self.n_classes), "t": 0}

    def step(self, x_t: torch.Tensor, state: dict):
        """x_t [B, n_in] -> (logits_t [B, n], new state). logits_t is what forward would
        return on the sequence so far: the running mean of the step readouts ("mean") or
        this step's readout ("per_step")."""
        h = self._encode(x_t)
        layers = []
        last = len(self.blocks) - 1
        for i, (block, layer_state) in enumerate(zip(self.blocks, state["layers"])):
            h, new = block.step(h, layer_state, post=not (self.qat and i == last))
            layers.append(new)
        logits = self._readout(h)
        acc, t = state["acc"] + logits, state["t"] + 1
        out = acc / t if self.readout_mode == "mean" else logits
        return out, {"layers": layers, "acc": acc, "t": t}

    # -- bookkeeping -----------------------------------------------------------------------
    def param_groups(self, weight_decay: float, lr: float, pos_lr_mult: float) -> list[dict]:
        """AdamW groups: weight matrices with decay; biases, norms and tap weights without;
        positions at pos_lr_mult x lr without decay."""
        decay, no_decay, positions = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith("positions"):
                positions.append(p)
            elif p.ndim >= 2 and not name.endswith("conv.weight"):
                decay.append(p)
            else:
                no_decay.append(p)
        groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
                  {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
        if positions:
            groups.append({"params": positions, "weight_decay": 0.0, "lr": lr * pos_lr_mult})
        return groups

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
