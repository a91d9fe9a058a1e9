"""Tasks: data in, `TaskData` out (docs/tasks.md describes every task).

    load_task(name, params, data_dir, seed) -> TaskData
    task_defaults(name) -> {param: default}      (config.py checks [task] keys against it)
    task_shape(name, params) -> {n_in, n_classes, seq_len, readout}   (no data loaded)

Tasks: digits, digits_perm (scikit-learn 8x8 digits, 64 steps), smnist, psmnist (MNIST IDX
files, 784 steps), scifar (CIFAR-10 python batches, grayscale, 1024 steps), flipflop and
fastslow (synthetic multi-scale per-step tasks), and the user's own data: ts (UEA/UCR `.ts`
files) and npz (arrays, variable length, per-sequence or per-step labels).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import cifar, digits, mnist, npz, synthetic, ts
from ._base import IGNORE, TaskData, TaskError, check_params, part_accuracy

__all__ = ["TaskData", "TaskError", "TASKS", "IGNORE", "task_defaults", "task_shape",
           "load_task", "part_accuracy"]


@dataclass(frozen=True)
class TaskSpec:
    """One registered task: its parameters with defaults, its loader and its shape."""
    defaults: dict
    load: object          # (name, params, data_dir, seed) -> TaskData
    shape: object         # (name, params) -> {n_in, n_classes, seq_len, readout}
    needs_data_dir: bool


TASKS: dict[str, TaskSpec] = {
    "digits": TaskSpec(digits.DEFAULTS, digits.load, digits.shape, False),
    "digits_perm": TaskSpec(digits.PERM_DEFAULTS, digits.load, digits.shape, False),
    "smnist": TaskSpec(mnist.DEFAULTS, mnist.load, mnist.shape, True),
    "psmnist": TaskSpec(mnist.PERM_DEFAULTS, mnist.load, mnist.shape, True),
    "scifar": TaskSpec(cifar.DEFAULTS, cifar.load, cifar.shape, True),
    "flipflop": TaskSpec(synthetic.FLIPFLOP_DEFAULTS, synthetic.load_flipflop, synthetic.shape,
                         False),
    "fastslow": TaskSpec(synthetic.FASTSLOW_DEFAULTS, synthetic.load_fastslow, synthetic.shape,
                         False),
    "ts": TaskSpec(ts.DEFAULTS, ts.load, ts.shape, False),
    "npz": TaskSpec(npz.DEFAULTS, npz.load, npz.shape, False),
}


def _spec(name) -> TaskSpec:
    if not isinstance(name, str) or name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def task_defaults(name: str) -> dict:
    """The task's own parameters (besides name, data_dir, seed) and their defaults; the
    defaults' types are the parameters' types."""
    return dict(_spec(name).defaults)


def task_shape(name: str, params: dict | None = None) -> dict:
    """{n_in, n_classes, seq_len, readout} of a task without loading or generating its data."""
    spec = _spec(name)
    check_params(name, params or {}, spec.defaults)
    return spec.shape(name, params or {})


def load_task(name: str, params: dict | None = None, data_dir: str | None = None,
              seed: int = 0) -> TaskData:
    """Load (real data sets) or generate (synthetic tasks) a task's three splits.

    params: the task's parameters (missing keys take task_defaults(name)); data_dir: the folder
    with the data set's standard files (smnist, psmnist, scifar; ignored otherwise); seed: the
    split / generation seed (digits, digits_perm, flipflop, fastslow; the MNIST and CIFAR splits
    are the standard fixed ones). Raises TaskError with a user-facing message."""
    spec = _spec(name)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise TaskError(f"task seed must be an int >= 0, got {seed!r}")
    return spec.load(name, params or {}, data_dir or None, seed)
