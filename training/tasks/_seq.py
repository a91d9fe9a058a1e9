"""What the user-data tasks (`ts`, `npz`) share: paths, checks, label maps, splits, padding.

A sequence here is a float array [T_i, C] in the data's own units. `pack` turns the three
splits into a TaskData: zero padding to the longest sequence, own lengths (only when they
differ), per-step labels padded with -100, class names, and the per-channel mean / std of the
training split's real steps (the network normalises with them; see MGradeNet).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ._base import IGNORE, TaskData, TaskError

AEON_PREFIX = "aeon:"


def aeon_data_dir() -> Path:
    """aeon/datasets/data inside the installed aeon package (UEA/UCR files it ships)."""
    try:
        import aeon
    except ImportError:
        raise TaskError("the 'aeon:' path prefix needs the aeon package (make venv installs "
                        "it)") from None
    return Path(aeon.__file__).resolve().parent / "datasets" / "data"


def resolve(task: str, key: str, value: str, data_dir) -> Path:
    """A file parameter -> path: 'aeon:REL' is REL inside aeon's shipped data folder; a
    relative path is taken relative to data_dir when given, else to the working directory."""
    if not value:
        raise TaskError(f"task '{task}': parameter '{key}' (a file path) is required")
    if value.startswith(AEON_PREFIX):
        path = aeon_data_dir() / value[len(AEON_PREFIX):]
    else:
        path = Path(value)
        if not path.is_absolute() and data_dir:
            base = str(data_dir)
            base = aeon_data_dir() / base[len(AEON_PREFIX):] if base.startswith(AEON_PREFIX) \
                else Path(base)
            path = base / path
    if not path.is_file():
        raise TaskError(f"task '{task}': {key} file not found: {path}")
    return path


def check_sequences(seqs: list, where: str, split: str,
                    train: tuple[int, str] | None = None) -> list[np.ndarray]:
    """Each item -> float32 [T_i, C]: at least one sequence, T_i >= 1, C >= 1 and the same C
    for all, finite values. With `train` = (C of the training split, its file), a val or test
    split must have that C too. Errors name `where` (the file) and the sequence index."""
    if len(seqs) == 0:
        raise TaskError(f"{where}: the {split} split is empty (no sequences)")
    out, channels = [], None
    for i, s in enumerate(seqs):
        try:
            a = np.asarray(s, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise TaskError(f"{where}: {split} sequence {i} is not a numeric array "
                            f"({str(e).splitlines()[0][:120]})") from None
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise TaskError(f"{where}: {split} sequence {i} must be [T, C], got shape "
                            f"{list(a.shape)}")
        if a.shape[0] == 0:
            raise TaskError(f"{where}: {split} sequence {i} has no steps")
        if a.shape[1] == 0:
            raise TaskError(f"{where}: {split} sequence {i} has no channels (shape "
                            f"{list(a.shape)}); every step needs at least one value")
        if channels is None:
            channels = a.shape[1]
            if train is not None and channels != train[0]:
                here = "" if train[1] == where else f" ({train[1]})"
                raise TaskError(f"{where}: the {split} split has {channels} channels but the "
                                f"training split{here} has {train[0]}; every split must have "
                                f"the channels the model is built for")
        elif a.shape[1] != channels:
            raise TaskError(f"{where}: ragged channels: {split} sequence {i} has {a.shape[1]} "
                            f"channels, sequence 0 has {channels}")
        bad = ~np.isfinite(a)
        if bad.any():
            t, c = np.argwhere(bad)[0]
            raise TaskError(f"{where}: {split} sequence {i} has a missing or non-finite value "
                            f"({a[t, c]}) at step {t}, channel {c}; fill or drop it first")
        out.append(a)
    return out


def unique_names(names: list[str], where: str, what: str) -> list[str]:
    """`names` unchanged; TaskError naming `where` when two classes share a name."""
    seen: dict[str, int] = {}
    for k, n in enumerate(names):
        if n in seen:
            raise TaskError(f"{where}: {what} lists the class {n!r} twice (classes {seen[n]} "
                            f"and {k}); every class needs its own name")
        seen[n] = k
    return names


def label_map(train_labels: np.ndarray, names=None, where: str = "the data"
              ) -> tuple[dict, list[str]]:
    """Class labels of the training split -> ({label: index}, class names).

    With `names` (integer labels only): index = label, names as given (no duplicates).
    Otherwise the sorted distinct labels (strings or integers, -100 excluded) get indices
    0, 1, ... and their text as names; two distinct labels with the same text (1 and "1",
    NaN) are refused."""
    values = [v for v in np.asarray(train_labels).reshape(-1).tolist() if v != IGNORE]
    if names is not None:
        names = unique_names([str(n) for n in names], where, "class_names")
        return {k: k for k in range(len(names))}, names
    odd = [v for v in values if isinstance(v, float) and not np.isfinite(v)]
    if odd:
        raise TaskError(f"{where}: a training label is {odd[0]}; every label must be a class "
                        f"(or {IGNORE} for an unlabelled step of per-step labels)")
    distinct = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    by_text: dict[str, object] = {}
    for v in distinct:
        if str(v) in by_text:
            raise TaskError(f"{where}: the training labels hold both {by_text[str(v)]!r} and "
                            f"{v!r}, two classes that would both be named {str(v)!r}; give "
                            f"every label the same type (all integers or all strings)")
        by_text[str(v)] = v
    return {v: k for k, v in enumerate(distinct)}, [str(v) for v in distinct]


def refuse_unlabelled_sequences(labels: np.ndarray, where: str, split: str):
    """Per-sequence labels: -100 marks an unlabelled *step* of per-step labels only; a
    sequence without a class is refused here (train, convert and stream_eval then never
    have to agree on how to count it)."""
    for i, v in enumerate(np.asarray(labels, dtype=object).reshape(-1).tolist()):
        if not isinstance(v, str) and v == IGNORE:
            raise TaskError(f"{where}: {split} sequence {i} has the label {IGNORE}, which "
                            f"marks an unlabelled step of per-step labels; one label per "
                            f"sequence must be a class: drop the sequence or give it one")


def require_labelled_steps(labels: list, where: str, split: str):
    """Per-step labels: the split must have at least one labelled step (train: it learns from
    them; val: training and convert judge by it)."""
    if not any((np.asarray(lab) != IGNORE).any() for lab in labels):
        raise TaskError(f"{where}: every {split} step is unlabelled ({IGNORE}); the {split} "
                        f"split needs labelled steps")


def encode(labels, mapping: dict, where: str, split: str) -> np.ndarray:
    """Labels (any shape) -> int64 indices through `mapping`; -100 stays -100; a label the
    training split does not have raises TaskError."""
    arr = np.asarray(labels, dtype=object)
    out = np.empty(arr.shape, np.int64)
    for pos, v in np.ndenumerate(arr):
        v = v.item() if isinstance(v, np.generic) else v
        if v == IGNORE and not isinstance(v, str):
            out[pos] = IGNORE
        elif v in mapping:
            out[pos] = mapping[v]
        else:
            known = ", ".join(map(str, list(mapping)[:12]))
            raise TaskError(f"{where}: {split} label {v!r} is not among the training labels "
                            f"({known})")
    return out


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int):
    """Indices (keep, held out): each class (of a per-sequence label) shuffled with `seed` and
    round(fraction * count) of it held out (at least 1 when the class has 2 or more)."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n = min(max(n, 1), len(idx) - 1)
        else:
            n = 0
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def random_holdout(n: int, fraction: float, seed: int):
    """Indices (keep, held out) of a seeded random split (per-step labelled sequences)."""
    idx = np.random.default_rng(seed).permutation(n)
    k = min(max(int(round(fraction * n)), 1), n - 1) if n >= 2 else 0
    return np.sort(idx[k:]), np.sort(idx[:k])


CONSTANT_REL_STD = 1e-6   # std <= this * the channel's largest |value|: a constant channel


def channel_stats(seqs: list[np.ndarray]) -> tuple[list, list]:
    """Per-channel mean and std over every real step, as float32 values. The one rule for a
    constant channel, relative to the channel's own scale (whatever its units: 1e-9 A or
    1e9 Pa): its std is at most CONSTANT_REL_STD times its largest |value| (float32 rounding
    noise at most); it gets std = that largest |value| (1 for an all-zero channel), so it
    normalises to ~0 and a later change is measured against its own level."""
    allx = np.concatenate(seqs, axis=0).astype(np.float64)
    mean, std = allx.mean(0), allx.std(0)
    mag = np.abs(allx).max(0) if len(allx) else np.zeros_like(mean)
    constant = std <= CONSTANT_REL_STD * mag
    std = np.where(constant, np.where(mag > 0, mag, 1.0), std)
    mean32 = [float(np.float32(v)) for v in mean]
    std32 = [float(max(np.float32(v), np.finfo(np.float32).tiny)) for v in std]
    return mean32, std32


def _pad(seqs, labels, per_step: bool, T: int):
    N, C = len(seqs), seqs[0].shape[1]
    x = np.zeros((N, T, C), np.float32)
    y = np.full((N, T), IGNORE, np.int64) if per_step else np.asarray(labels, np.int64)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
        if per_step:
            y[i, :len(s)] = labels[i]
    return torch.from_numpy(x), torch.from_numpy(y)


def pack(name: str, splits: dict, per_step: bool, class_names: list[str],
         normalize: bool) -> TaskData:
    """splits[split] = (sequences [T_i, C], labels: int64 [N] or a list of int64 [T_i])."""
    lengths = {s: np.array([len(q) for q in seqs], np.int64) for s, (seqs, _) in splits.items()}
    T = int(max(v.max() for v in lengths.values()))
    variable = any((v != T).any() for v in lengths.values())
    fields = {}
    for split, (seqs, labels) in splits.items():
        fields[f"x_{split}"], fields[f"y_{split}"] = _pad(seqs, labels, per_step, T)
        fields[f"len_{split}"] = torch.from_numpy(lengths[split]) if variable else None
    mean, std = channel_stats(splits["train"][0]) if normalize else (None, None)
    return TaskData(**fields, n_in=int(splits["train"][0][0].shape[1]),
                    n_classes=len(class_names), seq_len=T,
                    readout="per_step" if per_step else "mean", name=name,
                    class_names=list(class_names), input_mean=mean, input_std=std)
