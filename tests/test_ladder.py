"""The widening ladder (convert/widen.py widen_mlp, convert/ladder.py): each form runs on both
interpreters, the generated C package is bit-exact with TFLite-Micro on both C paths
(convert/ops16.py, mcu/runtime/mg_ops16.h), and the MicroPython target refuses it in one line
naming the conversion to use."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from mgrade_edge.convert.quantize import read_metadata
from mgrade_edge.convert.stream import Streamer
from mgrade_edge.convert.tflite_reader import read_tflite
from tests.package_check import package_matches_tflm
from tests.test_state16 import _inputs, int8_small  # noqa: F401  (fixture)


def _mlp16(model8: bytes, input16: bool) -> bytes:
    from mgrade_edge.convert.widen import widen_input, widen_mlp, widen_state

    layers = read_metadata(model8)["layers"]
    m = widen_state(model8, layers, gate16=True)
    return widen_mlp(widen_input(m, layers) if input16 else m)


@pytest.fixture(scope="module", params=[False, True], ids=["state16", "input16"])
def mlp_model(request, int8_small) -> bytes:  # noqa: F811
    return _mlp16(int8_small, request.param)


def test_every_mlp_fc_is_16x8(mlp_model):
    """Each block's two MLP FCs read and write int16 (int8 weights, int32 biases), the MLP's
    residual ADD is int16, every int16 tensor has zero point 0, and only the readout FC is
    left int8."""
    m = read_tflite(mlp_model)
    T = m.tensors
    fcs = [op for op in m.operators if op.op == "FULLY_CONNECTED"]
    n_layers = len(read_metadata(mlp_model)["layers"])
    int8_fcs = [op for op in fcs if T[op.inputs[0]].dtype == np.int8]
    assert [op.outputs[0] for op in int8_fcs][-1] == m.outputs[0]      # the readout
    relu16 = [op for op in fcs if T[op.inputs[0]].dtype == np.int16
              and op.options.get("fused_activation_function") == "RELU"
              and any(c.op == "FULLY_CONNECTED" and op.outputs[0] in c.inputs
                      for c in m.operators)]
    assert len(relu16) == n_layers
    for op in relu16:
        assert T[op.inputs[1]].dtype == np.int8 and T[op.inputs[2]].dtype == np.int32
    for t in T:
        if t.dtype == np.int16 and t.quant is not None:
            assert int(t.quant.zero_point[0]) == 0


def test_interpreters_agree_on_the_mlp16_graph(mlp_model, int8_small):  # noqa: F811
    """LiteRT and TFLite-Micro run the widened graph within 2 LSB of each other on every logit
    (their int16 ADD rounding differs); it is a different graph from the one without the
    int16 MLP, and stays close to it (the same function on finer grids)."""
    from mgrade_edge.convert.widen import widen_state

    base = widen_state(int8_small, read_metadata(int8_small)["layers"], gate16=True)
    _assert_interpreters_agree_and_differ(mlp_model, base)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_package_bit_exact_with_int16_mlp(mlp_model, tmp_path, fast):
    """The generated package = the TFLM Streamer on every step's logits and the int8 copies
    of the states, 0 LSB, on the portable and the fast path; the MLP runs the int16 kernels
    (mg_ops16.h), which the fast path reports as falling back to the reference kernel."""
    text = package_matches_tflm(mlp_model, tmp_path, fast)
    assert text.count("mg_fully_connected_s16(") == 2 * 2
    assert "mg_add_s16(" in text and "mg_requantize_s8_s16(" in text


def test_micropython_refuses_the_mlp16_form_in_one_line(mlp_model, tmp_path):
    """The MicroPython generator refuses a widened form with one line that names the 8-bit
    conversion to run instead."""
    from mgrade_edge.convert.codegen_micropython import generate_module
    from mgrade_edge.convert.metadata import from_model
    from mgrade_edge.convert.tflm_params import CodegenError

    m = read_tflite(mlp_model)
    with pytest.raises(CodegenError) as e:
        generate_module(m, from_model(m), m.model_id)
    msg = str(e.value)
    assert "\n" not in msg and "--state-bits 8" in msg


def _auto_setup(n_val: int = 6):
    import torch

    from mgrade_edge.convert.__main__ import calibration_feeds
    from mgrade_edge.convert.quantize import convert_int8
    from mgrade_edge.convert.spec import extract
    from mgrade_edge.training.tasks._base import TaskData
    from tests.test_state16 import _small_net

    net = _small_net(2)
    spec = extract(net)
    raw = convert_int8(spec, calibration_feeds(net, spec, _inputs(4, 30, 5), 4, 0))
    x_tr, x_va = _inputs(9, 20, 6), _inputs(n_val, 20, 7)
    data = TaskData(x_tr, torch.arange(9) % 4, x_va, torch.arange(n_val) % 4,
                    _inputs(2, 20, 8), torch.zeros(2, dtype=torch.long), 3, 4, 20, "mean",
                    "synthetic")
    return raw, spec, data


@pytest.mark.parametrize("float_val", [0.0, 1.01], ids=["bound_met", "bound_unreachable"])
def test_auto_climbs_the_ladder_only_when_the_earlier_choice_misses_the_bound(float_val, capsys):
    """--form auto keeps the earlier 8-or-16 choice (or the cheaper state16 for input16) when
    it is within 0.5 points of the float accuracy; when no form can be (float accuracy above 100%), it tries every wider rung and
    keeps the most accurate (ties: the cheaper). Each tried form is reported with its
    validation accuracy, measured instructions per step and RAM, and printed in one table;
    the model is the form reported, and its accuracy is the host C evaluation's."""
    from mgrade_edge.convert import forms
    from mgrade_edge.convert.__main__ import choose_state_bits, val_accuracy

    from mgrade_edge.training.console import set_quiet

    set_quiet(False)                # an earlier test in this process may have set it
    raw, spec, data = _auto_setup()
    model, rep = choose_state_bits(raw, spec, {}, "auto", data, val_n=6, float_val_acc=float_val)
    tried = {t["form"]: t for t in rep["forms_tried"]}
    acc = {f: t["val_acc"] for f, t in tried.items()}
    earlier = "input16" if acc["input16"] > acc["int8"] else "int8"
    if float_val == 0.0:        # every form is within the bound: the earlier choice, or the
        # cheapest 16-bit-state rung below it (state16 for input16)
        assert rep["form"] == ("state16" if earlier == "input16" else "int8")
        assert "mlp16" not in tried
    else:
        assert set(tried) == set(forms.FORMS)          # every rung evaluated
        best = max(acc.values())
        assert rep["form"] == min((f for f in acc if acc[f] == best), key=forms.FORMS.index)
    assert rep["state_bits"] == (8 if rep["form"] == "int8" else 16)
    assert forms.name_of(read_metadata(model)) == rep["form"]
    k = forms.FORMS.index(rep["form"])
    assert rep["form_next_cheaper"] == (forms.FORMS[k - 1] if k else None)
    if k:
        assert forms.FORMS[k - 1] in tried
    for t in tried.values():
        ips = t["instructions_per_step"]
        if ips is not None:                 # the emulator ran: the fast (default) C path
            assert ips["fast"] > 0 and t["ram_bytes"]["fast"] > 0
    xq = Streamer(model, "tflm").quantize_input(data.x_val[:6].numpy())
    assert val_accuracy(model, xq, data.y_val[:6].numpy(), "mean", None) == acc[rep["form"]]
    out = capsys.readouterr().out
    assert "<- chosen" in out and all(f in out for f in tried)


def test_every_form_has_its_qat_grids():
    """train.qat_form accepts every form of the ladder, and the QAT grids it sets are the
    int16 tensors of that form (training.qat.WIDE_ACTS): conv16 adds the delay conv's output
    to input16's, conv_mlp16 is conv16's and mlp16's together."""
    from mgrade_edge.convert.forms import FORMS
    from mgrade_edge.training.config import QAT_FORMS
    from mgrade_edge.training.qat import WIDE_ACTS

    assert set(QAT_FORMS) == set(FORMS) == set(WIDE_ACTS)
    assert set(WIDE_ACTS["conv16"]) == set(WIDE_ACTS["input16"]) | {"aq_conv"}
    assert set(WIDE_ACTS["conv_mlp16"]) == set(WIDE_ACTS["conv16"]) | set(WIDE_ACTS["mlp16"])


def test_qat_form_puts_the_widened_tensors_on_int16_grids():
    """train.qat_form = "mlp16" (with qat_acts): the QAT epochs put the tensors the mlp16 form
    holds in int16 (u, the gate pre-activation, the MLP's hidden layer and output) on the
    int16 grid the converter gives them (training.qat.sym16_scale = convert/widen.py _sym16
    of the same int8 range), and every other activation on its int8 grid."""
    import torch

    from mgrade_edge.convert.widen import _sym16
    from mgrade_edge.training.qat import ActRange, WIDE_ACTS, asym_params, sym16_scale
    from tests.test_state16 import _small_net

    net = _small_net(4).train()
    net.set_qat(True, acts=True, form="mlp16")
    with torch.no_grad():
        net(_inputs(4, 30, 3))
    seen = {}
    for name, m in net.named_modules():
        if isinstance(m, ActRange):
            short = name.rsplit(".", 1)[-1]
            assert m.bits == (16 if short in WIDE_ACTS["mlp16"] else 8)
            seen[short] = m
    assert {"aq_u", "aq_z", "aq_fc1", "aq_fc2", "aq_v", "aq_w"} <= set(seen)
    m = seen["aq_fc1"]
    lo, hi = float(m.lo), float(m.hi)
    s, zp = asym_params(lo, hi)

    class Q:
        scale, zeroPoint = [s], [zp]
    assert sym16_scale(lo, hi) == pytest.approx(_sym16(Q), rel=1e-6)
    x = torch.linspace(lo, hi, 101)
    y = m.eval()(x)
    q = y / sym16_scale(lo, hi)
    assert torch.allclose(q, q.round(), atol=1e-3)
    assert (y - x).abs().max() <= sym16_scale(lo, hi) / 2 + 1e-7
    net.set_qat(True, acts=True, form="int8")
    assert all(m.bits == 8 for m in net.modules() if isinstance(m, ActRange))


# --- conv16 / conv_mlp16: the delay-conv output in int16 (convert/widen.py widen_conv) ------

def _with_delay_bias(model8: bytes) -> bytes:
    """model8 with nonzero int32 biases on each delay conv (trained models have zero ones
    there; the int64 bias path of the 16x8 conv must be exercised too)."""
    from mgrade_edge.convert.quantize import pack_flatbuffer
    from mgrade_edge.convert.widen import _Rewriter

    rw = _Rewriter(model8)
    rng = np.random.default_rng(5)
    for op in rw.g.operators:
        if rw.kind(op) == "DEPTHWISE_CONV_2D" and len(op.inputs) > 2 and op.inputs[2] >= 0:
            buf = rw.model.buffers[rw.T[op.inputs[2]].buffer]
            n = len(buf.data) // 4
            buf.data = np.frombuffer(rng.integers(-3000, 3000, n).astype("<i4").tobytes(),
                                     np.uint8).copy()
    return pack_flatbuffer(rw.model)


@pytest.fixture(scope="module", params=["conv16", "conv_mlp16"])
def conv_model(request, int8_small) -> bytes:  # noqa: F811
    from mgrade_edge.convert.widen import widen_conv, widen_input, widen_mlp, widen_state

    m8 = _with_delay_bias(int8_small)
    layers = read_metadata(m8)["layers"]
    m = widen_conv(widen_input(widen_state(m8, layers, gate16=True), layers))
    return widen_mlp(m) if request.param == "conv_mlp16" else m


def test_each_delay_conv_is_16x8_on_int8_taps(conv_model):
    """Each delay conv reads its int8 gathered taps through QUANTIZE(int8 -> int16), runs
    16x8 (int8 weights, int64 bias on the int16 taps' scale) and writes int16 straight into
    the minGRU input's ADD; the ring, the GATHER and its taps stay int8; every int16 tensor
    has zero point 0."""
    m = read_tflite(conv_model)
    T = m.tensors
    prod = {o: op for op in m.operators for o in op.outputs}
    gathers = [op for op in m.operators if op.op == "GATHER"]
    assert len(gathers) == len(read_metadata(conv_model)["layers"])
    for gop in gathers:
        assert T[gop.outputs[0]].dtype == np.int8
        rs = next(op for op in m.operators if gop.outputs[0] in op.inputs)
        q = next(op for op in m.operators if rs.outputs[0] in op.inputs)
        assert q.op == "QUANTIZE" and T[q.outputs[0]].dtype == np.int16
        dw = next(op for op in m.operators if q.outputs[0] in op.inputs)
        assert dw.op == "DEPTHWISE_CONV_2D" and T[dw.outputs[0]].dtype == np.int16
        assert T[dw.inputs[1]].dtype == np.int8 and T[dw.inputs[2]].dtype == np.int64
        s_b = T[dw.inputs[2]].quant.scale
        s_w = T[dw.inputs[1]].quant.scale
        np.testing.assert_allclose(s_b, s_w * T[q.outputs[0]].quant.scale[0], rtol=1e-6)
        assert np.abs(T[dw.inputs[2]].data).max() > 0
        rs2 = next(op for op in m.operators if dw.outputs[0] in op.inputs)
        add = next(op for op in m.operators if rs2.outputs[0] in op.inputs)
        assert rs2.op == "RESHAPE" and add.op == "ADD" and T[add.outputs[0]].dtype == np.int16
        assert prod[add.inputs[0]].op == "QUANTIZE"          # the frame, requantized
    for t in T:
        if t.dtype == np.int16 and t.quant is not None:
            assert int(t.quant.zero_point[0]) == 0


def test_interpreters_agree_on_the_conv16_graph(conv_model, int8_small):  # noqa: F811
    """LiteRT and TFLite-Micro run the conv16 graph within 2 LSB of each other on every
    logit; it computes differently from input16 (the int8 conv output's rounding is gone) and
    stays close to it."""
    from mgrade_edge.convert.widen import widen_input, widen_state

    m8 = _with_delay_bias(int8_small)
    layers = read_metadata(m8)["layers"]
    base = widen_input(widen_state(m8, layers, gate16=True), layers)
    _assert_interpreters_agree_and_differ(conv_model, base)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_package_bit_exact_with_int16_delay_conv(conv_model, tmp_path, fast):
    """The generated package = the TFLM Streamer on every step's logits and the int8 copies
    of the states, 0 LSB, on the portable and the fast path; each layer's delay conv runs
    mg_delay_step_s16 (int64 bias) into the int16 scratch and the front adds it to the frame
    (mg_input16_front_c16: mcu/runtime/mg_ops16.h)."""
    text = package_matches_tflm(conv_model, tmp_path, fast)
    assert text.count("mg_delay_step_s16(&") == 2 and "mg_delay_step_s8(" not in text
    assert text.count("mg_delay_fast_s16(&") == 2      # the fast path has its own kernel
    assert text.count("mg_input16_front_c16(&") == 2 and "_dw16_bias[8]" in text


def test_micropython_refuses_the_conv16_form_in_one_line(conv_model):
    """The MicroPython generator refuses the conv16 forms in one line naming the 8-bit
    conversion."""
    from mgrade_edge.convert.codegen_micropython import generate_module
    from mgrade_edge.convert.metadata import from_model
    from mgrade_edge.convert.tflm_params import CodegenError

    m = read_tflite(conv_model)
    with pytest.raises(CodegenError) as e:
        generate_module(m, from_model(m), m.model_id)
    assert "\n" not in str(e.value) and "--state-bits 8" in str(e.value)


@pytest.mark.slow           # converts and measures the package on the emulated Cortex-M4
def test_form_conv16_from_the_command_line(tmp_path):
    """`python -m mgrade_edge.convert CKPT --form conv16` writes the conv16 model (its
    metadata and report say so; the package's C build on the emulated Cortex-M4 measures it)
    and prints the form in its summary."""
    import json
    import subprocess
    import sys

    import torch

    from mgrade_edge.training.checkpoint import FORMAT, build_model
    from mgrade_edge.training.config import config_from_dict

    rng = np.random.default_rng(0)
    data = tmp_path / "d.npz"
    np.savez(data, x_train=rng.normal(size=(24, 20, 3)).astype(np.float32),
             y_train=np.arange(24) % 2, x_test=rng.normal(size=(4, 20, 3)).astype(np.float32),
             y_test=np.arange(4) % 2)
    cfg = config_from_dict({"task": {"name": "npz", "path": str(data)},
                            "model": {"d_model": 8, "n_layers": 2, "kernel_span": 6,
                                      "n_taps": 2}, "train": {"epochs": 1}})
    info = {"n_in": 3, "n_classes": 2, "readout": "mean", "seq_len": 20, "name": "npz",
            "class_names": ["0", "1"], "input_mean": [0.0] * 3, "input_std": [1.0] * 3}
    torch.manual_seed(0)
    net = build_model(cfg, info)
    torch.save({"format": FORMAT, "config": cfg.to_dict(), "task_info": info,
                "model": net.state_dict()}, tmp_path / "checkpoint.pt")
    res = subprocess.run([sys.executable, "-m", "mgrade_edge.convert",
                          str(tmp_path / "checkpoint.pt"), "--out", str(tmp_path / "int8"),
                          "--form", "conv16", "--calib", "8", "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "form conv16" in res.stdout
    rep = json.loads((tmp_path / "int8" / "report.json").read_text())
    assert rep["form"] == "conv16" and rep["conv_bits"] == 16 and rep["input_bits"] == 16
    model = (tmp_path / "int8" / "model.tflite").read_bytes()
    assert read_metadata(model)["form"] == "conv16"
    m = read_tflite(model)
    dws = [op for op in m.operators if op.op == "DEPTHWISE_CONV_2D"
           and m.tensors[op.outputs[0]].dtype == np.int16]
    assert len(dws) == 2
    if rep.get("resources"):                    # the cross toolchain and QEMU are installed
        ips = rep["resources"]["paths"]["fast"]["instructions_per_step"]["mean"]
        assert ips > 0


def _assert_interpreters_agree_and_differ(model: bytes, base: bytes) -> None:
    """TFLite-Micro and LiteRT run `model` within 2 LSB on 3 random sequences; it differs from
    `base` (the form one rung below) on some logit and stays within 12 LSB of it."""
    tflm, lite, ref = Streamer(model, "tflm"), Streamer(model, "litert"), Streamer(base, "tflm")
    x = np.stack([tflm.quantize_input(v.numpy()) for v in _inputs(3, 40, 9)])
    differs = False
    for seq in x:
        a, b, c = (s.run(seq).astype(np.int64) for s in (tflm, lite, ref))
        assert np.abs(a - b).max() <= 2
        assert np.abs(a - c).max() <= 12
        differs |= bool((a != c).any())
    assert differs

