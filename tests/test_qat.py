"""Quantization-aware training (training.qat): the fake-quantized weights are the converter's
int8 weights times their scales, bit for bit; the QAT forward computes with them; gradients
flow straight through; a QAT fine-tune of a finished run resumes and checkpoints; config
mistakes are clear errors."""
import json

import numpy as np
import pytest
import torch

from mgrade_edge.convert.calibrate import step_feeds
from mgrade_edge.convert.graph import io_names
from mgrade_edge.convert.quantize import convert_int8
from mgrade_edge.convert.spec import extract
from mgrade_edge.convert.tflite_reader import read_tflite
from tests.test_train import final_weights, run_train, write_cfg
from tests.tiny_runs import tiny_digits_run
from mgrade_edge.training.checkpoint import load_raw
from mgrade_edge.training.config import ConfigError, ModelConfig, config_from_dict
from mgrade_edge.training.model import MGradeNet
from mgrade_edge.training.qat import (ActRange, act_ranges, asym_params, deployed_weights, fake_quant_act,
                          fake_quant_rows, load_act_ranges, quant_rows)


def tiny_net(norm="batch", normalize=True, seed=0):
    """A hardened 2-layer net with non-trivial batch-norm statistics, in float64."""
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=8, n_layers=2, kernel_span=6, n_taps=3, norm=norm)
    stats = dict(input_mean=[0.1, 0.2, -0.3], input_std=[0.5, 2.0, 1.5]) if normalize else {}
    net = MGradeNet(cfg, n_in=3, n_classes=4, **stats)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "running_var"):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()
    return net.harden().eval().double()


@pytest.fixture(scope="module")
def converted():
    """(net, spec, tflite Model) of a tiny net converted by the project's converter."""
    net = tiny_net()
    spec = extract(net)
    xs = torch.randn(2, 10, 3)
    feeds = [f for f, _ in step_feeds(net.float(), spec, xs)]
    net.double()
    return net, spec, read_tflite(convert_int8(spec, feeds))


def tflite_weights(model) -> list[tuple[str, np.ndarray]]:
    """Every constant int8 weight of the .tflite, dequantized in float32: FC weights [out, in],
    depthwise kernels as [H, N] taps, MUL / ADD constants [n]."""
    found = []
    for op in model.operators:
        if op.op not in ("FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "MUL", "ADD"):
            continue
        for i in op.inputs:
            t = model.tensors[i] if i >= 0 else None
            if t is None or not t.is_const or t.dtype != np.int8:
                continue
            q = t.data.astype(np.float32)
            scale = t.quant.scale.astype(np.float32)
            zp = t.quant.zero_point.astype(np.float32)
            if op.op == "FULLY_CONNECTED":
                w = q * scale[:, None]
            elif op.op == "DEPTHWISE_CONV_2D":          # [1, 1, N, H], channel axis 3
                w = (q.reshape(t.shape[2], t.shape[3]) * scale[None, :]).T
                w = w[:, 0] if t.shape[2] == 1 else w    # a 1x1 post-norm: its scale [H]
            else:
                assert scale.size == 1
                w = (q - zp) * scale
            found.append((f"{op.op}:{t.name}", w))
    return found


def test_fake_quantized_weights_equal_the_tflite_int8_weights_bit_for_bit(converted):
    net, spec, model = converted
    ours = {k: v.numpy().astype(np.float32) for k, v in deployed_weights(net).items()
            if not k.startswith(("b", "post_shift"))}     # biases: int32 in the .tflite
    theirs = tflite_weights(model)
    # every weight the converter wrote is one of ours, exactly, and vice versa
    unmatched = [name for name, w in theirs
                 if not any(w.shape == v.shape and np.array_equal(w, v) for v in ours.values())]
    assert not unmatched, unmatched
    missing = [k for k, v in ours.items()
               if not any(w.shape == v.shape and np.array_equal(w, v) for _, w in theirs)]
    assert not missing, missing
    assert {"we", "wr", "taps0", "wz1", "wh1", "w10", "w21", "post_scale0"} <= set(ours)
    # and they are not the float weights (the test would pass vacuously otherwise)
    assert not np.array_equal(ours["w10"], spec.layers[0].w1.astype(np.float32))


def numpy_step_logits(spec, w: dict, x: np.ndarray) -> np.ndarray:
    """The streaming graph (convert/graph.py) in float64 NumPy with the weights `w` (names as
    in deployed_weights) and the spec's delays: x [T, n_in] -> per-step readout [T, n]."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    frames = [[] for _ in spec.layers]
    hs = [np.zeros(spec.channels) for _ in spec.layers]
    out = []
    for t in range(len(x)):
        a = w["we"] @ x[t] + w["be"]
        for i, layer in enumerate(spec.layers):
            frames[i].append(a)
            u = a.copy()
            for c in range(spec.channels):
                for e, d in enumerate(layer.delays[c]):
                    if t - d >= 0:
                        u[c] += w[f"taps{i}"][c, e] * frames[i][t - d][c]
            z = sig(w[f"wz{i}"] @ u + layer.bz)
            hp = w[f"wh{i}"] @ u + layer.bh
            hs[i] = hs[i] + z * (np.maximum(hp, 0) + sig(np.minimum(hp, 0)) - hs[i])
            v = u + hs[i]
            a = v + w[f"w2{i}"] @ np.maximum(w[f"w1{i}"] @ v + w[f"b1{i}"], 0) + layer.b2
            if f"post_scale{i}" in w:
                a = a * w[f"post_scale{i}"] + w[f"post_shift{i}"]
        out.append(w["wr"] @ a + w["br"])
    return np.array(out)


def test_qat_forward_and_step_compute_with_the_deployed_weights(converted):
    net, spec, _ = converted
    w = {k: v.numpy() for k, v in deployed_weights(net).items()}
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    net.set_qat(True)
    try:
        with torch.no_grad():
            got = net(x, per_step=True).numpy()
            state, stepped = net.init_state(2), []
            for t in range(x.shape[1]):
                logits, state = net.step(x[:, t], state)
                stepped.append(logits)
            mean = net(x).numpy()
    finally:
        net.set_qat(False)
    # the graph takes the frame normalised by the spec's statistics (before quantisation)
    assert spec.input_mean is not None
    xn = (x.numpy() - spec.input_mean.astype(np.float64)) / spec.input_std.astype(np.float64)
    want = np.stack([numpy_step_logits(spec, w, xb) for xb in xn])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(stepped[-1].numpy(), mean, rtol=0, atol=1e-10)
    np.testing.assert_allclose(mean, want.mean(axis=1), rtol=0, atol=1e-10)
    with torch.no_grad():                          # and QAT off is the float network again
        assert np.abs(net(x, per_step=True).numpy() - want).max() > 1e-6


def test_quant_rows_edge_values():
    w = torch.tensor([[0.0, 0.0], [1.0, -0.25], [-2.0, 0.5]])
    q, scale = quant_rows(w)
    assert scale[0] == 1.0 and q[0].tolist() == [0.0, 0.0]               # a zero row
    assert q[1, 0] == 127 and q[2, 0] == -127 and q.abs().max() <= 127    # the row's max
    assert torch.equal(fake_quant_rows(w)[2], q[2] * scale[2])


def test_gradients_flow_straight_through():
    w = torch.randn(5, 4, requires_grad=True)
    g = torch.randn(5, 4)
    fake_quant_rows(w).backward(g)
    assert torch.equal(w.grad, g)
    net = tiny_net().float().train()
    net.set_qat(True)
    x = torch.randn(4, 12, 3)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
            assert float(p.grad.abs().max()) > 0, name
    bn = net.blocks[0].norm_mlp
    before = bn.running_mean.clone()
    net(x)                                        # training mode: statistics stay frozen
    assert torch.equal(bn.running_mean, before)


def test_layer_norm_cannot_be_fake_quantized():
    net = MGradeNet(ModelConfig(d_model=8, n_layers=1, kernel_span=4, n_taps=2,
                                norm="layer"), 1, 3)
    with pytest.raises(ValueError, match="model.norm"):
        net.set_qat(True)


@pytest.mark.parametrize("train, model, msg", [
    ({"qat_epochs": -1}, {}, "train.qat_epochs must be >= 0"),
    ({"epochs": 2, "qat_epochs": 3}, {}, "exceeds train.epochs = 2"),
    ({"qat_epochs": 1}, {"norm": "layer"}, "needs model.norm"),
    ({"qat_epochs": 1.5}, {}, "'train.qat_epochs' must be int"),
    ({"qat_acts": True}, {}, "train.qat_acts = true needs train.qat_epochs > 0"),
    ({"qat_epochs": 1, "qat_acts": 1}, {}, "'train.qat_acts' must be bool"),
    ({"qat_epochs": 1, "qat_acts": True, "qat_act_momentum": 1.5}, {},
     "train.qat_act_momentum must be in"),
])
def test_config_errors_are_clear(train, model, msg):
    with pytest.raises(ConfigError, match=msg):
        config_from_dict({"task": {"name": "digits"}, "model": model, "train": train})


def test_cli_errors_are_one_line_exit_2(tmp_path):
    cfg = write_cfg(tmp_path, epochs=2, extra="qat_epochs = 2\n")
    res = run_train(cfg, "--out", tmp_path / "run", "--epochs", "1")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "train.qat_epochs = 2 exceeds" in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("acts", [False, True], ids=["weights", "weights+acts"])
def test_qat_fine_tune_of_a_finished_run_resumes_and_checkpoints(tmp_path, tmp_path_factory,
                                                                 acts):
    import shutil
    base = tmp_path / "base"       # a finished 1-epoch run of write_cfg(epochs=1), both cases'
    shutil.copytree(tiny_digits_run(tmp_path_factory), base)
    qcfg = write_cfg(tmp_path, "qat.toml", epochs=1,
                     extra="qat_epochs = 1\n" + ("qat_acts = true\n" if acts else ""))
    # the changed key must be allowed
    res = run_train(qcfg, "--out", base, "--resume", "--epochs", "2")
    assert res.returncode == 2 and "--allow-change train.qat_epochs" in res.stderr
    # the fine-tune, uninterrupted, and the same killed mid-epoch (--ckpt-every 0) and resumed
    runs = {}
    for name in ("whole", "cut"):
        runs[name] = tmp_path / name
        shutil.copytree(base, runs[name])
    args = ["--resume", "--epochs", "2", "--allow-change", "train.qat_epochs"] + \
        (["--allow-change", "train.qat_acts"] if acts else [])
    res = run_train(qcfg, "--out", runs["whole"], *args)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (runs["whole"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["qat"] for r in rows] == [False, True]
    ckpt = load_raw(runs["whole"] / "checkpoint.pt")
    assert ckpt["config"]["train"]["qat_epochs"] == 1 and ckpt["epoch"] == 2
    # interrupted: stop after a few batches of the QAT epoch via SIGINT, then resume
    import signal
    import subprocess
    import sys
    import time
    from tests.test_train import ROOT
    proc = subprocess.Popen([sys.executable, "-m", "mgrade_edge.training.train", str(qcfg), "--out",
                             str(runs["cut"]), *args, "--ckpt-every", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt_path = runs["cut"] / "checkpoint.pt"
    start = ckpt_path.stat().st_mtime_ns
    deadline = time.monotonic() + 120
    while ckpt_path.stat().st_mtime_ns == start and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the fine-tune finished before it could be interrupted")
    assert proc.returncode == 130, err
    mid = load_raw(ckpt_path)
    assert mid["epoch"] == 1 and mid["batch"] > 0
    res = run_train(qcfg, "--out", runs["cut"], "--resume", "--epochs", "2")
    assert res.returncode == 0, res.stderr
    a, b = final_weights(runs["whole"]), final_weights(runs["cut"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    ranges = [load_raw(runs[n] / "checkpoint.pt")["act_ranges"] for n in ("whole", "cut")]
    assert ranges[0] == ranges[1] and len(ranges[0]) > 0      # the EMA ranges resume too
    assert any(seen for _, _, seen in ranges[0].values()) == acts
    # batch norm statistics were frozen during the QAT epoch
    base_w = final_weights(base)
    stats = [k for k in a if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats and all(torch.equal(a[k], base_w[k]) for k in stats)
    assert not torch.equal(a["readout.weight"], base_w["readout.weight"])


# -- activations ----------------------------------------------------------------------------

def test_activation_ranges_and_grids_are_the_converters(tmp_path):
    """An ActRange that saw the calibration feeds picks the scale and zero point the TFLite
    converter gives the same tensor (the input x exactly; the per-step logits up to float32
    vs float64 arithmetic), and its fake quantization is the int8 round trip on that grid."""
    net = tiny_net(seed=3).float()
    spec = extract(net)
    xs = torch.randn(3, 12, 3) * 2 + 0.5
    feeds = [f for f, _ in step_feeds(net, spec, xs)]
    model = read_tflite(convert_int8(spec, feeds))
    xg = net.graph_input(xs).detach()               # the graph's input: normalised frames
    got = {}
    for name, x in (("x", xg), ("logits", net(xs, per_step=True).detach())):
        obs = ActRange().train()
        obs.active, obs.momentum = True, 1.0
        obs(x.reshape(-1))                          # one batch: the calibration's min / max
        got[name] = asym_params(float(obs.lo), float(obs.hi))
    ins, outs = io_names(spec)                      # signature order
    tx = model.tensors[model.inputs[ins.index("x")]].quant
    tl = model.tensors[model.outputs[outs.index("logits")]].quant
    assert got["x"] == (float(tx.scale[0]), int(tx.zero_point[0]))
    assert got["logits"][1] == int(tl.zero_point[0])
    assert got["logits"][0] == pytest.approx(float(tl.scale[0]), rel=1e-5)
    # the int8 round trip with the .tflite's own parameters
    s, zp = float(tx.scale[0]), int(tx.zero_point[0])
    v = xg.reshape(-1).numpy().astype(np.float32)
    q = np.clip(np.sign(v / s) * np.floor(np.abs(v / s) + 0.5) + zp, -128, 127)
    want = ((q - zp) * np.float32(s)).astype(np.float32)
    fq = fake_quant_act(xg.reshape(-1), float(xg.min()), float(xg.max())).numpy()
    assert float(xg.min()) < 0 and np.array_equal(fq, want)
    assert len(np.unique(fq)) > 50 and not np.array_equal(fq, v)   # on the grid, moved


def test_activation_fake_quant_gradient_is_straight_through_inside_the_range():
    x = torch.tensor([-3.0, -0.5, 0.1, 0.7, 2.0, 5.0], requires_grad=True)
    y = fake_quant_act(x, -1.0, 2.0)
    s, zp = asym_params(-1.0, 2.0)
    assert float(y[0]) == pytest.approx((-128 - zp) * s)                   # clamped
    assert float(y[5]) == pytest.approx((127 - zp) * s)
    assert float((y[1:5] - x[1:5]).abs().max()) <= s / 2 + 1e-7
    y.backward(torch.arange(1.0, 7.0))
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]


def test_activation_ranges_follow_an_ema_and_freeze_in_eval():
    obs = ActRange().train()
    x = torch.tensor([1.0, 2.0])
    assert obs(x) is x                              # off: identity, range untouched
    assert not bool(obs.seen)
    obs.active, obs.momentum = True, 0.75
    obs(torch.tensor([-1.0, 3.0]))                  # first batch sets the range
    assert (float(obs.lo), float(obs.hi)) == (-1.0, 3.0)
    obs(torch.tensor([-5.0, 7.0]))                  # then lo <- 0.75 lo + 0.25 min
    assert (float(obs.lo), float(obs.hi)) == (-2.0, 4.0)
    obs.eval()
    obs(torch.tensor([-50.0, 70.0]))                # eval: the range stays
    assert (float(obs.lo), float(obs.hi)) == (-2.0, 4.0)
    obs.train()
    obs.momentum = 1.0                              # 1: frozen
    obs(torch.tensor([-50.0, 70.0]))
    assert (float(obs.lo), float(obs.hi)) == (-2.0, 4.0)


def test_qat_with_activations_quantizes_every_step_graph_activation_and_trains():
    """set_qat(acts=True): each of the 19 tensors of a 2-layer net (encoder; per layer conv,
    u, z, h~, v, fc1, fc2, w, post-norm; logits) gets a range; stepping equals
    the parallel forward; gradients reach every parameter; set_qat(False) turns it off."""
    net = tiny_net().float().train()
    net.set_qat(True, acts=True)
    x = torch.randn(4, 12, 3)
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    ranges = act_ranges(net)
    # the last block's post-norm is folded into the readout: it is not in the graph
    unseen = sorted(n for n, (*_, seen) in ranges.items() if not seen)
    assert len(ranges) == 20 and unseen == ["blocks.1.aq_post"]
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and float(p.grad.abs().max()) > 0, name
    net.eval()
    with torch.no_grad():
        state = net.init_state(4)
        for t in range(12):
            logits, state = net.step(x[:, t], state)
        np.testing.assert_allclose(logits.numpy(), net(x).numpy(), rtol=0, atol=1e-5)
        per_step = net(x, per_step=True)
        enc = net._encode(x)
        # outputs lie on the logits' int8 grid
        s, zp = asym_params(*ranges["aq_logits"][:2])
        k = per_step / s
        assert float((k - k.round()).abs().max()) < 1e-3
        assert len(torch.unique(enc)) < enc.numel()
        net.set_qat(False)
        assert float((net._encode(x) - enc).abs().max()) > 1e-4


def test_convert_reports_the_qat_view_accuracy():
    """convert's qat_acc: the hardened net with the deployed int8 weights (and, where the run
    fake-quantized activations, its saved ranges); {} for a run without QAT; the net computes
    in float again afterwards."""
    from types import SimpleNamespace
    from mgrade_edge.convert.__main__ import qat_view_accuracy
    from mgrade_edge.training.evaluate import evaluate
    from mgrade_edge.training.qat import act_ranges
    net = tiny_net().float()
    x, y = torch.randn(40, 12, 3), torch.randint(0, 4, (40,))     # y: random, then argmax
    cfg = lambda n: SimpleNamespace(train=SimpleNamespace(qat_epochs=n))  # noqa: E731
    assert qat_view_accuracy(net, cfg(0), {}, x, y, None) == {}
    float_logits = net(x)
    net.set_qat(True)
    with torch.no_grad():
        y = net(x).argmax(-1)             # labels the int8-weight view gets all right
    want_w = evaluate(net, x, y)["acc"]
    net.train().set_qat(True, acts=True, momentum=0.0)    # ranges from a coarse batch
    net(x[:2] * 0.2)
    ranges = act_ranges(net)
    want_wa = evaluate(net, x, y)["acc"]
    logits_wa = net.eval()(x)
    assert want_wa != want_w             # so the test tells which view was measured
    net.set_qat(False)
    assert torch.equal(net(x), float_logits)
    assert not torch.allclose(logits_wa, float_logits, atol=1e-2)   # the grids act
    for name in ranges:                                   # a fresh net: ranges come from ckpt
        ranges[name] = list(ranges[name])
    fresh = tiny_net().float()
    got = qat_view_accuracy(fresh, cfg(1), {"act_ranges": ranges}, x, y, None)
    assert got == {"qat_acc": want_wa, "qat_acts": True}
    assert torch.equal(fresh(x), float_logits)
    unseen = {n: [lo, hi, False] for n, (lo, hi, _) in ranges.items()}
    assert qat_view_accuracy(fresh, cfg(1), {"act_ranges": unseen}, x, y, None) == \
        {"qat_acc": want_w, "qat_acts": False}


def test_act_ranges_round_trip_and_legacy_post_norm_mul_is_dropped():
    """Ranges saved by a run load back; a checkpoint from before the post-norm became one op
    carries an extra `.aq_mul` range, which is ignored; any other mismatch is refused."""
    net = tiny_net().float().train()
    net.set_qat(True, acts=True)
    net(torch.randn(4, 12, 3))
    saved = act_ranges(net)
    other = tiny_net().float()
    legacy = dict(saved, **{"blocks.0.aq_mul": (-1.0, 1.0, True)})
    load_act_ranges(other, legacy)
    assert act_ranges(other) == saved
    with pytest.raises(ValueError, match="do not match"):
        load_act_ranges(other, dict(saved, **{"blocks.0.aq_bogus": (-1.0, 1.0, True)}))
