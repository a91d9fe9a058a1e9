"""Per-part test accuracy of trained runs on a synthetic task (docs/tasks.md, Results).

    python -m mgrade_edge.training.part_eval RUN_DIR [RUN_DIR ...]

Prints one markdown row per run: overall per-step accuracy, each part's accuracy (e.g. the
long-range "memory" part and the precise-delay "delay" part) and the parameter count.
"""
from __future__ import annotations

if __name__ == "__main__":        # Ctrl-C (it only reads): one line, exit 130
    from mgrade_edge.training.interrupt import exit_on_interrupt
    exit_on_interrupt("no table", hard=True)

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mgrade_edge.training.part_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="trained run folders")
    p.add_argument("--quiet", action="store_true",
                   help="accepted like every CLI's; this prints only its table anyway")
    return p


if __name__ == "__main__":
    build_parser().parse_args()   # --help and usage errors answer before torch loads
    from mgrade_edge.training.console import require
    require("torch", "numpy", command="-m mgrade_edge.training.part_eval")

import torch  # noqa: E402

from mgrade_edge.training.checkpoint import CheckpointError, load_model  # noqa: E402
from mgrade_edge.training.tasks import TaskError, load_task, part_accuracy  # noqa: E402


def main(argv=None) -> int:
    runs = build_parser().parse_args(argv).runs
    header = False
    for run in runs:
        try:
            net, cfg, _ = load_model(run)
            data = load_task(cfg.task.name, cfg.task.params, cfg.task.data_dir or None,
                             cfg.task.seed)
        except (CheckpointError, TaskError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        net.harden()
        with torch.no_grad():
            pred = torch.cat([net(data.x_test[i:i + 128]).argmax(-1)
                              for i in range(0, len(data.x_test), 128)])
        mask = data.y_test != -100
        overall = float((pred[mask] == data.y_test[mask]).float().mean())
        parts = part_accuracy(data, "test", pred)
        if not header:
            print("| run | params | all | " + " | ".join(parts) + " |")
            print("|---" * (3 + len(parts)) + "|")
            header = True
        print(f"| {run} | {net.n_params()} | {100 * overall:.1f} | "
              + " | ".join(f"{100 * p['acc']:.1f}" for p in parts.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
