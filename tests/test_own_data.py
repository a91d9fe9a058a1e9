"""The user's own data: the `ts` (UEA/UCR .ts, aeon's reader) and `npz` loaders on small files
written here, their error messages, exact variable length (padding never influences a result;
parallel forward == streaming step on every real step), and the normalisation applied before
quantisation: the host-built C runtime fed raw sensor frames through the package's frame quantizer
equals the TFLite-Micro host reference to 0 LSB, on BasicMotions (shipped with aeon) after a
tiny training run, convert and codegen.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mgrade_edge.training.config import ModelConfig
from mgrade_edge.training.evaluate import loss_and_correct
from mgrade_edge.training.model import MGradeNet
from mgrade_edge.training.tasks import TaskError, load_task

ROOT = Path(__file__).resolve().parents[1]

TS_HEADER = """# a comment line
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run sit
@data
"""


def write_ts(path: Path, rows: list[tuple[np.ndarray, str]], header: str = TS_HEADER):
    """rows: (x [T, C], label) -> a .ts file (channels separated by ':')."""
    lines = [":".join(",".join(f"{v:.6g}" for v in x[:, c]) for c in range(x.shape[1]))
             + f":{label}" for x, label in rows]
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def tiny_ts(tmp_path, n_per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    classes = ["walk", "run", "sit"]

    def rows(n):
        return [(rng.normal(10 * k, 1 + k, size=(int(rng.integers(5, 12)), 2)), c)
                for k, c in enumerate(classes) for _ in range(n)]
    train, test = rows(n_per_class), rows(2)
    return (write_ts(tmp_path / "T_TRAIN.ts", train), write_ts(tmp_path / "T_TEST.ts", test),
            train, test)


# -- ts ---------------------------------------------------------------------------------------
def test_ts_loader_variable_length_names_stats_and_split(tmp_path):
    tr, te, train, test = tiny_ts(tmp_path)
    d = load_task("ts", {"train": str(tr), "test": str(te), "val_fraction": 0.25}, None, 3)
    assert d.class_names == ["walk", "run", "sit"]           # the header's order
    assert d.readout == "mean" and d.n_in == 2 and d.n_classes == 3
    assert len(d.x_train) + len(d.x_val) == 12 and len(d.x_val) == 3   # 1 per class held out
    assert sorted(d.y_val.tolist()) == [0, 1, 2]
    assert len(d.x_test) == 6 and d.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    # test split: exact values, own lengths, zero padding after them
    for i, (x, _) in enumerate(test):
        L = int(d.len_test[i])
        assert L == len(x)
        np.testing.assert_allclose(d.x_test[i, :L].numpy(), x, rtol=1e-5)
        assert torch.all(d.x_test[i, L:] == 0)
    # normalisation statistics: the real steps of the training split only (not val, not pad)
    real = np.concatenate([d.x_train[i, :int(d.len_train[i])].numpy()
                           for i in range(len(d.x_train))])
    np.testing.assert_allclose(d.input_mean, real.mean(0), rtol=1e-5)
    np.testing.assert_allclose(d.input_std, real.std(0), rtol=1e-4)
    # same seed, same split; data_dir makes relative paths work
    again = load_task("ts", {"train": "T_TRAIN.ts", "test": "T_TEST.ts", "val_fraction": 0.25},
                      str(tmp_path), 3)
    assert torch.equal(again.x_val, d.x_val)


def test_ts_errors_name_the_file_and_the_problem(tmp_path):
    tr, te, train, _ = tiny_ts(tmp_path)

    def load(train_file, test_file=te):
        return load_task("ts", {"train": str(train_file), "test": str(test_file)}, None, 0)

    bad_header = tmp_path / "bad_header.ts"
    bad_header.write_text("@problemName X\n@data 7\n1,2:a\n")
    with pytest.raises(TaskError, match=r"bad_header\.ts: cannot read this \.ts file"):
        load(bad_header)
    no_labels = tmp_path / "no_labels.ts"
    no_labels.write_text("@problemName X\n@data\n1,2,3:a\n")
    with pytest.raises(TaskError, match=r"no_labels\.ts: the header has no '@classLabel"):
        load(no_labels)
    ragged = tmp_path / "ragged.ts"
    ragged.write_text(TS_HEADER + "1,2,3:4,5:walk\n")
    with pytest.raises(TaskError, match=r"ragged\.ts.*different number of observations"):
        load(ragged)
    missing = tmp_path / "missing.ts"
    missing.write_text(TS_HEADER.replace("@missing false", "@missing true")
                       + "1,?,3:4,5,6:walk\n1,2:3,4:run\n")
    with pytest.raises(TaskError, match=r"missing\.ts: train sequence 0 has a missing"):
        load(missing)
    unknown = write_ts(tmp_path / "unknown.ts", [(np.ones((3, 2)), "jump")],
                       TS_HEADER.replace("walk run sit", "walk run sit jump"))
    with pytest.raises(TaskError, match=r"unknown\.ts: test label 'jump' is not among"):
        load(tr, unknown)
    with pytest.raises(TaskError, match="test file not found"):
        load(tr, tmp_path / "nowhere.ts")


# -- npz --------------------------------------------------------------------------------------
def obj(items):
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def test_npz_dense_string_labels_and_holdouts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 7, 3)).astype(np.float32)
    y = np.array(["b", "a", "c"] * 10)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x, y_train=y)
    d = load_task("npz", {"path": str(path)}, None, 0)
    assert d.class_names == ["a", "b", "c"] and d.readout == "mean"
    assert d.len_train is None and d.seq_len == 7
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 30
    assert len(d.x_test) == 6 and len(d.x_val) == 6          # 2 of each class, stratified
    assert sorted(d.y_test.tolist()) == [0, 0, 1, 1, 2, 2]
    # every sequence lands in exactly one split, with its own label
    label_of = {tuple(x[i, 0].tolist()): str(y[i]) for i in range(30)}
    seen = [tuple(s[0].tolist()) for s in (*d.x_train, *d.x_val, *d.x_test)]
    assert len(set(seen)) == 30
    ys = torch.cat([d.y_train, d.y_val, d.y_test]).tolist()
    assert all(d.class_names[yy] == label_of[s] for s, yy in zip(seen, ys))


def test_npz_variable_length_per_step_labels_and_class_names(tmp_path):
    rng = np.random.default_rng(1)
    lens = [5, 9, 3, 7]
    xs = [rng.normal(100, 5, size=(T, 2)) for T in lens]
    ys = [np.where(rng.random(T) < 0.3, -100, rng.integers(0, 2, T)) for T in lens]
    ys[0][:] = 1
    path = tmp_path / "v.npz"
    np.savez(path, x_train=obj(xs), y_train=obj(ys), x_val=obj(xs[:2]), y_val=obj(ys[:2]),
             x_test=obj(xs[2:]), y_test=obj(ys[2:]), class_names=np.array(["still", "freeze"]))
    d = load_task("npz", {"path": str(path)}, None, 0)
    assert d.readout == "per_step" and d.class_names == ["still", "freeze"]
    assert d.len_train.tolist() == lens and d.seq_len == 9
    for i, T in enumerate(lens):
        assert d.y_train[i, :T].tolist() == ys[i].tolist()
        assert torch.all(d.y_train[i, T:] == -100)
        np.testing.assert_allclose(d.x_train[i, :T].numpy(), xs[i], rtol=1e-6)
    assert d.len_test.tolist() == [3, 7]


def test_npz_errors_name_the_file_and_the_problem(tmp_path):
    def write(name, **arrays):
        path = tmp_path / name
        np.savez(path, **arrays)
        return {"path": str(path)}

    rng = np.random.default_rng(2)
    good = [rng.normal(size=(4, 3)) for _ in range(6)]
    labels = np.array([0, 1] * 3)
    cases = {
        "ragged channels: train sequence 2 has 2 channels, sequence 0 has 3":
            write("rag.npz", x_train=obj(good[:2] + [np.ones((4, 2))] + good[3:]),
                  y_train=labels),
        r"train sequence 1 has a missing or non-finite value \(nan\) at step 2, channel 0":
            write("nan.npz", x_train=obj(good[:1] + [np.where(np.arange(12).reshape(4, 3)
                                                              == 6, np.nan, 1.0)] + good[2:]),
                  y_train=labels),
        r"test label 7 is not among the training labels":
            write("unk.npz", x_train=obj(good), y_train=labels, x_test=obj(good[:2]),
                  y_test=np.array([0, 7])),
        "the val split is empty":
            write("empty.npz", x_train=obj(good), y_train=labels,
                  x_val=np.zeros((0, 4, 3)), y_val=np.zeros(0, np.int64)),
        "no array 'y_train'": write("noy.npz", x_train=obj(good)),
        "6 labels for 5 sequences": write("count.npz", x_train=obj(good[:5]), y_train=labels),
    }
    for message, params in cases.items():
        with pytest.raises(TaskError, match=message) as e:
            load_task("npz", params, None, 0)
        assert Path(params["path"]).name in str(e.value), str(e.value)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file at all")
    with pytest.raises(TaskError, match=r"broken\.npz: not a readable \.npz file"):
        load_task("npz", {"path": str(broken)}, None, 0)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_npz_object_arrays_never_run_code(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=obj([_Evil(), np.ones((3, 1))]), y_train=np.array([0, 1]))
    with pytest.raises(TaskError, match=r"evil\.npz: cannot read an object array.*refusing"):
        load_task("npz", {"path": str(path)}, None, 0)


def test_train_cli_bad_data_is_one_line_exit_2(tmp_path):
    path = tmp_path / "nan.npz"
    x = np.ones((4, 5, 2))
    x[1, 3, 1] = np.inf
    np.savez(path, x_train=x, y_train=np.array([0, 1, 0, 1]))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[task]\nname = "npz"\npath = "{path}"\n')
    res = subprocess.run([sys.executable, "-m", "mgrade_edge.training.train", str(cfg), "--out",
                          str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "nan.npz: train sequence 1 has a missing or non-finite value (inf) at step 3, " \
           "channel 1" in res.stderr


# -- variable length, exactly ----------------------------------------------------------------
def small_net(readout: str, kernel_span: int, n_in=3, normalize=True, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=8, n_layers=2, kernel_span=kernel_span, n_taps=3)
    stats = dict(input_mean=[5.0, -2.0, 0.5][:n_in], input_std=[2.0, 0.5, 3.0][:n_in]) \
        if normalize else {}
    net = MGradeNet(cfg, n_in=n_in, n_classes=4, readout=readout, **stats)
    with torch.no_grad():             # make the batch norms non-trivial
        for m in net.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return net


def padded_batch(lengths, T, n_in=3, fill=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), T, n_in, generator=g) * 2 + 5
    for i, L in enumerate(lengths):
        x[i, L:] = fill
    return x


@pytest.mark.parametrize("readout", ["mean", "per_step"])
@pytest.mark.parametrize("kernel_span", [8, 24])           # direct and FFT convolution paths
def test_parallel_forward_equals_streaming_step_on_every_real_step(readout, kernel_span):
    lengths = torch.tensor([13, 5, 20, 1])
    T = 20
    net = small_net(readout, kernel_span).eval()
    x = padded_batch(lengths.tolist(), T)
    garbage = x.clone()
    for i, L in enumerate(lengths.tolist()):
        garbage[i, L:] = torch.randn(T - L, 3) * 1e4
    garbage[1, 7, 0] = float("nan")
    with torch.no_grad():
        out = net(x, lengths)
        assert torch.equal(net(garbage, lengths), out), "padding influenced a result"
        per_step = net(x, lengths, per_step=True)
        for i, L in enumerate(lengths.tolist()):
            state = net.init_state(1)
            for t in range(L):
                logits, state = net.step(x[i:i + 1, t], state)
                torch.testing.assert_close(logits[0], per_step[i, t] if readout == "per_step"
                                           else per_step[i, :t + 1].mean(0),
                                           atol=2e-5, rtol=1e-5)
            final = out[i, L - 1] if readout == "per_step" else out[i]
            torch.testing.assert_close(logits[0], final, atol=2e-5, rtol=1e-5)
            # and the sequence alone, unpadded, gives the same answer
            alone = net(x[i:i + 1, :L])
            torch.testing.assert_close(alone[0, L - 1] if readout == "per_step" else alone[0],
                                       final, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("readout", ["mean", "per_step"])
def test_padding_never_reaches_training(readout):
    """Train mode: batch-norm statistics, running estimates, the loss and every gradient are
    the same whatever the padded steps hold (labels there are -100)."""
    lengths = torch.tensor([9, 4, 12])
    T = 12
    x = padded_batch(lengths.tolist(), T)
    garbage = x.clone()
    for i, L in enumerate(lengths.tolist()):
        garbage[i, L:] = torch.randn(T - L, 3) * 1e3
    y = torch.tensor([1, 3, 0]) if readout == "mean" else \
        torch.where(net_mask(lengths, T), torch.randint(0, 4, (3, T)), torch.tensor(-100))
    longer = torch.cat([x, torch.zeros(3, 8, 3)], dim=1)      # more padding, same sequences
    y_longer = y if readout == "mean" else torch.cat([y, torch.full((3, 8), -100)], dim=1)
    results = []
    for inp, target in ((x, y), (garbage, y), (longer, y_longer)):
        net = small_net(readout, 24).train()
        loss, _, count = loss_and_correct(net(inp, lengths), target)
        loss.backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        stats = [b.clone() for n, b in net.named_buffers() if "running" in n]
        results.append((loss.detach(), grads, stats, count))
    (l0, g0, s0, c0), (l1, g1, s1, c1), (l2, g2, s2, c2) = results
    assert c0 == c1 == c2 == (3 if readout == "mean" else int((y != -100).sum()))
    assert torch.equal(l0, l1)                  # padded values: bit-identical
    assert all(torch.equal(a, b) for a, b in zip(g0, g1)) and len(g0) == len(g1)
    assert all(torch.equal(a, b) for a, b in zip(s0, s1)) and len(s0) > 0
    # padded length: the same up to the FFT length's rounding
    torch.testing.assert_close(l0, l2, atol=1e-6, rtol=1e-5)
    for a, b in zip(g0 + s0, g2 + s2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def net_mask(lengths, T):
    return torch.arange(T)[None, :] < lengths[:, None]


# -- normalisation before quantisation ----------------------------------------------------------
def test_step_graph_on_normalised_frames_equals_network_on_raw_units():
    """The normalisation stays outside the graph (the device normalises before quantising):
    the spec's encoder is the network's, the spec carries mean / std, the calibration feeds
    hold the normalised frames, and the TF step graph on them gives the network's per-step
    logits on raw units (float, before quantization)."""
    pytest.importorskip("tensorflow")
    from mgrade_edge.convert.calibrate import step_feeds
    from mgrade_edge.convert.graph import build_step_function, io_names
    from mgrade_edge.convert.spec import extract

    net = small_net("mean", 8, seed=3).eval().harden()
    x = padded_batch([16], 16, seed=4)                         # raw: mean ~5, std ~2
    spec = extract(net)
    np.testing.assert_array_equal(spec.we, net.encoder.weight.detach().double().numpy())
    np.testing.assert_array_equal(spec.input_std, np.float32([2.0, 0.5, 3.0]))
    fn = build_step_function(spec)
    names_in, names_out = io_names(spec)
    with torch.no_grad():
        expect = net(x, per_step=True)[0].numpy()
    for t, (feed, _) in enumerate(step_feeds(net, spec, x)):
        want_x = (x[0, t].numpy() - spec.input_mean) / spec.input_std
        np.testing.assert_allclose(feed["x"][0], want_x, rtol=1e-6, atol=1e-6)
        out = fn(*[feed[n] for n in names_in])
        logits = out[names_out.index("logits")].numpy()[0]
        np.testing.assert_allclose(logits, expect[t], atol=1e-4, rtol=1e-4)


FRAME_RUNNER = r"""
/* raw float frames in, the package's frame quantizer, the model step, int8 out */
#include <stdio.h>
#include "mg_model.h"
#include "mg_model_data.h"
static mg_model_t m;
int main(void)
{
    unsigned int hdr[2], s, t;
    float x[MG_MODEL_N_IN];
    int8_t q[MG_MODEL_N_IN], logits[MG_MODEL_N_OUT];
    if (fread(hdr, sizeof hdr[0], 2, stdin) != 2) return 2;
    for (s = 0; s < hdr[0]; ++s) {
        mg_model_init(&m);
        for (t = 0; t < hdr[1]; ++t) {
            if (fread(x, sizeof x[0], MG_MODEL_N_IN, stdin) != MG_MODEL_N_IN) return 2;
            mg_model_quantize_frame(x, q);
            mg_model_step(&m, q, logits);
            fwrite(q, 1, sizeof q, stdout);
            fwrite(logits, 1, sizeof logits, stdout);
        }
    }
    return 0;
}
"""

BM_CONFIG = """[task]
name = "ts"
train = "aeon:BasicMotions/BasicMotions_TRAIN.ts"
test = "aeon:BasicMotions/BasicMotions_TEST.ts"
val_fraction = 0.2
[model]
d_model = 16
n_layers = 1
kernel_span = 8
n_taps = 4
[train]
epochs = 12
batch_size = 8
lr = 1e-2
threads = 1
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_basicmotions_raw_units_through_convert_and_host_runtime(tmp_path):
    """BasicMotions (aeon's copy): tiny training, convert, C package; raw sensor frames through
    mg_model_quantize_frame + mg_model_step on the host == the host's quantize_input + the
    TFLite-Micro streamer, 0 LSB on every frame and every step's logits."""
    pytest.importorskip("aeon")
    from benchmarks import mcu_cost as mc
    from mgrade_edge.convert.stream import Streamer

    from mgrade_edge.convert.__main__ import main as convert_main
    from mgrade_edge.training.train import main as train_main

    cfg = tmp_path / "bm.toml"
    cfg.write_text(BM_CONFIG)
    run = tmp_path / "run"
    # the commands' own main(), in this process (the CLIs themselves are tested elsewhere):
    # no second import of torch and TensorFlow
    assert train_main([str(cfg), "--out", str(run)]) == 0
    assert convert_main([str(run), "--out", str(run / "int8"), "--calib", "32"]) == 0
    report = json.loads((run / "int8" / "report.json").read_text())
    assert report["int8_acc_tflm"] >= 0.6, report            # 4 classes: chance is 0.25
    model_bytes = (run / "int8" / "model.tflite").read_bytes()
    from mgrade_edge.convert.quantize import read_metadata
    assert read_metadata(model_bytes)["class_names"] == ["standing", "running", "walking",
                                                         "badminton"]
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert len(ckpt["task_info"]["input_mean"]) == 6

    gen = tmp_path / "gen"
    mc.generate(run / "int8", gen, n_seq=1)
    exe = tmp_path / "frame_runner"
    (tmp_path / "frame_runner.c").write_text(FRAME_RUNNER)
    srcs = [tmp_path / "frame_runner.c"] + [gen / s for s in mc.PACKAGE_SRCS] + \
        [mc.RUNTIME / s for s in mc.RUNTIME_SRCS]
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
                    "-I", str(mc.RUNTIME), "-I", str(gen), *map(str, srcs), "-o", str(exe)],
                   check=True, capture_output=True)

    data = load_task("ts", {"train": "aeon:BasicMotions/BasicMotions_TRAIN.ts",
                            "test": "aeon:BasicMotions/BasicMotions_TEST.ts"}, None, 0)
    raw = data.x_test[::4].numpy()                             # sensor units, 10 sequences
    s = Streamer(model_bytes, "tflm")
    scale, zp = s.input_quant
    # plus frames on the rounding half-way points and beyond the int8 range
    k = np.arange(-140, 140, dtype=np.float32)[:, None]
    edge = ((k + np.float32(0.5)) * np.float32(scale)).astype(np.float32)
    edge = np.repeat(edge, 6, axis=1)[None]
    frames = np.concatenate([raw, edge[:, :100]], axis=0).astype(np.float32)
    S, T, C = frames.shape
    out = subprocess.run([str(exe)], input=np.array([S, T], np.uint32).tobytes()
                         + frames.tobytes(), capture_output=True, check=True).stdout
    got = np.frombuffer(out, np.int8).reshape(S, T, C + data.n_classes)
    q_host = s.quantize_input(frames)
    assert np.array_equal(got[..., :C], q_host), "frame quantizer differs from the host"
    for i in range(S):
        assert np.array_equal(got[i, :, C:], s.run(q_host[i])), f"logits differ, seq {i}"
    # the device's class on raw frames agrees with the float network on the same raw frames
    from mgrade_edge.training.checkpoint import load_model
    fnet = load_model(run)[0].harden()
    with torch.no_grad():
        float_pred = fnet(torch.from_numpy(raw)).argmax(-1).numpy()
    dev_pred = got[:len(raw), :, C:].astype(np.int32).sum(1).argmax(-1)
    assert (dev_pred == float_pred).mean() >= 0.8


# -- a sensor log split in time (per-step streaming detection) --------------------------------
def test_log_to_npz_splits_in_time_and_feeds_the_npz_task(tmp_path, capsys):
    from mgrade_edge.training.tasks import log_to_npz

    T = 400
    t = np.arange(T)
    label = ((t // 25) % 2).astype(int)                       # alternating events
    label[:3] = -100
    log = tmp_path / "log.csv"
    log.write_text("timestamp,ax,ay,label\n" + "".join(
        f"{k * 0.01:.2f},{np.sin(k / 5):.5f},{label[k] * 3 + 100:.1f},{label[k]}\n"
        for k in range(T)))
    out = tmp_path / "log.npz"
    assert log_to_npz.main([str(log), "--label", "label", "--drop", "timestamp", "--out",
                            str(out), "--window", "64", "--stride", "32"]) == 0
    d = load_task("npz", {"path": str(out)}, None, 0)
    assert d.readout == "per_step" and d.n_in == 2 and d.class_names == ["0", "1"]
    assert len(d.x_train) == (240 - 64) // 32 + 1 and d.len_val.tolist() == [80]
    assert d.len_test.tolist() == [80]
    np.testing.assert_allclose(d.x_test[0, :, 1].numpy(), label[320:] * 3 + 100.0)
    assert d.y_test[0].tolist() == label[320:].tolist()
    assert d.y_train[0, :3].tolist() == [-100] * 3
    flat = np.zeros(T, int)
    log.write_text("ax,label\n" + "".join(f"{k},{flat[k]}\n" for k in range(T)))
    assert log_to_npz.main([str(log), "--label", "label", "--out", str(out), "--window",
                            "64"]) == 2
    assert "has a single label ([0]): nothing to detect" in capsys.readouterr().err


# -- stream_eval streams each sequence's own steps -----------------------------------------
class _PipePort:
    """pyserial-like port over the host-built device app's stdin/stdout."""

    def __init__(self, proc):
        import os
        self.proc, self.timeout, self.os = proc, 0.05, os
        os.set_blocking(proc.stdout.fileno(), False)

    def write(self, b):
        self.proc.stdin.write(b)
        self.proc.stdin.flush()

    def read(self, n):
        import time
        end = time.monotonic() + self.timeout
        while True:
            try:
                data = self.os.read(self.proc.stdout.fileno(), n)
            except BlockingIOError:
                data = b""
            if data or time.monotonic() > end:
                return data
            time.sleep(0.001)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(5)


def test_stream_eval_streams_own_lengths_on_the_host_device(host_build, tmp_path):
    """Variable-length test data (padded x, lengths, per-step y with -100 padding) through the
    C device app (host build, toy model): exactly sum(lengths) steps go to the device, the
    padding never does, and device == host on every real step."""
    res, out = host_build
    assert res.returncode == 0, res.stdout + res.stderr
    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "toy_model"))
    from toy_model import N_IN, ToyModel

    from mgrade_edge.host_tools import protocol as P
    from mgrade_edge.host_tools import stream_eval

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    shutil.copy(ROOT / "tests" / "fixtures" / "toy_model" / "model.tflite", model_dir)
    rng = np.random.default_rng(0)
    lengths = np.array([5, 17, 1, 9])
    x = rng.integers(-128, 128, size=(4, 17, N_IN)).astype(np.int8)
    y = np.full((4, 17), -100, np.int64)
    for i, L in enumerate(lengths):
        y[i, :L] = np.argmax(ToyModel.run(x[i, :L]), -1)     # the right answer on real steps
        x[i, L:] = 127                                        # padding the device must not see
    np.savez(model_dir / "test_data.npz", x=x, y=y, lengths=lengths)
    proc = subprocess.Popen([str(out / "mg_host_device")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    dev = P.Device(_PipePort(proc), timeout=2)
    try:
        m = stream_eval.evaluate(dev, model_dir, reference=ToyModel(model_dir))
    finally:
        dev.close()
    assert m["steps"] == int(lengths.sum()) and m["labelled"] == int(lengths.sum())
    assert m["max_abs_logit_diff"] == 0 and m["max_abs_sum_diff"] == 0
    assert m["device_accuracy"] == 1.0 and m["readout"] == "per_step"
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    np.savez(bad / "test_data.npz", x=x, y=y, lengths=np.array([5, 18, 1, 9]))
    with pytest.raises(stream_eval.UserError, match="lengths must be"):
        stream_eval.load_lengths(bad, x)
