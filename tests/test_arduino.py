"""The model as an Arduino library (convert/arduino.py) on an 8-bit, 16-bit-int AVR core.

* the generated package + runtime + protocol app compile with avr-gcc for every tiny model
  configuration, warnings as errors, in GNU C (constants in flash: MG_ROM = __flash) and strict
  C99 (MG_ROM empty);
* the library's layout, properties and .zip;
* both examples build with arduino-builder and the Debian AVR core from a copy of the library
  outside the repository, the weights in flash (not in .data);
* the protocol sketch on the emulated Arduino Mega 2560 (qemu-system-avr) answers stream_eval
  with every step's logits equal to TFLite-Micro's (0 LSB) for the int8, int16-state and
  int16-input tiny models;
* the mg_classify example on an emulated Uno (qemu-system-avr -M uno): its stub frames,
  quantized on the AVR in float32 (mg_model_quantize_frame) and stepped, give the classes the
  host computes for the same frames with TFLite-Micro;
* simavr (cycle-counting) runs the package bit-exact and reports cycles per step.

Needs gcc-avr, avr-libc, arduino-core-avr, arduino-builder, qemu-system-misc and simavr
(`make toolchain BOARD=arduino-mega`, part of `make test`); skipped without them.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mgrade_edge.convert.arduino import EXAMPLES, library_files, write_library
from mgrade_edge.host_tools.arduino_build import build_example, have_toolchain
from tests.tiny_model import CONFIGS, TinyConfig

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "mcu" / "runtime"
APP = ROOT / "mcu" / "app"
AVR_MEGA = ["-mmcu=atmega2560", "-Os", "-Wall", "-Wextra", "-Werror"]

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
needs_avr_gcc = pytest.mark.skipif(shutil.which("avr-gcc") is None,
                                   reason="avr-gcc not installed (make toolchain)")
needs_arduino = pytest.mark.skipif(not have_toolchain(),
                                   reason="arduino-builder / arduino-core-avr not installed")

TINY_VARIANTS = {"tiny": TinyConfig(), "tiny16": TinyConfig(state_bits=16, seed=6),
                 "tiny16u": TinyConfig(state_bits=16, seed=6, input_bits=16)}


@pytest.fixture(scope="module")
def library(tiny_int8, tmp_path_factory):
    return write_library(tiny_int8, tmp_path_factory.mktemp("arduino_lib"))


@needs_avr_gcc
@pytest.mark.parametrize("std", ["gnu11", "c99"])
@pytest.mark.parametrize("cfg", CONFIGS + [TINY_VARIANTS["tiny16"], TINY_VARIANTS["tiny16u"]],
                         ids=lambda c: c.name)
def test_avr_compiles_clean(tiny_models, tmp_path, cfg, std):
    """Every source the library holds, for the 16-bit-int ATmega2560, -Wall -Wextra -Werror
    (-pedantic under c99, where MG_ROM is empty): shifts past 16 bits, overflowing literals and
    address-space mismatches between flash constants and RAM pointers are errors here."""
    from mgrade_edge.convert.codegen import generate

    pkg = tmp_path / "pkg"
    generate((tiny_models(cfg) / "model.tflite").read_bytes(), pkg)
    flags = [f"-std={std}", *AVR_MEGA] + (["-pedantic"] if std == "c99" else [])
    srcs = [p for n, p in library_files(pkg).items() if n.endswith(".c")]
    for src in srcs:
        r = subprocess.run(["avr-gcc", *flags, "-I", str(RUNTIME), "-I", str(APP), "-I",
                            str(ROOT / "mcu" / "boards"), "-I", str(pkg), "-c", str(src), "-o",
                            str(tmp_path / (src.stem + ".o"))], capture_output=True, text=True)
        assert r.returncode == 0, f"{src.name} ({std}):\n{r.stderr}"
    # the constants are declared in flash (GNU C) in the generated package
    text = (pkg / "mg_model.c").read_text() + (pkg / "mg_model_data.c").read_text()
    assert "static const MG_ROM mg_add_params_t" in text or "const MG_ROM int8_t" in text


def test_library_layout_and_zip(library, tiny_int8):
    lib = library["dir"]
    props = dict(line.split("=", 1) for line in
                 (lib / "library.properties").read_text().splitlines() if "=" in line)
    assert props["name"] == library["name"] == "mgrade_tiny"
    assert props["includes"] == "mgrade_tiny.h" and props["architectures"] == "*"
    src = {p.name for p in (lib / "src").iterdir()}
    assert {"mg_model.c", "mg_model_data.c", "mg_model_data.h", "mg_app.c", "mg_kernels.c",
            "mg_rom.h", "mg_board_arduino.cpp", "mgrade_tiny.h"} <= src
    assert not any(n.startswith("model_") or n == "board.c" for n in src)   # no test harness
    assert (lib / "src" / "mg_kernels.c").read_bytes() == (RUNTIME / "mg_kernels.c").read_bytes()
    for ex in EXAMPLES:
        ino = (lib / "examples" / ex / f"{ex}.ino").read_text()
        assert "#include <mgrade_tiny.h>" in ino
    classify = (lib / "examples" / "mg_classify" / "mg_classify.ino").read_text()
    assert "mg_model_quantize_frame" in classify and "mg_model_step" in classify
    with zipfile.ZipFile(library["zip"]) as z:
        names = set(z.namelist())
    on_disk = {p.relative_to(lib.parent).as_posix() for p in lib.rglob("*") if p.is_file()}
    assert names == on_disk
    assert "mgrade_tiny/library.properties" in names


def test_cli_one_line_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.arduino", str(tmp_path / "nothing"),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "model.tflite" in r.stderr


def test_cli_model_src(tmp_path):
    """--model-src takes a C model package as it is (the toy model, like the firmware's
    MODEL_SRC); a folder without one is one line."""
    toy = ROOT / "tests" / "fixtures" / "toy_model"
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.arduino", "--model-src",
                        str(toy), "--out", str(tmp_path), "--name", "mgrade_toy", "--no-zip"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    src = tmp_path / "mgrade_toy" / "src"
    assert (src / "toy_model.c").read_bytes() == (toy / "toy_model.c").read_bytes()
    assert (src / "mg_app.c").is_file() and not (tmp_path / "mgrade_toy.zip").exists()
    r = subprocess.run([sys.executable, "-m", "mgrade_edge.convert.arduino", "--model-src",
                        str(ROOT / "tests"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "not a C model package" in r.stderr


@needs_avr_gcc
def test_qemu_skip_hazards_found(tmp_path):
    """arduino_build.qemu_skip_hazards finds the skip-over-ret qemu-system-avr hangs on: a
    signed 16 x 16 -> 32-bit product links libgcc's __usmulhisi3_tail (`sbrs r27, 7; ret`)."""
    from mgrade_edge.host_tools.arduino_build import qemu_skip_hazards

    src = tmp_path / "m.c"
    src.write_text("#include <stdint.h>\nvolatile int16_t a = -5, b = 7; volatile int32_t c;\n"
                   "int main(void) { c = (int32_t)a * b; return 0; }\n")
    elf = tmp_path / "m.elf"
    subprocess.run(["avr-gcc", "-mmcu=atmega2560", "-Os", str(src), "-o", str(elf)], check=True)
    assert any("sbrs" in h and h.endswith("; ret") for h in qemu_skip_hazards(elf))


@needs_arduino
def test_examples_build_outside_repo(library, tmp_path):
    """Both examples from a copy of the library in a sketchbook-like folder outside the repo,
    as the IDE builds them after "Add .ZIP Library"; the weights stay in flash."""
    books = tmp_path / "sketchbook" / "libraries"
    with zipfile.ZipFile(library["zip"]) as z:
        z.extractall(books)
    lib = books / library["name"]
    assert ROOT not in lib.resolve().parents
    for ex in EXAMPLES:
        b = build_example(lib, ex, tmp_path / f"build_{ex}", "mega")
        assert b["elf"].is_file() and b["hex"].is_file()
        assert b["flash"] < b["flash_max"] and b["ram"] < b["ram_max"] - 1024, b
        # every model tensor symbol is in flash (.text), none in RAM (.data)
        nm = subprocess.run(["avr-nm", "-S", str(b["elf"])], capture_output=True, text=True,
                            check=True).stdout
        kinds = {ln.split()[-1]: ln.split()[2] for ln in nm.splitlines()
                 if len(ln.split()) == 4 and ln.split()[-1].startswith("mg_t")}
        assert not any(k in "dDbB" for k in kinds.values()), kinds


@pytest.fixture(scope="module", params=list(TINY_VARIANTS))
def mega_firmware(request, tiny_models, tmp_path_factory):
    if not have_toolchain() or shutil.which("qemu-system-avr") is None:
        pytest.skip("arduino-builder / qemu-system-avr not installed")
    model = tiny_models(TINY_VARIANTS[request.param])
    work = tmp_path_factory.mktemp(f"mega_{request.param}")
    lib = write_library(model, work / "lib", name="mgrade_model", make_zip=False)
    b = build_example(lib["dir"], "mg_protocol", work / "build", "mega")
    return model, b


def test_mega_qemu_bit_exact(mega_firmware, tmp_path):
    """make compare BOARD=arduino-mega's path: emulated_eval starts qemu-system-avr -M
    mega2560, stream_eval streams every test sequence with every step's logits."""
    from mgrade_edge.host_tools.arduino_build import qemu_skip_hazards

    model, b = mega_firmware
    assert qemu_skip_hazards(b["elf"]) == []          # nothing qemu-system-avr hangs on
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "host_tools/emulated_eval.py", str(b["elf"]), "--board",
                        "arduino-mega", "--model", str(model), "--timeout", "60", "--json",
                        str(out), "--no-progress"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads(out.read_text())
    assert m["device"]["board"] == "arduino-mega2560" and m["steps"] > 0
    assert m["logits_compared"] == "every step"
    assert m["max_abs_logit_diff"] == 0 and m["max_abs_sum_diff"] == 0 and m["n_mismatched"] == 0


@needs_avr_gcc
@pytest.mark.skipif(shutil.which("simavr") is None, reason="simavr not installed")
def test_simavr_cycles_bit_exact(tiny_models, tmp_path):
    """benchmarks/avr_cost.py: every step's logits equal TFLM's on the simulated ATmega2560 and
    the cycle count is plausible (a step costs more cycles than it has MACs)."""
    from benchmarks.avr_cost import measure

    r = measure(tiny_models(TINY_VARIANTS["tiny16"]), seqs=2, work=tmp_path, sketches=False)
    assert r["mismatched_bytes"] == 0 and r["steps"] > 0
    c = r["cycles_per_step"]
    assert r["macs_per_step"] < c["min"] <= c["mean"] <= c["max"]
    assert r["package_runtime"]["ram"] < 8192


def _stub_frames(n_steps: int, n_in: int) -> np.ndarray:
    """What mg_classify.ino's read_sensor_frame() returns at steps 0..n_steps-1 (float32)."""
    t = np.arange(n_steps, dtype=np.int64)[:, None]
    i = np.arange(n_in, dtype=np.int64)[None, :]
    return (((t * 7 + i * 3) % 17 - 8).astype(np.float32) / np.float32(8.0))


def _read_lines(port: int, want: int, seconds: float) -> list[str]:
    import socket
    import time

    got = b""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(0.5)
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and got.count(b"\n") < want:
            try:
                got += s.recv(4096)
            except socket.timeout:
                pass
    return got.decode(errors="replace").splitlines()


@needs_arduino
@pytest.mark.skipif(shutil.which("qemu-system-avr") is None, reason="qemu-system-avr missing")
def test_uno_classify_matches_host(library, tiny_int8, tmp_path):
    import re

    from mgrade_edge.convert.stream import Streamer
    from mgrade_edge.host_tools.emulator import Emulator

    b = build_example(library["dir"], "mg_classify", tmp_path / "build", "uno")
    assert b["flash"] <= b["flash_max"] and b["ram"] <= b["ram_max"] - 512, b
    n = 30
    with Emulator(b["elf"], board="arduino-uno") as emu:
        lines = _read_lines(emu.port, n + 1, 60.0)
    steps = [tuple(map(int, m.groups())) for m in
             (re.fullmatch(r"step (\d+) class (\d+) running (\d+)", ln.strip()) for ln in lines)
             if m]
    assert len(steps) >= n, lines[:5]
    hdr = (library["dir"] / "src" / "mg_model_data.h").read_text()
    scale = np.float32(float(re.search(r"MG_MODEL_INPUT_SCALE (\S+?)f", hdr).group(1)))
    zp = int(re.search(r"MG_MODEL_INPUT_ZERO_POINT (-?\d+)", hdr).group(1))
    x = _stub_frames(n, int(re.search(r"MG_MODEL_N_IN (\d+)", hdr).group(1)))
    q = np.clip(np.round(x / scale).astype(np.int32) + zp, -128, 127).astype(np.int8)
    logits = Streamer((tiny_int8 / "model.tflite").read_bytes(), "tflm").run(q)
    sums = np.cumsum(logits.astype(np.int32), axis=0)
    assert [s[0] for s in steps[:n]] == list(range(1, n + 1))
    assert [s[1] for s in steps[:n]] == np.argmax(logits, axis=1).tolist()
    assert [s[2] for s in steps[:n]] == np.argmax(sums, axis=1).tolist()
