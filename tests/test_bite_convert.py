"""convert/spec.py's extraction (norm folding, minGRU split) against the float network.

The extracted spec is run as the float streaming step graph (convert/graph.py, TensorFlow, no
quantization) in closed loop, the way the firmware runs it: each step's frame output is
written into the ring at slot t mod R and the gather indices come from t. Its per-step logits
must equal the PyTorch network's parallel forward pass on the same sequence. The BatchNorm
layers get random running statistics and affines (a freshly built network has the identity
norm, under which a wrong fold would go unnoticed).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.layers import BatchNormChannels
from mgrade_edge.training.model import MGradeNet

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
T_STEPS = 24
TOL = 2e-4      # float32 graph vs float32 PyTorch, logits of magnitude ~1-10


def _net(seed: int, **kw) -> MGradeNet:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=6, n_layers=2, kernel_span=7, n_taps=3, norm="batch", **kw)
    net = MGradeNet(cfg, n_in=3, n_classes=4, readout="per_step")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, BatchNormChannels):
                m.running_mean.copy_(torch.randn(m.num_features))
                m.running_var.copy_(torch.rand(m.num_features) * 2 + 0.3)
                m.weight.copy_(torch.randn(m.num_features))
                m.bias.copy_(torch.randn(m.num_features))
        for conv in net.delay_convs():
            pos = torch.randint(0, cfg.span, conv.positions.shape).float()
            pos[0] = cfg.span - 1               # one channel at the largest delay
            pos[1] = 0                          # one channel at delay 0 only
            conv.positions.copy_(pos)
    return net.harden().eval()


def _closed_loop(spec, x: np.ndarray) -> np.ndarray:
    """Run the float step graph over x [T, n_in]; the caller keeps rings and states."""
    from mgrade_edge.convert.graph import build_step_function, io_names
    from mgrade_edge.convert.rings import gather_indices

    fn = build_step_function(spec)
    in_names, out_names = io_names(spec)
    H = spec.channels
    rings = {i: np.zeros((layer.ring_frames, H), np.float32)
             for i, layer in enumerate(spec.layers) if layer.ring_frames > 0}
    hs = {i: np.zeros((1, H), np.float32)
          for i, layer in enumerate(spec.layers) if layer.wz is not None}
    logits = []
    for t in range(len(x)):
        feed = {"x": x[t:t + 1].astype(np.float32)}
        for i, ring in rings.items():
            feed[f"ring{i}"] = ring.reshape(1, -1)
            feed[f"idx{i}"] = gather_indices(spec.layers[i].delays, t, len(ring))
        for i, h in hs.items():
            feed[f"h{i}"] = h
        out = dict(zip(out_names, [o.numpy() for o in fn(*[feed[n] for n in in_names])]))
        for i, ring in rings.items():
            ring[t % len(ring)] = out[f"frame{i}"][0]
        for i in hs:
            hs[i] = out[f"hnew{i}"]
        logits.append(out["logits"][0])
    return np.stack(logits)


@pytest.mark.parametrize("kw", [{}, {"use_rnn": False}, {"use_conv": False}],
                         ids=["mgrade", "conv_only", "rnn_only"])
def test_extracted_step_graph_equals_float_network(kw):
    pytest.importorskip("tensorflow")
    from mgrade_edge.convert.spec import extract

    net = _net(3, **kw)
    spec = extract(net)
    x = torch.randn(1, T_STEPS, net.n_in, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = net(x)[0].numpy()                       # [T, n] parallel path
    got = _closed_loop(spec, x[0].numpy())
    assert np.abs(want).max() > 0.5                     # the check is not vacuous
    err = np.abs(got - want).max()
    assert err < TOL, f"step graph vs float network: max |diff| {err:.3g} (tol {TOL})"
