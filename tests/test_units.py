"""Raw sensor units that really work (issue 24, items 1-3): the device normalises each float
frame per channel before quantising it (convert/input_norm.py), so the int8 input grid spans
normalised values whatever the data's units; the host, the generated C package and the
MicroPython package quantise a frame with the same float32 arithmetic (0 LSB); the
constant-channel rule is relative to the channel's own scale; convert warns, naming the
channel, where the input grid cannot resolve a channel's spread.

The slow test trains and converts one small task under x -> a * x + b for a in {1e-9, 1e-3,
1, 1e3, 1e9} and b in {0, 1000 std}: int8 within 1 point of float every time, and the C
package on the host, fed the raw frames, equal to the host reference at 0 LSB.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_own_data import FRAME_RUNNER
from mgrade_edge.training.tasks._seq import channel_stats

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")

SCALES = [1e-9, 1e-3, 1.0, 1e3, 1e9]
OFFSETS = [0.0, 1000.0]             # in units of the channel's std
NOISE = 0.6     # the base task's noise (signal amplitude 1): float ~99%, not a trivial 100%


# -- the constant-channel rule ------------------------------------------------------------------
@pytest.mark.parametrize("a", SCALES)
@pytest.mark.parametrize("b", OFFSETS)
def test_constant_channel_rule_is_relative_to_the_channel_scale(a, b):
    """A signal of std a on an offset of b * a is normalised by its own std in every unit; a
    channel that is constant up to float32 rounding is constant in every unit (std = its
    magnitude, so it normalises to ~0), and an all-zero channel gets std 1."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 1))
    sig = (a * base + b * a).astype(np.float32)
    const = np.full((200, 1), np.float32(a * (b + 3)), np.float32)
    const[::7] = np.nextafter(const[::7], np.float32(np.inf))    # float32 rounding noise
    seqs = [np.concatenate([sig, const, np.zeros((200, 1), np.float32)], axis=1)]
    mean, std = channel_stats(seqs)
    assert std[0] == pytest.approx(float(sig.astype(np.float64).std()), rel=1e-6)
    assert mean[0] == pytest.approx(float(sig.astype(np.float64).mean()), rel=1e-6)
    assert std[1] == pytest.approx(a * (b + 3), rel=1e-6)          # constant: its magnitude
    assert std[2] == 1.0
    assert float(np.abs((const - mean[1]) / std[1]).max()) < 1e-6


# -- one arithmetic: host, C package, MicroPython -------------------------------------------------
def _with_input_norm(model_bytes: bytes, mean, std) -> bytes:
    """The .tflite with metadata input_norm = (mean, std) (float32), the graph unchanged: what
    convert writes for a task with those statistics, without a TF conversion."""
    from mgrade_edge.convert import metadata
    from mgrade_edge.convert.quantize import load_flatbuffer, pack_flatbuffer

    meta = metadata.StepMetadata.from_dict(metadata.read(model_bytes))
    meta.input_norm = {"mean": [float(v) for v in np.float32(mean)],
                       "std": [float(v) for v in np.float32(std)]}
    model = load_flatbuffer(model_bytes)
    entry = next(e for e in model.metadata
                 if (e.name.decode() if isinstance(e.name, bytes) else e.name) == metadata.NAME)
    model.buffers[entry.buffer].data = np.frombuffer(meta.to_json(), np.uint8)
    return pack_flatbuffer(model)


def test_the_spec_and_metadata_carry_the_statistics_and_the_encoder_is_not_folded():
    """mgrade_edge.convert.spec.extract keeps the encoder's own weights and hands mean / std (float32) to
    the metadata (input_norm); a raw-codes net (fold_norm) still folds and carries none."""
    from mgrade_edge.convert.metadata import StepMetadata, input_norm
    from mgrade_edge.convert.spec import extract
    from mgrade_edge.training.config import ModelConfig
    from mgrade_edge.training.model import MGradeNet

    mean, std = [1e12, 1e-6], [1e9, 1e-9]
    torch.manual_seed(0)
    net = MGradeNet(ModelConfig(d_model=8, n_layers=1, kernel_span=5, n_taps=2, norm="none"),
                    n_in=2, n_classes=3, input_mean=mean, input_std=std).harden().eval()
    spec = extract(net)
    np.testing.assert_array_equal(spec.we, net.encoder.weight.detach().double().numpy())
    got = input_norm(StepMetadata.from_spec(spec, {}).to_dict())
    np.testing.assert_array_equal(got[0], np.float32(mean))
    np.testing.assert_array_equal(got[1], np.float32(std))
    x = torch.tensor([[1e12 + 3e9, 1e-6 - 2e-9]])
    torch.testing.assert_close(net.graph_input(x), torch.tensor([[3.0, -2.0]]), rtol=1e-4, atol=0)
    net.fold_norm = True
    folded = extract(net)
    assert folded.input_mean is None and not np.allclose(folded.we, spec.we)


def _probe_frames(mean, std, scale, zp, rng) -> np.ndarray:
    """float32 frames [S, T, C]: the data's own spread, points next to every rounding
    half-way of the grid (and beyond the int8 range), and NaN / inf / huge values."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    S, T, C = 4, 40, len(mean)
    raw = rng.normal(size=(S, T, C)) * std * 2 + mean
    k = np.arange(-140, 140)[:, None] - zp + 0.5                    # half-way in grid steps
    edge = mean + k * scale * std
    edge = np.stack([np.nextafter(edge.astype(np.float32), d) for d in (-np.inf, np.inf)]
                    + [edge.astype(np.float32)])                    # [3, 280, C]
    edge = edge.reshape(-1, C)[: (3 * 280 // T) * T].reshape(-1, T, C)
    odd = np.tile(np.float32([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0, 1e-38]),
                  (T * C // 8 + 1))[:T * C].reshape(1, T, C)
    return np.concatenate([raw.astype(np.float32), edge.astype(np.float32), odd])


def _c_frames(model: bytes, frames: np.ndarray, tmp: Path) -> np.ndarray:
    """The generated C package built for the host: frames float32 [S, T, C] through
    mg_model_quantize_frame + mg_model_step -> int8 [S, T, C + n_out] (q, then logits)."""
    from benchmarks import mcu_cost as mc
    from mgrade_edge.convert.codegen import generate

    gen = tmp / "gen"
    generate(model, gen)
    exe = tmp / "frame_runner"
    (tmp / "frame_runner.c").write_text(FRAME_RUNNER)
    srcs = [tmp / "frame_runner.c"] + [gen / s for s in mc.PACKAGE_SRCS] + \
        [mc.RUNTIME / s for s in mc.RUNTIME_SRCS]
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                    "-I", str(mc.RUNTIME), "-I", str(gen), *map(str, srcs), "-o", str(exe)],
                   check=True, capture_output=True)
    S, T, C = frames.shape
    out = subprocess.run([str(exe)], input=np.array([S, T], np.uint32).tobytes()
                         + np.ascontiguousarray(frames, np.float32).tobytes(),
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.int8).reshape(S, T, -1)


def _micropython_quantize(model: bytes, frames: np.ndarray, tmp: Path) -> np.ndarray | None:
    """mg_model.quantize of the generated MicroPython package on the unix port (None if the
    port is not installed): frames float32 [N, C] -> int8 [N, C]."""
    from mgrade_edge.host_tools.micropython_unix import find_micropython

    upy = find_micropython()
    if upy is None:
        return None
    from mgrade_edge.convert.codegen_micropython import generate

    pkg = tmp / "mpy"
    generate(model, pkg)
    N, C = frames.shape
    (pkg / "frames.bin").write_bytes(struct.pack("<II", N, C)
                                     + np.ascontiguousarray(frames, "<f4").tobytes())
    script = "\n".join([
        "import mg_model, struct",
        "from array import array",
        "raw = open('frames.bin', 'rb').read()",
        "n, c = struct.unpack('<II', raw[:8])",
        "x = array('f', raw[8:])",
        "out = bytearray()",
        "for i in range(n):",
        "    out += bytes(mg_model.quantize(x[i * c:(i + 1) * c]))",
        "open('q.bin', 'wb').write(out)",
    ])
    r = subprocess.run([upy, "-c", script], cwd=pkg, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return np.frombuffer((pkg / "q.bin").read_bytes(), np.int8).reshape(N, C)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
def test_device_and_micropython_quantize_raw_frames_as_the_host(tiny_int8, tmp_path):
    """The tiny model given extreme statistics (channels in units of 1e9 on an offset of 1000
    std, 1e-12 near 1e-6, 1e14 on an offset of 1000 std): the C header says it normalises;
    the C package's frame quantizer and the MicroPython package's quantize() equal the host's
    Streamer.quantize_input on raw frames (their own spread, both sides of every rounding
    half-way point of the grid, NaN / inf / 3e38) to 0 LSB, and the C logits equal
    TFLite-Micro's."""
    from mgrade_edge.convert.stream import Streamer

    mean, std = [1e12, 1e-6, 1e17], [1e9, 1e-12, 1e14]
    model = _with_input_norm((tiny_int8 / "model.tflite").read_bytes(), mean, std)
    s = Streamer(model, "tflm")
    scale, zp = s.input_quant
    frames = _probe_frames(mean, std, scale, zp, np.random.default_rng(1))
    q_host = s.quantize_input(frames)
    # the raw spread lands on a normalised grid: many codes used, not one or two
    assert all(len(np.unique(q_host[:4, :, c])) > 40 for c in range(len(mean)))
    got = _c_frames(model, frames, tmp_path)
    C = len(mean)
    assert "MG_MODEL_INPUT_NORMALISED 1" in (tmp_path / "gen" / "mg_model_data.h").read_text()
    np.testing.assert_array_equal(got[..., :C], q_host)
    for i in range(len(frames)):
        np.testing.assert_array_equal(got[i, :, C:], s.run(q_host[i]))
    flat = frames.reshape(-1, C)
    upy = _micropython_quantize(model, flat, tmp_path)
    if upy is not None:
        np.testing.assert_array_equal(upy, q_host.reshape(-1, C))


# -- the warning -------------------------------------------------------------------------------
def test_convert_warns_naming_the_channel_the_input_grid_cannot_resolve(capsys):
    """Without normalisation an offset of 1000 std leaves the channel a fraction of one int8
    step: one warning line naming channel 1 (not channel 0, whose spread fills the grid)."""
    from mgrade_edge.convert.input_norm import MIN_GRID_STEPS, resolution_warnings

    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=500) * 300, 1000 + rng.normal(size=500)], axis=1)
    scale = float(np.abs(x).max()) * 2 / 255                 # a grid holding both channels
    lines = resolution_warnings(x, np.full(2, scale, np.float32), normalised=False)
    assert len(lines) == 1 and "input channel 1:" in lines[0] and "\n" not in lines[0]
    assert f"< {MIN_GRID_STEPS}" in lines[0] and "normalize = true" in lines[0]
    assert resolution_warnings(x[:, :1], np.full(1, scale, np.float32), False) == []
    assert resolution_warnings(np.ones((10, 1)), np.full(1, 1e-9, np.float32), False) == []


# -- train and convert under unit changes (slow) -----------------------------------------------
UNIT_CONFIG = """[task]
name = "npz"
path = "{path}"
val_fraction = 0.2
normalize = {normalize}
[model]
d_model = 8
n_layers = 1
kernel_span = 6
n_taps = 2
[train]
epochs = {epochs}
batch_size = 16
lr = 1e-2
threads = 1
seed = 0
"""


def _base_task(seed=0, n_train=150, n_test=150, T=24, noise=NOISE):
    """3 classes told apart by a signal's frequency (amplitude 1, Gaussian noise of std
    `noise`) on two channels (sine and cosine): x [N, T, 2] float64 in base units."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 3
        t = np.arange(T)[None, :]
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
        ch0 = np.sin(2 * np.pi * (y[:, None] + 1) * t / T + phase)
        ch1 = np.cos(2 * np.pi * (y[:, None] + 1) * t / T + phase)
        x = np.stack([ch0, ch1], axis=-1) + rng.normal(scale=noise, size=(n, T, 2))
        return x, y
    return make(n_train), make(n_test)


def _train_convert(tmp: Path, a: float, b: float, normalize: bool = True, epochs: int = 12):
    """The base task in units x -> a x + b std: train (in process), convert (--state-bits 8);
    (report, run folder, raw test frames float32 [N, T, 2])."""
    from mgrade_edge.convert.__main__ import convert
    from mgrade_edge.training.train import main as train_main

    (xtr, ytr), (xte, yte) = _base_task()
    std = float(xtr.std())
    unit = lambda x: (a * x + b * a * std).astype(np.float32)       # noqa: E731
    npz = tmp / "data.npz"
    np.savez(npz, x_train=unit(xtr), y_train=ytr, x_test=unit(xte), y_test=yte)
    cfg = tmp / "cfg.toml"
    cfg.write_text(UNIT_CONFIG.format(path=npz, epochs=epochs, normalize=str(normalize).lower()))
    run = tmp / "run"
    assert train_main([str(cfg), "--out", str(run)]) == 0
    report = convert(str(run), run / "int8", calib=32, n_test=None, state_bits="8")
    return report, run, unit(xte)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.parametrize("b", OFFSETS)
@pytest.mark.parametrize("a", SCALES)
def test_unit_changes_keep_int8_at_float_and_device_at_host(tmp_path, capsys, a, b):
    """Ten unit systems of one task (a in 1e-9..1e9, offset 0 or 1000 std; one case per
    test, so that the cases spread over the xdist workers): every converted model's int8
    accuracy (TFLite-Micro) is within 1 point of the float network's, no input grid warning,
    and the C package fed the raw test frames gives the host reference's int8 frames and
    logits to 0 LSB (100 sequences per case)."""
    from mgrade_edge.convert.stream import Streamer

    report, run, raw = _train_convert(tmp_path, a, b)
    out = capsys.readouterr().out
    row = (a, b, report["float_acc"], report["int8_acc_tflm"])
    assert report["float_acc"] >= 0.8, row                                   # it learned
    assert abs(report["int8_acc_tflm"] - report["float_acc"]) <= 0.01, row
    assert report["argmax_agreement_tflm_vs_hardened"] >= 0.98, row
    assert "warning: input channel" not in out, out
    model = (run / "int8" / "model.tflite").read_bytes()
    s = Streamer(model, "tflm")
    frames = raw[:100]
    q_host = s.quantize_input(frames)
    test_q = np.load(run / "int8" / "test_data.npz")["x"]
    np.testing.assert_array_equal(test_q[:100], q_host)
    got = _c_frames(model, frames, tmp_path)
    np.testing.assert_array_equal(got[..., :2], q_host)
    for i in range(len(frames)):
        np.testing.assert_array_equal(got[i, :, 2:], s.run(q_host[i]))


@pytest.mark.slow
def test_unnormalised_offset_is_warned_at_convert(tmp_path, capsys):
    """A task trained with normalize = false on data with an offset of 1000 std: convert
    prints one warning line per channel (both channels' spread is under one grid step) and
    report.json's input_grid_steps says so."""
    report, run, _ = _train_convert(tmp_path, 1.0, 1000.0, normalize=False, epochs=2)
    out = capsys.readouterr().out
    warned = [ln for ln in out.splitlines() if ln.startswith("warning: input channel")]
    assert [ln.split(":")[1] for ln in warned] == [" input channel 0", " input channel 1"]
    assert all(k < 16 for k in report["input_grid_steps"])
    saved = json.loads((run / "int8" / "report.json").read_text())
    assert saved["input_grid_steps"] == report["input_grid_steps"]


@pytest.mark.slow
def test_extreme_unnormalised_units_fail_in_one_line(tmp_path):
    """Units of 1e14 with normalize = false: the int8 model's scales are out of XNNPACK's
    range; convert stops with one line (ConvertError, no LiteRT traceback) that names the fix.
    (With normalize = true the same units convert: the first test.)"""
    from mgrade_edge.convert.errors import ConvertError

    with pytest.raises(ConvertError) as err:
        _train_convert(tmp_path, 1e14, 1000.0, normalize=False, epochs=2)
    msg = str(err.value)
    assert "\n" not in msg and "normalize = true" in msg and "LiteRT" in msg
