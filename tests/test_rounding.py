"""GPTQ weight rounding (convert/rounding.py): same int8 grids as nearest rounding (the
TFLite converter finds exactly the chosen codes again), lower output error on inputs from the
calibration distribution, safe on degenerate inputs, layer input moments as the graph sees
them (delay taps per channel, padding excluded), and the convert CLI option."""
import json

import numpy as np
import pytest
import torch

from mgrade_edge.convert import rounding
from mgrade_edge.convert.calibrate import step_feeds
from mgrade_edge.convert.quantize import convert_int8
from mgrade_edge.convert.spec import extract
from mgrade_edge.convert.tflite_reader import read_tflite
from tests.test_qat import numpy_step_logits, tflite_weights, tiny_net
from mgrade_edge.training.qat import deployed_weights


def _correlated(n: int, mix: np.ndarray, rng) -> np.ndarray:
    """n samples of strongly correlated inputs: sources [n, k] mixed by mix [k, c], + noise."""
    return rng.normal(size=(n, mix.shape[0])) @ mix + 0.1 * rng.normal(size=(n, mix.shape[1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_keeps_the_grid_and_lowers_held_out_output_error(seed):
    rng = np.random.default_rng(100 + seed)
    w = rng.normal(size=(24, 16)) * rng.uniform(0.1, 3.0, size=(24, 1))
    mix = rng.normal(size=(8, 16))
    x_cal, x_new = _correlated(4000, mix, rng), _correlated(4000, mix, rng)
    hx = x_cal.T @ x_cal / len(x_cal)
    new, rep = rounding.round_weight(w, hx)
    q0, s = rounding.row_grid(w)
    codes = new / s[:, None]
    assert np.array_equal(codes, np.round(codes)) and np.abs(codes).max() <= 127
    # the same grid: quantizing the rounded weight again gives its codes and the same scales
    q1, s1 = rounding.row_grid(new)
    assert np.array_equal(q1, codes)
    np.testing.assert_allclose(s1, s, rtol=1e-6)
    assert rep["kept"] == "gptq" and not np.array_equal(codes, q0)
    # on inputs it never saw, from the same distribution, the outputs move less
    err = lambda wq: float((((wq - w) @ x_new.T) ** 2).mean())  # noqa: E731
    assert err(new) < 0.6 * err(q0 * s[:, None])


def test_degenerate_inputs_fall_back_safely():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 5))
    x = rng.normal(size=(200, 5))
    x[:, 2] = 0.0                         # a dead input
    x[:, 4] = x[:, 3]                     # two identical inputs: a singular moment
    hx = x.T @ x / len(x)
    new, rep = rounding.round_weight(w, hx)
    q0, s = rounding.row_grid(w)
    assert np.isfinite(new).all()
    assert np.array_equal(rounding.row_grid(new)[0], new / s[:, None])
    assert rep["gptq"] <= rep["nearest"] + 1e-12 or rep["kept"] == "nearest"
    # all inputs zero: nothing to minimise, nearest rounding is kept
    new0, rep0 = rounding.round_weight(w, np.zeros((5, 5)))
    assert rep0["kept"] == "nearest" and np.array_equal(new0, q0 * s[:, None])
    # a row of zeros stays zeros
    wz = w.copy()
    wz[1] = 0.0
    assert np.array_equal(rounding.round_weight(wz, hx)[0][1], np.zeros(5))


def test_tap_moments_are_each_channels_delayed_frames_without_padding():
    net = tiny_net(seed=4)
    conv = net.blocks[0].conv
    delays = conv.delays()
    x = torch.randn(3, 9, 8, dtype=torch.float64)
    lengths = torch.tensor([9, 5, 2])
    m = rounding._TapMoments(delays)
    m.add(x, net.step_mask(lengths, 9))
    want = np.zeros((8, delays.shape[1], delays.shape[1]))
    rows = 0
    for b in range(3):
        for t in range(int(lengths[b])):
            rows += 1
            for c in range(8):
                f = np.array([float(x[b, t - d, c]) if t - d >= 0 else 0.0
                              for d in delays[c].tolist()])
                want[c] += np.outer(f, f)
    np.testing.assert_allclose(m.mean(), want / rows, rtol=1e-12)


def test_input_moments_of_padded_sequences_equal_those_of_the_sequences_alone():
    net = tiny_net(seed=5)
    x = torch.randn(3, 12, 3, dtype=torch.float64)
    lengths = torch.tensor([12, 7, 4])
    padded = rounding.input_moments(net, x, lengths)
    assert set(padded) == {"we", "taps0", "taps1", "wz0", "wh0", "wz1", "wh1", "w10", "w11",
                           "w20", "w21", "wr"}
    sums, rows = {}, 0
    for b in range(3):
        one = rounding.input_moments(net, x[b:b + 1, :int(lengths[b])])
        for k, v in one.items():
            sums[k] = sums.get(k, 0) + v * int(lengths[b])
        rows += int(lengths[b])
    for k in padded:
        np.testing.assert_allclose(padded[k], sums[k] / rows, rtol=1e-9, atol=1e-12)


def test_the_tflite_holds_the_gptq_codes_and_the_step_moves_less():
    net = tiny_net(seed=6)
    xs = torch.randn(16, 20, 3, dtype=torch.float64)
    spec = extract(net)
    nearest = {k: v.numpy() for k, v in deployed_weights(net).items()}
    moments = rounding.input_moments(net, xs)
    report = rounding.round_spec(spec, moments)
    assert report and any(r["kept"] == "gptq" for r in report.values())
    feeds = [f for f, _ in step_feeds(net.float(), spec, xs[:2].float())]
    net.double()
    theirs = tflite_weights(read_tflite(convert_int8(spec, feeds)))
    fields = {"we": spec.we, "wr": spec.wr}
    for i, layer in enumerate(spec.layers):
        fields.update({f"taps{i}": layer.taps, f"wz{i}": layer.wz, f"wh{i}": layer.wh,
                       f"w1{i}": layer.w1, f"w2{i}": layer.w2})
    for name, w in fields.items():        # the converter wrote exactly the rounded weights
        ours = w.astype(np.float32)
        assert any(t.shape == ours.shape and np.array_equal(t, ours) for _, t in theirs), name
    changed = [k for k in fields if not np.array_equal(fields[k], nearest[k])]
    assert changed, "GPTQ chose the nearest codes everywhere (the test would be vacuous)"
    # the float step with the rounded weights stays closer to the float net than with nearest
    exact = {k: v.numpy() for k, v in extract_weights(net).items()}
    ours = {**nearest, **fields}
    x_new = torch.randn(8, 20, 3, dtype=torch.float64).numpy()
    ref = [numpy_step_logits(spec, exact, x) for x in x_new]
    d_gptq = np.mean([np.abs(numpy_step_logits(spec, ours, x) - r).mean()
                      for x, r in zip(x_new, ref)])
    d_near = np.mean([np.abs(numpy_step_logits(spec, nearest, x) - r).mean()
                      for x, r in zip(x_new, ref)])
    assert d_gptq < d_near


def extract_weights(net) -> dict:
    """The float (unquantized) weights in deployed_weights' names and folding."""
    net.set_qat(False)
    spec = extract(net)
    out = {"we": spec.we, "be": spec.be, "wr": spec.wr, "br": spec.br}
    for i, layer in enumerate(spec.layers):
        out.update({f"taps{i}": layer.taps, f"wz{i}": layer.wz, f"wh{i}": layer.wh,
                    f"w1{i}": layer.w1, f"b1{i}": layer.b1, f"w2{i}": layer.w2})
        if layer.post_scale is not None:
            out[f"post_scale{i}"], out[f"post_shift{i}"] = layer.post_scale, layer.post_shift
    return {k: torch.as_tensor(v) for k, v in out.items()}


def test_rounding_choice_and_nearest_leave_the_spec_alone():
    from types import SimpleNamespace

    from mgrade_edge.convert.__main__ import choose_rounding, round_weights
    plain = SimpleNamespace(train=SimpleNamespace(qat_epochs=0))
    qat = SimpleNamespace(train=SimpleNamespace(qat_epochs=1))
    assert choose_rounding("auto", plain) == "gptq"
    assert choose_rounding("auto", qat) == "nearest"      # QAT trained for nearest codes
    assert choose_rounding("gptq", qat) == "gptq" and choose_rounding("nearest", plain) == \
        "nearest"
    net = tiny_net(seed=7)
    spec = extract(net)
    before = {k: np.copy(getattr(spec.layers[0], k)) for k in ("taps", "wz", "w1")}
    assert round_weights(net, spec, None, 4, 0, "nearest") == {"weight_rounding": "nearest"}
    assert all(np.array_equal(getattr(spec.layers[0], k), v) for k, v in before.items())


def test_cli_refuses_an_unknown_rounding(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert", str(tmp_path), "--out",
                        str(tmp_path / "o"), "--rounding", "best"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--rounding" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_non_finite_moments_keep_nearest_rounding():
    w = np.random.default_rng(8).normal(size=(4, 3))
    hx = np.eye(3)
    hx[1, 1] = np.nan
    new, rep = rounding.round_weight(w, hx)
    q0, s = rounding.row_grid(w)
    assert rep == {"nearest": None, "gptq": None, "kept": "nearest"}
    assert np.array_equal(new, q0 * s[:, None])
    assert "GPTQ on 0 of 1" in rounding.summary({"w": rep})


def test_moments_are_the_same_in_small_chunks(monkeypatch):
    net = tiny_net(seed=9)
    x = torch.randn(5, 30, 3, dtype=torch.float64)
    lengths = torch.tensor([30, 11, 25, 3, 30])
    whole = rounding.input_moments(net, x, lengths)
    monkeypatch.setattr(rounding, "CHUNK_ROWS", 7)
    monkeypatch.setattr(rounding, "STEPS_PER_PASS", 40)       # one sequence per pass
    parts = rounding.input_moments(net, x, lengths)
    for k in whole:
        np.testing.assert_allclose(parts[k], whole[k], rtol=1e-10, atol=1e-14)
