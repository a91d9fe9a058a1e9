"""The delay ring layout: how many past frames each layer keeps and where (numpy only).

One definition for the memory report (training/memory.py) and the converter (the graph's ring
input in convert/spec.py, the matcher and the C package writer in convert/); it lives in
training/ because training/ sits below convert/ (convert imports training, never the other
way round). The graph ring's indexing (which slot a tap reads at step t) is
convert/rings.py.

A layer's delays are an integer array [H, N]: tap e of channel c reads frame t - delays[c, e]
(delay 0 = the current frame, computed in the step, never stored).

* The graph's ring (convert/graph.py, stream.py, calibrate.py): R = max delay frames of all H
  channels, frame-major [R * H]; frame t - d sits at slot (t - d) mod R.
* The device ring (the C package): channel c keeps R_c = max_e delays[c, e] frames at
  [off_c, off_c + R_c) of one int8 array (sum_c R_c bytes, `channel_lengths`, `offsets`);
  a step counter wrapped at the lcm of all R_c (`wrap_period`) gives slot (t - d) mod R_c.
* The plain ring a network without trimming needs: kernel_span - 1 frames per channel.
Delays are stored as uint16_t (DELAY_BYTES each).
"""
from __future__ import annotations

import math

import numpy as np

DELAY_BYTES = 2              # the C package stores every delay as uint16_t
MAX_DELAY = (1 << 16) - 1
PERIOD_MAX = 0x7FFFFFFF      # a larger lcm wraps at 2^32 instead (period 0)


def graph_ring_frames(delays) -> int:
    """R of the graph's ring input: the largest delay (0: no ring)."""
    d = np.asarray(delays)
    return 0 if d.size == 0 else int(d.max())


def channel_lengths(delays) -> np.ndarray:
    """int64 [H]: R_c = the largest delay of channel c (frames the device keeps)."""
    return np.asarray(delays, np.int64).max(axis=1).astype(np.int64)


def offsets(lengths) -> np.ndarray:
    """int64 [H]: first slot of each channel in the device ring (exclusive cumulative sum)."""
    lengths = np.asarray(lengths, np.int64)
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def trimmed_bytes(delays) -> int:
    """int8 bytes of the device ring of one layer: sum_c R_c."""
    return int(channel_lengths(delays).sum())


def plain_frames(kernel_span, delays) -> int:
    """Frames per channel of an untrimmed ring: kernel_span - 1 (any delay 0 .. K-1), or the
    largest delay where the span is unknown."""
    return int(kernel_span) - 1 if kernel_span is not None else graph_ring_frames(delays)


def wrap_period(all_lengths) -> int:
    """The step counter's wrap: lcm of every nonzero R_c of all layers (1 if none); 0 when
    the lcm exceeds PERIOD_MAX (the counter then wraps naturally at 2^32)."""
    out = 1
    for v in sorted({int(v) for v in all_lengths if int(v) > 0}):
        out = out * v // math.gcd(out, v)
    return 0 if out > PERIOD_MAX else out
