"""Whole-firmware cost on the emulated board: flash, RAM and the measured stack high-water mark.

    python -m benchmarks.firmware_cost MODEL_DIR [--seqs 3] [--json OUT.json]

Generates the model package of MODEL_DIR (model.tflite, test_data.npz), builds the qemu-cm4
firmware (mcu/Makefile: protocol app + runtime + package + board) for the fast path (the
default on Cortex-M4) and the portable path (EXTRA_CFLAGS=-DMG_FAST=0), reports
arm-none-eabi-size (flash = text + data, RAM = data + bss, the bss including the reserved
stack), then runs each firmware in QEMU, streams --seqs test sequences through the serial
protocol (host_tools/protocol.Device) and reads the stack region [_sstack, _estack) back
through the QEMU monitor: the board paints it at reset (mcu/boards/mg_stack.h), so the
deepest overwritten word gives the stack high-water mark of a real session.
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAINT = 0xC5C5C5C5


def build(gen_dir, out_dir, fast: bool) -> dict:
    out_dir = Path(out_dir)
    r = subprocess.run(["make", "-s", "-C", str(ROOT / "mcu"), "firmware", "BOARD=qemu-cm4",
                        f"MODEL_SRC={gen_dir}", f"BUILD_DIR={out_dir}",
                        f"EXTRA_CFLAGS={'' if fast else '-DMG_FAST=0'}"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise RuntimeError(r.stdout[-2000:] + r.stderr[-2000:])
    elf = out_dir / "firmware.elf"
    size = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True,
                          check=True).stdout.splitlines()[1].split()
    text, data, bss = (int(v) for v in size[:3])
    syms = {}
    for line in subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[2] in ("_sstack", "_estack"):
            syms[p[2]] = int(p[0], 16)
    stack_reserved = syms["_estack"] - syms["_sstack"]
    return {"elf": elf, "flash": text + data, "text": text, "data": data, "bss": bss,
            "ram": data + bss, "ram_without_stack": data + bss - stack_reserved,
            "stack_reserved": stack_reserved, **syms}


def _monitor(sock_path: str, cmd: str) -> str:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    s.settimeout(5)
    buf = b""
    s.sendall(cmd.encode() + b"\n")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        buf += chunk
        if buf.rstrip().endswith(b"(qemu)") and cmd.encode() in buf and buf.count(b"(qemu)") >= 2:
            break
    s.close()
    return buf.decode(errors="replace")


def stack_high_water(fw: dict, x: np.ndarray) -> dict:
    """Run the firmware, stream the sequences x [S, T, n_in], read the stack region back."""
    import serial

    from mgrade_edge.host_tools.emulator import Emulator
    from mgrade_edge.host_tools.protocol import Device

    mon = tempfile.mktemp(prefix="mgmon", suffix=".sock")

    class MonEmulator(Emulator):
        def command(self, port):
            cmd = super().command(port)
            k = cmd.index("-monitor")
            cmd[k + 1] = f"unix:{mon},server=on,wait=off"
            return cmd

    with MonEmulator(fw["elf"]) as emu:
        port = serial.serial_for_url(emu.url, timeout=0.05)
        try:
            dev = Device(port, timeout=5.0)
            dev.hello()
            steps = 0
            for seq in x:
                dev.reset_state()
                dev.run(np.ascontiguousarray(seq), step_logits=True)
                steps += len(seq)
        finally:
            port.close()
        n = (fw["_estack"] - fw["_sstack"]) // 4
        words = []
        out = _monitor(mon, f"xp /{n}wx {fw['_sstack']:#x}")
        for line in out.splitlines():
            m = re.match(r"\s*([0-9a-f]+):((?:\s+0x[0-9a-f]+)+)", line)
            if m:
                words += [int(v, 16) for v in m.group(2).split()]
    if len(words) < n:
        raise RuntimeError(f"read {len(words)} of {n} stack words through the monitor")
    first = next((k for k, w in enumerate(words) if w != PAINT), n)
    return {"stack_used": (n - first) * 4, "steps": steps}


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
