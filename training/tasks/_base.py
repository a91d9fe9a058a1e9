"""TaskData, TaskError and the small helpers every task module shares."""
from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IGNORE = -100          # label of a step that carries no label (per-step tasks)


class TaskError(ValueError):
    """A user-facing problem with a task: unknown name or parameter, bad value, missing or
    malformed data files. The message says what to do; callers print it without a traceback."""


@dataclass
class TaskData:
    """One task's data, all three splits, ready for training.

    x_*: float32 [N, T, C] (batch-first, time-second, channels-last).
    y_*: int64 [N] for readout "mean" (one label per sequence), or int64 [N, T] for readout
         "per_step" with -100 at steps that carry no label.
    n_in = C, n_classes, seq_len = T, readout in {"mean", "per_step"}, name = task name.

    Variable length (optional, None for fixed-length tasks): len_* int64 [N], each sequence's
    own number of steps; x_* is padded with zeros after it and per-step y_* with -100. Padded
    steps never influence a result (see MGradeNet.forward(x, lengths)).
    class_names (optional): the name of each class index (carried into the checkpoint and
    the .tflite metadata). input_mean / input_std (optional): per-channel statistics of the
    training split's real steps, as lists of C floats; the network normalises with them
    internally, so x_* stay in the data's own (sensor) units.
    raw_input (optional, floats (a, b)): x_* = a * raw + b where raw are 8-bit codes (the
    integers 0..255, e.g. pixels) that the task normalised itself; the converter then feeds
    the device the raw codes (convert.raw_input), on whose int8 grid each of the 256 values
    is exact (the normalised values sit half a step off any int8 grid that holds 0).

    parts (optional, None for tasks without components): the per-step label components of a
    per-step task, so that accuracy can be reported on each part separately:
        parts[part] = {"train": y [N, T] int64, "val": ..., "test": ...,
                       "of_class": int64 [n_classes]}
    where parts[part][split] holds the part's own label at every step (-100 where the part is
    undefined or deliberately excluded) and of_class maps a predicted class of the full task to
    the part's label. Part accuracy = mean over labelled steps of
    of_class[pred] == parts[part][split]  (see `part_accuracy`).
    """
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_in: int
    n_classes: int
    seq_len: int
    readout: str
    name: str
    parts: dict | None = None
    len_train: torch.Tensor | None = None
    len_val: torch.Tensor | None = None
    len_test: torch.Tensor | None = None
    class_names: list | None = None
    input_mean: list | None = None
    input_std: list | None = None
    raw_input: tuple | None = None      # (a, b): x_* = a * raw + b, raw the integers 0..255

    def split(self, which: str):
        """(x, y) of 'train', 'val' or 'test'."""
        if which not in ("train", "val", "test"):
            raise TaskError(f"split must be 'train', 'val' or 'test', got {which!r}")
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def lengths(self, which: str) -> torch.Tensor | None:
        """int64 [N] own lengths of a split's sequences, or None (all seq_len steps)."""
        self.split(which)
        return getattr(self, f"len_{which}")


def part_accuracy(data: TaskData, split: str, pred: torch.Tensor) -> dict:
    """Accuracy of per-step predictions `pred` ([N, T] class indices of the full task, for the
    given split) on each of the task's parts: {part: {"acc": float, "n": labelled steps}}."""
    if not data.parts:
        return {}
    out = {}
    for name, part in data.parts.items():
        target = part[split]
        mask = target != IGNORE
        mapped = part["of_class"][pred]
        n = int(mask.sum())
        correct = int((mapped[mask] == target[mask]).sum())
        out[name] = {"acc": correct / max(n, 1), "n": n}
    return out


def check_params(task: str, params: dict, defaults: dict) -> dict:
    """Defaults overlaid with params; unknown keys or wrong types raise TaskError."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise TaskError(f"unknown parameter(s) {', '.join(unknown)} for task '{task}'; valid: "
                        f"{', '.join(sorted(defaults)) or '(none)'}")
    out = dict(defaults)
    for key, value in params.items():
        d = defaults[key]
        if isinstance(d, bool):
            ok = isinstance(value, bool)
        elif isinstance(d, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(d, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(d))
        if not ok:
            raise TaskError(f"task '{task}': parameter '{key}' must be {type(d).__name__}, got "
                            f"{type(value).__name__} ({value!r})")
        out[key] = value
    return out


def require(cond: bool, task: str, message: str):
    if not cond:
        raise TaskError(f"task '{task}': {message}")


def raw_affine(scale: float, mean: float, std: float) -> tuple[float, float]:
    """(a, b) with normalised(p, scale, mean, std) = a * p + b (TaskData.raw_input)."""
    return 1.0 / (scale * std), -mean / std


def normalised(pixels: np.ndarray, scale: float, mean: float, std: float) -> torch.Tensor:
    """uint8/float pixels [N, T] -> float32 [N, T, 1] ((p / scale) - mean) / std."""
    x = pixels.astype(np.float32)
    x *= np.float32(1.0 / scale)
    x -= np.float32(mean)
    x *= np.float32(1.0 / std)
    return torch.from_numpy(x)[:, :, None]


def limit(n: int, cap: int) -> int:
    """First `cap` items (cap <= 0 keeps all)."""
    return n if cap <= 0 else min(n, cap)


# -- pickles --------------------------------------------------------------------------------
# Data set pickles (CIFAR-10 python batches, the classic mnist.pkl.gz) hold only numpy arrays,
# lists, dicts and bytes. Unpickling may call any importable function, so we allow only the
# few globals numpy's array pickling uses; anything else is refused instead of executed.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        return super().find_class(module, name)


def load_data_pickle(path: Path, encoding: str = "bytes"):
    """Unpickle a data set file (plain or .gz) allowing numpy arrays and builtins only."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return _ArrayUnpickler(io.BytesIO(raw), encoding=encoding).load()
