"""The memory report against counts worked out by hand for a small network."""
import torch

from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.memory import format_report, memory_report
from mgrade_edge.training.model import MGradeNet


def small_net(**kw):
    cfg = ModelConfig(d_model=4, n_layers=1, kernel_span=6, n_taps=2, norm="batch", **kw)
    return MGradeNet(cfg, n_in=1, n_classes=3)


def test_counts_and_bytes_by_hand():
    rep = memory_report(small_net())
    c = rep["total"]["counts"]
    # weights: encoder 4x1, fc1 8x4, fc2 4x8, minGRU 8x4, readout 3x4
    assert c["weights"] == 4 + 32 + 32 + 32 + 12
    # biases: encoder 4, fc1 8, fc2 4, minGRU 8, readout 3
    assert c["biases"] == 27
    assert c["norm"] == 16 and c["conv_taps"] == 8 and c["delays"] == 8
    # plain ring: K - 1 = 5 past frames x 4 channels (the current frame is not state)
    assert c["ring_plain"] == 5 * 4 and c["rnn_state"] == 4 and c["acc"] == 3
    plain = rep["total"]["plain"]
    assert plain["param_values"] == 112 + 8 + 27 + 16 + 8
    assert plain["state_values"] == 20 + 4 + 3
    assert plain["fp32_bytes"] == 4 * (171 + 27)
    # int8: 1 B per weight/tap/norm value/state value, 2 B per delay (uint16_t), 4 B per bias
    # and accumulator
    assert plain["int8_bytes"] == 112 + 8 + 4 * 27 + 16 + 2 * 8 + 20 + 4 + 4 * 3
    assert plain["int8_param_bytes"] == 112 + 8 + 4 * 27 + 16 + 2 * 8
    assert plain["int8_state_bytes"] == 20 + 4 + 4 * 3
    assert "trimmed" not in rep["total"] and not rep["hardened"]


def test_trimmed_rings_after_harden():
    net = small_net()
    with torch.no_grad():
        net.blocks[0].conv.positions.copy_(torch.tensor([[0., 2.], [1., 5.], [3., 3.], [0., 0.]]))
    rep = memory_report(net.harden())
    # per channel its largest delay: 2, 5, 3, 0 (a channel with only delay 0 keeps no frame)
    assert rep["total"]["counts"]["ring_trimmed"] == 2 + 5 + 3 + 0
    saved = rep["total"]["plain"]["int8_bytes"] - rep["total"]["trimmed"]["int8_bytes"]
    assert saved == 20 - 10
    assert "saved" in format_report(rep)


def test_baselines_have_no_ring_or_no_state():
    rnn_only = memory_report(small_net(use_conv=False))["total"]["counts"]
    assert rnn_only["ring_plain"] == 0 and rnn_only["rnn_state"] == 4
    conv_only = memory_report(small_net(use_rnn=False))["total"]["counts"]
    assert conv_only["rnn_state"] == 0 and conv_only["ring_plain"] == 20
