"""Training-step cost of a QAT epoch (train.qat_epochs: the int8 weights the converter
deploys, fake-quantized in the forward pass) against a plain step, on a trained run's network.

    python -m benchmarks.qat_step_cost RUN [RUN ...] [--batch 64] [--steps 784] [--reps 6]

Forward + backward + AdamW step on one random batch [batch, steps, n_in], plain and QAT
interleaved in one process (so a shared machine's load drifts cancel), one thread; prints the
median seconds per batch of each (the first repetition is warm-up) and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time


def step_seconds(run: str, batch: int, steps: int, reps: int) -> tuple[float, float]:
    """(plain, QAT) median seconds of one training step of RUN's network."""
    import torch

    from mgrade_edge.training.checkpoint import load_model

    net, _, ckpt = load_model(run)
    info = ckpt["task_info"]
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, steps, int(info["n_in"]))
    y = torch.randint(0, int(info["n_classes"]), (batch,))
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(reps):
        for qat in (False, True):
            net.set_qat(qat)
            t0 = time.perf_counter()
            out = net(x)
            loss = torch.nn.functional.cross_entropy(out if out.dim() == 2 else out.mean(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times[qat].append(time.perf_counter() - t0)
    return statistics.median(times[False][1:]), statistics.median(times[True][1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.qat_step_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="trained run folders (checkpoint.pt)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=784, help="sequence length (default 784)")
    p.add_argument("--reps", type=int, default=6)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    for run in args.runs:
        plain, qat = step_seconds(run, args.batch, args.steps, args.reps)
        print(f"{run}: plain {plain:.3f} s/batch, QAT {qat:.3f} s/batch, ratio {qat / plain:.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
