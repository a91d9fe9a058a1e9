"""training/delay_ops.py: FFT path == direct conv, delay_conv (all paths) == dense reference,
sparse_delay_conv exact, truncation bound holds, agreement with DCLS's Dcls1d."""
import math

import pytest
import torch
import torch.nn.functional as F

from mgrade_edge.training.delay_ops import (causal_depthwise_conv, causal_depthwise_conv_direct,
                                causal_depthwise_conv_fft, choose_path, delay_conv, fft_length,
                                gaussian_kernel, gaussian_radius, gaussian_window_taps,
                                sparse_delay_conv, tap_conv)


def _grad(fn, leaves, w):
    out = fn()
    return out, torch.autograd.grad((out * w).sum(), leaves)


@pytest.mark.parametrize("T,K", [(50, 17), (784, 128), (1024, 128), (30, 64), (1, 20)])
def test_fft_equals_direct(T, K):
    torch.manual_seed(T + K)
    x = torch.randn(3, T, 8, requires_grad=True)
    k = (torch.randn(8, K) / math.sqrt(K)).requires_grad_()
    w = torch.randn(3, T, 8)
    ref, gref = _grad(lambda: causal_depthwise_conv_direct(x, k), [x, k], w)
    out, gout = _grad(lambda: causal_depthwise_conv_fft(x, k), [x, k], w)
    assert (out - ref).abs().max() <= 1e-5
    for a, b in zip(gout, gref):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_fft_gradcheck_and_length():
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(causal_depthwise_conv_fft, (x, k))
    for T in range(1, 300, 7):
        for K in (1, 17, 128):
            n = fft_length(T, K)
            assert n >= T + K - 1 and n <= 2 * (T + K)


@pytest.mark.parametrize("sigma", [0.23, 0.5, 0.8, 3.0, 40.0])
@pytest.mark.parametrize("path", ["auto", "sparse", "fft", "direct"])
def test_delay_conv_equals_dense_reference(sigma, path):
    torch.manual_seed(int(sigma * 100))
    B, T, H, K, N = 2, 300, 6, 64, 4
    x = torch.randn(B, T, H, requires_grad=True)
    pos = (torch.rand(H, N) * (K - 1)).requires_grad_()
    with torch.no_grad():                                 # include both ends of the span
        pos[0, 0], pos[1, 0] = 0.0, K - 1.0
    wt = torch.randn(H, N).requires_grad_()
    w = torch.randn(B, T, H)
    leaves = [x, pos, wt]
    ref, gref = _grad(lambda: causal_depthwise_conv_direct(
        x, gaussian_kernel(pos, wt, sigma, K)), leaves, w)
    out, gout = _grad(lambda: delay_conv(x, pos, wt, sigma, K, path=path), leaves, w)
    assert (out - ref).abs().max() <= 1e-5
    for a, b in zip(gout, gref):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("sigma", [0.1, 0.23, 0.5, 0.8, 1.5])
def test_truncation_bound(sigma):
    """Sum of |dropped kernel entries| <= tol * sum |w| (float64, worst fractional offsets)."""
    tol, K = 1e-7, 64
    r = gaussian_radius(sigma, tol)
    pos = torch.tensor([[0.0, 0.5, 10.5, 31.49, 31.5, 63.0, 62.6, 7.3]], dtype=torch.float64)
    wt = torch.ones_like(pos)
    dense = gaussian_kernel(pos, wt, sigma, K)
    d, v = gaussian_window_taps(pos, wt, sigma, K, r)
    trunc = torch.zeros_like(dense).scatter_add_(1, d, v)
    assert (dense - trunc).abs().sum() <= tol * wt.abs().sum()
    assert r <= math.ceil(6 * sigma) + 1


def test_choose_path():
    assert choose_path(784, 128, 4 * 3) == "dense"          # sigma 0.23, N 4: FFT is cheaper
    assert choose_path(784, 8, 1) == "dense"                # short span: direct conv
    assert choose_path(64, 4096, 1) == "sparse"             # one tap on a very long span


@pytest.mark.parametrize("T", [5, 200])
def test_sparse_delay_conv_exact(T):
    torch.manual_seed(T)
    B, H, N, K = 3, 7, 4, 32
    x = torch.randn(B, T, H, dtype=torch.float64, requires_grad=True)
    d = torch.randint(0, K, (H, N))
    d[0] = torch.tensor([0, 0, K - 1, 3])                  # repeated delay, both span ends
    wt = torch.randn(H, N, dtype=torch.float64, requires_grad=True)
    kern = torch.zeros(H, K, dtype=torch.float64).scatter_add(1, d, wt)
    w = torch.randn(B, T, H, dtype=torch.float64)
    ref, gref = _grad(lambda: causal_depthwise_conv_direct(x, kern), [x, wt], w)
    out, gout = _grad(lambda: sparse_delay_conv(x, d, wt), [x, wt], w)
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    for a, b in zip(gout, gref):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    x32 = x.detach().float()
    y32 = sparse_delay_conv(x32, d, wt.detach().float())
    assert (y32 - causal_depthwise_conv(x32, kern.float())).abs().max() <= 1e-5


def test_tap_conv_rejects_negative_delay():
    with pytest.raises(ValueError):
        tap_conv(torch.zeros(1, 4, 2), torch.tensor([[-1], [0]]), torch.ones(2, 1))


# -- agreement with DCLS (Khalfaoui-Hassani et al.), Dcls1d version='gauss' ------------------

def _dcls_and_ours(H=8, N=4, K=128, sig=0.23):
    """Dcls1d(H, H, kernel_count=N, dilated_kernel_size=K, groups=H, version='gauss') builds
    kern[c, 0, i] = sum_e W[c, e] G_e(i) / (sum_i' G_e(i') + 1e-7), G_e(i) = exp(-(i - P_e -
    K//2)^2 / (2 s^2)), s = |SIG| + 0.27, i in 0..K-1, and F.conv1d correlates:
    out[t] = sum_i kern[i] in[t + i]. With the input left-padded by K-1 that is a causal
    convolution with delay k = K-1-i. So: our kernel[c, k] = kern[c, 0, K-1-k], our position
    p = K - 1 - K//2 - P, our sigma = |SIG| + 0.27, our weights = W[:, 0, :]."""
    from DCLS.construct.modules import Dcls1d
    torch.manual_seed(0)
    m = Dcls1d(H, H, kernel_count=N, dilated_kernel_size=K, groups=H, version="gauss")
    with torch.no_grad():
        m.P.uniform_(-(K // 2), K // 2 - 1)                 # positions inside the span
        m.SIG.fill_(sig)
        m.bias.zero_()
    pos = (K - 1 - K // 2 - m.P[0, :, 0, :]).detach()
    return m, pos, m.weight[:, 0, :].detach(), abs(sig) + 0.27


@pytest.mark.parametrize("sig", [0.23, 1.0, 5.0])
def test_kernel_matches_dcls(sig):
    K = 128
    m, pos, wt, sigma = _dcls_and_ours(K=K, sig=sig)
    kern = m.DCK(m.weight, m.P, m.SIG)[:, 0, :].detach()    # [H, K], correlation order
    ours = gaussian_kernel(pos, wt, sigma, K)
    assert (ours - kern.flip(-1)).abs().max() <= 1e-5


def test_conv_matches_dcls():
    K, T = 128, 400
    m, pos, wt, sigma = _dcls_and_ours(K=K)
    x = torch.randn(2, T, 8)
    y_dcls = m(F.pad(x.transpose(1, 2), (K - 1, 0))).transpose(1, 2)
    y_ours = delay_conv(x, pos, wt, sigma, K)
    assert y_dcls.shape == y_ours.shape
    assert (y_ours - y_dcls).abs().max() <= 1e-5
