"""`npz`: the user's own sequences from one NumPy .npz file.

    [task]
    name = "npz"
    path = "my_data.npz"
    val_fraction = 0.2       # used when the file has no x_val / y_val (seeded with task.seed;
    test_fraction = 0.2      #   stratified for per-sequence labels); test_fraction likewise
    normalize = true         # per-channel mean/std of the training split

Arrays in the file:
    x_train   float [N, T, C], or an object array of N float arrays [T_i, C] (variable length;
              [T_i] means C = 1)
    y_train   one label per sequence: [N] integers or strings; or one label per step:
              int [N, T] / an object array of int arrays [T_i] (-100 = unlabelled step)
    x_val, y_val, x_test, y_test     optional, same forms
    class_names   optional [n_classes] strings for integer labels 0 .. n_classes-1

Per-sequence labels (strings or integers) are mapped to indices in sorted order and keep their
text as class names. Object arrays are read with a restricted unpickler (arrays, numbers and
strings only), never with np.load(allow_pickle=True).
"""
from __future__ import annotations

import zipfile

import numpy as np

from ._base import IGNORE, TaskData, TaskError, _ArrayUnpickler, check_params, require
from ._seq import (check_sequences, encode, label_map, pack, random_holdout,
                   refuse_unlabelled_sequences, require_labelled_steps, resolve,
                   stratified_holdout)

DEFAULTS = {"path": "", "val_fraction": 0.2, "test_fraction": 0.2, "normalize": True}
KNOWN = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "class_names")


def read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an .npz file; object arrays through the restricted unpickler."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = header(f)
                    if dtype.hasobject:
                        arr = _ArrayUnpickler(f, encoding="latin1").load()
                    else:
                        data = f.read()
                        arr = np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)))
                        arr = arr.reshape(shape, order="F" if fortran else "C")
                arrays[member[:-4]] = np.asarray(arr)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise TaskError(f"{path}: not a readable .npz file ({str(e).splitlines()[0][:160]})") \
            from None
    except Exception as e:   # noqa: BLE001 - a refused or broken pickle
        raise TaskError(f"{path}: cannot read an object array ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:160]})") from None
    return arrays


def _sequences(x: np.ndarray) -> list:
    if x.ndim == 0:
        raise ValueError(f"must be an array of sequences, got a single value ({x.dtype})")
    if x.dtype == object:
        return list(x.reshape(-1)) if x.ndim == 1 else [x[i] for i in range(len(x))]
    if x.ndim != 3:
        raise ValueError(f"dense x must be [N, T, C], got shape {list(x.shape)}")
    return [x[i] for i in range(len(x))]


def _is_per_step(y: np.ndarray) -> bool:
    if y.dtype == object:
        return len(y) > 0 and np.ndim(y[0]) == 1
    return y.ndim == 2


def _check_label_shape(y: np.ndarray, seqs: list, where: str, split: str):
    """Refuse label arrays that are neither [N] nor [N, T] (or an object array of [T_i]),
    and say which form a column [N, 1] should take."""
    T = max(len(s) for s in seqs)
    if y.ndim == 2 and y.dtype != object and y.shape[1] == 1 and T > 1:
        raise TaskError(f"{where}: y_{split} has shape {list(y.shape)}: one label per sequence "
                        f"is [N] (y.reshape(-1)); one label per step is [N, T] = "
                        f"[{len(seqs)}, {T}]")
    if y.ndim not in (1, 2) or (y.dtype == object and y.ndim != 1):
        raise TaskError(f"{where}: y_{split} must be [N] (one label per sequence) or [N, T] "
                        f"(one per step), got shape {list(y.shape)}")


def _per_step_labels(y: np.ndarray, seqs: list, where: str, split: str) -> list[np.ndarray]:
    """[T_i] int64 labels per sequence. Dense y [N, T'] must span the split's longest
    sequence exactly (T' = T), and labels past a shorter sequence's end must be -100."""
    if y.dtype != object:
        T = max(len(s) for s in seqs)
        if y.shape[1] != T:
            raise TaskError(f"{where}: y_{split} has per-step labels for {y.shape[1]} steps "
                            f"but the x_{split} sequences have {T} steps; give exactly one "
                            f"label per step ({IGNORE} = unlabelled)")
    out = []
    for i, s in enumerate(seqs):
        lab = np.asarray(y[i])
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise TaskError(f"{where}: per-step labels of {split} sequence {i} must be an "
                            f"integer array [T] (-100 = unlabelled), got {lab.dtype} "
                            f"{list(lab.shape)}")
        if y.dtype != object:
            past = np.flatnonzero(lab[len(s):] != IGNORE)
            if len(past):
                raise TaskError(f"{where}: {split} sequence {i} has {len(s)} steps but a "
                                f"label at step {len(s) + int(past[0])}; labels past a "
                                f"sequence's end must be {IGNORE}")
            lab = lab[:len(s)]
        if len(lab) != len(s):
            raise TaskError(f"{where}: {split} sequence {i} has {len(s)} steps but "
                            f"{len(lab)} per-step labels")
        out.append(lab.astype(np.int64))
    return out


def load(name: str, params: dict, data_dir, seed: int) -> TaskData:
    p = check_params(name, params, DEFAULTS)
    path = resolve(name, "path", p["path"], data_dir)
    where = str(path)
    arrays = read_npz(path)
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise TaskError(f"{where}: no array '{key}' (found: {', '.join(arrays) or 'none'})")
    for split in ("val", "test"):
        if (f"x_{split}" in arrays) != (f"y_{split}" in arrays):
            raise TaskError(f"{where}: x_{split} and y_{split} must be given together")
    per_step = _is_per_step(arrays["y_train"])
    raw = {}
    for split in ("train", "val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        try:
            seqs = _sequences(x)
        except ValueError as e:
            raise TaskError(f"{where}: x_{split}: {e}") from None
        train = None if split == "train" else (raw["train"][0][0].shape[1], where)
        seqs = check_sequences(seqs, where, split, train)
        if y.ndim == 0:
            raise TaskError(f"{where}: y_{split} must be [N] (one label per sequence) or "
                            f"[N, T] (one per step), got a single value")
        if len(y) != len(seqs):
            raise TaskError(f"{where}: y_{split} has {len(y)} labels for {len(seqs)} sequences")
        _check_label_shape(y, seqs, where, split)
        if _is_per_step(y) != per_step:
            raise TaskError(f"{where}: y_{split} and y_train disagree on per-sequence vs "
                            f"per-step labels")
        if not per_step:
            refuse_unlabelled_sequences(y, where, split)
        raw[split] = (seqs, _per_step_labels(y, seqs, where, split) if per_step
                      else np.asarray(y).reshape(-1))
    names = arrays.get("class_names")
    train_flat = np.concatenate(raw["train"][1]) if per_step else raw["train"][1]
    if names is not None and train_flat.dtype.kind not in "iu":
        raise TaskError(f"{where}: class_names is for integer labels 0 .. n-1; the labels "
                        f"are {train_flat.dtype}")
    mapping, class_names = label_map(train_flat, None if names is None else names.tolist(),
                                     where)
    require(len(class_names) >= 1, name, f"{where}: y_train has no labels")
    splits = {}
    for split, (seqs, y) in raw.items():
        if per_step:
            enc = [encode(lab, mapping, where, split) for lab in y]
        else:
            enc = encode(y, mapping, where, split)
        splits[split] = (seqs, enc)
    for split, frac in (("test", p["test_fraction"]), ("val", p["val_fraction"])):
        if split in splits:
            continue
        require(0.0 < frac < 1.0, name, f"{where} has no x_{split}: {split}_fraction must be "
                                        f"in (0, 1)")
        seqs, y = splits["train"]
        keep, held = (random_holdout(len(seqs), frac, seed + (split == "test")) if per_step
                      else stratified_holdout(y, frac, seed + (split == "test")))
        if len(held) == 0:
            raise TaskError(f"{where}: too few training sequences ({len(seqs)}) to hold out "
                            f"a {split} split")
        pick = lambda idx: [seqs[i] for i in idx]  # noqa: E731
        splits["train"] = (pick(keep), [y[i] for i in keep] if per_step else y[keep])
        splits[split] = (pick(held), [y[i] for i in held] if per_step else y[held])
    if per_step:      # the test split may be unlabelled: its accuracy is then "n/a"
        for split in ("train", "val"):
            require_labelled_steps(splits[split][1], where, split)
    return pack(name, {s: splits[s] for s in ("train", "val", "test")}, per_step,
                class_names, p["normalize"])


def shape(name: str, params: dict) -> dict:
    """The shape is in the file: callers load the task instead (training.memory does)."""
    raise NotImplementedError("the npz task's shape is read from its file")
