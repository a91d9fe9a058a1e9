"""The network: streaming step == parallel forward, hardening, gradients, switches."""
import itertools

import pytest
import torch

from mgrade_edge.training.config import ConfigError, ModelConfig
from mgrade_edge.training.model import MGradeNet, sigma_at

# (use_conv, use_rnn, conv kind, norm): every combination of the switches
SWITCHES = [c for c in itertools.product([True, False], [True, False], ["dcls", "dilated"],
                                         ["batch", "layer", "none"])
            if (c[0] or c[1]) and not (not c[0] and c[2] == "dilated")]


def make_net(use_conv, use_rnn, conv, norm, readout="mean", **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=8, n_layers=2, use_conv=use_conv, use_rnn=use_rnn, conv=conv,
                      kernel_span=12, n_taps=3, dilation=3, norm=norm, **kw)
    cfg.validate()
    net = MGradeNet(cfg, n_in=3, n_classes=5, readout=readout)
    if norm == "batch":   # give the norms non-trivial running statistics
        net.train()
        with torch.no_grad():
            net(torch.randn(16, 30, 3))
    return net.eval()


def stream(net, x):
    state = net.init_state(x.shape[0])
    outs = []
    for t in range(x.shape[1]):
        out, state = net.step(x[:, t], state)
        outs.append(out)
    return torch.stack(outs, dim=1)


@pytest.mark.parametrize("use_conv,use_rnn,conv,norm", SWITCHES)
@pytest.mark.parametrize("readout", ["mean", "per_step"])
def test_step_equals_parallel_after_harden(use_conv, use_rnn, conv, norm, readout):
    net = make_net(use_conv, use_rnn, conv, norm, readout).harden()
    x = torch.randn(4, 40, 3)
    with torch.no_grad():
        steps = stream(net, x)
        per_step = net(x, per_step=True)
        if readout == "mean":
            expect = per_step.cumsum(1) / torch.arange(1, 41).view(1, -1, 1)
            assert torch.allclose(steps[:, -1], net(x), atol=1e-4)
        else:
            expect = per_step
            assert torch.allclose(net(x), per_step)
    assert torch.allclose(steps, expect, atol=1e-4), (steps - expect).abs().max()


def test_step_equals_parallel_soft_kernel():
    """Before hardening the step path carries the full span and matches the Gaussian conv."""
    net = make_net(True, True, "dcls", "none")
    x = torch.randn(2, 30, 3)
    with torch.no_grad():
        assert torch.allclose(stream(net, x)[:, -1], net(x), atol=1e-4)


def test_harden_rounds_positions_and_trims_state():
    net = make_net(True, True, "dcls", "none")
    conv = net.blocks[0].conv
    with torch.no_grad():
        conv.positions.copy_(torch.tensor([[0.2, 3.6, 7.4]]).expand(8, 3))
    net.harden()
    assert conv.delays().tolist()[0] == [0, 4, 7]
    assert conv.state_frames() == 7
    kernel = conv.dense_kernel()
    assert torch.count_nonzero(kernel[0]) == 3
    assert torch.allclose(kernel[0, [0, 4, 7]], conv.weight[0])
    assert net.init_state(1)["layers"][0]["past"].shape == (1, 7, 8)


def test_small_sigma_kernel_close_to_hardened():
    """With sigma at the floor and integer positions, hardening changes the output little."""
    net = make_net(True, True, "dcls", "none")
    for conv in net.delay_convs():
        with torch.no_grad():
            conv.positions.copy_(conv.positions.round())
    net.set_sigma(0.23)
    x = torch.randn(2, 30, 3)
    with torch.no_grad():
        soft = net(x)
        hard = net.harden()(x)
    assert torch.allclose(soft, hard, atol=1e-3)


def test_gradients_reach_positions_and_all_parameters():
    net = make_net(True, True, "dcls", "batch").train()
    loss = net(torch.randn(4, 25, 3)).logsumexp(-1).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    pos_grad = net.blocks[0].conv.positions.grad
    assert pos_grad.abs().sum() > 0


def test_long_sequence_is_finite():
    net = make_net(False, True, "dcls", "layer")
    x = torch.randn(2, 2048, 3) * 5
    with torch.no_grad():
        out = net(x, per_step=True)
    assert torch.isfinite(out).all()


def test_sigma_schedule():
    cfg = ModelConfig(kernel_span=30, sigma_start=0.0, sigma_end=0.5, sigma_anneal_frac=0.5)
    assert sigma_at(cfg, 0.0) == pytest.approx(10.0)
    assert sigma_at(cfg, 0.25) == pytest.approx(5.25)
    assert sigma_at(cfg, 0.5) == pytest.approx(0.5)
    assert sigma_at(cfg, 1.0) == pytest.approx(0.5)


def test_param_groups_put_positions_apart():
    net = make_net(True, True, "dcls", "batch")
    groups = net.param_groups(weight_decay=0.1, lr=1e-3, pos_lr_mult=5.0)
    pos = groups[-1]
    assert pos["lr"] == pytest.approx(5e-3) and pos["weight_decay"] == 0.0
    assert all(p.shape == (8, 3) for p in pos["params"]) and len(pos["params"]) == 2
    n = sum(p.numel() for grp in groups for p in grp["params"])
    assert n == net.n_params()


def test_baseline_switches_remove_modules():
    conv_only = make_net(True, False, "dilated", "none")
    assert all(b.rnn is None for b in conv_only.blocks)
    assert conv_only.blocks[0].conv.delays()[0].tolist() == [0, 3, 6]
    rnn_only = make_net(False, True, "dcls", "none")
    assert all(b.conv is None for b in rnn_only.blocks)


def test_bad_model_config():
    with pytest.raises(ConfigError, match="use_conv and use_rnn"):
        ModelConfig(use_conv=False, use_rnn=False).validate()
    with pytest.raises(ConfigError, match="model.norm"):
        ModelConfig(norm="group").validate()
