"""Step-by-step graph inputs from real sequences, produced by the hardened float network.

Each yielded feed holds what the streaming graph sees at step t: the frame (normalised where
the net normalises outside the graph, MGradeNet.graph_input), each layer's ring
(past frames at slots (t-d) mod R), its gather indices and its minGRU state.
"""
from __future__ import annotations

import numpy as np
import torch

from mgrade_edge.convert import names
from mgrade_edge.convert.rings import gather_indices, ring_from_past
from mgrade_edge.convert.spec import StepSpec


@torch.no_grad()
def step_feeds(net, spec: StepSpec, xs, keep=None, on_steps=None):
    """xs: [S, T, n_in] tensor, or a list of [T_s, n_in] tensors -> yields (feed: dict name ->
    float32/int32 array, logits_t [n]) for every step of every sequence, sequence by sequence
    in time order; keep(s, t) -> bool: only those steps (the others are stepped, not fed).

    The sequences of one length step together as one batch (one net.step per time step for
    the whole group, not one per sequence): the kept feeds are buffered and then yielded in
    order. on_steps(n): called after each batched step with the sequence-steps it advanced
    (a progress bar's update)."""
    net.eval()
    seqs = list(xs)
    by_length: dict[int, list[int]] = {}
    for s, x in enumerate(seqs):
        by_length.setdefault(int(x.shape[0]), []).append(s)
    kept: dict[tuple[int, int], tuple[dict, np.ndarray]] = {}
    for length, members in by_length.items():
        x = torch.stack([seqs[s] for s in members])            # [B, T, n_in]
        state = net.init_state(len(members))
        for t in range(length):
            rows = [b for b, s in enumerate(members) if keep is None or keep(s, t)]
            feeds = _batch_feeds(net, spec, x[:, t], state, t, rows) if rows else {}
            out, state = net.step(x[:, t], state)
            for b in rows:
                kept[(members[b], t)] = (feeds[b], out[b].numpy())
            if on_steps is not None:
                on_steps(len(members))
    for key in sorted(kept):
        yield kept[key]


def _batch_feeds(net, spec: StepSpec, x_t: torch.Tensor, state: dict, t: int,
                 rows: list[int]) -> dict[int, dict]:
    """{row b: feed} of the batch's rows `rows` at step t (before the step): frame x_t [B,
    n_in] as the graph sees it, each layer's ring and gather indices, each minGRU's state."""
    frames = net.graph_input(x_t).numpy().astype(np.float32)
    feeds = {b: {names.X: frames[b:b + 1]} for b in rows}
    for i, (layer, ls) in enumerate(zip(spec.layers, state["layers"])):
        if layer.ring_frames > 0:
            rings = ring_from_past(ls["past"].numpy().astype(np.float32), t, layer.ring_frames)
            idx = gather_indices(layer.delays, t, layer.ring_frames)
            for b in rows:
                feeds[b][names.ring(i)] = rings[b]
                feeds[b][names.idx(i)] = idx
        if layer.wz is not None:
            h = ls["h"].numpy().astype(np.float32)
            for b in rows:
                feeds[b][names.h(i)] = h[b:b + 1]
    return feeds
