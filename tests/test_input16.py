"""The int16 minGRU input (convert/widen.py widen_input, `convert --input-bits 16`): the graph
runs on both interpreters, its float meaning is the int8 graph's, the generated C package is
bit-exact with TFLite-Micro on both paths (convert/input16.py, mcu/runtime/mg_mingru.c), and
the converter's option is reported and refused where it cannot apply."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from mgrade_edge.convert.quantize import read_metadata
from mgrade_edge.convert.stream import Streamer
from mgrade_edge.convert.tflite_reader import read_tflite
from tests.package_check import package_matches_tflm
from tests.test_state16 import _inputs, int8_small  # noqa: F401  (fixture)


def _widen(model8: bytes, gate16: bool = True) -> bytes:
    from mgrade_edge.convert.widen import widen_input, widen_state

    layers = read_metadata(model8)["layers"]
    return widen_input(widen_state(model8, layers, gate16=gate16), layers)


@pytest.fixture(scope="module")
def in16_model(int8_small) -> bytes:  # noqa: F811
    return _widen(int8_small)


def test_graph_reads_u16_in_every_minGRU_FC(in16_model):
    """Each layer's gate and candidate FCs read an int16 tensor made by an int16 ADD of two
    QUANTIZE ops, with int8 weights and int32 biases; the int8 residual ADD(frame, conv)
    stays; every int16 tensor has zero point 0."""
    m = read_tflite(in16_model)
    T = m.tensors
    producer = {o: op for op in m.operators for o in op.outputs}
    fc16 = [op for op in m.operators if op.op == "FULLY_CONNECTED"
            and T[op.inputs[0]].dtype == np.int16]
    layers = read_metadata(in16_model)["layers"]
    n_rnn = sum(1 for lay in layers if lay["rnn"])
    assert n_rnn == 2 and len(fc16) >= 2 * n_rnn
    for op in fc16:
        assert T[op.inputs[1]].dtype == np.int8 and T[op.inputs[2]].dtype == np.int32
        assert T[op.outputs[0]].dtype == np.int16
        add16 = producer[op.inputs[0]]
        assert add16.op == "ADD" and all(producer[i].op == "QUANTIZE" for i in add16.inputs)
    for t in T:
        if t.dtype == np.int16 and t.quant is not None:
            assert int(t.quant.zero_point[0]) == 0
    assert sum(1 for op in m.operators if op.op == "ADD"
               and all(T[i].dtype == np.int8 for i in op.inputs + op.outputs)) >= n_rnn


def test_interpreters_agree_and_follow_the_int8_graph(in16_model, int8_small):  # noqa: F811
    """LiteRT and TFLite-Micro run the 16x8 graph within 2 LSB of each other on every logit of
    every step (their int16 ADD rounding differs), and its logits stay within 12 LSB of the
    16-bit-state graph without the int16 input on these 40-step random sequences: the same
    function, on finer grids."""
    from mgrade_edge.convert.widen import widen_state

    base = widen_state(int8_small, read_metadata(int8_small)["layers"], gate16=True)
    tflm, lite, ref = (Streamer(in16_model, "tflm"), Streamer(in16_model, "litert"),
                       Streamer(base, "tflm"))
    x = np.stack([tflm.quantize_input(v.numpy()) for v in _inputs(4, 40, 9)])
    for seq in x:
        a, b, c = (s.run(seq).astype(np.int64) for s in (tflm, lite, ref))
        assert np.abs(a - b).max() <= 2
        assert np.abs(a - c).max() <= 12
        assert (a != c).any()           # it is not the int8-input graph


def _package_bit_exact(model: bytes, tmp_path, fast: bool, layers16: list[int]):
    """Generate the C package of `model`, check which layers run the u16 kernels and that the
    host build reproduces the TFLM Streamer's logits and int8 states on 5 sequences."""
    text = package_matches_tflm(model, tmp_path, fast)
    for L in (0, 1):
        u16 = L in layers16
        assert (f"mg_input16_front(&mg_l{L}_in16" in text) == u16
        assert (f"mg_mingru_step_u16(&mg_l{L}_gru" in text) == u16
        assert (f"mg_mingru_fast_u16(&mg_l{L}_gru" in text) == u16
        assert (f"mg_mingru_step_s16(&mg_l{L}_gru" in text) != u16


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_package_bit_exact_with_int16_input(in16_model, tmp_path, fast):
    """The generated package = the TFLM Streamer on every step's logits and the int8 copies
    of the states, 0 LSB, portable and fast; it computes u16 once per layer after the delay
    step and runs the u16 minGRU step."""
    _package_bit_exact(in16_model, tmp_path, fast, [0, 1])


def test_input16_needs_the_int16_gate(int8_small):  # noqa: F811
    """widen_input on a graph whose gate is int8 is refused with the option to change."""
    from mgrade_edge.convert.errors import ConvertError

    with pytest.raises(ConvertError, match="--gate-bits 16"):
        _widen(int8_small, gate16=False)


def test_choose_state_bits_reports_input_bits():
    """--state-bits 16 --input-bits 16 / 8: the graph, the report and the metadata agree."""
    from mgrade_edge.convert.__main__ import calibration_feeds, choose_state_bits
    from mgrade_edge.convert.quantize import convert_int8
    from mgrade_edge.convert.spec import extract
    from tests.test_state16 import _small_net

    net = _small_net(3)
    spec = extract(net)
    raw = convert_int8(spec, calibration_feeds(net, spec, _inputs(4, 30, 5), 4, 0))
    model, rep = choose_state_bits(raw, spec, {}, "16", None, val_n=5, input_bits=16)
    assert rep == {"state_bits": 16, "gate_bits": 16, "input_bits": 16}
    assert read_metadata(model)["input_bits"] == 16
    m = read_tflite(model)
    assert any(op.op == "FULLY_CONNECTED" and m.tensors[op.inputs[0]].dtype == np.int16
               for op in m.operators)
    model8, rep8 = choose_state_bits(raw, spec, {}, "16", None, val_n=5, input_bits=8)
    assert rep8["input_bits"] == 8 and read_metadata(model8)["input_bits"] == 8
    m8 = read_tflite(model8)
    assert not any(op.op == "FULLY_CONNECTED" and m8.tensors[op.inputs[0]].dtype == np.int16
                   for op in m8.operators)


def test_cli_refuses_input16_without_the_int16_state(tmp_path, capsys):
    """--input-bits 16 with --state-bits 8 or --gate-bits 8 is a one-line error before any
    work (no output folder)."""
    from mgrade_edge.convert.__main__ import main

    for extra in (["--state-bits", "8"], ["--gate-bits", "8"]):
        rc = main([str(tmp_path / "no_run"), "--out", str(tmp_path / "out"), "--input-bits",
                   "16", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: --input-bits 16 needs") and \
            err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_layer_whose_bias_would_overflow_keeps_int8_input(capsys, tmp_path):
    """A minGRU whose FC biases on u16's scale leave the 16x8 int32 accumulator no room for
    the dot product keeps its int8 input; the other layer is widened; convert says so on
    stdout and records input8_layers in the report and the metadata."""
    import torch

    from mgrade_edge.convert.__main__ import calibration_feeds, choose_state_bits
    from mgrade_edge.convert.quantize import convert_int8
    from mgrade_edge.convert.spec import extract
    from tests.test_state16 import _small_net

    net = _small_net(4)
    with torch.no_grad():
        net.blocks[0].rnn.proj.bias.add_(4000.0)    # far beyond what u can move
    spec = extract(net)
    raw = convert_int8(spec, calibration_feeds(net, spec, _inputs(4, 30, 5), 4, 0))
    model, rep = choose_state_bits(raw, spec, {}, "16", None, val_n=5, input_bits=16)
    assert rep["input_bits"] == 16 and rep["input8_layers"] == [0]
    assert read_metadata(model)["input8_layers"] == [0]
    assert "layer(s) [0] keep an int8 input" in capsys.readouterr().out
    m = read_tflite(model)
    fc16 = [op for op in m.operators if op.op == "FULLY_CONNECTED"
            and m.tensors[op.inputs[0]].dtype == np.int16]
    assert 2 <= len(fc16) <= 3                       # layer 1's gate and candidate only
    if shutil.which("gcc"):                         # the package mixes both layer kinds
        _package_bit_exact(model, tmp_path, True, [1])
