"""What a user sees with the output redirected to files (as in CI or `cmd > log 2>&1`): train,
convert and compare write no carriage-return progress frames and no TensorFlow / absl /
oneDNN lines (convert keeps those in DIR/convert.log), and `--quiet` prints only the final
summary."""
import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from mgrade_edge.training.console import native_stderr_to, progress, set_quiet

ROOT = Path(__file__).resolve().parents[1]
NOISE = re.compile(r"oneDNN|absl|cpu_feature_guard|^[IWE]\d{4} |tensorflow|UserWarning|"
                   r"warnings\.warn|Estimated count of arithmetic ops|fully_quantize", re.M)
CONFIG = """
[task]
name = "digits"
seed = 0
n_val = 40
n_test = 40
max_train = 320

[model]
d_model = 8
n_layers = 1
kernel_span = 8
n_taps = 2

[train]
epochs = 3
batch_size = 32
lr = 0.02
threads = 1
"""


def run(args, out_dir: Path, name: str, timeout=600):
    """Run `python ARGS` with stdout and stderr redirected to files; (rc, stdout, stderr)."""
    out, err = out_dir / f"{name}.out", out_dir / f"{name}.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        rc = subprocess.call([sys.executable, *map(str, args)], cwd=ROOT, stdout=fo, stderr=fe,
                             timeout=timeout)
    return rc, out.read_text(), err.read_text()


def clean(text: str, what: str):
    assert "\r" not in text, f"{what}: carriage returns (a progress bar) in\n{text[-1500:]}"
    noise = NOISE.search(text)
    assert noise is None, f"{what}: log noise {noise.group(0)!r} in\n{text[-1500:]}"


def test_progress_only_on_a_terminal(tmp_path):
    """A bar is drawn on a terminal (a pty) and not at all into a file or under --quiet; fd 2
    sent to a log keeps the process's C-level and Python writes, the user's stderr stays
    reachable."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))   # 80 columns
    with open(slave, "w", closefd=True) as tty, open(tmp_path / "bar.txt", "w") as f:
        for stream in (tty, f):
            for _ in progress(range(50), file=stream, desc="bar", mininterval=0):
                pass
        set_quiet(True)
        try:
            for _ in progress(range(50), file=tty, desc="quiet", mininterval=0):
                pass
        finally:
            set_quiet(False)
    drawn = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            drawn += os.read(master, 65536)
        except OSError:
            break
    os.close(master)
    assert b"bar" in drawn and b"\r" in drawn and b"quiet" not in drawn
    assert (tmp_path / "bar.txt").read_text() == ""
    code = ("import os, sys\nfrom mgrade_edge.training.console import native_stderr_to, terminal\n"
            "with native_stderr_to(sys.argv[1]):\n"
            "    os.write(2, b'native noise\\n'); print('py warning', file=sys.stderr)\n"
            "    print('to the user', file=terminal())\n"
            "print('after', file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.log")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "to the user\nafter\n"
    assert (tmp_path / "x.log").read_text() == "native noise\npy warning\n"
    assert native_stderr_to       # imported here: the module loads without torch


@pytest.mark.slow
def test_train_convert_compare_redirected_and_quiet(tmp_path):
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed (make toolchain)")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(CONFIG)
    logs = tmp_path / "logs"
    logs.mkdir()
    run_dir = tmp_path / "run"

    rc, out, err = run(["-m", "mgrade_edge.training.train", cfg, "--out", run_dir], logs, "train")
    assert rc == 0, out + err
    clean(out + err, "train")
    assert "train sequences of 64 steps" in out
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 3
    rc, qout, _ = run(["-m", "mgrade_edge.training.train", cfg, "--out", tmp_path / "run_q", "--quiet"],
                      logs, "train_q")
    assert rc == 0 and qout.splitlines() and len(qout.splitlines()) == 1, qout
    assert qout.startswith("done: final test acc")

    int8 = run_dir / "int8"
    conv = ["-m", "mgrade_edge.convert", run_dir, "--out", int8, "--state-bits", "8", "--calib", "8",
            "--n-test", "10"]
    rc, out, err = run(conv, logs, "convert")
    assert rc == 0, out + err
    clean(out + err, "convert")
    log = (int8 / "convert.log").read_text()
    assert NOISE.search(log), "convert.log should hold TensorFlow's lines: nothing is lost"
    assert re.search(r"^LiteRT vs TFLite-Micro, one step on identical inputs: .*; within the "
                     r"expected 16 LSB", out, re.M), out
    summary = out[out.index("model id "):]
    rc, qout, qerr = run([*conv, "--quiet"], logs, "convert_q")
    assert rc == 0 and qerr == "", qout + qerr
    strip = lambda s: re.sub(r"model id \w+|\d+(\.\d+)?", "#", s)   # noqa: E731
    assert strip(qout) == strip(summary), (qout, summary)

    from mgrade_edge.convert.codegen import generate
    generate((int8 / "model.tflite").read_bytes(), tmp_path / "pkg")
    res = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "firmware", "BOARD=qemu-cm4",
                          f"MODEL_SRC={tmp_path / 'pkg'}", f"BUILD_DIR={tmp_path / 'fw'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    compare = ["host_tools/emulated_eval.py", tmp_path / "fw" / "firmware.elf", "--model", int8,
               "--n", "5"]
    rc, out, err = run(compare, logs, "compare")
    assert rc == 0, out + err
    clean(out + err, "compare")
    assert out.startswith("emulator: socket://") and "max |diff| : 0 int8 logits" in out
    rc, qout, qerr = run([*compare, "--quiet"], logs, "compare_q")
    assert rc == 0 and qerr == "", qout + qerr
    assert qout.startswith("device     : ")
    assert strip(qout) == strip(out[out.index("device "):]), (qout, out)


def test_training_reports_the_length_range():
    """Variable-length data: 'N train sequences of 40-120 steps', not the padded length."""
    import torch

    from mgrade_edge.training.train import step_range

    assert step_range(torch.tensor([57, 40, 120, 88]), 120) == "40-120"
    assert step_range(torch.tensor([64, 64]), 64) == "64"
    assert step_range(None, 784) == "784"
