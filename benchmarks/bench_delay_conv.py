"""Benchmark: learnable-spacing delay convolution, forward + backward of out.sum(), float32, CPU.

Setting (defaults): input 32 x 64 channels x T=784, span K=128, N=4 taps per channel,
depthwise, causal. Variants (gradients to the input and to every parameter):
  dcls          DCLS.construct.modules.Dcls1d(64, 64, kernel_count=4, dilated_kernel_size=128,
                groups=64, version='gauss') on the input left-padded by K-1 (causal), [B, C, T]
  dense_conv1d  gaussian_kernel + causal_depthwise_conv_direct (F.conv1d, what Dcls1d does)
  ours          delay_conv(x, positions, weights, sigma, K) with the automatic path choice
                (at the default sigma 0.8 and N=4: dense kernel + the FFT path)
  ours_fft      delay_conv(..., path="fft"): gaussian_kernel + FFTCausalConvFn
  ours_sparse   delay_conv(..., path="sparse") at sigma=--sparse-sigma (0.23, the annealing
                floor): truncated sparse taps (N * (2w+1) gathered copies)
  hardened      sparse_delay_conv(x, delays, weights): integer delays after harden()

Usage: python -m benchmarks.bench_delay_conv [--threads 2] [--repeats 9] [--json OUT]
       [--configs 784x32x64x128x4,...]   (TxBxHxKxN)
Ratios: ours_speedup = variant median / ours median (> 1: ours is faster).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks._timing import benchmark_args, run_benchmark
from mgrade_edge.training.delay_ops import (causal_depthwise_conv_direct, delay_conv, gaussian_kernel,
                                sparse_delay_conv)

DEFAULT_CONFIGS = "784x32x64x128x4,1024x32x64x128x4,784x32x64x32x4"


def make_variants(T, B, H, K, N, sigma, sparse_sigma):
    from DCLS.construct.modules import Dcls1d
    x = torch.randn(B, T, H, requires_grad=True)
    x_bct = x.detach().transpose(1, 2).contiguous().requires_grad_()
    pos = (torch.rand(H, N) * (K - 1)).requires_grad_()
    w = (torch.randn(H, N) / N ** 0.5).requires_grad_()
    delays = pos.detach().round().long()
    dcls = Dcls1d(H, H, kernel_count=N, dilated_kernel_size=K, groups=H, version="gauss")
    leaves = [x, x_bct, pos, w]

    def run(fn):
        def go():
            for p in leaves:
                p.grad = None
            dcls.zero_grad(set_to_none=True)
            fn().sum().backward()
        return go

    return {
        "ours": run(lambda: delay_conv(x, pos, w, sigma, K)),
        "dcls": run(lambda: dcls(F.pad(x_bct, (K - 1, 0)))),
        "dense_conv1d": run(lambda: causal_depthwise_conv_direct(
            x, gaussian_kernel(pos, w, sigma, K))),
        "ours_fft": run(lambda: delay_conv(x, pos, w, sigma, K, path="fft")),
        "ours_sparse": run(lambda: delay_conv(x, pos, w, sparse_sigma, K, path="sparse")),
        "hardened": run(lambda: sparse_delay_conv(x, delays, w)),
    }


def main(argv=None):
    ap = benchmark_args(__doc__, DEFAULT_CONFIGS, "TxBxHxKxN")
    ap.add_argument("--sigma", type=float, default=0.8)
    ap.add_argument("--sparse-sigma", type=float, default=0.23)
    args = ap.parse_args(argv)
    run_benchmark("bench_delay_conv", f"delay conv fwd+bwd (sigma {args.sigma})", args,
                  "TxBxHxKxN", lambda T, B, H, K, N: make_variants(T, B, H, K, N, args.sigma,
                                                                    args.sparse_sigma))


if __name__ == "__main__":
    main()
