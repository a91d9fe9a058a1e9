"""Data errors caught at the door (issue 24, items 4-7), with real files and real processes.

Each bad input is either refused when the task loads, with one line naming the file and
nothing trained or written, or gives a correct result:
- item 4: a val / test split whose channels differ from the training split (npz, .ts);
- item 5: zero channels, and convert on a checkpoint built for them;
- item 6: labels: a test split without labelled steps (accuracy "n/a", JSON null, stream_eval's
  exit decided by the logits), a per-sequence label -100 (refused; stream_eval counts it as
  convert does), labels 1 and "1", duplicate class names, dense per-step labels of the wrong
  length, [N, 1] labels, a .ts header whose @dimensions lie;
- item 7: Ctrl-C (SIGINT) at points in the start-up of train, convert and stream_eval.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_own_data import TS_HEADER, obj, write_ts
from mgrade_edge.training.tasks import TaskError, load_task

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "fixtures" / "toy_model"


def npz(path: Path, **arrays) -> dict:
    np.savez(path, **arrays)
    return {"path": str(path)}


def refused(params: dict, *needles: str, task: str = "npz"):
    """load_task refuses with one line that names the file and holds every needle."""
    with pytest.raises(TaskError) as e:
        load_task(task, params, None, 0)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (not JSON)."""
    def bad(c):
        raise AssertionError(f"{c} in JSON")
    return json.loads(text, parse_constant=bad)


def one_error_line(res, code=2, *needles):
    assert res.returncode == code, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-1500:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def run(args, timeout=600, **kw):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


rng = np.random.default_rng(0)
X3 = rng.normal(size=(20, 10, 3))
Y = np.array([0, 1] * 10)


# -- item 4: every split has the training split's channels -----------------------------------
@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("form", ["dense", "object"])
def test_npz_split_with_other_channels_is_refused(tmp_path, split, form):
    other = rng.normal(size=(4, 10, 2))
    other = other if form == "dense" else obj(list(other))
    p = npz(tmp_path / "ch.npz", x_train=X3, y_train=Y, **{f"x_{split}": other,
                                                             f"y_{split}": Y[:4]})
    refused(p, "ch.npz", f"the {split} split has 2 channels but the training split has 3")


def test_ts_test_file_with_other_channels_names_both_files(tmp_path):
    header = TS_HEADER.replace("@dimensions 2", "@dimensions 3")
    train = write_ts(tmp_path / "A_TRAIN.ts", [(np.ones((5, 3)) * k, c) for k, c in
                                               enumerate(["walk", "run", "sit"] * 2)], header)
    test = write_ts(tmp_path / "A_TEST.ts", [(np.ones((5, 2)), "walk")])
    refused({"train": str(train), "test": str(test)}, "A_TEST.ts: the test split has 2 "
            "channels but the training split", "A_TRAIN.ts) has 3", task="ts")


def test_train_cli_other_channels_exit_2_nothing_written(tmp_path):
    p = npz(tmp_path / "ch.npz", x_train=X3, y_train=Y, x_test=X3[:4, :, :2], y_test=Y[:4])
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[task]\nname = "npz"\npath = "{p["path"]}"\n[train]\nepochs = 1\n')
    res = run(["-m", "mgrade_edge.training.train", cfg, "--out", tmp_path / "run"], timeout=300)
    one_error_line(res, 2, "ch.npz", "test split has 2 channels")
    assert not (tmp_path / "run").exists()            # not even an empty run folder


# -- item 5: zero channels ---------------------------------------------------------------------
def test_zero_channels_are_refused(tmp_path):
    refused(npz(tmp_path / "z.npz", x_train=np.zeros((20, 10, 0)), y_train=Y), "z.npz",
            "train sequence 0 has no channels")
    refused(npz(tmp_path / "zo.npz", x_train=obj([np.zeros((4, 0))] * 4),
                y_train=Y[:4]), "zo.npz", "no channels")
    refused(npz(tmp_path / "zt.npz", x_train=X3, y_train=Y, x_test=np.zeros((4, 10, 0)),
                y_test=Y[:4]), "zt.npz", "test sequence 0 has no channels")


def zero_channel_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A checkpoint as today's main trained it on x [N, T, 0] (the network built for 0
    channels), written directly: (checkpoint, its data file)."""
    from mgrade_edge.training.checkpoint import FORMAT, build_model
    from mgrade_edge.training.config import config_from_dict
    data = tmp_path / "z.npz"
    np.savez(data, x_train=np.zeros((20, 10, 0)), y_train=Y)
    cfg = config_from_dict({"task": {"name": "npz", "path": str(data)},
                            "model": {"d_model": 4, "n_layers": 1, "kernel_span": 4,
                                      "n_taps": 2},
                            "train": {"epochs": 1}})
    info = {"n_in": 0, "n_classes": 2, "readout": "mean", "seq_len": 10, "name": "npz",
            "class_names": ["0", "1"], "input_mean": [], "input_std": []}
    net = build_model(cfg, info)
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "config": cfg.to_dict(), "task_info": info,
                "model": net.state_dict()}, ckpt)
    return ckpt, data


def test_convert_of_a_zero_channel_checkpoint_is_one_line(tmp_path):
    ckpt, data = zero_channel_checkpoint(tmp_path)
    res = run(["-m", "mgrade_edge.convert", ckpt, "--out", tmp_path / "int8"])
    one_error_line(res, 2, "z.npz", "no channels")
    np.savez(data, x_train=X3, y_train=Y)               # the data file fixed afterwards
    res = run(["-m", "mgrade_edge.convert", ckpt, "--out", tmp_path / "int8"])
    one_error_line(res, 2, "trained on data with channels 0", "now have 3")
    assert not (tmp_path / "int8").exists()


# -- item 6: labels ----------------------------------------------------------------------------
def test_per_sequence_label_minus_100_is_refused(tmp_path):
    y = Y.copy()
    y[3] = -100
    refused(npz(tmp_path / "m.npz", x_train=X3, y_train=y), "m.npz",
            "train sequence 3 has the label -100")
    refused(npz(tmp_path / "mt.npz", x_train=X3, y_train=Y, x_test=X3[:4],
                y_test=np.array([0, -100, 1, 0])), "mt.npz", "test sequence 1 has the label -100")
    # a string "-100" is an ordinary class name
    d = load_task("npz", npz(tmp_path / "s.npz", x_train=X3,
                             y_train=np.array(["-100", "a"] * 10)), None, 0)
    assert d.class_names == ["-100", "a"]


def test_labels_with_the_same_text_and_duplicate_class_names_are_refused(tmp_path):
    refused(npz(tmp_path / "mix.npz", x_train=X3, y_train=obj([1, "1"] * 10)), "mix.npz",
            "both 1 and '1'")
    refused(npz(tmp_path / "cn.npz", x_train=X3, y_train=Y, class_names=np.array(["a", "a"])),
            "cn.npz", "class_names lists the class 'a' twice")
    refused(npz(tmp_path / "nan.npz", x_train=X3, y_train=np.array([0.0, np.nan] * 10)),
            "nan.npz", "a training label is nan")


@pytest.mark.parametrize("labels", ["a a b", "walk Walk run"])    # aeon lower-cases them
def test_ts_duplicate_class_labels_are_refused(tmp_path, labels):
    header = TS_HEADER.replace("walk run sit", labels)
    first = labels.split()[0].lower()
    f = write_ts(tmp_path / "D_TRAIN.ts", [(np.ones((4, 2)) * k, first) for k in range(4)],
                 header)
    refused({"train": str(f), "test": str(f)}, "D_TRAIN.ts", f"class '{first}' twice",
            task="ts")


@pytest.mark.parametrize("dims", [2, 4])
def test_ts_header_dimensions_must_match_the_data(tmp_path, dims):
    """aeon's reader accepts a header whose @dimensions is not the data's channel count (it
    checks only @univariate true); the loader refuses it."""
    head = TS_HEADER.replace("@dimensions 2", f"@dimensions {dims}")
    f = write_ts(tmp_path / "H_TRAIN.ts", [(np.ones((4, 3)) * k, c) for k, c in
                                           enumerate(["walk", "run", "sit"])], head)
    refused({"train": str(f), "test": str(f)}, "H_TRAIN.ts",
            f"the header claims {dims} channel(s) but the data have 3", task="ts")


def test_dense_per_step_labels_must_cover_exactly_the_steps(tmp_path):
    for T in (15, 8):                                  # longer (was cut silently), shorter
        refused(npz(tmp_path / f"d{T}.npz", x_train=X3, y_train=rng.integers(0, 2, (20, T))),
                f"d{T}.npz", f"per-step labels for {T} steps but the x_train sequences have 10")
    # variable-length x with dense labels padded to the longest: past each end only -100
    xs = [rng.normal(size=(L, 3)) for L in (10, 6, 8, 10)]
    pad = np.full((4, 10), -100)
    for i, s in enumerate(xs):
        pad[i, :len(s)] = i % 2
    d = load_task("npz", npz(tmp_path / "v.npz", x_train=obj(xs * 5),
                             y_train=np.concatenate([pad] * 5)), None, 0)
    assert d.len_train is not None and d.readout == "per_step"
    pad[1, 7] = 1                                        # a label after sequence 1's 6 steps
    refused(npz(tmp_path / "v2.npz", x_train=obj(xs * 5), y_train=np.concatenate([pad] * 5)),
            "v2.npz", "train sequence 1 has 6 steps but a label at step 7")


def test_column_labels_point_to_the_right_shapes(tmp_path):
    msg = refused(npz(tmp_path / "col.npz", x_train=X3, y_train=Y[:, None]), "col.npz",
                  "y_train has shape [20, 1]", "y.reshape(-1)", "[N, T] = [20, 10]")
    assert "per-step labels" not in msg.split(":", 1)[1].split(";")[0]
    ys = rng.integers(0, 2, (20, 10))
    refused(npz(tmp_path / "colt.npz", x_train=X3, y_train=ys, x_test=X3[:4],
                y_test=ys[:4, :1]), "colt.npz", "y_test has shape [4, 1]")


def test_val_without_labelled_steps_is_refused_test_gives_no_accuracy(tmp_path):
    from mgrade_edge.training.evaluate import evaluate
    from mgrade_edge.training.config import ModelConfig
    from mgrade_edge.training.model import MGradeNet
    ys = rng.integers(0, 2, (20, 10))
    none = np.full((4, 10), -100)
    refused(npz(tmp_path / "v.npz", x_train=X3, y_train=ys, x_val=X3[:4], y_val=none),
            "v.npz", "every val step is unlabelled")
    d = load_task("npz", npz(tmp_path / "t.npz", x_train=X3, y_train=ys, x_test=X3[:4],
                             y_test=none), None, 0)
    net = MGradeNet(ModelConfig(d_model=4, n_layers=1, kernel_span=4, n_taps=2), n_in=3,
                    n_classes=2, readout="per_step")
    res = evaluate(net, d.x_test, d.y_test)
    assert res["acc"] is None and res["n"] == 0
    assert evaluate(net, d.x_val, d.y_val)["acc"] is not None


PER_STEP_TOML = """
[task]
name = "npz"
path = "{path}"
[model]
d_model = 4
n_layers = 1
kernel_span = 4
n_taps = 2
[train]
epochs = 1
batch_size = 8
threads = 1
"""


@pytest.mark.slow          # trains (seconds) and converts (about a minute on a busy machine)
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_unlabelled_test_split_reports_na_and_json_null(tmp_path, capsys):
    """Train and convert through the commands' main() in this process (what they print is
    what the commands print; their exit codes and one-line errors are tested above)."""
    from mgrade_edge.convert.__main__ import main as convert_main
    from mgrade_edge.training.train import main as train_main

    ys = rng.integers(0, 2, (20, 10))
    p = npz(tmp_path / "u.npz", x_train=X3, y_train=ys, x_val=X3[:4], y_val=ys[:4],
            x_test=X3[:3], y_test=np.full((3, 10), -100))
    cfg = tmp_path / "u.toml"
    cfg.write_text(PER_STEP_TOML.format(path=p["path"]))
    capsys.readouterr()
    assert train_main([str(cfg), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "test n/a (no labelled steps)" in out
    assert "final test acc n/a (no labelled steps)" in out
    rows = [strict_json(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert rows[-1]["test_acc"] is None and rows[-1]["val_acc"] is not None
    assert convert_main([str(tmp_path / "run"), "--out", str(tmp_path / "int8"),
                         "--state-bits", "8"]) == 0
    out = capsys.readouterr().out
    report = strict_json((tmp_path / "int8" / "report.json").read_text())
    for key in ("float_acc", "hardened_acc", "int8_acc_tflm", "int8_acc_litert",
                "int8_cost_points_tflm", "hardening_cost_points"):
        assert report[key] is None, (key, report[key])
    assert "int8 TFLM n/a (no labelled steps)" in out


# -- item 6 through stream_eval against the host-built C device app ----------------------------
@pytest.fixture(scope="module")
def device_exe(host_build) -> Path:
    """The host-built C device app (toy model)."""
    res, out = host_build
    assert res.returncode == 0, res.stdout + res.stderr
    return out / "mg_host_device"


def device(exe):
    """A fresh device behind a TCP port (px.url); one client per device."""
    sys.path.insert(0, str(ROOT / "tests"))
    from link_proxy import LinkProxy
    return LinkProxy(exe)


def toy_dir(tmp_path, y_of) -> Path:
    """The toy model's DIR with 3 test sequences of 12 steps and labels y_of(x)."""
    d = tmp_path / "toy"
    d.mkdir()
    (d / "model.tflite").write_bytes((TOY / "model.tflite").read_bytes())
    sys.path.insert(0, str(TOY))
    from toy_model import N_IN
    x = np.random.default_rng(1).integers(-128, 128, (3, 12, N_IN)).astype(np.int8)
    np.savez(d / "test_data.npz", x=x, y=y_of(x))
    return d


def stream_eval(url, model_dir, *extra, **kw):
    return run([ROOT / "host_tools" / "stream_eval.py", "--port", url, "--model", model_dir,
                "--no-progress", "--reference", f"{TOY / 'toy_model.py'}:ToyModel", *extra],
               timeout=120, **kw)


def test_stream_eval_unlabelled_steps_exit_by_logits_and_null_json(device_exe, tmp_path):
    d = toy_dir(tmp_path, lambda x: np.full(x.shape[:2], -100, np.int64))
    with device(device_exe) as px:
        res = stream_eval(px.url, d, "--json", tmp_path / "m.json")
    assert res.returncode == 0, res.stdout + res.stderr          # was 1: agreement NaN != 1.0
    assert "device acc : n/a (no labelled steps)" in res.stdout
    assert "max |diff| : 0 int8 logits" in res.stdout
    m = strict_json((tmp_path / "m.json").read_text())
    assert m["labelled"] == 0 and m["device_accuracy"] is None and m["argmax_agreement"] is None


def test_stream_eval_counts_unlabelled_sequences_as_convert_does(device_exe, tmp_path):
    """A per-sequence -100 in a test_data.npz (today's loaders refuse it; an older or
    hand-made file may hold it): not counted, as convert's accuracy does not (it was an
    IndexError, exit 4); a label beyond the model's classes is one line, exit 2."""
    sys.path.insert(0, str(TOY))
    from toy_model import ToyModel
    right = lambda x: np.array([int(np.argmax(ToyModel.run(s).astype(np.int64).sum(0)))  # noqa: E731
                                for s in x])
    d = toy_dir(tmp_path, lambda x: np.where(np.arange(len(x)) == 1, -100, right(x)))
    with device(device_exe) as px:
        res = stream_eval(px.url, d, "--json", tmp_path / "m.json")
    assert res.returncode == 0, res.stdout + res.stderr
    m = strict_json((tmp_path / "m.json").read_text())
    assert m["labelled"] == 2 and m["device_accuracy"] == 1.0 and m["n_sequences"] == 3
    with np.load(d / "test_data.npz") as z:
        x, y = z["x"], z["y"]
    y[0] = 99
    np.savez(d / "test_data.npz", x=x, y=y)
    with device(device_exe) as px:
        one_error_line(stream_eval(px.url, d), 2, "label 99 is not a class of the model")


# -- item 7: Ctrl-C at points in the start-up ---------------------------------------------------
def interrupt(cmd, when, timeout=300):
    """Start cmd, call when(proc, lines) with the stdout lines read so far until it says
    'now', send SIGINT; (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not when(proc, lines):
            assert proc.poll() is None, ("finished before the point", proc.stderr.read())
            assert time.monotonic() < deadline, "never reached the point"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    return proc.returncode, "".join(lines), err


def loading(library: str):
    """The point where the process has mapped `library` (e.g. torch's): in its imports, after
    the interpreter's own start-up (a signal before that is the interpreter's business)."""
    def when(proc, lines):
        try:
            return library in Path(f"/proc/{proc.pid}/maps").read_text()
        except OSError:
            return False
    return when


def clean_interrupt(code, err):
    assert code == 130, (code, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].split("\r")[-1].startswith("interrupted"), err[-500:]


TINY_DIGITS = """
[task]
name = "digits"
[model]
d_model = 4
n_layers = 1
kernel_span = 4
n_taps = 2
[train]
epochs = 1
threads = 1
"""


@pytest.mark.parametrize("point", ["imports", "data loading"])
def test_ctrl_c_in_train_start_up_exits_130_and_writes_nothing(tmp_path, point):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY_DIGITS)
    out = tmp_path / "run"
    when = loading("libtorch_cpu") if point == "imports" else \
        (lambda proc, lines: (out / "train.lock").exists())   # locked: loading the data
    code, _, err = interrupt(["-m", "mgrade_edge.training.train", cfg, "--out", out], when)
    clean_interrupt(code, err)
    assert not out.exists(), list(out.iterdir())


def untrained_checkpoint(tmp_path) -> Path:
    """A digits checkpoint of an untrained tiny network (convert does not care)."""
    from mgrade_edge.training.checkpoint import FORMAT, build_model
    from mgrade_edge.training.config import config_from_dict
    from mgrade_edge.training.train import task_info
    cfg = config_from_dict({"task": {"name": "digits"},
                            "model": {"d_model": 4, "n_layers": 1, "kernel_span": 4,
                                      "n_taps": 2}, "train": {"epochs": 1}})
    info = task_info(load_task("digits", {}, None, 0))
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "config": cfg.to_dict(), "task_info": info,
                "model": build_model(cfg, info).state_dict()}, ckpt)
    return ckpt


@pytest.mark.slow          # convert's imports and calibration take tens of seconds here
@pytest.mark.parametrize("point", ["imports", "converting"])
def test_ctrl_c_in_convert_exits_130_and_leaves_no_folder(tmp_path, point):
    ckpt = untrained_checkpoint(tmp_path)
    out = tmp_path / "int8"
    when = loading("libtorch_cpu") if point == "imports" else \
        (lambda proc, lines: any("calibration steps" in ln for ln in lines))
    code, _, err = interrupt(["-m", "mgrade_edge.convert", ckpt, "--out", out, "--n-test", "20"], when)
    clean_interrupt(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]   # no temp folder


SLOW_REF = """
import sys, time
from pathlib import Path
sys.path.insert(0, {toy!r})
from toy_model import ToyModel

class Slow(ToyModel):
    def run(self, x):
        Path({marker!r}).touch()          # streaming has started
        time.sleep(0.5)
        return super().run(x)
"""


@pytest.mark.parametrize("point", ["imports", "streaming"])
def test_ctrl_c_in_stream_eval_exits_130_without_a_report(device_exe, tmp_path, point):
    d = toy_dir(tmp_path, lambda x: np.zeros(len(x), np.int64))
    marker = tmp_path / "streaming"
    ref = tmp_path / "slow_ref.py"
    ref.write_text(SLOW_REF.format(toy=str(TOY), marker=str(marker)))
    when = loading("_multiarray_umath") if point == "imports" else \
        (lambda proc, lines: marker.exists())
    with device(device_exe) as px:
        code, _, err = interrupt([ROOT / "host_tools" / "stream_eval.py", "--port", px.url,
                                  "--model", d, "--no-progress", "--reference",
                                  f"{ref}:Slow", "--json", tmp_path / "m.json"], when,
                                 timeout=120)
    clean_interrupt(code, err)
    assert not (tmp_path / "m.json").exists()
    assert not list(tmp_path.glob("m.json*"))


# -- next to them: the log_to_npz CLI that writes npz task files ------------------------------
def test_log_to_npz_refuses_what_the_npz_task_would_and_writes_nothing(tmp_path, capsys):
    """Zero channels, a non-integer or non-finite label, a missing value, duplicate --names
    or too few of them, an unlabelled validation part: one line, exit 2, no file (these were
    written, then refused later by train, or silently truncated: label 1.5 became 1)."""
    from mgrade_edge.training.tasks import log_to_npz
    T = 200
    label = (np.arange(T) // 20) % 2

    def log(name, header, row):
        path = tmp_path / name
        path.write_text(header + "\n" + "".join(row(k) + "\n" for k in range(T)))
        return path

    good = lambda k: f"{k},{np.sin(k / 3):.4f},{label[k]}"  # noqa: E731
    cases = [
        (log("nochan.csv", "t,label", lambda k: f"{k},{label[k]}"), ["--drop", "t"],
         "no channel columns left"),
        (log("half.csv", "t,ax,label", lambda k: good(k) if k != 50 else f"{k},0.1,1.5"), [],
         "row 52: label '1.5' is not an integer class"),
        (log("nan.csv", "t,ax,label", lambda k: good(k) if k != 7 else f"{k},nan,0"), [],
         "row 9, column 'ax': a missing or non-finite value"),
        (log("ok.csv", "t,ax,label", good), ["--names", "a", "a"], "'a' twice"),
        (log("ok2.csv", "t,ax,label", good), ["--names", "a"], "--names gives 1 names"),
        (log("noval.csv", "t,ax,label", lambda k: good(k) if not 120 <= k < 160
             else f"{k},0,-100"), [], "the validation part (steps 120..160) has no labelled"),
    ]
    for path, extra, needle in cases:
        out = tmp_path / (path.stem + ".npz")
        capsys.readouterr()
        code = log_to_npz.main([str(path), "--label", "label", "--out", str(out), "--window",
                                "32", *extra])
        err = capsys.readouterr().err
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (needle, err)
        assert not out.exists() and not list(tmp_path.glob("*.tmp*"))
    out = tmp_path / "good.npz"
    assert log_to_npz.main([str(tmp_path / "ok.csv"), "--label", "label", "--out", str(out),
                            "--window", "32", "--names", "still", "moving"]) == 0
    assert load_task("npz", {"path": str(out)}, None, 0).class_names == ["still", "moving"]
    assert not list(tmp_path.glob("*.tmp*"))


# -- next to them: the sweep --------------------------------------------------------------------
def write_sweep(tmp_path, task: str) -> Path:
    base = tmp_path / "base.toml"
    base.write_text(f"[task]\n{task}\n[model]" + TINY_DIGITS.split("[model]", 1)[1])
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base = "{base}"\nseeds = [0, 1]\n[grid]\nd_model = [4, 8]\n'
                     f'[convert]\nenabled = false\n')
    return sweep


def test_sweep_checks_its_data_once_before_any_run(tmp_path):
    """Bad data: one line and exit 2 before anything trains (was: every grid point trained
    into a failed run, exit 1); a test split without labels too (a sweep compares them)."""
    p = npz(tmp_path / "ch.npz", x_train=X3, y_train=Y, x_test=X3[:4, :, :2], y_test=Y[:4])
    res = run(["-m", "mgrade_edge.training.sweep", write_sweep(tmp_path, f'name = "npz"\npath = '
                                                             f'"{p["path"]}"'),
               "--out", tmp_path / "out"], timeout=300)
    one_error_line(res, 2, "ch.npz", "test split has 2 channels")
    assert not (tmp_path / "out").exists()
    ys = rng.integers(0, 2, (20, 10))
    p = npz(tmp_path / "u.npz", x_train=X3, y_train=ys, x_test=X3[:3],
            y_test=np.full((3, 10), -100))
    res = run(["-m", "mgrade_edge.training.sweep", write_sweep(tmp_path, f'name = "npz"\npath = '
                                                             f'"{p["path"]}"'),
               "--out", tmp_path / "out"], timeout=300)
    one_error_line(res, 2, "the test split has no labelled step")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_in_sweep_start_up_exits_130(tmp_path):
    sweep = write_sweep(tmp_path, 'name = "digits"')
    code, _, err = interrupt(["-m", "mgrade_edge.training.sweep", sweep, "--out", tmp_path / "out"],
                             loading("libtorch_cpu"))
    clean_interrupt(code, err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cli", ["mgrade_edge.training.memory", "mgrade_edge.training.part_eval"])
def test_ctrl_c_in_the_read_only_clis_exits_130(tmp_path, cli):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY_DIGITS)
    code, _, err = interrupt(["-m", cli, cfg], loading("libtorch_cpu"))
    clean_interrupt(code, err)
