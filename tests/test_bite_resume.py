"""Resume after a SIGKILL in the middle of an epoch reproduces the uninterrupted run exactly:
final weights and every metrics row (the interrupted epoch's training loss and accuracy
included). Dropout is on, so the global torch RNG state matters as much as the shuffle order;
a checkpoint is written after every batch (--ckpt-every 0) and the kill comes once a
checkpoint from inside the second (last) epoch exists.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgrade_edge.training.checkpoint import CheckpointError, load_raw

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """
[task]
name = "digits"
seed = 0

[model]
d_model = 8
n_layers = 1
kernel_span = 8
n_taps = 2
norm = "batch"
dropout = 0.2

[train]
epochs = 2
batch_size = 32
lr = 0.004
grad_clip = 1.0
warmup_frac = 0.1
threads = 1
"""

METRIC_KEYS = ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc", "test_acc",
               "sigma", "lr")


def run_train(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "mgrade_edge.training.train", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _rows(run):
    return [{k: json.loads(r)[k] for k in METRIC_KEYS}
            for r in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resume_mid_epoch_reproduces_weights_and_metrics(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG)
    ref = run_train(cfg, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mgrade_edge.training.train", str(cfg), "--out", str(run),
                             "--ckpt-every", "0"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ck = load_raw(run / "checkpoint.pt")
                if ck["epoch"] == 1 and ck["batch"] >= 2:
                    at = (ck["epoch"], ck["batch"])
                    break
            except CheckpointError:
                pass
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert at is not None, "no mid-epoch checkpoint appeared before the run ended"
    killed = load_raw(run / "checkpoint.pt")
    assert killed["epoch"] == 1 and 0 < killed["batch"], (killed["epoch"], killed["batch"])

    res = run_train(cfg, "--out", run, "--resume")
    assert res.returncode == 0, res.stderr
    a, b = load_raw(tmp_path / "ref")["model"], load_raw(run)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _rows(run) == _rows(tmp_path / "ref")


def test_checkpoint_with_other_shapes_is_a_clear_error(tmp_path):
    """Same parameter names, other shapes (the config says d_model 6, the weights are 8
    wide): a CheckpointError naming the architecture, and exit 2 with one line from a CLI."""
    from mgrade_edge.training.checkpoint import FORMAT, build_model, load_model, save_atomic
    from mgrade_edge.training.config import load_config

    (tmp_path / "tiny.toml").write_text(CONFIG)
    cfg = load_config(tmp_path / "tiny.toml")
    info = {"n_in": 1, "n_classes": 10, "readout": "mean"}
    net = build_model(cfg, info)
    conf = cfg.to_dict()
    conf["model"]["d_model"] = 6
    save_atomic({"format": FORMAT, "config": conf, "task_info": info,
                 "model": net.state_dict()}, tmp_path / "checkpoint.pt")
    try:
        load_model(tmp_path / "checkpoint.pt")
    except CheckpointError as e:
        assert "architecture" in str(e) and "shape mismatch" in str(e), str(e)
    else:
        raise AssertionError("a checkpoint of other shapes loaded")
    res = subprocess.run([sys.executable, "-m", "mgrade_edge.training.memory", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-500:]
    assert len(res.stderr.strip().splitlines()) == 1
