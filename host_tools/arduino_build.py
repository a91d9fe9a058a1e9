"""Build an example sketch of a model's Arduino library (convert/arduino.py) with arduino-builder
and the Debian AVR core, the way the Arduino IDE would.

    python -m mgrade_edge.host_tools.arduino_build LIBRARY_DIR EXAMPLE [--board mega|uno] --out BUILD_DIR
        [--elf COPY.elf]

LIBRARY_DIR is the library folder (with library.properties); EXAMPLE one of its examples
(mg_protocol, mg_classify). Prints the sketch's flash and RAM use (avr-size) and writes
BUILD_DIR/EXAMPLE.ino.{elf,hex}; --elf also copies the ELF there. Debian's arduino-core-avr
1.8.7 with its gcc-avr 5.4 needs -DDECIMAL_DIG=9 (WString.cpp); SERIAL_RX_BUFFER_SIZE=256
holds a whole protocol request, which qemu-system-avr delivers without any baud-rate pacing
(the core's 64-byte default drops bytes there; a real board at 115200 baud never fills it).
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

HARDWARE = ["/usr/share/arduino/hardware", "/usr/share/arduino-builder"]
TOOLS = ["/usr/bin", "/usr/share/arduino-builder"]
BOARDS = {   # board -> (fqbn, flash bytes available to a sketch, RAM bytes)
    "mega": ("arduino:avr:mega:cpu=atmega2560", 253952, 8192),
    "uno": ("arduino:avr:uno", 32256, 2048),
}
EXTRA_FLAGS = "-DDECIMAL_DIG=9 -DSERIAL_RX_BUFFER_SIZE=256"
APT_HINT = ("install gcc-avr avr-libc arduino-core-avr arduino-builder (make toolchain "
            "BOARD=arduino-mega)")


class ArduinoBuildError(RuntimeError):
    pass


def have_toolchain() -> bool:
    return all(shutil.which(t) for t in ("arduino-builder", "avr-gcc", "avr-size")) and \
        Path(HARDWARE[0], "arduino", "avr", "boards.txt").is_file()


def avr_size(elf: Path) -> dict:
    """flash (.text + .data) and RAM (.data + .bss) bytes of an AVR ELF."""
    out = subprocess.run(["avr-size", "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sec = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.\w+)\s+(\d+)", out, re.M)}
    data, bss = sec.get(".data", 0), sec.get(".bss", 0)
    return {"flash": sec.get(".text", 0) + data, "ram": data + bss, "data": data, "bss": bss}


# qemu-system-avr (7.2) restarts the translation block instead of skipping an indirect jump:
# a taken skip over ret/reti/ijmp/icall loops there forever (the skipped jump's PC is never set)
SKIP_OPS = ("sbrs", "sbrc", "sbis", "sbic", "cpse")
INDIRECT_OPS = ("ret", "reti", "ijmp", "eijmp", "icall", "eicall")


def qemu_skip_hazards(elf: Path) -> list[str]:
    """'ADDR <function>: skip; jump' for every skip instruction right before an indirect jump in
    the ELF (avr-objdump -d): code qemu-system-avr hangs on (libgcc's __usmulhisi3_tail
    `sbrs r27, 7; ret`, linked for a signed 16 x 16 -> 32-bit product, is one). Real AVRs run it."""
    out = subprocess.run(["avr-objdump", "-d", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    found, func, prev = [], "", None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if m:
            func, prev = m.group(1), None
            continue
        m = re.match(r"^\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(\w+)\s*([^;]*)", line)
        if not m:
            continue
        addr, op, args = m.group(1), m.group(2), m.group(3).strip()
        if prev and op in INDIRECT_OPS:
            found.append(f"0x{prev[0]} <{func}>: {prev[1]}; {op}")
        prev = (addr, f"{op} {args}") if op in SKIP_OPS else None
    return found


def build_example(library_dir, example: str, out, board: str = "mega",
                  extra_flags: str = EXTRA_FLAGS, timeout: float = 600) -> dict:
    """arduino-builder on library_dir/examples/<example> for `board`; returns {'elf', 'hex',
    'flash', 'ram', 'flash_max', 'ram_max', 'log'}."""
    if not have_toolchain():
        raise ArduinoBuildError(f"arduino-builder / avr-gcc not found: {APT_HINT}")
    lib = Path(library_dir).resolve()
    sketch = lib / "examples" / example / f"{example}.ino"
    if not (lib / "library.properties").is_file():
        raise ArduinoBuildError(f"{lib} is not an Arduino library (no library.properties): "
                                f"write one with python -m mgrade_edge.convert.arduino")
    if not sketch.is_file():
        raise ArduinoBuildError(f"no example {example!r} in {lib}/examples")
    if board not in BOARDS:
        raise ArduinoBuildError(f"board {board!r}: expected one of {', '.join(BOARDS)}")
    fqbn, flash_max, ram_max = BOARDS[board]
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["arduino-builder", "-compile", *[a for h in HARDWARE for a in ("-hardware", h)],
           *[a for t in TOOLS for a in ("-tools", t)], "-libraries", str(lib.parent),
           "-fqbn", fqbn, f"-prefs=compiler.cpp.extra_flags={extra_flags}",
           "-build-path", str(out), str(sketch)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    elf = out / f"{example}.ino.elf"
    if r.returncode != 0 or not elf.is_file():
        raise ArduinoBuildError(f"arduino-builder failed ({r.returncode}) for {sketch}:\n"
                                f"{(r.stdout + r.stderr)[-4000:]}")
    size = avr_size(elf)
    return {"elf": elf, "hex": out / f"{example}.ino.hex", "flash_max": flash_max,
            "ram_max": ram_max, "log": r.stdout + r.stderr, **size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 epilog=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("library", help="library folder (python -m mgrade_edge.convert.arduino wrote it)")
    ap.add_argument("example", help="example sketch name (mg_protocol, mg_classify)")
    ap.add_argument("--board", default="mega", choices=sorted(BOARDS))
    ap.add_argument("--out", required=True, help="build folder")
    ap.add_argument("--elf", default=None, help="copy the built ELF (and .hex beside it) here")
    a = ap.parse_args(argv)
    try:
        r = build_example(a.library, a.example, a.out, a.board)
    except (ArduinoBuildError, subprocess.TimeoutExpired) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.elf:
        dst = Path(a.elf)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r["elf"], dst)
        if r["hex"].is_file():
            shutil.copyfile(r["hex"], dst.with_suffix(".hex"))
    print(f"built {r['elf']} ({a.board}): flash {r['flash']} of {r['flash_max']} B, "
          f"RAM {r['ram']} of {r['ram_max']} B (.data {r['data']}, .bss {r['bss']})")
    for h in qemu_skip_hazards(r["elf"]):
        print(f"warning: qemu-system-avr hangs at {h} (a skipped indirect jump); real boards "
              f"run it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
