"""Whole-firmware cost on the emulated board: flash, RAM and the measured stack high-water mark.

    python -m benchmarks.firmware_cost MODEL_DIR [--seqs 3] [--json OUT.json]

Generates the model package of MODEL_DIR (model.tflite, test_data.npz), builds the qemu-cm4
firmware (mcu/Makefile: protocol app + runtime + package + board) for the fast path (the
default on Cortex-M4) and the portable path (EXTRA_CFLAGS=-DMG_FAST=0), reports
arm-none-eabi-size (flash = text + data, RAM = data + bss, the bss including the reserved
stack), then runs each firmware in QEMU, streams --seqs test sequences through the serial
protocol (host_tools/protocol.Device) and reads the stack region [_sstack, _estack) back
through the QEMU monitor: the board paints it at reset (mcu/boards/mg_stack.h), so the
deepest overwritten word gives the stack high-water mark of a real session (the build and
the session: mgrade_edge.host_tools.firmware_stack, also the resource table's stack row).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from mgrade_edge.host_tools.firmware_stack import build, stack_high_water


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.firmware_cost",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--seqs", type=int, default=3)
    ap.add_argument("--work", help="keep the package and builds here")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    from mgrade_edge.convert.codegen import generate

    model_dir = Path(a.model_dir)
    if not (model_dir / "model.tflite").is_file():
        print(f"firmware_cost: {model_dir}/model.tflite not found", file=sys.stderr)
        return 2
    work = Path(a.work or tempfile.mkdtemp(prefix="fwcost_"))
    generate((model_dir / "model.tflite").read_bytes(), work / "gen")
    x = np.load(model_dir / "test_data.npz")["x"][:a.seqs].astype(np.int8)
    res = {}
    for name, fast in (("fast", True), ("portable", False)):
        fw = build(work / "gen", work / f"fw_{name}", fast)
        fw.update(stack_high_water(fw, x))
        fw["elf"] = str(fw["elf"])
        res[name] = fw
        print(f"{name}: flash {fw['flash']} B (text {fw['text']}, data {fw['data']}), RAM "
              f"{fw['ram']} B (data + bss, of which stack reserved {fw['stack_reserved']} B), "
              f"stack high-water {fw['stack_used']} B over {fw['steps']} protocol steps")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
