"""The firmware on every emulated core (mcu/boards/qemu-cm0/cm3/cm4/cm7/cm33/cm55, qemu-rv32):
each board builds with mcu/Makefile, runs in its QEMU machine (host_tools/emulator.py BOARDS)
and answers the protocol over its UART with the toy model's exact logits and an instruction
tick unit; the RISC-V and the 16 KiB-RAM micro:bit boards also stream the tiny generated model's
test set through host_tools/emulated_eval.py (what `make compare BOARD=...` runs) with device
== host at 0 LSB."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "toy_model"))

from mgrade_edge.host_tools import protocol as P  # noqa: E402
from mgrade_edge.host_tools.emulator import BIOS_BOARDS, BOARDS, Emulator  # noqa: E402
from toy_model import MODEL_ID, N_IN, ToyModel  # noqa: E402

PY = sys.executable
CC = {"qemu-rv32": "riscv64-unknown-elf-gcc"}
# instructions per tick: SysTick at the machine's sysclk (25 MHz: 40; an505 20 MHz: 50), or
# instructions directly (micro:bit 16 MHz, an547 32 MHz: scaled in board_ticks; rv32: instret)
UNITS = {"qemu-cm0": 1, "qemu-cm33": 50, "qemu-cm55": 1, "qemu-rv32": 1}


def _needs(board):
    cc = CC.get(board, "arm-none-eabi-gcc")
    qemu = BOARDS[board][0]
    if shutil.which(cc) is None or shutil.which(qemu) is None:
        pytest.skip(f"{cc} / {qemu} not installed (make toolchain)")


def _firmware(board, model_src, out) -> tuple[Path, str]:
    r = subprocess.run(["make", "-C", str(ROOT / "mcu"), "firmware", f"BOARD={board}",
                        f"MODEL_SRC={model_src}", f"BUILD_DIR={out}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out / "firmware.elf", r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("board", sorted(set(BOARDS) - set(BIOS_BOARDS)))   # mcu/ boards
def test_toy_firmware_on_each_core(board, tmp_path):
    _needs(board)
    elf, _ = _firmware(board, "tests/fixtures/toy_model", tmp_path)
    x = np.random.default_rng(5).integers(-128, 128, (60, N_IN)).astype(np.int8)
    ref = ToyModel.run(x)
    with Emulator(elf, board=board) as emu:
        dev = P.Device.open(emu.url, timeout=5.0)
        try:
            info = dev.hello()
            assert info.model_id == MODEL_ID and info.board.startswith(board), info.board
            assert (info.tick_kind, info.units_per_tick) == ("instructions", UNITS.get(board, 40))
            res = dev.run(x, step_logits=True)
            np.testing.assert_array_equal(res.step_logits, ref)
            np.testing.assert_array_equal(res.sums, ref.astype(np.int64).sum(0))
            costs = [dev.run(x).cost for _ in range(2)]
        finally:
            dev.close()
    # -icount: the instruction count is deterministic up to the tick rounding per chunk
    assert res.unit == "instructions" and 100 < costs[0] / 60 < 50000, costs
    assert abs(costs[1] - costs[0]) <= 64 * 8, costs


@pytest.mark.slow
@pytest.mark.parametrize("board", ["qemu-rv32", "qemu-cm0"])
def test_generated_model_streams_bit_exact(board, tiny_int8, tmp_path):
    """The tiny converted model's C package in the firmware, its whole test set streamed by
    stream_eval against TFLite-Micro on the host: 0 LSB on every step's logits (the micro:bit
    build also proves the model and app fit its 16 KiB of RAM: the link checks the regions)."""
    _needs(board)
    from mgrade_edge.convert.codegen import generate

    pkg = tmp_path / "pkg"
    generate((tiny_int8 / "model.tflite").read_bytes(), pkg)
    elf, out = _firmware(board, pkg, tmp_path / "build")
    ram = re.search(r"RAM:\s+(\d+) B\s+(\d+) (KB|MB)", out)
    assert ram and int(ram.group(1)) <= int(ram.group(2)) * {"KB": 1 << 10, "MB": 1 << 20}[
        ram.group(3)], out
    r = subprocess.run([PY, str(ROOT / "host_tools" / "emulated_eval.py"), str(elf), "--board",
                        board, "--model", str(tiny_int8), "--json", str(tmp_path / "m.json"),
                        "--no-progress"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((tmp_path / "m.json").read_text())
    n = np.load(tiny_int8 / "test_data.npz")["x"].shape[0]
    assert m["n_sequences"] == n and m["max_abs_logit_diff"] == 0 and m["max_abs_sum_diff"] == 0
    assert m["cost_per_step_mean"] > 0
    print(f"\n{board}: {n} sequences streamed, device == TFLite-Micro at 0 LSB, "
          f"{m['cost_per_step_mean']:.0f} instructions/step; firmware RAM {ram.group(1)} B")


def test_unknown_emulated_board_is_one_clear_line(tmp_path):
    elf = tmp_path / "fw.elf"
    elf.write_bytes(b"\x7fELF")
    r = subprocess.run([PY, str(ROOT / "host_tools" / "emulated_eval.py"), str(elf), "--board",
                        "qemu-z80", "--model", str(tmp_path)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 2 and "no emulator for board 'qemu-z80'" in r.stderr
    assert "Traceback" not in r.stderr


def test_mcu_cost_unknown_core_is_one_clear_line(tmp_path):
    r = subprocess.run([PY, "-m", "benchmarks.mcu_cost", str(tmp_path), "--cores", "qemu-z80"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "unknown core 'qemu-z80'" in r.stderr
    assert "Traceback" not in r.stderr
