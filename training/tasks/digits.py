"""scikit-learn's 8x8 digits read pixel by pixel: 64 steps, 1 channel, 10 classes.

Pixels 0..16 are scaled to [0, 1], then normalised like MNIST: (p - 0.5) / 0.5. The 1797
images are split by a stratified split seeded with the task seed into 1197 / 300 / 300
(train / val / test). `digits_perm` reads the pixels in one fixed order drawn from
np.random.default_rng(perm_seed).permutation(64), the same for every split and task seed.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ._base import TaskData, check_params, limit, normalised, require

DEFAULTS = {"n_val": 300, "n_test": 300, "max_train": 0}
PERM_DEFAULTS = {**DEFAULTS, "perm_seed": 0}
SEQ_LEN = 64


def permutation(perm_seed: int, n: int = SEQ_LEN) -> np.ndarray:
    return np.random.default_rng(perm_seed).permutation(n)


def stratified_split(labels: np.ndarray, n_val: int, n_test: int, seed: int):
    """Indices (train, val, test): each class shuffled with `seed` and dealt to val and test in
    proportion to its frequency (largest remainders), the rest to train; each part sorted."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)

    def quota(total):
        exact = counts * total / len(labels)
        q = np.floor(exact).astype(int)
        order = np.argsort(-(exact - q), kind="stable")
        q[order[:total - q.sum()]] += 1
        return q

    qv, qt = quota(n_val), quota(n_test)
    parts = ([], [], [])
    for c, nv, nt in zip(classes, qv, qt):
        idx = rng.permutation(np.flatnonzero(labels == c))
        parts[1].append(idx[:nv])
        parts[2].append(idx[nv:nv + nt])
        parts[0].append(idx[nv + nt:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 64] float32 0..16, labels [1797] int64): the file scikit-learn ships
    (sklearn/datasets/data/digits.csv.gz, one image and its label per row), the same arrays as
    sklearn.datasets.load_digits() without importing scikit-learn (1.5 s per process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the digits task reads the data set that ships with scikit-learn: "
                           "pip install scikit-learn (the `train` extra)")
    csv = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    rows = np.loadtxt(csv, delimiter=",")
    return rows[:, :-1].astype(np.float32), rows[:, -1].astype(np.int64)


def load(name: str, params: dict, data_dir, seed: int) -> TaskData:
    defaults = PERM_DEFAULTS if name == "digits_perm" else DEFAULTS
    p = check_params(name, params, defaults)
    images, labels = read_digits()
    require(p["n_val"] >= 0 and p["n_test"] >= 0 and p["n_val"] + p["n_test"] < len(labels),
            name, f"n_val + n_test must be >= 0 and < {len(labels)}")
    if name == "digits_perm":
        images = images[:, permutation(p["perm_seed"])]
    tr, va, te = stratified_split(labels, p["n_val"], p["n_test"], seed)
    tr = tr[:limit(len(tr), p["max_train"])]

    def xs(idx):
        return normalised(images[idx], 16.0, 0.5, 0.5)

    return TaskData(x_train=xs(tr), y_train=torch.from_numpy(labels[tr]),
                    x_val=xs(va), y_val=torch.from_numpy(labels[va]),
                    x_test=xs(te), y_test=torch.from_numpy(labels[te]),
                    n_in=1, n_classes=10, seq_len=SEQ_LEN, readout="mean", name=name)


def shape(name: str, params: dict) -> dict:
    return {"n_in": 1, "n_classes": 10, "seq_len": SEQ_LEN, "readout": "mean"}
