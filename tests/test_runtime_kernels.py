"""mcu/runtime kernels + convert/graph_package.py against the TFLite-Micro Python interpreter.

Each test builds a small TF graph with fixed weights, converts it to a full-int8 .tflite,
generates the C package, compiles it with the runtime and a stdin/stdout harness, feeds random
int8 inputs and requires 0 LSB difference from tflite-micro on every output.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
RUNNER = RUNTIME / "tests" / "graph_runner.c"
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1"]
N_SAMPLES = 300

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed"),
    pytest.mark.filterwarnings("ignore:Statistics for quantized inputs"),
]


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    return tf


def _have(tool):
    return shutil.which(tool) is not None


def convert(tf, fn, specs, ranges, per_channel_dense=True, seed=0):
    """Full-int8 conversion of tf.function `fn` with input `specs`; representative data drawn
    uniformly from `ranges` (one (lo, hi) per float input; None for int32 inputs, for which
    `specs` carries a callable generating a valid value)."""
    rng = np.random.default_rng(seed)
    conc = fn.get_concrete_function(*[s for s, _ in specs])

    def rep():
        for _ in range(64):
            out = []
            for (s, gen), r in zip(specs, ranges):
                if r is None:
                    out.append(gen(rng))
                else:
                    out.append(rng.uniform(r[0], r[1], size=s.shape).astype(np.float32))
            yield out

    conv = tf.lite.TFLiteConverter.from_concrete_functions([conc], fn)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    if not per_channel_dense:
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return conv.convert()


def random_inputs(model, gens, n, seed=1):
    """n samples: list of per-input arrays in subgraph input order."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        s = []
        for k, ti in enumerate(model.inputs):
            t = model.tensors[ti]
            g = gens.get(model.input_names[k]) if gens else None
            if g is not None:
                s.append(np.asarray(g(rng), dtype=t.dtype).reshape(t.shape))
            elif t.dtype == np.int8:
                s.append(rng.integers(-128, 128, size=t.shape, dtype=np.int8))
            else:
                raise AssertionError(f"no generator for input {model.input_names[k]}")
        samples.append(s)
    return samples


def run_tflm(model_bytes, samples, n_out):
    from tflite_micro.python.tflite_micro import runtime
    interp = runtime.Interpreter.from_bytes(model_bytes)
    outs = []
    for s in samples:
        for k, x in enumerate(s):
            interp.set_input(x, k)
        interp.invoke()
        outs.append([np.array(interp.get_output(k)) for k in range(n_out)])
    return outs


def run_litert(model_bytes, samples):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=model_bytes, num_threads=1)
    it.allocate_tensors()
    ind, outd = it.get_input_details(), it.get_output_details()
    # LiteRT lists inputs/outputs in subgraph order
    res = []
    for s in samples:
        for d, x in zip(ind, s):
            it.set_tensor(d["index"], x)
        it.invoke()
        res.append([it.get_tensor(d["index"]).copy() for d in outd])
    return res


def build_c(model_bytes, tmp_path):
    from mgrade_edge.convert.codegen import generate
    gen = tmp_path / "gen"
    info = generate(model_bytes, gen, "mg")
    exe = tmp_path / "runner"
    cmd = ["gcc", *CFLAGS, "-I", str(RUNTIME), "-I", str(gen), str(RUNNER),
           str(gen / "mg_model_data.c"), str(RUNTIME / "mg_kernels.c"),
           str(RUNTIME / "mg_quant.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe, info


def run_c(exe, model, samples):
    data = b"".join(x.tobytes() for s in samples for x in s)
    out = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout
    res, pos = [], 0
    for _ in samples:
        assert out[pos] == 0, "graph invoke reported an error"
        pos += 1
        r = []
        for ti in model.outputs:
            t = model.tensors[ti]
            n = t.nbytes
            r.append(np.frombuffer(out[pos:pos + n], dtype=t.dtype).reshape(t.shape))
            pos += n
        res.append(r)
    assert pos == len(out)
    return res


def check_model(model_bytes, tmp_path, gens=None, n=N_SAMPLES, expect_ops=None):
    """Generated C == TFLM bit-exactly; returns (max |LiteRT - TFLM|, codegen info)."""
    from mgrade_edge.convert.tflite_reader import read_tflite
    model = read_tflite(model_bytes)
    if expect_ops is not None:
        ops = {op.op for op in model.operators}
        missing = set(expect_ops) - ops
        assert not missing, f"converter did not emit {missing}; got {ops}"
    samples = random_inputs(model, gens, n)
    ref = run_tflm(model_bytes, samples, len(model.outputs))
    exe, info = build_c(model_bytes, tmp_path)
    got = run_c(exe, model, samples)
    for k, (r, g) in enumerate(zip(ref, got)):
        assert len(r) == len(g)
        for j, (a, b) in enumerate(zip(r, g)):
            d = np.abs(a.astype(np.int32) - b.astype(np.int32))
            assert d.max() == 0, (f"sample {k} output {j}: max diff {d.max()} LSB at "
                                  f"{np.argmax(d)}; ops {[op.op for op in model.operators]}")
    lit = run_litert(model_bytes, samples)
    lit_diff = max(int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())
                   for r, l in zip(ref, lit) for a, b in zip(r, l))
    return lit_diff, info


def spec(tf, shape, dtype=None, name=None, gen=None):
    return (tf.TensorSpec(shape, dtype or tf.float32, name=name), gen)


# ------------------------------------------------------------------------------------------
# Single ops

W16x8 = np.random.default_rng(10).normal(0, 0.4, (16, 8)).astype(np.float32)
B8 = np.random.default_rng(11).normal(0, 0.3, 8).astype(np.float32)


@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_fully_connected(tf, tmp_path, per_channel, relu):
    @tf.function
    def f(x):
        y = tf.matmul(x, tf.constant(W16x8)) + tf.constant(B8)
        return tf.nn.relu(y) if relu else y

    b = convert(tf, f, [spec(tf, [1, 16])], [(-2, 3)], per_channel_dense=per_channel)
    check_model(b, tmp_path, expect_ops={"FULLY_CONNECTED"})
    from mgrade_edge.convert.tflite_reader import read_tflite
    m = read_tflite(b)
    fc = next(op for op in m.operators if op.op == "FULLY_CONNECTED")
    assert m.tensors[fc.inputs[1]].quant.per_channel == per_channel
    assert fc.options["fused_activation_function"] == ("RELU" if relu else "NONE")


def test_depthwise_taps(tf, tmp_path):
    """The delay-conv case: [1,1,N,C] taps, [1,N,C,1] filter, VALID -> [1,1,1,C]."""
    N, C = 5, 12
    k = np.random.default_rng(3).normal(0, 0.5, (1, N, C, 1)).astype(np.float32)

    @tf.function
    def f(x):
        return tf.nn.depthwise_conv2d(x, tf.constant(k), [1, 1, 1, 1], "VALID")

    b = convert(tf, f, [spec(tf, [1, 1, N, C])], [(-1, 1)])
    check_model(b, tmp_path, expect_ops={"DEPTHWISE_CONV_2D"})


def test_depthwise_same_multiplier(tf, tmp_path):
    k = np.random.default_rng(4).normal(0, 0.5, (1, 3, 4, 2)).astype(np.float32)

    @tf.function
    def f(x):
        return tf.nn.relu(tf.nn.depthwise_conv2d(x, tf.constant(k), [1, 1, 1, 1], "SAME"))

    b = convert(tf, f, [spec(tf, [1, 1, 7, 4])], [(-1, 2)])
    check_model(b, tmp_path, expect_ops={"DEPTHWISE_CONV_2D"})


@pytest.mark.parametrize("kind", ["add", "sub", "mul"])
def test_binary(tf, tmp_path, kind):
    c = np.linspace(-1.5, 2.0, 8).astype(np.float32)

    @tf.function
    def f(x, y):
        op = {"add": tf.add, "sub": tf.subtract, "mul": tf.multiply}[kind]
        # elementwise (different scales) and broadcast against a constant row
        return op(x, y), op(x, tf.constant(c)), op(tf.reshape(x, [2, 1, 4]), tf.constant(c[:4]))

    b = convert(tf, f, [spec(tf, [1, 8]), spec(tf, [1, 8])], [(-1, 1), (-4, 3)])
    check_model(b, tmp_path, expect_ops={kind.upper()})


@pytest.mark.parametrize("rng_in", [(-1, 1), (-6, 6), (-30, 20)])
def test_logistic(tf, tmp_path, rng_in):
    @tf.function
    def f(x):
        return tf.sigmoid(x)

    b = convert(tf, f, [spec(tf, [1, 64])], [rng_in])
    check_model(b, tmp_path, expect_ops={"LOGISTIC"})


def test_min_max_relu(tf, tmp_path):
    @tf.function
    def f(x, y):
        return tf.minimum(x, 0.0), tf.maximum(x, y), tf.nn.relu(x), tf.minimum(x, y)

    b = convert(tf, f, [spec(tf, [1, 16]), spec(tf, [1, 16])], [(-3, 2), (-3, 2)])
    check_model(b, tmp_path, expect_ops={"MINIMUM", "MAXIMUM", "RELU"})


def test_concat_gather(tf, tmp_path):
    """CONCATENATION of inputs with different scales (converter adds QUANTIZE), GATHER with
    runtime int32 indices and with constant indices."""
    H, R, N = 4, 3, 6

    def gen_idx(rng):
        return rng.integers(0, (R + 1) * H, size=N * H).astype(np.int32)

    @tf.function
    def f(x, ring, idx):
        frames = tf.concat([x, ring], axis=1)
        g = tf.gather(frames, idx, axis=1)
        g2 = tf.gather(frames, tf.constant(np.arange(0, (R + 1) * H, 2, dtype=np.int32)), axis=1)
        return g, g2

    b = convert(tf, f, [spec(tf, [1, H]), spec(tf, [1, R * H]),
                        spec(tf, [N * H], tf.int32, gen=gen_idx)],
                [(-1, 1), (-3, 3), None])
    check_model(b, tmp_path, gens={"idx": gen_idx}, expect_ops={"CONCATENATION", "GATHER"})


# ------------------------------------------------------------------------------------------
# Chains

def test_mingru_chain(tf, tmp_path):
    """FC -> LOGISTIC -> MUL -> ADD: the minGRU step with the g() candidate."""
    H = 8
    r = np.random.default_rng(5)
    wz, wh = r.normal(0, 0.5, (H, H)).astype(np.float32), r.normal(0, 0.5, (H, H)).astype(np.float32)
    bz, bh = r.normal(0, 0.2, H).astype(np.float32), r.normal(0, 0.2, H).astype(np.float32)

    @tf.function
    def f(u, h):
        z = tf.sigmoid(tf.matmul(u, tf.constant(wz)) + tf.constant(bz))
        hp = tf.matmul(u, tf.constant(wh)) + tf.constant(bh)
        cand = tf.nn.relu(hp) + tf.sigmoid(tf.minimum(hp, 0.0))
        h_new = h + z * (cand - h)
        return h_new, u + h_new

    b = convert(tf, f, [spec(tf, [1, H]), spec(tf, [1, H])], [(-2, 2), (0, 2)])
    check_model(b, tmp_path, expect_ops={"FULLY_CONNECTED", "LOGISTIC", "MUL", "ADD", "SUB",
                                         "MINIMUM"})


def test_delay_chain(tf, tmp_path):
    """CONCAT -> GATHER -> RESHAPE -> DEPTHWISE -> RESHAPE -> ADD -> FC (the delay conv)."""
    H, R, N = 6, 4, 3
    r = np.random.default_rng(6)
    taps = r.normal(0, 0.6, (1, N, H, 1)).astype(np.float32)
    w = r.normal(0, 0.4, (H, 5)).astype(np.float32)

    def gen_idx(rng):
        return rng.integers(0, (R + 1) * H, size=N * H).astype(np.int32)

    @tf.function
    def f(x, ring, idx):
        a = tf.matmul(x, tf.constant(r.normal(0, 0.5, (3, H)).astype(np.float32)))
        frames = tf.concat([a, ring], axis=1)
        t = tf.reshape(tf.gather(frames, idx, axis=1), [1, 1, N, H])
        y = tf.nn.depthwise_conv2d(t, tf.constant(taps), [1, 1, 1, 1], "VALID")
        u = a + tf.reshape(y, [1, H])
        return tf.matmul(u, tf.constant(w)), a

    b = convert(tf, f, [spec(tf, [1, 3]), spec(tf, [1, R * H]),
                        spec(tf, [N * H], tf.int32, gen=gen_idx)],
                [(-1, 1), (-1, 1), None])
    lit, info = check_model(b, tmp_path, gens={"idx": gen_idx},
                            expect_ops={"CONCATENATION", "GATHER", "DEPTHWISE_CONV_2D", "ADD",
                                        "FULLY_CONNECTED", "RESHAPE"})
    assert info["arena_bytes"] < info["unplanned_bytes"]     # buffers were shared
    if _have("arm-none-eabi-gcc"):   # the generated package builds for Cortex-M4 too
        gen = tmp_path / "gen"
        subprocess.run(["arm-none-eabi-gcc", *CFLAGS, "-mcpu=cortex-m4", "-mthumb", "-I",
                        str(RUNTIME), "-I", str(gen), "-c", str(gen / "mg_model_data.c"),
                        "-o", str(tmp_path / "model_arm.o")], check=True, capture_output=True)


# ------------------------------------------------------------------------------------------
# Reader, planner, generator API, cross compile

def test_reader_metadata_and_io(tf, tmp_path):
    from mgrade_edge.convert.codegen import generate
    from mgrade_edge.convert.tflite_reader import read_tflite

    @tf.function
    def f(x):
        return tf.nn.relu(tf.matmul(x, tf.constant(W16x8)))

    b = convert(tf, f, [spec(tf, [1, 16], name="x")], [(-1, 1)])
    # append a metadata entry the way convert/ does (flatbuffers object API)
    from ai_edge_litert import schema_py_generated as fb
    import flatbuffers
    m = fb.ModelT.InitFromPackedBuf(b, 0)
    buf = fb.BufferT()
    buf.data = np.frombuffer(b'{"hello": 1}', dtype=np.uint8)
    m.buffers.append(buf)
    md = fb.MetadataT()
    md.name = "mgrade"
    md.buffer = len(m.buffers) - 1
    m.metadata = (m.metadata or []) + [md]
    bld = flatbuffers.Builder(1024)
    bld.Finish(m.Pack(bld), file_identifier=b"TFL3")
    b2 = bytes(bld.Output())
    model = read_tflite(b2)
    assert model.metadata["mgrade"] == b'{"hello": 1}'
    assert model.input_names == ["x"]
    t_in = model.tensors[model.inputs[0]]
    assert t_in.dtype == np.int8 and t_in.shape == (1, 16) and t_in.quant is not None
    info = generate(b2, tmp_path / "g", "net")
    h = (tmp_path / "g" / "net_model_data.h").read_text()
    import hashlib
    assert f'#define NET_MODEL_ID "{hashlib.sha256(b2).hexdigest()[:16]}"' in h
    assert "int net_graph_invoke(const void *const *inputs, void *const *outputs);" in h
    assert "NET_IN_X = 0" in h
    assert info["model_id"] == model.model_id
    # command line
    (tmp_path / "m.tflite").write_bytes(b2)
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.codegen", str(tmp_path / "m.tflite"),
                        "--out", str(tmp_path / "cli")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "arena" in r.stdout and (tmp_path / "cli" / "mg_model_data.c").exists()


def test_unsupported_op_is_reported(tf, tmp_path):
    from mgrade_edge.convert.codegen import CodegenError, generate

    @tf.function
    def f(x):
        return tf.tanh(x)

    b = convert(tf, f, [spec(tf, [1, 8])], [(-2, 2)])
    with pytest.raises(CodegenError, match="TANH"):
        generate(b, tmp_path / "g")


def test_quantize_multiplier():
    from mgrade_edge.convert.tflm_params import quantize_multiplier
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1e-12) == (0, 0)
    m, s = quantize_multiplier(0.0123)
    assert abs(m * 2.0 ** (s - 31) - 0.0123) < 1e-9 and (1 << 30) <= m < (1 << 31)
    # rounding up to 2^31 renormalises
    assert quantize_multiplier(1 - 2 ** -40) == (1 << 30, 1)


@pytest.mark.skipif(not _have("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
def test_runtime_cross_compiles(tmp_path):
    targets = [("gcc", []), ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb"])]
    if _have("xtensa-lx106-elf-gcc"):   # no libc headers there: the runtime is freestanding
        targets.append(("xtensa-lx106-elf-gcc", ["-ffreestanding"]))
    for cc, extra in targets:
        for src in ("mg_quant.c", "mg_kernels.c"):
            subprocess.run([cc, *CFLAGS, "-O2", *extra, "-c", str(RUNTIME / src), "-o",
                            str(tmp_path / (src + ".o"))], check=True, capture_output=True)
