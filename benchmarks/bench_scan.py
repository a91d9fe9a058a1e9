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

import argparse

import torch
import torch.nn as nn

from benchmarks._timing import environment, print_table, time_round_robin, write_json
from training.scan import mingru_scan, mingru_scan_log, mingru_scan_loop

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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated TxBxH")
    ap.add_argument("--with-log", action="store_true")
    ap.add_argument("--with-loop", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    rows, results = [], []
    for cfg in args.configs.split(","):
        T, B, H = (int(v) for v in cfg.lower().split("x"))
        x = torch.randn(B, T, H, requires_grad=True)
        variants = make_variants(H, args.with_log, args.with_loop)
        timed = time_round_robin({k: fwd_bwd(m, x) for k, m in variants.items()},
                                 args.repeats, args.warmup)
        ours = timed["ours"]["median_ms"]
        for name, t in timed.items():
            row = {"T": T, "B": B, "H": H, "variant": name, "median_ms": t["median_ms"],
                   "min_ms": t["min_ms"], "ours_speedup": t["median_ms"] / ours}
            rows.append(row)
            results.append({**row, "times_ms": t["times_ms"]})
    print_table(f"minGRU layer fwd+bwd, float32, {args.threads} threads, median of "
                f"{args.repeats} (ours_speedup = variant / ours)", rows,
                [("T", "T"), ("B", "B"), ("H", "H"), ("variant", "variant"),
                 ("median_ms", "median ms"), ("min_ms", "min ms"),
                 ("ours_speedup", "ours speedup")])
    if args.json:
        write_json(args.json, {"benchmark": "bench_scan", "env": environment(),
                               "args": vars(args), "results": results})


if __name__ == "__main__":
    main()
