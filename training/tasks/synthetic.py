"""The two synthetic multi-scale tasks, `flipflop` and `fastslow` (docs/tasks.md explains the
design and why each baseline must fail one part).

Both are per-step tasks with 4 classes: label = 2 * slow + fast, where `slow` is a bit held
since a rare, brief event (hundreds of steps back) and `fast` a bit read from the input at a few
exact short delays. Each split is drawn in chunks of 64 sequences, chunk c from its own random
stream np.random.default_rng([seed, task id, split id, c]): the data are a pure function of the
seed, the split sizes do not change each other's data, and a larger n_train only appends.

flipflop, channels [x_t, write_t, value_t]:
    x_t in {-1, +1} i.i.d. bit stream; write_t = 1 at rare write steps (first in [0, 16), then
    gaps uniform in [gap_min, gap_max]), value_t in {-1, +1} at write steps, 0 elsewhere.
    m_t = 1 if the last write at or before t wrote +1, else 0.
    b_t = 1 if x_{t-d1} != x_{t-d2} else 0.
    y_t = 2 m_t + b_t, for t >= d2 and t >= the first write; -100 before.

fastslow, channels [s_t, e_t]:
    f_t in {-1, +1} i.i.d. (the fast component), a_t = slow component: sum of n_slow sinusoids
    with periods log-uniform in [period_min, period_max], random phases and a random offset,
    std slow_amp; s_t = (a_t + f_t + noise * N(0, 1)) / sqrt(slow_amp^2 + 1): the fast part is
    only observed inside a sum with a larger slow signal.
    Events (first in [0, 16), then gaps uniform in [gap_min, gap_max]) set the regime r in
    {0, 1}: e_t = 2r - 1 during the event_width steps of the event, 0 elsewhere.
    The regime says how the fast part is read: b_t = [f_{t-d1} != f_{t-d2}] in regime 0,
    [f_{t-d1} != f_{t-d3}] in regime 1.
    y_t = 2 r_t + b_t, for t >= max(d2, d3) and t >= the first event; -100 before.

Parts (TaskData.parts, see there): flipflop "memory" (m), "memory_far" (m at steps whose last
write is >= far steps back), "delay" (b); fastslow "regime" (r), "regime_far", "fast" (b) and
"fast_unambiguous" (b at steps where both readings agree, so b does not depend on r).
"""
from __future__ import annotations

import numpy as np
import torch

from ._base import IGNORE, TaskData, check_params, require

COMMON = {"n_train": 2000, "n_val": 500, "n_test": 500, "seq_len": 512,
          "gap_min": 100, "gap_max": 400, "far": 64}
FLIPFLOP_DEFAULTS = {**COMMON, "d1": 3, "d2": 8}
FASTSLOW_DEFAULTS = {**COMMON, "d1": 2, "d2": 7, "d3": 11, "slow_amp": 1.5,
                     "period_min": 400, "period_max": 2000, "n_slow": 3, "noise": 0.05,
                     "event_width": 2}
TASK_IDS = {"flipflop": 1, "fastslow": 2}
SPLITS = {"train": 0, "val": 1, "test": 2}
FIRST_EVENT_MAX = 16
SLOW_OF_CLASS = torch.tensor([0, 0, 1, 1])
FAST_OF_CLASS = torch.tensor([0, 1, 0, 1])


CHUNK = 64            # sequences per random stream


def generate(name: str, fn, p: dict, seed: int, split: str, n: int):
    """fn(p, rng, count) for the split, drawn in chunks of CHUNK sequences, chunk c from
    np.random.default_rng([seed, task id, split id, c]): a pure function of the seed, and the
    first k sequences do not depend on n (a larger n_train only appends sequences)."""
    chunks = [fn(p, np.random.default_rng([seed, TASK_IDS[name], SPLITS[split], c]), CHUNK)
              for c in range(-(-n // CHUNK))]
    if not chunks:
        chunks = [fn(p, np.random.default_rng(0), 0)]
    return tuple(None if parts[0] is None else np.concatenate(parts)[:n]
                 for parts in zip(*chunks))


def event_times(rng, n: int, T: int, gap_min: int, gap_max: int) -> np.ndarray:
    """Boolean [n, T]: event onsets, the first in [0, FIRST_EVENT_MAX), then gaps uniform in
    [gap_min, gap_max]."""
    k = T // gap_min + 2
    gaps = rng.integers(gap_min, gap_max + 1, size=(n, k))
    gaps[:, 0] = rng.integers(0, FIRST_EVENT_MAX, size=n)
    times = np.cumsum(gaps, axis=1)
    onset = np.zeros((n, T), dtype=bool)
    rows, cols = np.nonzero(times < T)
    onset[rows, times[rows, cols]] = True
    return onset


def last_event(onset: np.ndarray) -> np.ndarray:
    """[n, T] index of the last onset at or before t, -1 if none yet."""
    T = onset.shape[1]
    idx = np.where(onset, np.arange(T)[None, :], -1)
    return np.maximum.accumulate(idx, axis=1)


def lagged(a: np.ndarray, d: int) -> np.ndarray:
    """a[:, t - d] (zeros for t < d)."""
    out = np.zeros_like(a)
    out[:, d:] = a[:, :a.shape[1] - d]
    return out


def _check_common(name: str, p: dict, max_delay: int):
    for k in ("n_train", "n_val", "n_test"):
        require(p[k] >= 0, name, f"{k} must be >= 0")
    require(p["n_train"] > 0, name, "n_train must be > 0")
    require(1 <= p["gap_min"] <= p["gap_max"], name, "need 1 <= gap_min <= gap_max")
    require(p["seq_len"] > max(max_delay, FIRST_EVENT_MAX), name,
            f"seq_len must exceed the largest delay ({max_delay}) and {FIRST_EVENT_MAX}")
    require(p["far"] >= 0, name, "far must be >= 0")


def _pack(name, p, n_in, splits) -> TaskData:
    """splits[split] = (x [N, T, C] float32, slow [N, T], fast [N, T], valid [N, T],
    since [N, T], fast_only_mask [N, T] or None) -> TaskData with parts."""
    fields, parts = {}, {}
    slow_name, fast_name = ("memory", "delay") if name == "flipflop" else ("regime", "fast")
    for split, (x, slow, fast, valid, since, unamb) in splits.items():
        y = np.where(valid, 2 * slow + fast, IGNORE).astype(np.int64)
        fields[f"x_{split}"] = torch.from_numpy(x.astype(np.float32))
        fields[f"y_{split}"] = torch.from_numpy(y)
        comps = {slow_name: np.where(valid, slow, IGNORE),
                 f"{slow_name}_far": np.where(valid & (since >= p["far"]), slow, IGNORE),
                 fast_name: np.where(valid, fast, IGNORE)}
        if unamb is not None:
            comps[f"{fast_name}_unambiguous"] = np.where(valid & unamb, fast, IGNORE)
        for part, lab in comps.items():
            parts.setdefault(part, {})[split] = torch.from_numpy(lab.astype(np.int64))
    for part in parts:
        of = SLOW_OF_CLASS if part.startswith(slow_name) else FAST_OF_CLASS
        parts[part]["of_class"] = of.clone()
    return TaskData(**fields, n_in=n_in, n_classes=4, seq_len=p["seq_len"],
                    readout="per_step", name=name, parts=parts)


# -- flipflop -----------------------------------------------------------------------------------
def flipflop_split(p: dict, rng: np.random.Generator, n: int):
    T, d1, d2 = p["seq_len"], p["d1"], p["d2"]
    bits = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, T))
    write = event_times(rng, n, T, p["gap_min"], p["gap_max"])
    wval = rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, T)) * write
    last = last_event(write)
    rows = np.arange(n)[:, None]
    mem = (wval[rows, np.maximum(last, 0)] > 0).astype(np.int64)
    t = np.arange(T)[None, :]
    valid = (last >= 0) & (t >= max(d1, d2))
    fast = (lagged(bits, d1) != lagged(bits, d2)).astype(np.int64)
    x = np.stack([bits, write.astype(np.int8), wval], axis=-1)
    return x, mem, fast, valid, t - last, None


def load_flipflop(name: str, params: dict, data_dir, seed: int) -> TaskData:
    p = check_params(name, params, FLIPFLOP_DEFAULTS)
    require(0 <= p["d1"] and 0 <= p["d2"] and p["d1"] != p["d2"], name,
            "d1 and d2 must be distinct delays >= 0")
    _check_common(name, p, max(p["d1"], p["d2"]))
    splits = {s: generate(name, flipflop_split, p, seed, s, p[f"n_{s}"]) for s in SPLITS}
    return _pack(name, p, 3, splits)


# -- fastslow -----------------------------------------------------------------------------------
def slow_component(rng, n: int, T: int, p: dict) -> np.ndarray:
    k = p["n_slow"]
    periods = np.exp(rng.uniform(np.log(p["period_min"]), np.log(p["period_max"]), (n, k)))
    phases = rng.uniform(0, 2 * np.pi, (n, k))
    weights = rng.uniform(0.5, 1.0, (n, k))
    amps = weights * np.sqrt(2.0 / (weights ** 2).sum(1, keepdims=True))   # unit std in total
    t = np.arange(T)[None, None, :]
    waves = np.sin(2 * np.pi * t / periods[..., None] + phases[..., None])
    offset = rng.uniform(-0.5, 0.5, (n, 1))
    return p["slow_amp"] * ((amps[..., None] * waves).sum(1) + offset)


def fastslow_split(p: dict, rng: np.random.Generator, n: int):
    T, d1, d2, d3 = p["seq_len"], p["d1"], p["d2"], p["d3"]
    fast_sig = rng.choice(np.array([-1.0, 1.0]), size=(n, T))
    slow = slow_component(rng, n, T, p)
    noise = p["noise"] * rng.standard_normal((n, T))
    s = (slow + fast_sig + noise) / np.sqrt(p["slow_amp"] ** 2 + 1.0)
    onset = event_times(rng, n, T, p["gap_min"], p["gap_max"])
    value = rng.integers(0, 2, size=(n, T)) * onset
    last = last_event(onset)
    rows = np.arange(n)[:, None]
    regime = value[rows, np.maximum(last, 0)].astype(np.int64)
    t = np.arange(T)[None, :]
    since = t - last
    pulse = np.where((last >= 0) & (since < p["event_width"]), 2.0 * regime - 1.0, 0.0)
    f1, f2, f3 = lagged(fast_sig, d1), lagged(fast_sig, d2), lagged(fast_sig, d3)
    b0, b1 = (f1 != f2), (f1 != f3)
    fast = np.where(regime == 1, b1, b0).astype(np.int64)
    valid = (last >= 0) & (t >= max(d1, d2, d3))
    x = np.stack([s, pulse], axis=-1)
    return x, regime, fast, valid, since, (b0 == b1)


def load_fastslow(name: str, params: dict, data_dir, seed: int) -> TaskData:
    p = check_params(name, params, FASTSLOW_DEFAULTS)
    ds = (p["d1"], p["d2"], p["d3"])
    require(min(ds) >= 0 and len(set(ds)) == 3, name, "d1, d2, d3 must be distinct delays >= 0")
    require(0 < p["period_min"] <= p["period_max"], name, "need 0 < period_min <= period_max")
    require(p["n_slow"] >= 1, name, "n_slow must be >= 1")
    require(p["slow_amp"] >= 0 and p["noise"] >= 0, name, "slow_amp and noise must be >= 0")
    require(1 <= p["event_width"] <= p["gap_min"], name, "need 1 <= event_width <= gap_min")
    _check_common(name, p, max(ds))
    splits = {s: generate(name, fastslow_split, p, seed, s, p[f"n_{s}"]) for s in SPLITS}
    return _pack(name, p, 2, splits)


def shape(name: str, params: dict) -> dict:
    defaults = FLIPFLOP_DEFAULTS if name == "flipflop" else FASTSLOW_DEFAULTS
    p = check_params(name, params, defaults)
    return {"n_in": 3 if name == "flipflop" else 2, "n_classes": 4, "seq_len": p["seq_len"],
            "readout": "per_step"}
