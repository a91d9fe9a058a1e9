"""The train command: outputs, resume after a real kill, DDP, bad input, the memory report."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mgrade_edge.training.checkpoint import CheckpointError, load_model, load_raw
from mgrade_edge.training.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]

TINY = """
[task]
name = "digits"
seed = 0

[model]
d_model = 8
n_layers = 1
kernel_span = 8
n_taps = 2
norm = "{norm}"

[train]
epochs = {epochs}
batch_size = 32
lr = {lr}
grad_clip = {clip}
warmup_frac = {warmup}
threads = 1
"""


def write_cfg(tmp_path, name="tiny.toml", norm="batch", epochs=2, lr=0.004, clip=1.0,
              warmup=0.1, extra=""):
    path = tmp_path / name
    path.write_text(TINY.format(norm=norm, epochs=epochs, lr=lr, clip=clip, warmup=warmup)
                    + extra)
    return path


def run_train(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "mgrade_edge.training.train", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def final_weights(run_dir):
    return load_raw(run_dir / "checkpoint.pt")["model"]


@pytest.mark.slow
def test_train_writes_metrics_checkpoint_and_curves(tmp_path):
    cfg = write_cfg(tmp_path)
    res = run_train(cfg, "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert {"epoch", "train_loss", "val_acc", "test_acc"} <= set(r)
        assert 0 <= r["val_acc"] <= 1 and r["train_loss"] > 0
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert (tmp_path / "run/curves.png").stat().st_size > 1000
    ckpt = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)   # loads safely
    assert ckpt["epoch"] == 2 and ckpt["batch"] == 0
    net, _, _ = load_model(tmp_path / "run")
    assert net.n_params() > 0
    # a second run into the same folder without --resume is refused
    again = run_train(cfg, "--out", tmp_path / "run")
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.slow
@pytest.mark.parametrize("harden_at", [0.5, 1.0])
def test_positions_are_hardened_at_harden_at_and_training_goes_on(tmp_path, harden_at):
    cfg = write_cfg(tmp_path, epochs=2)
    cfg.write_text(cfg.read_text().replace('norm = "batch"',
                                           f'norm = "batch"\nharden_at = {harden_at}'))
    assert run_train(cfg, "--out", tmp_path / "run").returncode == 0
    net, _, ckpt = load_model(tmp_path / "run")
    pos = net.blocks[0].conv.positions
    assert net.hardened == (harden_at < 1.0)
    if harden_at < 1.0:
        assert torch.equal(pos, pos.round())
        # the weights trained on after hardening: metrics' test accuracy is the sparse model's
        from mgrade_edge.training.evaluate import evaluate
        from mgrade_edge.training.tasks import load_task
        data = load_task("digits", {}, None, 0)
        acc = evaluate(net, data.x_test, data.y_test)["acc"]
        assert acc == pytest.approx(ckpt["history"][-1]["test_acc"], abs=1e-9)
    else:
        assert not torch.equal(pos, pos.round())


@pytest.mark.slow
def test_resume_after_kill_gives_identical_weights(tmp_path):
    """SIGKILL 0.5 s after the first checkpoint (--ckpt-every 0.3 s: within the first epochs
    of 6), --resume: the same weights and metrics rows as an uninterrupted run."""
    cfg = write_cfg(tmp_path, epochs=6)
    ref = run_train(cfg, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "mgrade_edge.training.train", str(cfg), "--out", str(run),
                             "--ckpt-every", "0.3"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_raw(run / "checkpoint.pt")
    assert (killed_at["epoch"], killed_at["batch"]) < (6, 0), "run finished before the kill"

    res = run_train(cfg, "--out", run, "--resume")
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout
    a, b = final_weights(tmp_path / "ref"), final_weights(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, 7))


@pytest.mark.slow
def test_sigint_saves_and_resumes(tmp_path):
    cfg = write_cfg(tmp_path, epochs=3)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "mgrade_edge.training.train", str(cfg), "--out", str(run)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail("run finished before the interrupt reached it")
    assert proc.returncode == 130 and "--resume" in err
    assert run_train(cfg, "--out", run, "--resume").returncode == 0
    assert load_raw(run)["epoch"] == 3


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    cfg = write_cfg(tmp_path, norm="none", epochs=1)
    single = run_train(cfg, "--out", tmp_path / "single")
    assert single.returncode == 0, single.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "--master_port=29531", "-m", "mgrade_edge.training.train", str(cfg), "--out",
                          str(tmp_path / "ddp")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=env)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "2 process(es)" in ddp.stdout
    a, b = final_weights(tmp_path / "single"), final_weights(tmp_path / "ddp")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-4), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = write_cfg(tmp_path, lr=1e30, clip=0.0, warmup=0.0, epochs=3)
    res = run_train(cfg, "--out", tmp_path / "run")
    assert res.returncode == 3
    assert "diverged" in res.stderr and "Traceback" not in res.stderr


def test_unknown_key_and_wrong_type_are_clear(tmp_path):
    bad = write_cfg(tmp_path, extra="")
    bad.write_text(bad.read_text().replace("n_taps = 2", "n_tapz = 2"))
    with pytest.raises(ConfigError, match=r"unknown key 'model.n_tapz'.*n_taps"):
        load_config(bad)
    res = run_train(bad, "--out", tmp_path / "x")
    assert res.returncode == 2 and "n_tapz" in res.stderr and "Traceback" not in res.stderr
    wrong = write_cfg(tmp_path, name="w.toml")
    wrong.write_text(wrong.read_text().replace("d_model = 8", 'd_model = "eight"'))
    with pytest.raises(ConfigError, match=r"'model.d_model' must be int, got str"):
        load_config(wrong)
    unknown_task = write_cfg(tmp_path, name="t.toml")
    unknown_task.write_text(unknown_task.read_text().replace('"digits"', '"nope"'))
    with pytest.raises(ConfigError, match="digits"):
        load_config(unknown_task)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_resume_with_other_architecture_is_refused(tmp_path, tmp_path_factory):
    from tests.tiny_runs import tiny_digits_run
    shutil.copytree(tiny_digits_run(tmp_path_factory), tmp_path / "run")    # write_cfg(epochs=1)
    other = write_cfg(tmp_path, name="other.toml", epochs=2)
    other.write_text(other.read_text().replace("d_model = 8", "d_model = 12"))
    res = run_train(other, "--out", tmp_path / "run", "--resume")
    assert res.returncode == 2 and "another model" in res.stderr


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_model(tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.slow
def test_memory_report_cli(tmp_path, tmp_path_factory):
    from tests.tiny_runs import tiny_digits_run
    cfg = write_cfg(tmp_path, epochs=1)
    run = tiny_digits_run(tmp_path_factory)            # trained from the same config, read only
    out = subprocess.run([sys.executable, "-m", "mgrade_edge.training.memory", str(run),
                          "--harden", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    total = rep["total"]
    assert rep["hardened"]
    # 1 layer, H=8, K=8: plain ring 7 past frames x 8 channels; trimmed <= plain
    assert total["counts"]["ring_plain"] == 56
    assert total["counts"]["ring_trimmed"] <= 56
    assert total["trimmed"]["int8_bytes"] <= total["plain"]["int8_bytes"]
    table = subprocess.run([sys.executable, "-m", "mgrade_edge.training.memory", str(cfg)], cwd=ROOT,
                           capture_output=True, text=True)
    assert table.returncode == 0 and "footprint" in table.stdout
