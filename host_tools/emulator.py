"""Run a firmware ELF in QEMU (the board's machine, BOARDS) with its UART0 on a local TCP port.

    with Emulator("build/qemu-cm4/firmware.elf") as emu:          # mps2-an386, Cortex-M4F
    with Emulator("build/qemu-rv32/firmware.elf", board="qemu-rv32") as emu:
        dev = protocol.Device.open(emu.url)          # socket://127.0.0.1:PORT
        ...
    # QEMU is stopped here, also on exceptions and KeyboardInterrupt

    mgrade-emulator [--board qemu-cm4] build/qemu-cm4/firmware.elf
        prints socket://127.0.0.1:PORT on a line of its own and runs until Ctrl-C.
    mgrade-emulator --board arduino-mega build/demo/arduino-mega/firmware.elf
        the same for an Arduino sketch on an emulated Mega 2560 (qemu-system-avr).

QEMU runs with `-icount shift=0` (one instruction per virtual ns), so the boards' tick
counters count instructions deterministically (SysTick: 40 per tick at 25 MHz on qemu-cm4;
instret on qemu-rv32). The UART
is a TCP server that waits for the first client before the guest starts; after a client
disconnects QEMU listens again, so several host tools can connect one after another.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# BOARDS: the emulated boards' QEMU binary, machine and extra arguments; BIOS_BOARDS: those
# loaded as -bios (no semihosting, no -icount). One table with the harness's TARGETS.
from mgrade_edge.convert.mcu_harness import BIOS_BOARDS, BOARDS
from mgrade_edge.host_tools.serving import stop_on_signals, wait_for_exit

DEFAULT_QEMU = "qemu-system-arm"
DEFAULT_MACHINE = "mps2-an386"


def board_qemu(board: str) -> tuple[str, str, tuple[str, ...]]:
    """(qemu binary, machine, extra args) of an emulated board; EmulatorError if unknown."""
    try:
        return BOARDS[board]
    except KeyError:
        raise EmulatorError(f"no emulator for board {board!r}: expected one of "
                            f"{', '.join(BOARDS)}") from None


class EmulatorError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec: SIGTERM the child when this Python process dies (Linux), so a killed host
    tool never leaves QEMU behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)    # PR_SET_PDEATHSIG
    except OSError:
        pass


class LoggedProcess:
    """The lifecycle every local device launcher shares: a child process (`proc`) serving the
    device on a local TCP `port`, its output kept in a temporary log file (`log_text()`, still
    readable after stop). Subclasses implement start() -> url and stop(), and call
    `_open_log(prefix)` / `_close_log()`."""
    error = RuntimeError                  # raised for the launcher's own failures

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self._log = None
        self._last_log = ""

    @property
    def url(self) -> str:
        if self.port is None:
            raise self.error(f"{type(self).__name__} not started")
        return f"socket://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _open_log(self, prefix: str):
        self._log = tempfile.NamedTemporaryFile("w+", prefix=prefix, suffix=".log")
        return self._log

    def log_text(self) -> str:
        if self._log is None:
            return self._last_log
        self._log.flush()
        with open(self._log.name, "r", errors="replace") as f:
            return f.read()

    def _close_log(self) -> None:
        if self._log is not None:
            self._last_log = self.log_text()
            self._log.close()
            self._log = None

    def start(self) -> str:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except Exception:   # noqa: BLE001
            pass


class Emulator(LoggedProcess):
    error = EmulatorError

    def __init__(self, firmware, qemu: str = DEFAULT_QEMU, machine: str = DEFAULT_MACHINE,
                 icount: int | None = 0, extra_args=(), startup_timeout: float = 15.0,
                 port: int | None = None, board: str | None = None):
        """board: one of BOARDS (sets qemu, machine and the machine's extra arguments)."""
        super().__init__()
        self.load, self.semihosting = "-kernel", True
        if board is not None:
            qemu, machine, board_args = board_qemu(board)
            extra_args = [*board_args, *extra_args]
            if board in BIOS_BOARDS:
                self.load, self.semihosting, icount = "-bios", False, None
        self.firmware = Path(firmware)
        self.qemu = qemu
        self.machine = machine
        self.icount = icount
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.requested_port = port

    def command(self, port: int) -> list[str]:
        cmd = [self.qemu, "-M", self.machine, "-nographic", "-monitor", "none",
               *(["-semihosting"] if self.semihosting else []), self.load, str(self.firmware),
               "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"]
        if self.icount is not None:
            cmd += ["-icount", f"shift={self.icount}"]
        return cmd + self.extra_args

    def start(self) -> str:
        if not self.firmware.is_file():
            raise EmulatorError(f"firmware not found: {self.firmware}")
        if shutil.which(self.qemu) is None:
            raise EmulatorError(f"{self.qemu} not found (install it: make toolchain)")
        for _ in range(5):
            port = self.requested_port or free_port()
            self.proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL,
                                         stdout=self._open_log("qemu-"), stderr=subprocess.STDOUT,
                                         preexec_fn=_die_with_parent if os.name == "posix" else None)
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if "waiting for connection" in self.log_text():
                    self.port = port
                    return self.url
                time.sleep(0.02)
            log = self.log_text()
            self.stop()
            if "bind" in log.lower() and self.requested_port is None:
                continue                         # port raced away: try another
            raise EmulatorError(f"QEMU did not start listening on port {port}:\n{log.strip()}")
        raise EmulatorError("could not find a free TCP port for QEMU")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc is not None:
            self.last_pid, self.returncode = proc.pid, proc.returncode
        self._close_log()
        self.port = None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run firmware in QEMU with UART0 on a local TCP port.")
    ap.add_argument("firmware", help="firmware ELF (e.g. build/qemu-cm4/firmware.elf)")
    ap.add_argument("--board", choices=sorted(BOARDS), default=None,
                    help="emulated board (sets --qemu and --machine; default qemu-cm4's)")
    ap.add_argument("--qemu", default=DEFAULT_QEMU)
    ap.add_argument("--machine", default=DEFAULT_MACHINE)
    ap.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    ap.add_argument("--quiet", action="store_true", help="print only the URL (and errors)")
    args = ap.parse_args(argv)

    stop_on_signals()
    emu = Emulator(args.firmware, qemu=args.qemu, machine=args.machine, port=args.port,
                   board=args.board)
    try:
        url = emu.start()
    except EmulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        print(url, flush=True)
        return wait_for_exit(emu, "QEMU", args.firmware, url, args.quiet)
    except KeyboardInterrupt:
        return 0
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
