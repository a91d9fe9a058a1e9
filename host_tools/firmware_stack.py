"""The stack high-water mark of the protocol firmware over a real session, and the C folder
with it in its resource table.

    python -m mgrade_edge.host_tools.firmware_stack MODEL_DIR [--out DIR] [--name NAME] --stack
        (mgrade-package, make resources: convert.cpackage's options, the --stack row measured)

build() makes the qemu-cm4 firmware (mcu/Makefile of the installed package: protocol app +
runtime + package + board) for a generated package; stack_high_water() runs it in QEMU
(host_tools/emulator.py), streams the sequences through the serial protocol
(host_tools/protocol.Device) and reads the stack region [_sstack, _estack) back through the
QEMU monitor: the board paints it at reset (mcu/boards/mg_stack.h), so the deepest
overwritten word gives the high-water mark of a real session. probe() is that measurement as
the resource table's "stack" row (convert/resources.measure takes it as its `stack`
argument: convert sits below the host tools). benchmarks/firmware_cost.py reports both paths.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mgrade_edge.convert.mcu_harness import MCU

PAINT = 0xC5C5C5C5


def build(gen_dir, out_dir, fast: bool) -> dict:
    """The qemu-cm4 firmware of package gen_dir (mcu/Makefile from the installed package: the
    protocol app, runtime, board), fast or portable path: its ELF, sizes (bytes: flash = text
    + data, RAM = data + bss) and the stack region's bounds (_sstack, _estack)."""
    out_dir = Path(out_dir)
    r = subprocess.run(["make", "-s", "-C", str(MCU), "firmware", "BOARD=qemu-cm4",
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
    """One QEMU monitor command over its unix socket; the monitor's answer."""
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


def probe(gen_dir, out_dir, seq: np.ndarray) -> dict:
    """The resource table's stack row: the qemu-cm4 firmware (fast path) of package gen_dir
    built in out_dir, one protocol session of seq [1, T, n_in] streamed; bytes."""
    fw = build(gen_dir, out_dir, fast=True)
    r = stack_high_water(fw, seq)
    return {"board": "qemu-cm4", "path": "fast", "used": r["stack_used"],
            "reserved": fw["stack_reserved"], "steps": r["steps"]}


def main(argv=None) -> int:
    """convert.cpackage's command line with the stack row available (--stack)."""
    from mgrade_edge.convert import cpackage

    return cpackage.main(argv, stack_probe=probe,
                         prog="python -m mgrade_edge.host_tools.firmware_stack")


if __name__ == "__main__":
    sys.exit(main())
