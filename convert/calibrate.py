"""Step-by-step graph inputs from real sequences, produced by the hardened float network.

Each yielded feed holds what the streaming graph sees at step t: the frame, each layer's ring
(past frames at slots (t-d) mod R), its gather indices and its minGRU state.
"""
from __future__ import annotations

import numpy as np
import torch

from mgrade_edge.convert import names
from mgrade_edge.convert.rings import gather_indices, ring_from_past
from mgrade_edge.convert.spec import StepSpec


@torch.no_grad()
def step_feeds(net, spec: StepSpec, xs: torch.Tensor):
    """xs [S, T, n_in] -> yields (feed: dict name -> float32/int32 array, logits_t [n]) for
    every step of every sequence, in order; logits_t is the network's running output."""
    net.eval()
    for x in xs:
        state = net.init_state(1)
        for t in range(x.shape[0]):
            feed = {names.X: x[t:t + 1].numpy().astype(np.float32)}
            for i, (layer, ls) in enumerate(zip(spec.layers, state["layers"])):
                if layer.ring_frames > 0:
                    past = ls["past"][0].numpy().astype(np.float32)
                    feed[names.ring(i)] = ring_from_past(past, t, layer.ring_frames)
                    feed[names.idx(i)] = gather_indices(layer.delays, t, layer.ring_frames)
                if layer.wz is not None:
                    feed[names.h(i)] = ls["h"].numpy().astype(np.float32)
            out, state = net.step(x[t:t + 1], state)
            yield feed, out[0].numpy()
