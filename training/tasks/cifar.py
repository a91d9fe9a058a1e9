"""Grayscale sequential CIFAR-10 (sCIFAR) from the CIFAR-10 python batches.

Each 32x32 image is converted to gray with the ITU-R BT.601 luma weights
g = 0.299 R + 0.587 G + 0.114 B (as PIL's "L" mode, kept in float, not rounded), read row by
row: 1024 steps, 1 channel, 10 classes, normalised (g - 122.6) / 61 (i.e. mean 122.6/255,
std 61/255 on the [0, 1] scale). Splits: data_batch_1..4 train (40,000), data_batch_5
validates (10,000), test_batch tests (10,000).

data_dir is the folder `cifar-10-batches-py/` (as extracted from cifar-10-python.tar.gz) or a
folder that contains it. The batches are pickles; they are read with an unpickler that allows
numpy arrays only, so a tampered file is refused rather than executed.
"""
from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from ._base import TaskData, TaskError, check_params, limit, load_data_pickle

SEQ_LEN = 1024
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
LUMA = (0.299, 0.587, 0.114)
MEAN, STD = 122.6, 61.0
DEFAULTS = {"max_train": 0, "max_val": 0, "max_test": 0}
HOWTO = ("Extract cifar-10-python.tar.gz (the CIFAR-10 python version) so that {dir} holds "
         "cifar-10-batches-py/ with data_batch_1 .. data_batch_5 and test_batch (or put those "
         "six files into {dir} itself).")
_CACHE: dict = {}


def find_folder(data_dir) -> Path:
    if data_dir is None or str(data_dir) == "":
        raise TaskError("task 'scifar' needs data_dir (set task.data_dir). "
                        + HOWTO.format(dir="that folder"))
    root = Path(data_dir)
    if not root.is_dir():
        raise TaskError(f"task 'scifar': data folder {root} does not exist. "
                        + HOWTO.format(dir=root))
    for folder in (root / "cifar-10-batches-py", root):
        if folder.is_dir() and any((folder / f).is_file() for f in TRAIN_FILES + [TEST_FILE]):
            break
    else:
        folder = root / "cifar-10-batches-py"
    missing = [f for f in TRAIN_FILES + [TEST_FILE] if not (folder / f).is_file()]
    if missing:
        raise TaskError(f"task 'scifar': missing in {folder}: {', '.join(missing)}. "
                        + HOWTO.format(dir=root))
    return folder


def read_batch(path: Path):
    """(gray float32 [N, 1024] on the 0..255 scale, labels int64 [N]) of one python batch."""
    try:
        d = load_data_pickle(path, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, OSError, zlib.error) as e:
        raise TaskError(f"{path}: not a readable CIFAR-10 python batch "
                        f"({e or type(e).__name__})") from None
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise TaskError(f"{path}: not a CIFAR-10 python batch (needs keys b'data', b'labels')")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * SEQ_LEN or len(data) != len(labels):
        raise TaskError(f"{path}: expected data [N, 3072] and N labels, got {list(data.shape)} "
                        f"and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise TaskError(f"{path}: labels outside 0..9")
    rgb = data.reshape(len(data), 3, SEQ_LEN).astype(np.float32)
    gray = (np.float32(LUMA[0]) * rgb[:, 0] + np.float32(LUMA[1]) * rgb[:, 1]
            + np.float32(LUMA[2]) * rgb[:, 2])
    return gray, labels


def load_arrays(data_dir):
    folder = find_folder(data_dir)
    files = [folder / f for f in TRAIN_FILES + [TEST_FILE]]
    key = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if key not in _CACHE:
        batches = [read_batch(p) for p in files]
        _CACHE.clear()
        _CACHE[key] = batches
    return _CACHE[key]


def load(name: str, params: dict, data_dir, seed: int) -> TaskData:
    p = check_params(name, params, DEFAULTS)
    batches = load_arrays(data_dir)
    splits = {"train": batches[:4], "val": batches[4:5], "test": batches[5:6]}
    caps = {"train": p["max_train"], "val": p["max_val"], "test": p["max_test"]}
    out = {}
    for split, parts in splits.items():
        gray = np.concatenate([g for g, _ in parts])
        labels = np.concatenate([y for _, y in parts])
        n = limit(len(gray), caps[split])
        x = (gray[:n] - np.float32(MEAN)) * np.float32(1.0 / STD)
        out[f"x_{split}"] = torch.from_numpy(x)[:, :, None]
        out[f"y_{split}"] = torch.from_numpy(labels[:n].copy())
    return TaskData(**out, n_in=1, n_classes=10, seq_len=SEQ_LEN, readout="mean", name=name)


def shape(name: str, params: dict) -> dict:
    return {"n_in": 1, "n_classes": 10, "seq_len": SEQ_LEN, "readout": "mean"}
