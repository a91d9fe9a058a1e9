"""The int16 minGRU state path on the device: convert/state16.py's Prepare-time parameters and
NumPy reference against TFLite-Micro on a real widened graph (convert/widen.py, with the gate
z int8 (gate16=False) and int16 (gate16=True, an int16 LOGISTIC: tests/test_logistic16.py)),
the C tails (portable mcu/runtime/mg_state16.h, fast mg_fast.h) against the reference, and the
generated model package (host build) against the TFLM Streamer, all bit-exact."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from mgrade_edge.convert.__main__ import calibration_feeds
from mgrade_edge.convert.codegen_fast import ref_mbqm
from mgrade_edge.convert.quantize import (
    convert_int8, finalize, load_flatbuffer, pack_flatbuffer, read_metadata)
from mgrade_edge.convert.spec import extract
from mgrade_edge.convert.stream import Streamer
from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.model import MGradeNet

from tests.conftest import ROOT

RUNTIME = ROOT / "mcu" / "runtime"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"]


def _small_net(seed: int = 0) -> MGradeNet:
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=8, n_layers=2, kernel_span=6, n_taps=2, norm="none")
    net = MGradeNet(cfg, 3, 4).eval()
    net.harden()
    with torch.no_grad():       # slow gates on some channels, as in trained sMNIST models
        for b in net.blocks:
            b.rnn.proj.bias[:4].add_(torch.linspace(-5, 0, 4))
    return net


def _inputs(n: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, T, 3, generator=g)


@pytest.fixture(scope="module")
def int8_small() -> bytes:
    net = _small_net()
    spec = extract(net)
    feeds = calibration_feeds(net, spec, _inputs(8, 60, 1), 8, 0)
    return finalize(convert_int8(spec, feeds), spec, {})


@pytest.fixture(scope="module", params=[False, True], ids=["gate8", "gate16"])
def wide_model(request, int8_small) -> bytes:
    """A small 2-layer model, int8, widened with the gate z int8 or int16."""
    from mgrade_edge.convert.widen import widen_state

    return widen_state(int8_small, read_metadata(int8_small)["layers"], gate16=request.param)


def _tails(model_bytes: bytes):
    """(the parsed model, {layer: (tail params, tail tensors)}) from its step program."""
    from mgrade_edge.convert.metadata import from_model
    from mgrade_edge.convert.program import build_program
    from mgrade_edge.convert.tflite_reader import read_tflite

    m = read_tflite(model_bytes)
    program = build_program(m, from_model(m))
    return m, {g.layer: (g.tail16.params, g.tail16.tensors) for g in program.grus if g.tail16}


def _tail_graph(model_bytes: bytes, t: dict, width: int | None = None) -> bytes:
    """The widened graph cut down to one layer's tail: inputs z_in (z8 or z_pre8), g8, h16;
    outputs h16', h8. width: the [1, H] activations made [1, width] (the tail is elementwise
    with per-tensor scales, so one invoke covers width channels' worth of inputs)."""
    model = load_flatbuffer(model_bytes)
    g = model.subgraphs[0]
    keep = {op.index for op in t["z_ops"]} | {t["qg"].index, t["qh"].index, t["sub"].index,
                                               t["mul"].index, t["add_h"].index}
    g.operators = [op for k, op in enumerate(g.operators) if k in keep]
    g.inputs, g.outputs = [t["z_in"], t["g8"], t["h"]], [t["hnew"], t["h8"]]
    if width is not None:
        H = list(g.tensors[t["h"]].shape)
        for op in g.operators:
            for k in [*op.inputs, *op.outputs]:
                tensor = g.tensors[k]
                if k >= 0 and list(tensor.shape) == H and not model.buffers[tensor.buffer].data:
                    tensor.shape = [1, width]
                    tensor.shapeSignature = None
    model.metadata = None
    return pack_flatbuffer(model)


def test_reference_helpers_match_the_scalar_reference():
    """The vectorised MultiplyByQuantizedMultiplier equals codegen_fast's scalar one."""
    from mgrade_edge.convert.tflm_params import mbqm

    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(1 << 30, 1 << 31))
        shift = int(rng.integers(-20, 12))
        x = rng.integers(-(1 << 31) >> max(shift, 0), (1 << 31) >> max(shift, 0), 50)
        got = mbqm(x, m, shift)
        assert [ref_mbqm(int(v), m, shift) for v in x] == got.tolist()


def _check_tail_exhaustive(model_bytes: bytes, n_h: int = 6):
    """Every (z_in, g8) pair at n_h int16 states per layer (one at each int16 extreme):
    convert/state16.tail = TFLite-Micro on the cut-out tail, h16' and h8."""
    from mgrade_edge.convert.state16 import tail
    from tflite_micro.python.tflite_micro import runtime

    m, tails = _tails(model_bytes)
    assert tails
    zz, gg = (v.reshape(1, -1).astype(np.int8)
              for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    rng = np.random.default_rng(1)
    for layer, (params, t) in tails.items():     # all 65,536 pairs in one invoke per state
        interp = runtime.Interpreter.from_bytes(_tail_graph(model_bytes, t, zz.shape[1]),
                                                arena_size=16 << 20)
        hs = [-32768, 32767] + rng.integers(-20000, 20000, n_h - 2).tolist()
        for h in hs:
            hh = np.full(zz.shape, h, np.int16)
            interp.set_input(zz, 0)
            interp.set_input(gg, 1)
            interp.set_input(hh, 2)
            interp.invoke()
            got16, got8 = tail(params, zz, gg, hh)
            np.testing.assert_array_equal(got16, interp.get_output(0),
                                          err_msg=f"layer {layer} h {h} h16")
            np.testing.assert_array_equal(got8, interp.get_output(1),
                                          err_msg=f"layer {layer} h {h} h8")


@pytest.mark.slow
def test_tail_reference_matches_tflm_on_the_widened_graph(wide_model):
    """convert/state16.tail (parameters from the real graph) = TFLite-Micro on the cut-out
    tail for every (z8, g8) and 16 int16 states (both extremes and 14 in between)."""
    _check_tail_exhaustive(wide_model, 16)


def test_tail_reference_matches_tflm_on_widened_digits(digits_int8_state8):
    """The same on the trained demo model, whose SUB scales expose a float- vs double-computed
    multiplier (1 LSB on 0.05% of outputs with the float ones)."""
    from mgrade_edge.convert.widen import widen_state

    model = (digits_int8_state8 / "model.tflite").read_bytes()
    _check_tail_exhaustive(widen_state(model, read_metadata(model)["layers"], gate16=False), 16)


def _c_struct(kind: str, p: dict) -> str:
    if kind == "req":
        keys = ["size", "input_offset", "output_offset", "multiplier", "shift", "act_min",
                "act_max"]
        return "{" + ", ".join(str(int(p[k])) for k in keys) + "}"
    if kind == "add":
        keys = ["left_shift", "input1_offset", "input1_multiplier", "input1_shift",
                "input2_offset", "input2_multiplier", "input2_shift", "output_offset",
                "output_multiplier", "output_shift", "act_min", "act_max"]
        return "{" + ", ".join(str(int(p[k])) for k in keys) + ", {0, 0, {0}, {0}, {0}}}"
    keys = ["input1_offset", "input2_offset", "output_offset", "output_multiplier",
            "output_shift", "act_min", "act_max"]
    return "{" + ", ".join(str(int(p[k])) for k in keys) + ", {0, 0, {0}, {0}, {0}}}"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("fast", [0, 1])
def test_c_tail_matches_reference(wide_model, tmp_path, fast):
    """mg_state16_update1 (portable) and mg_fstate16_update1 (fast, on the z16 table) = the
    reference on 20,000 random (z_in, g8, h16) per layer, int16 extremes included."""
    from mgrade_edge.convert.state16 import gate16, tail

    _, tails = _tails(wide_model)
    rng = np.random.default_rng(2)
    n = 20000
    src = ['#include <stdio.h>', '#include "mg_fast.h"', '#include "mg_state16.h"', ""]
    data = {}
    for layer, (params, _) in tails.items():
        z = rng.integers(-128, 128, n)
        g = rng.integers(-128, 128, n)
        h = np.concatenate([rng.integers(-32768, 32768, n // 2),
                            rng.integers(-2000, 2000, n - n // 2)])
        h[:4] = [-32768, 32767, 0, -1]
        data[layer] = (z, g, h)
        int16_gate = "sig16" in params
        for nm, kind in (("zq16" if int16_gate else "z16", "req"), ("g16", "req"),
                         ("h8", "req"), ("sub", "add"), ("add_h", "add"), ("mul", "mul")):
            ct = {"req": "mg_requant_params_t", "add": "mg_add_params_t",
                  "mul": "mg_mul_params_t"}[kind]
            src.append(f"static const {ct} l{layer}_{nm} = {_c_struct(kind, params[nm])};")
        if int16_gate:
            q = params["sig16"]
            src.append(f"static const mg_logistic16_params_t l{layer}_sig16 = "
                       f"{{{q['input_multiplier']}, {q['input_left_shift']}}};")
        lut = gate16(params, np.arange(-128, 128))       # z16 of z_in, for the fast tail
        src.append(f"static const int16_t l{layer}_lut[256] = {{"
                   + ",".join(map(str, lut.tolist())) + "};")
        gate = (f"NULL, &l{layer}_zq16, &l{layer}_sig16" if int16_gate
                else f"&l{layer}_z16, NULL, NULL")
        src.append(f"static const mg_state16_params_t l{layer} = {{{gate}, l{layer}_lut, "
                   f"&l{layer}_g16, &l{layer}_sub, &l{layer}_mul, &l{layer}_add_h, "
                   f"&l{layer}_h8}};")
        for nm, v in (("z", z), ("g", g), ("h", h)):
            ct = "int16_t" if nm == "h" else "int8_t"
            src.append(f"static const {ct} l{layer}_{nm}[{n}] = {{"
                       + ",".join(map(str, v.tolist())) + "};")
    src += ["int main(void)", "{", "    int i;", "    int8_t h8;", "    int16_t hn;"]
    for layer in tails:
        z_arg = (f"l{layer}_lut[l{layer}_z[i] + 128]" if fast else f"l{layer}_z[i]")
        fn = "mg_fstate16_update1" if fast else "mg_state16_update1"
        src += [f"    for (i = 0; i < {n}; ++i) {{",
                f"        hn = {fn}(&l{layer}, {z_arg}, l{layer}_g[i], l{layer}_h[i], "
                "&h8);",
                '        printf("%d %d\\n", (int)hn, (int)h8);', "    }"]
    src += ["    return 0;", "}"]
    (tmp_path / "t.c").write_text("\n".join(src) + "\n")
    exe = tmp_path / "t"
    subprocess.run(["gcc", *CFLAGS, f"-I{RUNTIME}", str(tmp_path / "t.c"),
                    str(RUNTIME / "mg_quant.c"), str(RUNTIME / "mg_fast.c"),
                    str(RUNTIME / "mg_kernels.c"), str(RUNTIME / "mg_delay.c"),
                    "-o", str(exe)], check=True)
    out = np.array(subprocess.run([str(exe)], capture_output=True, text=True, check=True)
                   .stdout.split(), np.int64).reshape(-1, 2)
    k = 0
    for layer, (params, _) in tails.items():
        z, g, h = data[layer]
        w16, w8 = tail(params, z, g, h)
        np.testing.assert_array_equal(out[k:k + n, 0], w16, err_msg=f"layer {layer} h16")
        np.testing.assert_array_equal(out[k:k + n, 1], w8, err_msg=f"layer {layer} h8")
        k += n


def test_widened_stream_state_is_int16(wide_model):
    """Precondition of the package test: the Streamer feeds int16 states back."""
    s = Streamer(wide_model, "tflm")
    x = s.quantize_input(_inputs(1, 5, 3)[0].numpy())
    _, steps = s.run(x, return_states=True)
    assert steps[-1][1]["hnew0"].dtype == np.int16


RUNNER16 = r"""
#include <stdio.h>
#include "mg_model.h"
#include "mg_model_data.h"
static mg_model_t m;
int main(void)
{
    unsigned s, t, nseq, steps;
    int k, l;
    int8_t x[MG_MODEL_N_IN], logits[MG_MODEL_N_OUT];
    if (scanf("%u %u", &nseq, &steps) != 2) return 2;
    for (s = 0; s < nseq; ++s) {
        mg_model_init(&m);
        for (t = 0; t < steps; ++t) {
            for (k = 0; k < MG_MODEL_N_IN; ++k) {
                int v;
                if (scanf("%d", &v) != 1) return 2;
                x[k] = (int8_t)v;
            }
            mg_model_step(&m, x, logits);
            for (k = 0; k < MG_MODEL_N_OUT; ++k) printf("%d ", logits[k]);
            for (l = 0; l < MG_MODEL_NUM_LAYERS; ++l) {
                const int16_t *h = mg_model_debug_state16(&m, l);
                for (k = 0; h && k < MG_MODEL_CHANNELS; ++k) printf("%d ", h[k]);
            }
            printf("\n");
        }
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def wide_dir(wide_model, tmp_path_factory):
    """A converted-model folder holding the widened model and 6 int8 test sequences."""
    d = tmp_path_factory.mktemp("wide")
    (d / "model.tflite").write_bytes(wide_model)
    s = Streamer(wide_model, "tflm")
    x = np.stack([s.quantize_input(v.numpy()) for v in _inputs(6, 40, 4)])
    np.savez(d / "test_data.npz", x=x, y=np.zeros(len(x), np.int64))
    return d


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_package_bit_exact_with_int16_state(wide_dir, tmp_path, fast):
    """The generated package (convert/codegen on the widened graph) = the TFLM Streamer: every
    step's logits, the int8 copies of the states (model_runner.c) and the full int16 states
    (mg_model_debug_state16), 0 LSB, portable and fast."""
    from benchmarks import mcu_cost as mc

    info = mc.generate(wide_dir, tmp_path / "gen", 6)
    ref = info["ref"]
    text = (tmp_path / "gen" / "mg_model.c").read_text()
    assert "mg_mingru_step_s16" in text and "mg_mingru_fast_s16" in text
    assert "_sig_z_lut" not in text     # the int16 tail reads z16_lut: no unused int8 table
    assert "#define MG_MODEL_STATE_BITS 16" in (tmp_path / "gen" / "mg_model_data.h").read_text()
    exe = mc.build_host_runner(tmp_path / "gen", tmp_path / "runner", fast=fast)
    got = mc.run_host_runner(exe, ref["x"])
    expect = np.concatenate([ref["logits"], ref["states"]], axis=2)
    np.testing.assert_array_equal(got, expect)
    # the int16 states themselves
    (tmp_path / "r16.c").write_text(RUNNER16)
    exe16 = tmp_path / "r16"
    subprocess.run(["gcc", *CFLAGS, "-Wno-unused-result", "-DMG_MODEL_DEBUG",
                    f"-DMG_FAST={int(fast)}", f"-I{RUNTIME}", f"-I{tmp_path / 'gen'}",
                    str(tmp_path / "r16.c"), *[str(tmp_path / "gen" / s) for s in mc.PACKAGE_SRCS],
                    *[str(RUNTIME / s) for s in mc.RUNTIME_SRCS], "-o", str(exe16)], check=True)
    x = ref["x"]
    inp = f"{x.shape[0]} {x.shape[1]}\n" + "\n".join(" ".join(map(str, f)) for f in
                                                      x.reshape(-1, x.shape[2]).tolist())
    out = subprocess.run([str(exe16)], input=inp, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    s = Streamer((wide_dir / "model.tflite").read_bytes(), "tflm")
    rows = iter(out)
    for seq in x:
        lg, raw = s.run(seq, return_states=True)
        for t, (_, o) in enumerate(raw):
            want = np.concatenate([lg[t], o["hnew0"][0], o["hnew1"][0]]).astype(np.int64)
            np.testing.assert_array_equal(np.array(next(rows).split(), np.int64), want)


def test_micropython_refuses_int16_state(wide_model):
    """The MicroPython target names the 16-bit state and the way out, in one line."""
    from mgrade_edge.convert.codegen import CodegenError
    from mgrade_edge.convert.codegen_micropython import generate_module
    from mgrade_edge.convert.metadata import from_model
    from mgrade_edge.convert.tflite_reader import read_tflite

    m = read_tflite(wide_model)
    with pytest.raises(CodegenError, match="16-bit minGRU state.*--state-bits 8"):
        generate_module(m, from_model(m), "0" * 16)


def test_codegen_refuses_int16_logistic_off_its_grid(int8_small, tmp_path):
    """An int16 gate LOGISTIC whose output is not on TFLite's 2^-15 grid is refused by name,
    and no package is written."""
    from mgrade_edge.convert.codegen import CodegenError, generate
    from mgrade_edge.convert.widen import widen_state

    wide = load_flatbuffer(widen_state(int8_small, read_metadata(int8_small)["layers"],
                                       gate16=True))
    _, tails = _tails(pack_flatbuffer(wide))
    t = next(iter(tails.values()))[1]
    wide.subgraphs[0].tensors[t["z16"]].quantization.scale = [1.0 / 16384.0]
    with pytest.raises(CodegenError, match="int16 LOGISTIC's output scale.*2\\^-15"):
        generate(pack_flatbuffer(wide), tmp_path / "gen")
    assert not (tmp_path / "gen" / "mg_model.c").exists()


@pytest.fixture(scope="module")
def small2_int8():
    """(spec, int8 .tflite before the state width is chosen) of _small_net(2), for both cases
    of the auto test (the same conversion: once)."""
    net = _small_net(2)
    spec = extract(net)
    return spec, convert_int8(spec, calibration_feeds(net, spec, _inputs(4, 30, 5), 4, 0))


@pytest.mark.parametrize("n_val", [0, 6], ids=["no_val_split", "val_split"])
def test_state_bits_auto_judges_on_val_or_falls_back_to_train(n_val, small2_int8, capsys):
    """--state-bits auto (convert's default) streams both widths through TFLite-Micro on the
    validation split; a task without one is judged on its last --val-n training sequences
    (never the test split), says so on stdout and records state_bits_split = "train"."""
    from mgrade_edge.convert.__main__ import choose_state_bits
    from mgrade_edge.training.tasks._base import TaskData

    spec, raw = small2_int8
    x_tr, x_va = _inputs(9, 20, 6), _inputs(n_val, 20, 7)
    data = TaskData(x_tr, torch.arange(9) % 4, x_va, torch.arange(n_val) % 4,
                    _inputs(2, 20, 8), torch.zeros(2, dtype=torch.long), 3, 4, 20, "mean",
                    "synthetic")
    model, rep = choose_state_bits(raw, spec, {}, "auto", data, val_n=5)
    assert rep["state_bits_choice"] == "auto" and rep["val_n"] == 5
    assert rep["state_bits_split"] == ("train" if n_val == 0 else "val")
    assert ("no validation split" in capsys.readouterr().out) == (n_val == 0)
    assert rep["state_bits"] == (16 if rep["val_acc_tflm_state16"] > rep["val_acc_tflm_state8"]
                                 else 8)
    assert read_metadata(model)["state_bits"] == rep["state_bits"]
    # the accuracies are those of the sequences named: recompute the 8-bit one here
    from mgrade_edge.convert.__main__ import val_accuracy
    xs, ys = (x_tr[-5:], torch.arange(9)[-5:] % 4) if n_val == 0 else (x_va[:5],
                                                                        torch.arange(5) % 4)
    m8, _ = choose_state_bits(raw, spec, {}, "8", data, val_n=5)
    xq = Streamer(m8, "tflm").quantize_input(xs.numpy())
    assert val_accuracy(m8, xq, ys.numpy(), "mean", None) == rep["val_acc_tflm_state8"]


@pytest.mark.parametrize("gate_bits", [8, 16])
def test_state_bits_16_honours_gate_bits(gate_bits):
    """--state-bits 16 --gate-bits N: the gate LOGISTIC's type in the emitted graph, and the
    report's gate_bits."""
    from mgrade_edge.convert.__main__ import choose_state_bits
    from mgrade_edge.convert.tflite_reader import read_tflite

    net = _small_net(3)
    spec = extract(net)
    raw = convert_int8(spec, calibration_feeds(net, spec, _inputs(4, 30, 5), 4, 0))
    model, rep = choose_state_bits(raw, spec, {}, "16", None, val_n=5, gate_bits=gate_bits)
    assert rep == {"state_bits": 16, "gate_bits": gate_bits,
                   "input_bits": 16 if gate_bits == 16 else 8}
    m = read_tflite(model)
    sig_types = {str(m.tensors[op.outputs[0]].dtype) for op in m.operators
                 if op.op == "LOGISTIC"}
    assert ("int16" in sig_types) == (gate_bits == 16)
    assert read_metadata(model)["gate_bits"] == gate_bits


def _refusal_entry_points(model_dir, tmp_path):
    """{entry point: CompletedProcess} of the MicroPython target's entry points on model_dir:
    the codegen CLI, `make firmware BOARD=micropython`, `make compare BOARD=micropython`."""
    import sys

    pkg = tmp_path / "pkg"
    make = ["make", "-s", "-o", ".venv/.installed", "BOARD=micropython", f"MODEL={model_dir}",
            f"MP_PKG={pkg}", "N=2"]
    cmds = {"codegen_micropython": [sys.executable, "-m", "mgrade_edge.convert.codegen_micropython",
                                    str(model_dir / "model.tflite"), "--out", str(pkg)],
            "make firmware": make[:2] + ["firmware"] + make[2:],
            "make compare": make[:2] + ["compare"] + make[2:]}
    out = {k: subprocess.run(c, cwd=ROOT, capture_output=True, text=True, timeout=300)
           for k, c in cmds.items()}
    assert not (pkg / "mg_model.py").exists()
    return out


def _refusal_line(res) -> str:
    """The one refusal line of a run (it fails, prints no traceback, says it once)."""
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "16-bit minGRU state" in ln]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("codegen_micropython: error: this model keeps a 16-bit")
    return lines[0]


def test_micropython_refusal_names_the_conversion_command(tiny_models, tmp_path):
    """Every MicroPython entry point refuses a 16-bit state model with one line holding the
    `python -m mgrade_edge.convert ... --state-bits 8` command; RUN where the folder layout does not name
    the run."""
    from tests.tiny_model import TinyConfig

    model_dir = tiny_models(TinyConfig(state_bits=16, gate_bits=16))
    for name, res in _refusal_entry_points(model_dir, tmp_path).items():
        line = _refusal_line(res)
        assert "python -m mgrade_edge.convert RUN --out RUN/int8s8 --state-bits 8" in line, (name, line)


@pytest.mark.slow
def test_micropython_refusal_command_converts_the_run(digits_int8, digits_run,
                                                      digits_int8_state8, tmp_path):
    """The demo layout (RUN/int8 beside RUN/checkpoint.pt, what `make convert` writes, 16-bit
    state by --state-bits auto): every entry point names the run and a sibling output folder,
    and that very command gives a model the MicroPython target takes (the session's
    digits_int8_state8 is that command's conversion, `python -m mgrade_edge.convert RUN --out
    RUN/int8_state8 --state-bits 8`: converting the run a second time only to another
    sibling folder would check nothing more)."""
    from mgrade_edge.convert.codegen_micropython import generate

    want = f"python -m mgrade_edge.convert {digits_run} --out {digits_run}/int8s8 --state-bits 8"
    for name, res in _refusal_entry_points(digits_int8, tmp_path).items():
        assert want in _refusal_line(res), name
    assert digits_int8_state8.parent == digits_run          # a sibling of RUN/int8, as named
    import json
    assert json.loads((digits_int8_state8 / "report.json").read_text())["state_bits"] == 8
    generate(digits_int8_state8 / "model.tflite", tmp_path / "pkg8")
    assert (tmp_path / "pkg8" / "mg_model.py").is_file()
