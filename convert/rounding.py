"""Data-aware rounding of the int8 weights (GPTQ): the same grids, fewer output errors.

The converter stores every weight per output channel (row) as symmetric int8, scale[r] =
max |w[r]| / 127 (training/qat.py). Rounding each weight to its nearest code minimises each
weight's own error; what the network feels is the error of a layer's *output* on the inputs it
actually sees, e = (W_q - W) x. Over calibration inputs with second moment Hx = E[x x^T] that is

    err(W_q) = sum_r (W_q - W)[r] Hx (W_q - W)[r]^T.

GPTQ (Frantar et al. 2023, after Optimal Brain Quantization) rounds the columns one at a time
and moves each column's rounding error onto the columns not yet rounded, in the direction that
the inverse of Hx says cancels it best (the Cholesky factor of Hx^-1 gives every update in one
pass). The grid stays the same: each row keeps its scale, as the row's largest code stays at
+-127 (forced back where the updates moved it), so the TFLite converter, which derives the
scale from the weights it is given, finds exactly these codes again.

Hx comes from the float network's own inputs to each layer on calibration sequences (padding
excluded): the encoder's raw input, each delay conv channel's N tapped frames (a separate
N x N Hx per channel: a depthwise conv's rows see different inputs), the minGRU projection's
input u, the MLP's fc1 input v (the pre-norm is folded into fc1), fc2's input, and the readout's
input (the last block's output before its post-norm, which the readout folds). The 1x1 post-norm
between layers has one tap per channel and is exact either way. A tensor keeps nearest rounding
where GPTQ would not lower its error (a guard, reported).

    hx = input_moments(net, x_cal, lengths)      # after harden() and to_raw_units()
    report = round_spec(spec, hx)                # spec's weights now lie on their int8 grids
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from mgrade_edge.convert.spec import StepSpec

QMAX = 127
DAMP = 0.01             # Hx += DAMP * mean(diag Hx) * I: numerically safe, the usual GPTQ value
BATCH = 16              # calibration sequences per forward pass (fewer for long sequences)
STEPS_PER_PASS = 50_000  # at most this many steps (sequences x length) per forward pass
CHUNK_ROWS = 8192       # rows per float64 product when accumulating moments


def row_grid(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [R, C] -> (nearest codes [R, C] float, scale [R] float64), as the TFLite converter
    quantizes a per-channel weight from its float32 constant (training.qat.quant_rows)."""
    from mgrade_edge.training.qat import quant_rows

    q, s = quant_rows(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)))
    return q.numpy().astype(np.float64), s.numpy().astype(np.float64)


def output_error(w: np.ndarray, wq: np.ndarray, hx: np.ndarray) -> float:
    """sum_r (wq - w)[r] hx (wq - w)[r]^T: the mean squared output error over the inputs;
    hx [C, C] shared by the rows, or [R, C, C] one per row."""
    d = wq - w
    return float(np.einsum("rc,cd,rd->" if hx.ndim == 2 else "rc,rcd,rd->", d, hx, d))


def _inverse_cholesky(hx: np.ndarray, damp: float) -> np.ndarray | None:
    """Upper Cholesky factor U of (hx + damped diagonal)^-1 (U^T U = Hinv), None if singular
    even after raising the damping."""
    h = hx.copy()
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0                  # an input that is always 0: nothing to compensate
    mean = float(np.mean(np.diag(h)))
    for factor in (1.0, 10.0, 100.0):
        try:
            hd = h + damp * factor * mean * np.eye(len(h))
            inv = np.linalg.inv(np.linalg.cholesky(hd))
            hinv = inv.T @ inv
            return np.linalg.cholesky(hinv).T
        except np.linalg.LinAlgError:
            continue
    return None


def gptq_codes(w: np.ndarray, hx: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """w [R, C] (float), hx [C, C] input second moment -> codes [R, C] (float integers in
    [-127, 127]) on the rows' nearest-rounding grids (same scales: each row's largest code is
    +-127), chosen column by column to lower the output error. Falls back to nearest rounding
    if hx cannot be factorised."""
    q0, s = row_grid(w)
    u = _inverse_cholesky(np.asarray(hx, np.float64), damp)
    if u is None:
        return q0
    safe = np.where(s > 0, s, 1.0)
    rest = np.asarray(w, np.float64).copy()
    q = np.zeros_like(rest)
    for j in range(rest.shape[1]):
        q[:, j] = np.clip(np.round(rest[:, j] / safe), -QMAX, QMAX)
        err = (rest[:, j] - q[:, j] * safe) / u[j, j]
        rest[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    lost = np.abs(q).max(axis=1) < np.abs(q0).max(axis=1)      # a row whose max code moved
    if lost.any():
        peak = np.abs(q0).argmax(axis=1)
        rows = np.nonzero(lost)[0]
        q[rows, peak[rows]] = q0[rows, peak[rows]]
    return q


def round_weight(w: np.ndarray, hx: np.ndarray) -> tuple[np.ndarray, dict]:
    """w [R, C] with one hx [C, C] (or [R, C, C]: one per row) -> (w on its int8 grid as
    float64 codes x scales, {"nearest": err, "gptq": err, "kept": "gptq" | "nearest"}); a
    non-finite hx keeps nearest rounding (errors None)."""
    q0, s = row_grid(w)
    if not np.isfinite(hx).all():           # nothing sensible to minimise: nearest
        return q0 * s[:, None], {"nearest": None, "gptq": None, "kept": "nearest"}
    q = gptq_codes(w, hx) if hx.ndim == 2 else \
        np.concatenate([gptq_codes(w[r:r + 1], hx[r]) for r in range(len(w))])
    e0, e1 = output_error(w, q0 * s[:, None], hx), output_error(w, q * s[:, None], hx)
    kept = "gptq" if e1 < e0 else "nearest"
    codes = q if kept == "gptq" else q0
    return codes * s[:, None], {"nearest": e0, "gptq": e1, "kept": kept}


# ---------------------------------------------------------------------------------------------
# the layers' input moments

class _Moments:
    """Running sum of x x^T over the real (masked) rows of [B, T, C] batches."""

    def __init__(self):
        self.sum, self.n = None, 0

    def add(self, x: torch.Tensor, mask: torch.Tensor | None):
        flat = x.detach().reshape(-1, x.shape[-1])
        if mask is not None:
            flat = flat[mask.reshape(-1)]
        for i in range(0, len(flat), CHUNK_ROWS):
            part = flat[i:i + CHUNK_ROWS].double()
            self._acc(part.T @ part, len(part))

    def _acc(self, s: torch.Tensor, rows: int):
        self.sum = s if self.sum is None else self.sum + s
        self.n += rows

    def mean(self) -> np.ndarray:
        return (self.sum / max(self.n, 1)).numpy()


class _TapMoments(_Moments):
    """Per channel, the running sum of f f^T over the N frames its delay taps read."""

    def __init__(self, delays: torch.Tensor):
        super().__init__()
        self.delays = delays                           # [H, N] int

    def add(self, x: torch.Tensor, mask: torch.Tensor | None):
        B, T, H = x.shape
        N = self.delays.shape[1]
        D = int(self.delays.max()) if self.delays.numel() else 0
        xp = torch.cat([x.new_zeros(B, D, H), x.detach()], dim=1)               # [B, D + T, H]
        chan = torch.arange(H)[None, :, None]
        step = max(1, CHUNK_ROWS // max(1, B))            # time steps per chunk
        for t0 in range(0, T, step):
            t = torch.arange(t0, min(T, t0 + step))[:, None, None] + D - self.delays[None]
            frames = xp[:, t, chan].double()                                    # [B, t, H, N]
            if mask is not None:
                frames = frames[mask[:, t0:t0 + step]]
            frames = frames.reshape(-1, H, N)
            self._acc(torch.einsum("rhk,rhl->hkl", frames, frames), len(frames))


@torch.no_grad()
def input_moments(net, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict:
    """The hardened float net's layer inputs on sequences x [S, T, n_in] (each over its own
    steps with lengths [S]) -> {spec field name: E[x x^T]} ([C, C]; "taps{i}": [H, N, N]), the
    names of convert.spec's StepSpec / LayerSpec weights ("we", "taps{i}", "wz{i}" = "wh{i}",
    "w1{i}", "w2{i}", "wr")."""
    net.eval()
    moments: dict[str, _Moments] = {}
    mask_now: list = [None]
    hooks = []

    def watch(module, name, moment):
        moments[name] = moment
        hooks.append(module.register_forward_pre_hook(
            lambda _m, args: moment.add(args[0], mask_now[0])))

    for i, block in enumerate(net.blocks):
        if block.conv is not None:
            watch(block.conv, f"taps{i}", _TapMoments(block.conv.delays()))
        if block.rnn is not None:
            watch(block.rnn, f"wz{i}", _Moments())
        watch(block.norm_mlp, f"w1{i}", _Moments())
        watch(block.fc2, f"w2{i}", _Moments())
    watch(net.blocks[-1].norm_post, "wr", _Moments())
    if isinstance(net.encoder, nn.Linear):
        moments["we"] = _Moments()              # the raw input (normalisation is folded)
    per_pass = max(1, min(BATCH, STEPS_PER_PASS // max(1, x.shape[1])))
    try:
        for b in range(0, len(x), per_pass):
            xb = x[b:b + per_pass]
            lb = None if lengths is None else lengths[b:b + per_pass]
            if lb is not None:
                xb = xb[:, :int(lb.max())]
            mask = None if lb is None else net.step_mask(lb, xb.shape[1])
            mask_now[0] = mask
            if "we" in moments:
                moments["we"].add(xb, mask)
            net(xb, lb)
    finally:
        for h in hooks:
            h.remove()
    out = {k: m.mean() for k, m in moments.items() if m.n > 0}
    for k in [k for k in out if k.startswith("wz")]:
        out["wh" + k[2:]] = out[k]
    return out


def round_spec(spec: StepSpec, moments: dict) -> dict:
    """Put every weight of `spec` with an input moment on its int8 grid with GPTQ (in place).
    Returns {name: {"nearest": err, "gptq": err, "kept": ...}} per rounded weight."""
    report = {}

    def do(name, holder, attr):
        w = getattr(holder, attr)
        if w is None or name not in moments:
            return
        new, rep = round_weight(np.asarray(w, np.float64), moments[name])
        setattr(holder, attr, new)
        report[name] = rep

    do("we", spec, "we")
    for i, layer in enumerate(spec.layers):
        do(f"taps{i}", layer, "taps")
        do(f"wz{i}", layer, "wz")
        do(f"wh{i}", layer, "wh")
        do(f"w1{i}", layer, "w1")
        do(f"w2{i}", layer, "w2")
    do("wr", spec, "wr")
    return report


def summary(report: dict) -> str:
    """One line: the total output error with nearest and with GPTQ rounding, as a ratio."""
    if not report:
        return "weight rounding: nearest (nothing to round)"
    ratios = [r["gptq"] / r["nearest"] for r in report.values() if r["nearest"]]
    kept = sum(r["kept"] == "gptq" for r in report.values())
    mid = float(np.median(ratios)) if ratios else 1.0
    return (f"weight rounding: GPTQ on {kept} of {len(report)} weight tensors; output error "
            f"vs nearest rounding: median x{mid:.2f} (min x{min(ratios, default=1.0):.2f})")
