"""Hardening edges the other model tests do not reach: positions outside the span (as a
checkpoint written before the clamp, or edited by hand, holds them) must still give delays in
0 .. K-1 and a step path equal to the parallel path; hardened positions stop taking
gradients (DistributedDataParallel needs every parameter that requires a gradient to get one).
"""
import torch

from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.model import MGradeNet


def _net(span=6):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=3, n_layers=1, kernel_span=span, n_taps=2, norm="none")
    return MGradeNet(cfg, n_in=2, n_classes=2, readout="per_step")


def test_positions_outside_the_span_harden_into_it():
    net = _net(span=6)
    conv = net.blocks[0].conv
    with torch.no_grad():
        conv.positions.copy_(torch.tensor([[7.3, -2.0], [5.6, 0.4], [2.5, 9.0]]))
    net.harden().eval()
    assert conv.delays().tolist() == [[5, 0], [5, 0], [2, 5]]
    assert conv.state_frames() == 5
    x = torch.randn(1, 12, 2)
    with torch.no_grad():
        want = net(x)[0]
        state, got = net.init_state(1), []
        for t in range(12):
            out, state = net.step(x[:, t], state)
            got.append(out[0])
    assert torch.allclose(torch.stack(got), want, atol=1e-5)
    # the delayed input reaches the output exactly at the clamped delay: an impulse at t=0
    # shows in channel 0's conv output at t = 5, not later
    with torch.no_grad():
        imp = torch.zeros(1, 10, 3)
        imp[0, 0] = 1.0
        y = conv(imp)[0, :, 0]
    assert y[5] != 0 and (y[6:] == 0).all()


def test_hardened_positions_take_no_gradient():
    net = _net()
    net.harden()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert "blocks.0.conv.positions" not in trainable
    loss = net(torch.randn(2, 8, 2)).sum()
    loss.backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} requires a gradient but gets none"
