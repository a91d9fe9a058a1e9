"""Two streams in one firmware (mcu/runtime/mg_model.h instances): every piece of a stream's
state lives in its mg_model_t, so

* two instances of one generated package, stepped interleaved on two different input
  sequences, each give TFLite-Micro's single-stream logits and states (0 LSB), and initialising
  one leaves the other untouched (mcu/runtime/tests/instances_runner.c);
* the same with int16 minGRU states (convert/widen.py: h16_<l> and its int8 copy in the
  instance);
* two different models, one generated with the default prefix and one with --prefix kws, link
  into one program (no symbol clash: -Werror, a plain link) and each stays bit-exact while
  stepped interleaved (mcu/runtime/tests/two_models.c);
* the device app (one static mg_model_t) with a generated package on the host board ==
  TFLite-Micro over the serial protocol.

Both on the portable and the fast (MG_FAST, DSP-in-C) path, on tiny random models
(tests/tiny_model.py), host gcc; seconds."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_model import CONFIGS, TinyConfig, reference_steps

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
HARNESS = RUNTIME / "tests"
RUNTIME_SRCS = sorted(RUNTIME.glob("*.c"))
CC = ["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-DMG_MODEL_DEBUG"]

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]


def _model(tiny_models, cfg: TinyConfig):
    folder = tiny_models(cfg)
    model = (folder / "model.tflite").read_bytes()
    x = np.load(folder / "test_data.npz")["x"]
    logits, states = reference_steps(model, x)
    return model, x, logits, states


def _build(srcs, incs, exe: Path, fast: bool) -> Path:
    r = subprocess.run([*CC, f"-DMG_FAST={int(fast)}", "-I", str(RUNTIME),
                        *[a for d in incs for a in ("-I", str(d))], *map(str, srcs), "-o",
                        str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return exe


def _check_interleaved(gen: Path, x, logits, states, tmp_path: Path, fast: bool):
    """instances_runner.c on the package in gen: streams A = x[0], B = x[1] interleaved, then
    a re-initialised on C = x[2]; each == the single-stream reference; b untouched."""
    assert x.shape[0] >= 3 and not np.array_equal(x[0], x[1])
    S, T, n_out = logits.shape
    nst = states.shape[2]
    # the two streams' references differ (else sharing the state would go unnoticed)
    assert np.mean(logits[0] != logits[1]) > 0.5
    exe = _build([HARNESS / "instances_runner.c", gen / "mg_model.c", gen / "mg_model_data.c",
                  *RUNTIME_SRCS], [gen], tmp_path / "runner", fast)
    inp = np.uint32(T).tobytes() + np.ascontiguousarray(x[:3], np.int8).tobytes()
    out = subprocess.run([str(exe)], input=inp, capture_output=True, check=True).stdout
    row = n_out + nst
    out = np.frombuffer(out, np.uint8)
    phase1 = out[:2 * T * row].view(np.int8).reshape(T, 2, row)
    phase2 = out[2 * T * row:3 * T * row].view(np.int8).reshape(T, row)
    tail = out[3 * T * row:]
    assert tail.size == nst + 4
    for k, (got, seq) in enumerate(((phase1[:, 0], 0), (phase1[:, 1], 1), (phase2, 2))):
        np.testing.assert_array_equal(got[:, :n_out], logits[seq], err_msg=f"stream {k} logits")
        np.testing.assert_array_equal(got[:, n_out:], states[seq], err_msg=f"stream {k} states")
    # b after a's init and T more steps of a: its last states, its own step count
    np.testing.assert_array_equal(tail[:nst].view(np.int8), states[1][-1])
    period = int(re.search(r"#define MG_MODEL_RING_PERIOD (\d+)u",
                           (gen / "mg_model_data.h").read_text()).group(1))
    assert int(tail[nst:].view(np.uint32)[0]) == (T % period if period else T)


@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_two_instances_interleaved_bit_exact(tiny_models, tmp_path, fast):
    from mgrade_edge.convert.codegen import generate

    model, x, logits, states = _model(tiny_models, TinyConfig())
    gen = tmp_path / "gen"
    generate(model, gen)
    _check_interleaved(gen, x, logits, states, tmp_path, fast)


@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_two_instances_int16_state(tiny_models, tmp_path, fast):
    """The same with int16 minGRU states (convert/widen.py): the int16 state and its int8 copy
    are instance fields too."""
    from benchmarks import mcu_cost as mc
    from mgrade_edge.convert.metadata import from_model
    from mgrade_edge.convert.tflite_reader import read_tflite
    from mgrade_edge.convert.widen import widen_state

    folder = tiny_models(TinyConfig())
    model = (folder / "model.tflite").read_bytes()
    wide = widen_state(model, from_model(read_tflite(model))["layers"], gate16=False)
    d = tmp_path / "wide"
    d.mkdir()
    (d / "model.tflite").write_bytes(wide)
    shutil.copy(folder / "test_data.npz", d / "test_data.npz")
    info = mc.generate(d, tmp_path / "gen", 3)
    assert "mg_mingru_step_s16" in (tmp_path / "gen" / "mg_model.c").read_text()
    assert "int16_t h16_" in (tmp_path / "gen" / "mg_model_data.h").read_text()
    ref = info["ref"]
    _check_interleaved(tmp_path / "gen", ref["x"], ref["logits"], ref["states"], tmp_path, fast)


@pytest.mark.parametrize("fast", [False, True], ids=["portable", "fast"])
def test_two_models_in_one_program(tiny_models, tmp_path, fast):
    from mgrade_edge.convert.codegen import generate

    cfg_a, cfg_b = TinyConfig(), CONFIGS[2]          # H=8 L=2 vs H=5 L=3 with a ring-less layer
    ma, xa, la, sa = _model(tiny_models, cfg_a)
    mb, xb, lb, sb = _model(tiny_models, cfg_b)
    T = min(xa.shape[1], xb.shape[1])
    ga, gb = tmp_path / "mg", tmp_path / "kws"
    generate(ma, ga)
    generate(mb, gb, prefix="kws")
    assert (gb / "kws_model_data.h").exists() and not (gb / "mg_model_data.h").exists()
    exe = _build([HARNESS / "two_models.c", ga / "mg_model.c", ga / "mg_model_data.c",
                  gb / "kws_model.c", gb / "kws_model_data.c", *RUNTIME_SRCS], [ga, gb],
                 tmp_path / "two", fast)
    inp = (np.uint32(T).tobytes() + np.ascontiguousarray(xa[0, :T], np.int8).tobytes()
           + np.ascontiguousarray(xb[0, :T], np.int8).tobytes())
    out = subprocess.run([str(exe)], input=inp, capture_output=True, check=True).stdout
    ra, rb = la.shape[2] + sa.shape[2], lb.shape[2] + sb.shape[2]
    got = np.frombuffer(out, np.int8).reshape(T, ra + rb)
    np.testing.assert_array_equal(got[:, :la.shape[2]], la[0, :T])
    np.testing.assert_array_equal(got[:, la.shape[2]:ra], sa[0, :T])
    np.testing.assert_array_equal(got[:, ra:ra + lb.shape[2]], lb[0, :T])
    np.testing.assert_array_equal(got[:, ra + lb.shape[2]:], sb[0, :T])


def test_app_with_generated_package_equals_tflm(tiny_int8, tmp_path):
    """The device app (mcu/app/mg_app.c, one static mg_model_t) built for the host board with
    a generated package: every step's logits over the serial protocol == TFLite-Micro's."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    from mgrade_edge.convert.codegen import generate
    from mgrade_edge.host_tools import protocol as P
    from mgrade_edge.host_tools import stream_eval
    from tests.test_own_data import _PipePort

    gen = tmp_path / "pkg"
    generate((tiny_int8 / "model.tflite").read_bytes(), gen)
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "host", f"MODEL_SRC={gen}",
                        f"HOST_BUILD_DIR={tmp_path / 'build'}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    proc = subprocess.Popen([str(tmp_path / "build" / "mg_host_device")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    dev = P.Device(_PipePort(proc), timeout=5)
    try:
        m = stream_eval.evaluate(dev, tiny_int8)
    finally:
        dev.close()
    x = np.load(tiny_int8 / "test_data.npz")["x"]
    assert m["steps"] == x.shape[0] * x.shape[1]
    assert m["max_abs_logit_diff"] == 0 and m["max_abs_sum_diff"] == 0
