"""Nothing silently wrong, nothing lost (issue 12, items 3-8; issue 15, checkpoint durability).

Each test reproduces the situation with real processes, real kills and real files: diverging
runs, a convert into a folder holding other files, two writers on one run folder, a killed
sweep, a resume with another config, a kill after the last checkpoint, hostile inputs, and a
SIGKILL in the middle of a checkpoint write.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT
from tests.test_train import run_train, write_cfg
from tests.tiny_runs import tiny_digits_run
from mgrade_edge.training.checkpoint import load_model, load_raw

STALL_ENV = "MGRADE_TEST_STALL_CKPT_WRITE"   # training.checkpoint's test hook (see there)


def non_finite(state: dict) -> list[str]:
    """Names of the floating-point tensors (nested dicts) holding NaN or inf."""
    bad = []
    for k, v in state.items():
        if isinstance(v, dict):
            bad += [f"{k}.{n}" for n in non_finite(v)]
        elif isinstance(v, torch.Tensor) and v.is_floating_point() and \
                not bool(torch.isfinite(v).all()):
            bad.append(str(k))
    return bad


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 1-epoch tiny digits run (copy it before changing it), trained once per test
    run for this module, test_qat and test_train (tests/tiny_runs.py)."""
    return tiny_digits_run(tmp_path_factory)


def copy_run(tiny_run, tmp_path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run, tiny_run.parent / "tiny.toml"


def children(pid: int) -> list[int]:
    """pids whose parent is pid (from /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    """pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_for(cond, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def clear_error(res, *needles):
    """exit 2, one 'error:' line naming each needle, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout[-1500:], res.stderr[-1500:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    for n in needles:
        assert n in res.stderr, (n, res.stderr[-1500:])


# -- item 3: non-finite weights never reach a checkpoint; divergence is reported ---------------

POISON = "weight_decay = 1e10\n"      # with lr 1e30: AdamW's decay p *= 1 - lr * wd -> inf


@pytest.mark.slow
def test_step_that_makes_weights_inf_is_never_checkpointed(tmp_path):
    """The first step makes the weights inf while its loss was finite; with --ckpt-every 0
    the old code saved them right after (the loss check fired only at the next step)."""
    cfg = write_cfg(tmp_path, lr=1e30, clip=0.0, warmup=0.0, epochs=1, extra=POISON)
    res = run_train(cfg, "--out", tmp_path / "run", "--ckpt-every", "0")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    if ckpt.exists():
        raw = load_raw(ckpt)
        assert non_finite({"model": raw["model"], "optimizer": raw["optimizer"]}) == []
    assert res.returncode == 3, res.stderr[-2000:]
    assert "diverged" in res.stderr and "no checkpoint was written" in res.stderr
    assert "Traceback" not in res.stderr
    # lr so large that the update itself overflows float32: the same stop, not a traceback
    huge = write_cfg(tmp_path, name="huge.toml", lr=1e38, clip=0.0, warmup=0.0, epochs=1)
    res = run_train(huge, "--out", tmp_path / "run2")
    assert res.returncode == 3 and "overflowed" in res.stderr, res.stderr[-2000:]


@pytest.mark.slow
def test_divergence_on_resume_keeps_and_names_the_last_good_checkpoint(tiny_run, tmp_path):
    run, _ = copy_run(tiny_run, tmp_path)
    good = (run / "checkpoint.pt").read_bytes()
    cfg = write_cfg(tmp_path, lr=1e30, clip=0.0, warmup=0.0, epochs=1, extra=POISON)
    res = run_train(cfg, "--out", run, "--resume", "--epochs", "2", "--ckpt-every", "0",
                    *[a for k in ("lr", "grad_clip", "warmup_frac", "weight_decay")
                      for a in ("--allow-change", f"train.{k}")])
    assert res.returncode == 3, res.stderr[-2000:]
    assert "diverged" in res.stderr and "checkpoint.pt (epoch 1)" in res.stderr
    assert (run / "checkpoint.pt").read_bytes() == good
    load_model(run)                                        # still loads


@pytest.mark.slow
def test_lr_10_run_warns_that_it_did_not_learn(tmp_path):
    """lr 10 keeps every weight finite but the net sits at chance: say so."""
    cfg = write_cfg(tmp_path, lr=10.0, epochs=3)
    res = run_train(cfg, "--out", tmp_path / "run")
    assert res.returncode == 0, res.stderr[-2000:]
    hist = load_raw(tmp_path / "run")["history"]
    assert hist[-1]["val_acc"] <= 0.12                     # the situation: chance level
    assert "chance level" in res.stderr and "lower train.lr" in res.stderr


def poisoned(tiny_run, tmp_path, all_nan: bool) -> Path:
    raw = load_raw(tiny_run)
    for k, v in raw["model"].items():
        if v.is_floating_point():
            if all_nan:
                v.fill_(float("nan"))
            else:
                v.view(-1)[0] = float("nan")
                break
    path = tmp_path / ("all_nan.pt" if all_nan else "one_nan.pt")
    torch.save(raw, path)                                  # bypasses the trainer's check
    return path


@pytest.mark.slow          # tiny_run: a 1-epoch training run
@pytest.mark.parametrize("all_nan", [False, True])
def test_convert_refuses_non_finite_weights(tiny_run, tmp_path, all_nan):
    ckpt = poisoned(tiny_run, tmp_path, all_nan)
    res = subprocess.run([sys.executable, "-m", "mgrade_edge.convert", str(ckpt), "--out",
                          str(tmp_path / "int8"), "--calib", "4", "--n-test", "10"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    clear_error(res, "NaN or inf", "diverged")
    assert not (tmp_path / "int8").exists()


# -- item 4: convert never deletes what it did not write ------------------------------------------

@pytest.mark.slow          # tiny_run: a 1-epoch training run
def test_convert_out_at_the_run_folder_is_refused_and_nothing_deleted(tiny_run, tmp_path):
    run, _ = copy_run(tiny_run, tmp_path)
    (run / "my_notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    res = subprocess.run([sys.executable, "-m", "mgrade_edge.convert", str(run), "--out", str(run),
                          "--calib", "4", "--n-test", "10"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    clear_error(res, "non-empty folder that convert did not write", str(run / "int8"))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_convert_replaces_only_its_own_files_and_uses_normal_modes(tiny_run, tmp_path, capsys):
    from mgrade_edge.convert.__main__ import main as convert_main
    out = tmp_path / "int8"
    # --state-bits 8: the folder handling is the same for every form, and the auto form
    # choice (two forms built, evaluated and measured under QEMU) is test_ladder's subject
    args = [str(tiny_run), "--out", str(out), "--calib", "4", "--n-test", "10",
            "--state-bits", "8"]
    # the first conversion through main() in this process, the second through the command
    assert in_process(convert_main, args, capsys)[0] == 0
    cmd = [sys.executable, "-m", "mgrade_edge.convert", *args]
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask          # not mkdtemp's 0700
    (out / "notes.txt").write_text("mine")
    (out / "c").mkdir()
    (out / "c" / "mg_model.c").write_text("/* codegen output */")
    (out / "report.json").write_text(json.dumps({**json.loads((out / "report.json")
                                                              .read_text()), "stale": 1}))
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "c" / "mg_model.c").read_text() == "/* codegen output */"
    assert "stale" not in json.loads((out / "report.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["c", "notes.txt", "model.tflite", "report.json", "test_data.npz", "convert.log"])


# -- item 5: one writer per run folder; the sweep's children die with it ----------------------

def start_trainer(cfg, out, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "mgrade_edge.training.train", str(cfg), "--out", str(out),
                             *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)


def lock_pid(folder: Path):
    try:
        text = (folder / "train.lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def in_process(main, argv, capsys):
    """main(argv) of a command in this process: (exit code, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_second_trainer_on_a_busy_folder_exits_2_and_a_dead_holder_is_stale(tmp_path, capsys):
    from mgrade_edge.training.train import main
    cfg = write_cfg(tmp_path, epochs=300)
    run = tmp_path / "run"
    first = start_trainer(cfg, run, "--ckpt-every", "0.2")
    try:
        wait_for((run / "checkpoint.pt").exists, what="the first trainer's checkpoint")
        code, err = in_process(main, [cfg, "--out", run, "--resume", "--epochs", "2"], capsys)
        assert code == 2 and "in use by another training" in err and f"pid {first.pid}" in err
        assert lock_pid(run) == first.pid
        from mgrade_edge.training.runlock import holder
        assert holder(run) == first.pid
        time.sleep(0.5)
        assert first.poll() is None                        # the first one goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock_pid(run) == first.pid and holder(run) is None    # left behind: stale
    # (taking over a stale lock: see the --resume at the end of the mid-write kill test)


SWEEP_BASE = """
[task]
name = "digits"
seed = 0
[model]
d_model = 4
n_layers = 1
kernel_span = 8
n_taps = 2
[train]
epochs = 300
batch_size = 64
threads = 1
"""


def write_sweep(tmp_path) -> Path:
    (tmp_path / "base.toml").write_text(SWEEP_BASE)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base = "{tmp_path / "base.toml"}"\nseeds = [0]\n[grid]\nd_model = [4]\n')
    return sweep


@pytest.mark.slow
def test_killed_sweep_takes_its_trainer_with_it(tmp_path):
    sweep, out = write_sweep(tmp_path), tmp_path / "sw"
    run = out / "runs" / "mgrade-H4-L1-K8-N2-s0"
    proc = subprocess.Popen([sys.executable, "-m", "mgrade_edge.training.sweep", str(sweep), "--out",
                             str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    child = None
    try:
        wait_for(lambda: children(proc.pid) and (run / "checkpoint.pt").exists(),
                 what="the sweep's trainer and its first checkpoint")
        [child] = children(proc.pid)
        assert alive(child)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "the training child outlived the killed sweep"
    finally:
        if proc.poll() is None:
            proc.kill()
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
    assert (run / "checkpoint.pt").exists()                # it saved on its way out
    load_raw(run / "checkpoint.pt", resume=True)


@pytest.mark.slow
def test_rerun_sweep_does_not_start_a_second_trainer_in_a_locked_folder(tmp_path):
    import tomllib
    from mgrade_edge.training.sweep import expand, toml_text
    sweep, out = write_sweep(tmp_path), tmp_path / "sw"
    [(_, name, config)] = expand(tomllib.loads(sweep.read_text()))
    run = out / "runs" / name
    cfg = tmp_path / "same_as_the_sweep.toml"          # so a second trainer would really run
    cfg.write_text(toml_text(config))
    holder = start_trainer(cfg, run)
    try:
        wait_for(lambda: (run / "checkpoint.pt").exists(), what="the first trainer's checkpoint")
        res = subprocess.run([sys.executable, "-m", "mgrade_edge.training.sweep", str(sweep), "--out",
                              str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and f"another trainer (pid {holder.pid})" in res.stderr
        assert "Traceback" not in res.stderr
        assert holder.poll() is None and lock_pid(run) == holder.pid
        assert not (run / "config.toml").exists()          # the sweep did not touch the run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# -- item 6: --resume with another config -------------------------------------------------------

@pytest.mark.slow
def test_resume_with_changed_training_or_task_settings_is_refused(tiny_run, tmp_path, capsys):
    from mgrade_edge.training.train import main
    run, cfg = copy_run(tiny_run, tmp_path)
    stored = load_raw(run)["config"]
    text = cfg.read_text()
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace("batch_size = 32", "batch_size = 64")
                       .replace("lr = 0.004", "lr = 0.01"))
    code, err = in_process(main, [changed, "--out", run, "--resume", "--epochs", "2"], capsys)
    assert code == 2
    for part in ("train.batch_size 32 -> 64", "train.lr 0.004 -> 0.01", "--allow-change train.lr"):
        assert part in err, err
    other_split = tmp_path / "split.toml"
    other_split.write_text(text.replace("seed = 0", "seed = 1", 1))
    code, err = in_process(main, [other_split, "--out", run, "--resume", "--epochs", "2",
                                  "--allow-change", "train.seed"], capsys)
    assert code == 2 and "task.seed 0 -> 1" in err, err
    assert load_raw(run)["config"] == stored               # never overwritten by a refusal
    lr_only = tmp_path / "lr.toml"
    lr_only.write_text(text.replace("lr = 0.004", "lr = 0.01"))
    res = run_train(lr_only, "--out", run, "--resume", "--epochs", "2",
                    "--allow-change", "train.lr")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "train.lr changed from 0.004 to 0.01" in res.stdout
    after = load_raw(run)
    assert after["epoch"] == 2 and after["config"]["train"]["lr"] == 0.01


# -- item 7: finishing is idempotent --------------------------------------------------------------

@pytest.mark.slow
def test_resume_of_a_finished_run_rewrites_missing_curves_and_stale_metrics(tiny_run, tmp_path):
    """The state a kill right after the final checkpoint leaves: no curves, stale metrics."""
    run, cfg = copy_run(tiny_run, tmp_path)
    (run / "curves.png").unlink()
    (run / "metrics.jsonl").write_text("")
    res = run_train(cfg, "--out", run, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (run / "curves.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == load_raw(run)["history"] and len(rows) == 1


# -- item 8: a clear one-line message (exit 2) instead of a traceback -------------------------

@pytest.mark.slow
def test_broken_checkpoints_are_clear_errors(tiny_run, tmp_path, capsys):
    from mgrade_edge.convert.__main__ import main as convert_main
    from mgrade_edge.training.train import main as train_main
    empty = tmp_path / "empty" / "checkpoint.pt"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    raw = load_raw(tiny_run)
    no_config = tmp_path / "no_config.pt"
    torch.save({k: v for k, v in raw.items() if k != "config"}, no_config)
    res = subprocess.run([sys.executable, "-m", "mgrade_edge.convert", str(empty), "--out",
                          str(tmp_path / "int8")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    clear_error(res, "empty (0 bytes)")
    code, err = in_process(convert_main, [no_config, "--out", tmp_path / "int8"], capsys)
    assert code == 2 and "has no config" in err, err
    run, cfg = copy_run(tiny_run, tmp_path)
    torch.save({k: v for k, v in raw.items() if k != "optimizer"}, run / "checkpoint.pt")
    clear_error(run_train(cfg, "--out", run, "--resume"), "has no optimizer")
    shutil.copy(empty, run / "checkpoint.pt")
    code, err = in_process(train_main, [cfg, "--out", run, "--resume"], capsys)
    assert code == 2 and "empty (0 bytes)" in err, err


def codegen(model: Path, out: Path, *extra):
    return subprocess.run([sys.executable, "-m", "mgrade_edge.convert.codegen", str(model), "--out",
                           str(out), *extra], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_codegen_bad_tflite_is_a_clear_error(tiny_int8, tmp_path):
    model = (tiny_int8 / "model.tflite").read_bytes()
    (tmp_path / "trunc.tflite").write_bytes(model[:len(model) // 3])
    (tmp_path / "random.tflite").write_bytes(os.urandom(4096))
    for name in ("trunc.tflite", "random.tflite"):
        res = codegen(tmp_path / name, tmp_path / "c")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert "not a .tflite" in res.stderr


def test_codegen_error_from_the_mgrade_generator_is_caught_under_dash_m(tiny_int8, tmp_path):
    """The mGRADE generator raises convert.tflm_params.CodegenError; under `python -m
    mgrade_edge.convert.codegen` an old main caught __main__.CodegenError, another class."""
    from mgrade_edge.convert.metadata import NAME as METADATA_NAME
    from mgrade_edge.convert.quantize import load_flatbuffer, pack_flatbuffer
    import numpy as np

    model = load_flatbuffer((tiny_int8 / "model.tflite").read_bytes())
    entry = next(m for m in model.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode()))
    meta = json.loads(bytes(model.buffers[entry.buffer].data).decode())
    meta["inputs"] = meta["inputs"][:-1]                  # metadata no longer fits the graph
    model.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    (tmp_path / "bad_meta.tflite").write_bytes(pack_flatbuffer(model))
    res = codegen(tmp_path / "bad_meta.tflite", tmp_path / "c")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert "mgrade metadata lists inputs" in res.stderr
    res = codegen(tiny_int8 / "model.tflite", tmp_path / "c2", "--prefix", "1bad")
    assert res.returncode == 2 and "not a C identifier" in res.stderr
    assert not (tmp_path / "c2").exists()


def _with_metadata(model_path: Path, out: Path, edit) -> Path:
    """A copy of the .tflite whose mgrade metadata dict went through edit(meta)."""
    from mgrade_edge.convert.metadata import NAME as METADATA_NAME
    from mgrade_edge.convert.quantize import load_flatbuffer, pack_flatbuffer
    import numpy as np

    model = load_flatbuffer(model_path.read_bytes())
    entry = next(m for m in model.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode()))
    meta = json.loads(bytes(model.buffers[entry.buffer].data).decode())
    edit(meta)
    model.buffers[entry.buffer].data = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    out.write_bytes(pack_flatbuffer(model))
    return out


@pytest.mark.parametrize("key", ["channels", "n_in", "layers"])
def test_metadata_missing_a_key_is_one_line_in_both_generators(tiny_int8, tmp_path, key):
    """StepMetadata.of reads the metadata once for every writer: a missing key is one line
    naming it (exit 2) from the C and the MicroPython generators, never a KeyError
    traceback."""
    bad = _with_metadata(tiny_int8 / "model.tflite", tmp_path / "bad.tflite",
                         lambda meta: meta.pop(key))
    for module, extra in (("mgrade_edge.convert.codegen", ["--no-resources"]),
                          ("mgrade_edge.convert.codegen_micropython", [])):
        res = subprocess.run([sys.executable, "-m", module, str(bad), "--out",
                              str(tmp_path / module), *extra],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        assert "mgrade metadata" in res.stderr and (key in res.stderr or
                                                    "layers/channels" in res.stderr), res.stderr


def test_step_metadata_of_reads_what_to_dict_wrote(tiny_int8):
    """The typed view round-trips the stored dict, and its properties hold the values."""
    from mgrade_edge.convert.metadata import StepMetadata, read

    meta = read((tiny_int8 / "model.tflite").read_bytes())
    m = StepMetadata.of(meta)
    assert json.loads(m.to_json()) == meta and StepMetadata.of(m) is m
    assert m.channels == meta["channels"] and m.kernel_span == meta["kernel_span"]
    assert m.state_outputs == meta["outputs"][1:] and m.task == "tiny"
    for lm, raw in zip(m.layers, meta["layers"]):
        assert lm.delay_array is None or lm.delay_array.tolist() == raw["delays"]


BAD_CONFIGS = [
    # (replace this, with that, message part)
    ("d_model = 8", "d_model = 100000", "model.d_model = 100000 is larger"),
    ("kernel_span = 8", "kernel_span = 100000000", "model.kernel_span = 100000000"),
    ("n_layers = 1", "n_layers = 100000", "model.n_layers"),
    ("n_taps = 2", "n_taps = 2\nconv = \"dilated\"\ndilation = 100000", "model.dilation"),
    ("lr = 0.004", "lr = nan", "'train.lr' must be a finite number"),
    ("lr = 0.004", "lr = inf", "'train.lr' must be a finite number"),
    ("lr = 0.004", "lr = 0.004\nweight_decay = nan", "'train.weight_decay' must be a finite"),
    ("lr = 0.004", "lr = 0.004\npos_lr_mult = inf", "'train.pos_lr_mult' must be a finite"),
    ("n_taps = 2", "n_taps = 2\nsigma_end = nan", "'model.sigma_end' must be a finite"),
    ("threads = 1", "threads = 100000", "train.threads must be in 0..1024"),
]


def test_bad_config_values_are_clear_errors(tmp_path):
    from mgrade_edge.training.config import ConfigError, load_config
    from mgrade_edge.training.train import main
    base = write_cfg(tmp_path).read_text()
    for i, (old, new, msg) in enumerate(BAD_CONFIGS):
        assert old in base
        path = tmp_path / f"bad{i}.toml"
        path.write_text(base.replace(old, new))
        with pytest.raises(ConfigError, match=re.escape(msg)):
            load_config(path)
    seq = tmp_path / "seq.toml"
    seq.write_text('[task]\nname = "flipflop"\nseq_len = 10000000\n')
    with pytest.raises(ConfigError, match="task.seq_len = 10000000 is larger"):
        load_config(seq)
    # the whole command: exit 2, one line, no traceback, nothing created
    for name in ("bad0.toml", "bad4.toml", "bad9.toml", "seq.toml"):
        assert main([str(tmp_path / name), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    res = run_train(tmp_path / "bad1.toml", "--out", tmp_path / "x")
    clear_error(res, "kernel_span = 100000000")


def test_binary_toml_is_a_clear_error(tmp_path, capsys):
    from mgrade_edge.training.sweep import main as sweep_main
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)) * 4)
    clear_error(run_train(binary, "--out", tmp_path / "x"), "not a text file")
    code, err = in_process(sweep_main, [binary, "--out", tmp_path / "sw", "--dry-run"], capsys)
    assert code == 2 and "not a text file" in err, err


def test_corrupt_gz_idx_files_are_a_clear_error(tmp_path):
    import gzip
    from mgrade_edge.training.tasks.mnist import FILES
    data = tmp_path / "mnist"
    data.mkdir()
    for key, name in FILES.items():
        n = 12
        if key.endswith("images"):
            raw = bytes([0, 0, 8, 3]) + b"".join(v.to_bytes(4, "big") for v in (n, 28, 28))
            raw += bytes(n * 784)
        else:
            raw = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + bytes(n)
        gz = gzip.compress(raw)
        (data / f"{name}.gz").write_bytes(gz[:len(gz) // 2] if key == "train_images" else gz)
    cfg = tmp_path / "smnist.toml"
    cfg.write_text(f'[task]\nname = "smnist"\ndata_dir = "{data}"\nn_val = 2\n'
                   '[model]\nd_model = 4\nn_layers = 1\n[train]\nepochs = 1\nthreads = 1\n')
    clear_error(run_train(cfg, "--out", tmp_path / "run"), "corrupt gzip file",
                "train-images-idx3-ubyte.gz")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this process cannot write into (chattr +i as root, chmod 0555 otherwise)."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or \
                subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i: no way to make a read-only folder")
        yield d
        subprocess.run(["chattr", "-i", str(d)], check=True)
    else:
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


@pytest.mark.slow          # tiny_run: a 1-epoch training run
def test_read_only_out_is_refused_before_any_work(tiny_run, tmp_path, read_only_dir, capsys):
    from mgrade_edge.convert.__main__ import main as convert_main
    cfg = write_cfg(tmp_path, epochs=1)
    start = time.monotonic()
    res = run_train(cfg, "--out", read_only_dir, "--ckpt-every", "100000")
    clear_error(res, "cannot write to --out")
    assert "epoch" not in res.stdout                      # no training before the error
    capsys.readouterr()
    assert convert_main([str(tiny_run), "--out", str(read_only_dir / "int8")]) == 2
    cap = capsys.readouterr()
    assert "cannot write to --out" in cap.err and "converting" not in cap.out
    assert time.monotonic() - start < 120


# -- issue 15: a SIGKILL in the middle of a checkpoint write ------------------------------------

@pytest.mark.slow
def test_kill_mid_checkpoint_write_keeps_the_previous_checkpoint(tiny_run, tmp_path):
    """The trainer is stopped for good half way through writing its next checkpoint (test
    hook STALL_ENV: after N bytes it flushes, fsyncs, marks and sleeps), then SIGKILLed. The
    previous checkpoint must be byte-identical and loadable, and --resume must go on."""
    run, cfg = copy_run(tiny_run, tmp_path)
    previous = (run / "checkpoint.pt").read_bytes()
    marker = tmp_path / "stalled"
    half = len(previous) // 2
    env = dict(os.environ, **{STALL_ENV: f"{half}:{marker}"})
    proc = start_trainer(cfg, run, "--resume", "--epochs", "2", "--ckpt-every", "0", env=env)
    try:
        wait_for(marker.exists, what="the checkpoint write to stall")
        assert proc.poll() is None
        assert int(marker.read_text()) >= half                 # really in the middle
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (run / "checkpoint.pt").read_bytes() == previous
    assert lock_pid(run) == proc.pid                          # stale lock left by the kill
    ckpt = load_raw(run, resume=True)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 0)
    load_model(run)
    res = run_train(cfg, "--out", run, "--resume", "--epochs", "2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert load_raw(run)["epoch"] == 2
