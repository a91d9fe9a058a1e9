"""A light host: every CLI answers --help, and stream_eval (with its emulator launcher and the
default TFLite-Micro reference) streams a converted model, with torch, TensorFlow and LiteRT
unimportable (tests/without_heavy.py), as in a venv with only numpy, pyserial and tflite-micro.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIGHT = [sys.executable, str(ROOT / "tests" / "without_heavy.py")]

# every command-line tool of the project (python -m MODULE or a host_tools script)
CLIS = ["-m mgrade_edge.training.train", "-m mgrade_edge.training.memory", "-m mgrade_edge.training.sweep", "-m mgrade_edge.training.part_eval",
        "-m mgrade_edge.convert", "-m mgrade_edge.convert.codegen", "-m mgrade_edge.convert.codegen_micropython",
        "host_tools/stream_eval.py", "host_tools/emulated_eval.py", "host_tools/emulator.py",
        "host_tools/micropython_unix.py"]


def run_light(*args, timeout=120):
    return subprocess.run([*LIGHT, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("cli", CLIS)
def test_help_needs_neither_torch_nor_tensorflow(cli):
    res = run_light(*cli.split(), "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("usage:") and "--quiet" in res.stdout


@pytest.mark.parametrize("cli", ["-m mgrade_edge.training.train", "-m mgrade_edge.convert", "-m mgrade_edge.training.memory"])
def test_outside_the_venv_is_one_line(cli, tmp_path):
    """A Python without torch (say the system python3) running a training or convert command
    gets one line naming the venv's python, not a traceback."""
    res = run_light(*cli.split(), str(ROOT / "configs" / "digits_mgrade.toml"),
                    *(["--out", str(tmp_path / "out")] if "memory" not in cli else []))
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr
    assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cannot import torch" in res.stderr and f".venv/bin/python {cli} " in res.stderr


def test_reference_and_metadata_without_torch_or_tensorflow(tiny_int8, tmp_path):
    """The default host reference (TFLite-Micro via convert.stream) and the model metadata
    read in a host-only process equal what the full install computes."""
    from mgrade_edge.convert.metadata import read
    from mgrade_edge.convert.stream import Streamer

    script = tmp_path / "ref.py"
    script.write_text(
        "import json, sys\nfrom pathlib import Path\nimport numpy as np\n"
        "from mgrade_edge.host_tools import stream_eval\nfrom mgrade_edge.convert.metadata import read\n"
        "d = Path(sys.argv[1])\nref = stream_eval.load_reference('auto', d)\n"
        "x = np.load(d / 'test_data.npz')['x'][:2]\n"
        "np.save(sys.argv[2], np.stack([ref.run(s) for s in x]))\n"
        "print(json.dumps(read((d / 'model.tflite').read_bytes())))\n")
    out = tmp_path / "logits.npy"
    res = run_light(str(script), str(tiny_int8), str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    model = (tiny_int8 / "model.tflite").read_bytes()
    assert json.loads(res.stdout) == json.loads(json.dumps(read(model)))
    x = np.load(tiny_int8 / "test_data.npz")["x"][:2]
    want = np.stack([Streamer(model, "tflm").run(s) for s in x])
    np.testing.assert_array_equal(np.load(out), want)


def test_missing_tflite_micro_is_one_line(tiny_int8, tmp_path):
    """Without tflite-micro either, the default reference says what to install."""
    script = tmp_path / "no_tflm.py"
    script.write_text(
        "import sys, runpy\nimport tests.without_heavy as w\n"
        "w.BLOCKED = w.BLOCKED + ('tflite_micro',)\n"
        "sys.argv = ['w', 'host_tools/stream_eval.py', '--port', 'socket://127.0.0.1:9', "
        "'--model', sys.argv[1]]\nw.main()\n")
    res = subprocess.run([sys.executable, str(script), str(tiny_int8)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "pip install tflite-micro" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_stream_eval_on_the_emulated_board_without_torch_or_tensorflow(tiny_int8, tmp_path):
    """The tiny model's firmware in QEMU, streamed by emulated_eval.py -> stream_eval with the
    default reference in a host-only process: every step's logits equal, exit 0."""
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed (make toolchain)")
    from mgrade_edge.convert.codegen import generate

    generate((tiny_int8 / "model.tflite").read_bytes(), tmp_path / "pkg")
    res = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "firmware", "BOARD=qemu-cm4",
                          f"MODEL_SRC={tmp_path / 'pkg'}", f"BUILD_DIR={tmp_path / 'fw'}"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = run_light("host_tools/emulated_eval.py", str(tmp_path / "fw" / "firmware.elf"),
                    "--model", str(tiny_int8), "--json", str(tmp_path / "m.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"^max \|diff\| : 0 int8 logits \(every step\)", res.stdout, re.M)
    m = json.loads((tmp_path / "m.json").read_text())
    n = np.load(tiny_int8 / "test_data.npz")["x"].shape[0]
    assert m["n_sequences"] == n and m["max_abs_logit_diff"] == 0 and m["argmax_agreement"] == 1


@pytest.mark.slow
def test_micropython_launcher_without_torch_or_tensorflow(tiny_int8, tmp_path):
    """host_tools/micropython_unix.py --eval (the MicroPython target's compare) in a host-only
    process: the unix port runs the generated package, stream_eval compares, exit 0, and
    --quiet prints only the report."""
    from mgrade_edge.host_tools.micropython_unix import find_micropython

    if find_micropython() is None:
        pytest.skip("the MicroPython unix port is not installed (make toolchain)")
    from mgrade_edge.convert.codegen_micropython import generate

    generate(str(tiny_int8 / "model.tflite"), tmp_path / "mp", "x64")
    res = run_light("host_tools/micropython_unix.py", str(tmp_path / "mp"), "--mpy", "--eval",
                    "--model", str(tiny_int8), "--fast", "--quiet")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("device     : micropython")
    assert "max |diff| : 0 int8 logits (last step)" in res.stdout
