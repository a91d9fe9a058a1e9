"""Benchmark: one whole mGRADE block, forward + backward of out.sum(), float32, CPU.

The block (docs/design.md): u = x + conv(x); v = u + minGRU(u); w = v + MLP(BN(v)); out = BN(w),
width H, delay span K, N = 4 taps, MLP ratio 2, batch norm. Variants share everything but the
two temporal mixers (same MLP, norms and input x [B, T, H] with requires_grad):
  ours        training.layers.MGradeBlock (dense Gaussian kernel through causal_depthwise_conv,
              direct or FFT by K, + chunked linear-space scan)
  peers       Dcls1d(H, H, kernel_count=N, dilated_kernel_size=K, groups=H, version='gauss')
              on the input left-padded by K-1 + minGRU_pytorch.minGRU(dim=H, expansion 1.0)
  dcls_gru    the same Dcls1d + torch.nn.GRU(H, H)
  ours_loop   (--with-loop) MGradeBlock with the minGRU computed by a plain Python loop over T

Usage: python -m benchmarks.bench_block [--threads 2] [--repeats 9] [--json OUT]
       [--configs 784x32x64x128,...] [--with-loop]      (each config TxBxHxK)
Ratios: ours_speedup = variant median / ours median (> 1: ours is faster).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks._timing import benchmark_args, run_benchmark
from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.layers import MGradeBlock
from mgrade_edge.training.scan import mingru_scan_loop

DEFAULT_CONFIGS = "784x32x64x128,1024x32x64x128,784x32x32x128,784x32x128x128"
N_TAPS = 4


class PeerMixers(nn.Module):
    """Our block's MLP and norms around the peers' delay convolution and recurrence."""

    def __init__(self, ours: MGradeBlock, H: int, K: int, recurrence: str):
        super().__init__()
        from DCLS.construct.modules import Dcls1d
        from minGRU_pytorch import minGRU
        self.block, self.K = ours, K
        self.conv = Dcls1d(H, H, kernel_count=N_TAPS, dilated_kernel_size=K, groups=H,
                           version="gauss")
        self.rnn = (minGRU(dim=H, expansion_factor=1.0) if recurrence == "mingru"
                    else nn.GRU(H, H, batch_first=True))

    def forward(self, x):
        y = self.conv(F.pad(x.transpose(1, 2), (self.K - 1, 0))).transpose(1, 2)
        u = x + y
        r = self.rnn(u)
        v = u + (r[0] if isinstance(r, tuple) else r)
        return self.block._mlp_and_norm(v)


class LoopScan(nn.Module):
    """MGradeBlock's minGRU with the recurrence as a plain loop over time."""

    def __init__(self, block: MGradeBlock):
        super().__init__()
        self.block = block

    def forward(self, x):
        b = self.block
        u = x + b.conv(x)
        z_pre, h_pre = b.rnn.proj(u).chunk(2, dim=-1)
        return b._mlp_and_norm(u + mingru_scan_loop(z_pre, h_pre))


def make_variants(H: int, K: int, with_loop: bool) -> dict:
    cfg = ModelConfig(d_model=H, kernel_span=K, n_taps=N_TAPS, norm="batch")
    ours = MGradeBlock(cfg, sigma=0.8)
    variants = {"ours": ours, "peers": PeerMixers(MGradeBlock(cfg, 0.8), H, K, "mingru"),
                "dcls_gru": PeerMixers(MGradeBlock(cfg, 0.8), H, K, "gru")}
    if with_loop:
        variants["ours_loop"] = LoopScan(MGradeBlock(cfg, 0.8))
    return variants


def fwd_bwd(module: nn.Module, x: torch.Tensor):
    module.train()

    def run():
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return run


def main(argv=None):
    ap = benchmark_args(__doc__, DEFAULT_CONFIGS, "TxBxHxK")
    ap.add_argument("--with-loop", action="store_true")
    args = ap.parse_args(argv)

    def make_fns(T, B, H, K):
        x = torch.randn(B, T, H, requires_grad=True)
        return {k: fwd_bwd(m, x) for k, m in make_variants(H, K, args.with_loop).items()}
    run_benchmark("bench_block", "mGRADE block fwd+bwd", args, "TxBxHxK", make_fns)


if __name__ == "__main__":
    main()
