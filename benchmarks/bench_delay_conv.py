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

import argparse

import torch
import torch.nn.functional as F

from benchmarks._timing import environment, print_table, time_round_robin, write_json
from training.delay_ops import (causal_depthwise_conv_direct, delay_conv, gaussian_kernel,
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated TxBxHxKxN")
    ap.add_argument("--sigma", type=float, default=0.8)
    ap.add_argument("--sparse-sigma", type=float, default=0.23)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    rows, results = [], []
    for cfg in args.configs.split(","):
        T, B, H, K, N = (int(v) for v in cfg.lower().split("x"))
        timed = time_round_robin(make_variants(T, B, H, K, N, args.sigma, args.sparse_sigma),
                                 args.repeats, args.warmup)
        ours = timed["ours"]["median_ms"]
        for name, t in timed.items():
            row = {"T": T, "B": B, "H": H, "K": K, "N": N, "variant": name,
                   "median_ms": t["median_ms"], "min_ms": t["min_ms"],
                   "ours_speedup": t["median_ms"] / ours}
            rows.append(row)
            results.append({**row, "times_ms": t["times_ms"]})
    print_table(f"delay conv fwd+bwd, float32, {args.threads} threads, median of {args.repeats}"
                f" (sigma {args.sigma}; ours_speedup = variant / ours)", rows,
                [("T", "T"), ("B", "B"), ("H", "H"), ("K", "K"), ("N", "N"),
                 ("variant", "variant"), ("median_ms", "median ms"), ("min_ms", "min ms"),
                 ("ours_speedup", "ours speedup")])
    if args.json:
        write_json(args.json, {"benchmark": "bench_delay_conv", "env": environment(),
                               "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
