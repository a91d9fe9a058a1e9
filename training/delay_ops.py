"""Delay convolution primitives: the Gaussian (learnable-spacing) kernel and a causal
depthwise convolution over time.

Paths (all take x [B, T, H] and return y [B, T, H], y[b, t, c] = sum_k kernel[c, k] x[b, t-k, c]
with x[t < 0] = 0):
- `causal_depthwise_conv_direct`: F.conv1d with groups=H (fast only for short kernels).
- `causal_depthwise_conv_fft`: rfft/irfft along time with a hand-written backward
  (`FFTCausalConvFn`), O(T log T) whatever K is; the default for K > 16.
- `tap_conv`: sparse taps at per-channel integer delays (one gather + M multiply-adds),
  exact arithmetic. `sparse_delay_conv` (hardened integer delays) and the truncated
  Gaussian path of `delay_conv` are built on it.
- `delay_conv(x, positions, weights, sigma, span)`: the learnable-spacing convolution; picks
  the truncated sparse-tap path when the Gaussians are narrow enough for it to be cheaper,
  the dense kernel + FFT/direct otherwise.
"""
import math

import torch
import torch.nn.functional as F


def gaussian_kernel(positions, weights, sigma, span):
    """Dense kernel from N Gaussian taps per channel.

    positions, weights: [H, N] (positions in frames, i.e. delays, within [0, span-1]);
    sigma: float (frames); span: int K. Returns kernel [H, K] with
    kernel[c, k] = sum_e w[c, e] * G(p[c, e] - k) / sum_j G(p[c, e] - j).
    """
    k = torch.arange(span, dtype=positions.dtype, device=positions.device)
    gauss = torch.exp(-0.5 * ((positions.unsqueeze(-1) - k) / sigma) ** 2)   # [H, N, K]
    gauss = gauss / gauss.sum(-1, keepdim=True).clamp_min(1e-12)
    return torch.einsum("hn,hnk->hk", weights, gauss)


def causal_depthwise_conv_direct(x, kernel):
    """x [B, T, H], kernel [H, K] -> y [B, T, H]; y[t] = sum_k kernel[:, k] * x[t - k]."""
    H, K = kernel.shape
    xt = F.pad(x.transpose(1, 2), (K - 1, 0))                  # [B, H, T + K - 1]
    w = kernel.flip(-1).unsqueeze(1)                            # conv1d correlates: flip
    return F.conv1d(xt, w, groups=H).transpose(1, 2)


def fft_length(T: int, K: int) -> int:
    """FFT size n >= T + K - 1 (no circular wrap-around into the first T outputs): the
    smallest 2^a * m with m in {1, 3, 5, 9, 15}. pocketfft is faster on these than on the
    next power of two (e.g. T + K - 1 = 911: n = 960 runs rfft + irfft in ~6 ms against
    ~8 ms for 1024 at B*H = 2048 rows, 2 threads)."""
    need = max(1, T + K - 1)
    best = 1 << (need - 1).bit_length()
    for m in (3, 5, 9, 15):
        n = m
        while n < need:
            n *= 2
        best = min(best, n)
    return best


class FFTCausalConvFn(torch.autograd.Function):
    """Causal depthwise convolution through rfft/irfft along time, hand-written backward.

    Works in the [B, H, T] orientation (FFT over contiguous rows). With n >= T + K - 1:
      y  = irfft(X * W)[:T]                      (X = rfft(x, n), W = rfft(kernel, n))
      dx = irfft(GY * conj(W))[:T]               (correlation with the kernel)
      dk = irfft(sum_b conj(X) * GY)[:K]         (correlation of dL/dy with x)
    i.e. 4 large FFTs for forward + backward, no autograd bookkeeping over complex tensors.
    """

    @staticmethod
    def forward(ctx, x, kernel):
        B, T, H = x.shape
        K = kernel.shape[1]
        n = fft_length(T, K)
        X = torch.fft.rfft(x.transpose(1, 2), n=n, dim=-1)       # [B, H, F]
        W = torch.fft.rfft(kernel, n=n, dim=-1)                    # [H, F]
        y = torch.fft.irfft(X.mul_(W) if not ctx.needs_input_grad[1] else X * W, n=n, dim=-1)
        ctx.save_for_backward(X if ctx.needs_input_grad[1] else None, W)
        ctx.dims = (T, K, n)
        return y[..., :T].transpose(1, 2)

    @staticmethod
    def backward(ctx, gy):
        X, W = ctx.saved_tensors
        T, K, n = ctx.dims
        GY = torch.fft.rfft(gy.transpose(1, 2), n=n, dim=-1)     # [B, H, F]
        dx = dk = None
        if ctx.needs_input_grad[1]:
            dk = torch.fft.irfft(torch.linalg.vecdot(X, GY, dim=0), n=n, dim=-1)[:, :K]
        if ctx.needs_input_grad[0]:
            dx = torch.fft.irfft(GY.mul_(W.conj()), n=n, dim=-1)[..., :T].transpose(1, 2)
        return dx, dk


def causal_depthwise_conv_fft(x, kernel):
    """Same as the direct form, through rfft/irfft along time (O(T log T) per channel)."""
    return FFTCausalConvFn.apply(x, kernel)


def causal_depthwise_conv(x, kernel):
    """Causal depthwise convolution; picks the direct form for short kernels, FFT otherwise."""
    if kernel.shape[1] <= 16:
        return causal_depthwise_conv_direct(x, kernel)
    return causal_depthwise_conv_fft(x, kernel)


# --------------------------------------------------------------------------------------------
# Sparse taps: y[b, t, c] = sum_m values[c, m] * x[b, t - delays[c, m], c]
# --------------------------------------------------------------------------------------------

def _gather_taps(xr, delays, T, reverse=False):
    """xr: [B, H, T] rows. Returns R [B, H, M, T] with R[b, c, m, t] = xr[b, c, t - d[c, m]]
    (0 where t - d < 0), or with reverse=True xr[b, c, t + d[c, m]] (0 where t + d >= T)."""
    B, H, _ = xr.shape
    M = delays.shape[1]
    D = int(delays.max()) if delays.numel() else 0
    t = torch.arange(T, device=xr.device)
    if reverse:
        xp = F.pad(xr, (0, D))
        idx = delays.unsqueeze(-1) + t                            # [H, M, T]
    else:
        xp = F.pad(xr, (D, 0))
        idx = (D - delays).unsqueeze(-1) + t
    idx = idx.reshape(1, H, M * T).expand(B, H, M * T)
    return torch.gather(xp, 2, idx).view(B, H, M, T)


class TapConvFn(torch.autograd.Function):
    """y[b, t, c] = sum_m values[c, m] x[b, t - delays[c, m], c], delays int in [0, inf).

    Forward: one gather of the M delayed copies of every row ([B, H, M, T]) and M fused
    multiply-adds. Backward: dx by the same gather on dL/dy read forwards in time;
    dvalues = sum over (b, t) of dL/dy times the saved delayed copies."""

    @staticmethod
    def forward(ctx, x, delays, values):
        B, T, H = x.shape
        M = delays.shape[1]
        R = _gather_taps(x.transpose(1, 2), delays, T)                     # [B, H, M, T]
        y = _weighted_taps(R, values.to(x.dtype))
        ctx.save_for_backward(R if ctx.needs_input_grad[2] else None, delays, values)
        return y.transpose(1, 2)

    @staticmethod
    def backward(ctx, gy):
        R, delays, values = ctx.saved_tensors
        B, T, H = gy.shape
        M = delays.shape[1]
        gyr = gy.transpose(1, 2)                                           # [B, H, T]
        dx = dv = None
        if ctx.needs_input_grad[2]:
            dv = torch.empty(H, M, dtype=gy.dtype, device=gy.device)
            prod = torch.empty(B, H, T, dtype=gy.dtype, device=gy.device)
            for m in range(M):
                torch.mul(R[:, :, m], gyr, out=prod)
                torch.sum(prod, dim=(0, 2), out=dv[:, m])
            dv = dv.to(values.dtype)
        if ctx.needs_input_grad[0]:
            G = _gather_taps(gyr, delays, T, reverse=True)                     # [B, H, M, T]
            dx = _weighted_taps(G, values.to(gy.dtype)).transpose(1, 2)
        return dx, None, dv


def _weighted_taps(R, values):
    """R [B, H, M, T], values [H, M] -> sum_m values[:, m] R[:, :, m]  ([B, H, T])."""
    M = R.shape[2]
    y = R[:, :, 0] * values[:, 0, None]
    for m in range(1, M):
        y.addcmul_(R[:, :, m], values[:, m, None])
    return y


def tap_conv(x, delays, values):
    """Sparse taps at integer delays: x [B, T, H], delays int [H, M] (>= 0), values [H, M]
    -> y [B, T, H], y[b, t, c] = sum_m values[c, m] x[b, t - delays[c, m], c]. Exact
    arithmetic (M multiply-adds per output); differentiable in x and values."""
    delays = delays.to(torch.long)
    if delays.numel() and int(delays.min()) < 0:
        raise ValueError("tap_conv: delays must be >= 0 (causal)")
    return TapConvFn.apply(x, delays, values)


def sparse_delay_conv(x, delays, weights):
    """Hardened delay convolution: x [B, T, H], delays int [H, N] (>= 0), weights [H, N]
    -> y [B, T, H], y[b, t, c] = sum_e weights[c, e] * x[b, t - delays[c, e], c].
    Equal to causal_depthwise_conv(x, kernel) with kernel = scatter of the weights at the
    delays; exact (no Gaussian, no FFT rounding); gradients to x and weights."""
    return tap_conv(x, delays, weights)


# --------------------------------------------------------------------------------------------
# Learnable-spacing convolution with path selection
# --------------------------------------------------------------------------------------------

def gaussian_radius(sigma: float, tol: float = 1e-7) -> int:
    """Truncation radius w (frames) of the sparse-tap path.

    The window of tap e is the 2w + 1 integer delays centred on round(p_e) (shifted to stay
    inside [0, span-1]). Every dropped delay j has |j - p_e| >= w + 0.5, while the
    normaliser Z_e = sum_j G(p_e - j) over the whole span is >= G(0.5). The dropped mass
    relative to Z_e is therefore at most
        bound(w) = 2 * sum_{m>=0} exp(-((w + 0.5 + m)^2 - 0.25) / (2 sigma^2)),
    and w is the smallest integer with bound(w) <= tol. Consequence: per channel,
    sum_k |kernel_trunc[k] - kernel_dense[k]| <= tol * sum_e |w_e|, so
    |y_trunc - y_dense| <= tol * sum_e |w_e| * max|x|.  (sigma 0.23 -> w 1, 0.5 -> 3,
    0.8 -> 5, 1 -> 6.)"""
    s2 = 2.0 * float(sigma) ** 2
    w = 0
    while True:
        bound, m = 0.0, 0
        while True:
            term = math.exp(-((w + 0.5 + m) ** 2 - 0.25) / s2)
            bound += 2 * term
            if term < 1e-30 or m > 10000:
                break
            m += 1
        if bound <= tol:
            return w
        w += 1


def gaussian_window_taps(positions, weights, sigma, span, radius):
    """The non-negligible part of the Gaussian kernel as sparse taps.

    Returns (delays [H, N * W] long, values [H, N * W]) with W = 2 * radius + 1 (clipped to
    span): values[c, e*W + j] = w[c, e] G(p - d) / sum_{j' in 0..span-1} G(p - j') at
    d = start[c, e] + j, start = clamp(round(p) - radius, 0, span - W). The normaliser is the
    dense one (over the whole span), so every kept entry equals the dense kernel's term;
    differentiable in positions and weights."""
    H, N = positions.shape
    W = min(2 * radius + 1, span)
    start = (positions.detach().round().long() - radius).clamp(0, span - W)     # [H, N]
    d = start.unsqueeze(-1) + torch.arange(W, device=positions.device)       # [H, N, W]
    k = torch.arange(span, dtype=positions.dtype, device=positions.device)
    log_z = torch.logsumexp(-0.5 * ((positions.unsqueeze(-1) - k) / sigma) ** 2, dim=-1)
    u = (positions.unsqueeze(-1) - d.to(positions.dtype)) / sigma
    vals = weights.unsqueeze(-1) * torch.exp(-0.5 * u * u - log_z.unsqueeze(-1))
    return d.reshape(H, N * W), vals.reshape(H, N * W)


# Path choice: a cost model fitted on the 2-core reference machine (docs/speed.md), forward +
# backward, float32: the sparse-tap path costs ~SPARSE_NS_PER_TAP ns per tap and output
# element (gather bound), the FFT path ~FFT_NS_PER_POINT ns per n*log2(n) per row.
# At B=32, H=64, T=784, N=4 this keeps FFT for every sigma (even 4 integer taps gather slower
# than one FFT pass); the sparse path wins for very few taps on long spans.
SPARSE_NS_PER_TAP = 3.5
FFT_NS_PER_POINT = 0.6


def choose_path(T: int, span: int, taps: int) -> str:
    """'sparse' or 'dense' for a sequence of length T, span K and `taps` sparse taps."""
    if span <= 16:
        return "dense"                                 # direct conv1d, cheap for short K
    n = fft_length(T, span)
    sparse = SPARSE_NS_PER_TAP * taps * T
    fft = FFT_NS_PER_POINT * n * math.log2(n)
    return "sparse" if sparse < fft else "dense"


def delay_conv(x, positions, weights, sigma, span, tol=1e-7, path="auto"):
    """Learnable-spacing causal depthwise convolution.

    x [B, T, H]; positions, weights [H, N]; sigma float (frames); span int K.
    Equals causal_depthwise_conv(x, gaussian_kernel(positions, weights, sigma, span)) within
    tol * sum_e |w_e| * max|x| (sparse path; see gaussian_radius) or float rounding (dense).
    path: "auto" | "sparse" | "fft" | "direct" | "dense" (dense = causal_depthwise_conv's own
    choice). Gradients flow to x, positions and weights on every path."""
    H, N = positions.shape
    if path == "auto":
        radius = gaussian_radius(sigma, tol)
        taps = N * min(2 * radius + 1, span)
        path = choose_path(x.shape[1], span, taps) if taps < span else "dense"
    if path == "sparse":
        delays, values = gaussian_window_taps(positions, weights, sigma, span,
                                              gaussian_radius(sigma, tol))
        return tap_conv(x, delays, values)
    kernel = gaussian_kernel(positions, weights, sigma, span)
    if path == "fft":
        return causal_depthwise_conv_fft(x, kernel)
    if path == "direct":
        return causal_depthwise_conv_direct(x, kernel)
    if path == "dense":
        return causal_depthwise_conv(x, kernel)
    raise ValueError(f"delay_conv: unknown path {path!r}")
