"""Delay convolution primitives: the Gaussian (learnable-spacing) kernel and a causal
depthwise convolution over time."""
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


def causal_depthwise_conv_fft(x, kernel):
    """Same as the direct form, through rfft along time (O(T log T) per channel)."""
    T, K = x.shape[1], kernel.shape[1]
    n = 1 << (T + K - 1).bit_length()
    X = torch.fft.rfft(x, n=n, dim=1)                           # [B, F, H]
    W = torch.fft.rfft(kernel.t(), n=n, dim=0)                  # [F, H]
    return torch.fft.irfft(X * W, n=n, dim=1)[:, :T]


def causal_depthwise_conv(x, kernel):
    """Causal depthwise convolution; picks the direct form for short kernels, FFT otherwise."""
    if kernel.shape[1] <= 16:
        return causal_depthwise_conv_direct(x, kernel)
    return causal_depthwise_conv_fft(x, kernel)
