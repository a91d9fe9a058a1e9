"""Float frame -> int8 model input: the one arithmetic the host, the C package and the
MicroPython package share, so a frame quantised on the device equals the host's to 0 LSB.

A model trained with input statistics (user-data tasks: per-channel mean / std of the
training split, metadata "input_norm") normalises each frame BEFORE quantising it, so the int8
grid spans normalised values whatever the data's units (an offset of 1000 std, std 1e-9 or
1e9 all resolve the same). Per channel c, in float32 (each operation rounded to float32):

    step[c] = std[c] * INPUT_SCALE               (constants, computed once, here)
    s       = (x[c] - mean[c]) / step[c]         (NaN -> 0, then clamped to [-512, 512])
    q[c]    = clamp(round_half_even(s) + INPUT_ZERO_POINT, -128, 127)

A model without input_norm (built-in tasks, raw 8-bit codes) has mean 0 and step INPUT_SCALE:
x - 0 = x exactly, so that is q = round(x / INPUT_SCALE) + INPUT_ZERO_POINT as before.
"""
from __future__ import annotations

import numpy as np

from mgrade_edge.convert.metadata import StepMetadata

MIN_GRID_STEPS = 16     # a channel's training-split std resolved by fewer int8 steps: warned


def frame_constants(meta: dict | StepMetadata, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, step) float32 [n_in] of a model (its metadata, its input scale): the
    per-channel offset and grid step in the data's units."""
    step_meta = StepMetadata.of(meta)
    n_in = step_meta.n_in
    norm = step_meta.input_mean_std
    scale32 = np.float32(scale)
    if norm is None:
        return np.zeros(n_in, np.float32), np.full(n_in, scale32, np.float32)
    mean, std = norm
    return mean, (std * scale32).astype(np.float32)


def quantize_frames(x: np.ndarray, mean: np.ndarray, step: np.ndarray, zero_point: int
                    ) -> np.ndarray:
    """x [..., n_in] (any float, taken as float32) -> int8 [..., n_in], the arithmetic of
    <P>_model_quantize_frame (convert/codegen_mgrade.py) and mg_model.quantize (MicroPython)."""
    x32 = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        s = (x32 - mean.astype(np.float32)) / step.astype(np.float32)
    s = np.clip(np.where(np.isnan(s), np.float32(0), s), -512, 512)
    return np.clip(np.round(s) + zero_point, -128, 127).astype(np.int8)


def grid_steps(x: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Real steps x [S, n_in] (data units) -> per channel, how many int8 grid steps span its
    std ([n_in] float64; inf for a constant channel)."""
    std = np.asarray(x, np.float64).std(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, std / np.asarray(step, np.float64), np.inf)


def resolution_warnings(x: np.ndarray, step: np.ndarray, normalised: bool) -> list[str]:
    """One line per channel whose training-split std the int8 input grid resolves with fewer
    than MIN_GRID_STEPS steps (x: the split's real steps [S, n_in] in the data's units)."""
    hint = ("its normalised values span a far wider range than its std (outliers?): check "
            "the channel or clip it" if normalised else
            "normalise the task's inputs (normalize = true) or remove the channel's offset")
    out = []
    for c, k in enumerate(grid_steps(x, step)):
        if k < MIN_GRID_STEPS:
            out.append(f"warning: input channel {c}: the int8 input grid resolves its "
                       f"training-split std with {k:.3g} steps (< {MIN_GRID_STEPS}); int8 "
                       f"accuracy may fall below float; {hint}")
    return out
