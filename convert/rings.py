"""The graph's delay ring, step by step: which slot of the ring input a tap reads at step t, how
a past is laid into the ring, where the new frame goes (the graph builder, calibration, the
Python streamer).

The ring layout itself (R, R_c, offsets, wrap period, bytes, DELAY_BYTES) is
training/ring_layout.py, shared with the memory report: R = the largest delay of all H
channels, frame-major [R * H]; frame t - d sits at slot (t - d) mod R.
"""
from __future__ import annotations

import numpy as np


def gather_indices(delays: np.ndarray, t: int, ring_frames: int) -> np.ndarray:
    """Indices [N*H] (tap-major) into concat(frame_t, ring) flattened, for step t >= 0.

    delays [H, N]: tap e of channel c reads frame t - delays[c, e]; delay 0 is the current
    frame (positions 0..H-1), delay d >= 1 sits at ring slot (t - d) mod R.
    """
    H, N = delays.shape
    c = np.arange(H)[:, None]
    slot = np.mod(t - delays, max(ring_frames, 1))
    idx = np.where(delays == 0, c, (1 + slot) * H + c)
    return idx.T.reshape(-1).astype(np.int32)


def ring_from_past(past: np.ndarray, t: int, ring_frames: int) -> np.ndarray:
    """past [..., R, H] (frames t-1 .. t-R, newest first) -> graph ring [..., 1, R*H] in slot
    order (frame t-d at slot (t-d) mod R); leading dimensions are a batch."""
    ring = np.empty_like(past[..., :ring_frames, :])
    ring[..., (t - np.arange(1, ring_frames + 1)) % ring_frames, :] = past[..., :ring_frames, :]
    return ring.reshape(*past.shape[:-2], 1, -1)


def write_slot(t: int, ring_frames: int) -> int:
    """The graph ring slot the frame of step t is written to after the step."""
    return t % ring_frames
