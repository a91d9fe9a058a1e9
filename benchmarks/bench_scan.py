"""Benchmark: one minGRU layer, forward + backward of out.sum(), float32, CPU.

Variants (same input x [B, T, H] with requires_grad, same width H):
  ours            Linear(H, 2H) -> split (z_pre, h_pre) -> training.scan.mingru_scan
  mingru_pytorch  minGRU_pytorch.minGRU(dim=H, expansion_factor=1.0)  (Linear(H, 2H, bias=False)
                  + its log-space Heinsen scan; no output projection at expansion 1.0)
  torch_gru       torch.nn.GRU(H, H, batch_first=True)
  ours_log        (--with-log) Linear(H, 2H) + training.scan.mingru_scan_log (float64 inside)
  ours_loop       (--with-loop) Linear(H, 2H) + training.scan.mingru_scan_loop (slow)

Usage: python -m benchmarks.bench_scan [--threads 2] [--repeats 9] [--json OUT]
       [--configs 784x32x64,1024x32x64,...] [--with-log] [--with-loop]
Each config is TxBxH. Variants run round-robin; the table gives medians and the ratio
peer_median / ours_median (> 1: ours is faster).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmarks._timing import benchmark_args, run_benchmark
from mgrade_edge.training.scan import mingru_scan, mingru_scan_log, mingru_scan_loop

DEFAULT_CONFIGS = "784x32x64,1024x32x64,784x32x32,784x32x128"


class OurLayer(nn.Module):
    def __init__(self, H: int, scan=mingru_scan):
        super().__init__()
        self.proj = nn.Linear(H, 2 * H)
        self.scan = scan

    def forward(self, x):
        z_pre, h_pre = self.proj(x).chunk(2, dim=-1)
        return self.scan(z_pre, h_pre)


def make_variants(H: int, with_log: bool, with_loop: bool) -> dict:
    from minGRU_pytorch import minGRU
    variants = {"ours": OurLayer(H), "mingru_pytorch": minGRU(dim=H, expansion_factor=1.0),
                "torch_gru": nn.GRU(H, H, batch_first=True)}
    if with_log:
        variants["ours_log"] = OurLayer(H, mingru_scan_log)
    if with_loop:
        variants["ours_loop"] = OurLayer(H, mingru_scan_loop)
    return variants


def fwd_bwd(module: nn.Module, x: torch.Tensor):
    def run():
        x.grad = None
        module.zero_grad(set_to_none=True)
        out = module(x)
        if isinstance(out, tuple):          # nn.GRU returns (output, h_n)
            out = out[0]
        out.sum().backward()
    return run


def main(argv=None):
    ap = benchmark_args(__doc__, DEFAULT_CONFIGS, "TxBxH")
    ap.add_argument("--with-log", action="store_true")
    ap.add_argument("--with-loop", action="store_true")
    args = ap.parse_args(argv)

    def make_fns(T, B, H):
        x = torch.randn(B, T, H, requires_grad=True)
        return {k: fwd_bwd(m, x) for k, m in make_variants(H, args.with_log,
                                                           args.with_loop).items()}
    run_benchmark("bench_scan", "minGRU layer fwd+bwd", args, "TxBxH", make_fns)


if __name__ == "__main__":
    main()
