"""Start the emulated board, run stream_eval against it, stop the emulator.

    mgrade-emulated-eval FIRMWARE.elf [--board qemu-cm4] --model DIR [stream_eval options]

What `make demo` runs after building the firmware: the same stream_eval a user points at a
real port, here at the QEMU UART's pyserial URL. Exit code: stream_eval's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mgrade_edge.host_tools import stream_eval
from mgrade_edge.host_tools.emulator import Emulator, EmulatorError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("firmware")
    p.add_argument("--quiet", action="store_true",
                   help="print only stream_eval's final report (and errors)")
    p.add_argument("--board", default="qemu-cm4", help="emulated board (host_tools/emulator.py "
                   "BOARDS; default qemu-cm4)")
    args, rest = p.parse_known_args(argv)
    if not Path(args.firmware).is_file():
        print(f"error: firmware not found: {args.firmware} (run make firmware)", file=sys.stderr)
        return 2
    try:
        with Emulator(args.firmware, board=args.board) as emu:
            if not args.quiet:
                print(f"emulator: {emu.url}", flush=True)
            quiet = ["--quiet"] if args.quiet else []
            return stream_eval.main(["--port", emu.url, *rest, *quiet])
    except EmulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
