"""Per-part test accuracy of trained runs on a synthetic task (docs/tasks.md, Results).

    python -m mgrade_edge.training.part_eval RUN_DIR [RUN_DIR ...]

Prints one markdown row per run: overall per-step accuracy, each part's accuracy (e.g. the
long-range "memory" part and the precise-delay "delay" part) and the parameter count.
"""
from __future__ import annotations

import sys

import torch

from mgrade_edge.training.checkpoint import CheckpointError, load_model
from mgrade_edge.training.tasks import TaskError, load_task, part_accuracy


def main(argv=None) -> int:
    runs = sys.argv[1:] if argv is None else argv
    if not runs:
        print(__doc__)
        return 2
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
