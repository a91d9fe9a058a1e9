"""Profile one minGRU layer (ours: Linear(H, 2H) + mingru_scan) forward + backward.

Usage: python -m benchmarks.profile_scan [--T 784] [--B 32] [--H 128] [--threads 2] [--rows 15]
Prints torch.profiler's table sorted by self CPU time (5 profiled calls after 3 warm-up).
"""
import argparse

import torch
from torch.profiler import profile

from benchmarks.bench_scan import OurLayer, fwd_bwd


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=784)
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=15)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.B, args.T, args.H, requires_grad=True)
    run = fwd_bwd(OurLayer(args.H), x)
    for _ in range(3):
        run()
    with profile() as prof:
        for _ in range(5):
            run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
