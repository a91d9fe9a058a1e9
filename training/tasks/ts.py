"""`ts`: a classification problem in the `.ts` format of the UEA & UCR time-series archive,
read with aeon's reader (`aeon.datasets.load_from_ts_file`).

    [task]
    name = "ts"
    train = "PATH/NAME_TRAIN.ts"     # 'aeon:BasicMotions/BasicMotions_TRAIN.ts' = a file
    test = "PATH/NAME_TEST.ts"       #  shipped inside the aeon package
    val = ""                         # optional validation file; else val_fraction of train
    val_fraction = 0.2               # stratified by class, seeded with task.seed
    normalize = true                 # per-channel mean/std of the training split

Univariate and multivariate, equal or unequal length (unequal: padded, exact; see TaskData).
Class labels are the header's `@classLabel` values (aeon lower-cases them), in that order;
a test label that the header does not list is an error. Relative paths are taken relative to
task.data_dir when it is set, else to the working directory.
"""
from __future__ import annotations

import re

import numpy as np

from ._base import TaskData, TaskError, check_params, require
from ._seq import (check_sequences, encode, pack, resolve, stratified_holdout,
                   unique_names)

DEFAULTS = {"train": "", "test": "", "val": "", "val_fraction": 0.2, "normalize": True}


def read_ts(path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """A .ts file -> (sequences float32 [T_i, C], labels (strings) [N], class values of the
    header). Any failure of the reader becomes a TaskError naming the file."""
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError as e:
        raise TaskError(f"the ts task needs the aeon package ({e}); run make venv") from None
    try:
        X, y, meta = load_from_ts_file(str(path), return_meta_data=True)
    except Exception as e:    # noqa: BLE001 - aeon raises OSError, ValueError, IndexError...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = re.sub(r"^Error loading <[^>]*>\.\s*", "", msg)[:240]
        raise TaskError(f"{path}: cannot read this .ts file: {msg}") from None
    if not meta.get("classlabel") or not meta.get("class_values") or y is None \
            or len(np.shape(y)) != 1:
        raise TaskError(f"{path}: the header has no '@classLabel true ...' line; only "
                        f"classification problems are supported")
    if isinstance(X, np.ndarray):
        seqs = [np.asarray(X[i], np.float64).T for i in range(X.shape[0])]
    else:
        seqs = [np.asarray(s, np.float64).T for s in X]
    classes = unique_names([str(v) for v in meta.get("class_values", [])], str(path),
                           "the header's '@classLabel true ...' line")
    claimed = header_channels(path)
    if claimed is not None and seqs and seqs[0].shape[1] != claimed:
        raise TaskError(f"{path}: the header claims {claimed} channel(s) but the data have "
                        f"{seqs[0].shape[1]}; fix @dimensions")
    return seqs, np.asarray(y).astype(str), classes


def header_channels(path) -> int | None:
    """The channel count the header claims (`@dimensions N`), or None. aeon's reader does
    not check it against the data."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split()
            if words and words[0].lower() == "@data":
                break
            if len(words) > 1 and words[0].lower() == "@dimensions" and words[1].isdigit():
                return int(words[1])
    return None


def load(name: str, params: dict, data_dir, seed: int) -> TaskData:
    p = check_params(name, params, DEFAULTS)
    require(0.0 < p["val_fraction"] < 1.0 or bool(p["val"]), name,
            "val_fraction must be in (0, 1) (or give a val file)")
    files = {"train": resolve(name, "train", p["train"], data_dir),
             "test": resolve(name, "test", p["test"], data_dir)}
    if p["val"]:
        files["val"] = resolve(name, "val", p["val"], data_dir)
    raw = {split: read_ts(path) for split, path in files.items()}
    classes = raw["train"][2]
    mapping = {c: k for k, c in enumerate(classes)}
    splits = {}
    for split, (seqs, labels, _) in raw.items():       # train first
        train = None if split == "train" else (splits["train"][0][0].shape[1],
                                               str(files["train"]))
        seqs = check_sequences(seqs, str(files[split]), split, train)
        splits[split] = (seqs, encode(labels, mapping, str(files[split]), split))
    if "val" not in splits:
        seqs, y = splits["train"]
        keep, held = stratified_holdout(y, p["val_fraction"], seed)
        require(len(held) > 0, name, f"{files['train']}: too few sequences to hold out "
                                     f"val_fraction={p['val_fraction']}")
        splits["train"] = ([seqs[i] for i in keep], y[keep])
        splits["val"] = ([seqs[i] for i in held], y[held])
    return pack(name, {s: splits[s] for s in ("train", "val", "test")}, per_step=False,
                class_names=classes, normalize=p["normalize"])


def shape(name: str, params: dict) -> dict:
    """The shape is in the files: callers load the task instead (training.memory does)."""
    raise NotImplementedError("the ts task's shape is read from its files")
